//! Sealing with `SrtpTx` and opening with `SrtpRx`, for every profile: RTP with CSRCs and
//! header extensions, RTCP, tampering, short buffers, rollover counters.
#![allow(clippy::unwrap_used)]

mod common;

use chorus_srtp::{DtlsSrtpKeys, MasterKey, SrtpError, SrtpProfile, SrtpRx, SrtpTx};
use common::{keys, rtcp, rtp};

/// Our tx (DTLS server) and the client's view of it (its rx, the server half).
fn pair(profile: SrtpProfile) -> (SrtpTx, SrtpRx) {
    let k = keys(profile);
    (k.tx(false).unwrap(), k.rx(true).unwrap())
}

#[test]
fn rtp_round_trips_with_csrcs_and_extensions() {
    for profile in SrtpProfile::ALL {
        let (tx, rx) = pair(profile);
        for (csrcs, ext, payload) in [
            (0, false, 0),
            (0, false, 1),
            (2, false, 160),
            (0, true, 80),
            (15, true, 1188),
        ] {
            let (plain, header_len) = rtp(4711, 0xdead_beef, csrcs, ext, payload);
            let mut buf = plain.clone();
            buf.resize(plain.len() + profile.rtp_overhead(), 0);
            let n = tx
                .protect_rtp(&mut buf, plain.len(), header_len, 3)
                .unwrap();
            assert_eq!(n, plain.len() + profile.rtp_overhead(), "{profile}");
            assert_eq!(buf[..header_len], plain[..header_len], "header stays clear");
            if payload > 8 {
                assert_ne!(
                    buf[header_len..plain.len()],
                    plain[header_len..],
                    "{profile} encrypts"
                );
            }
            assert_eq!(rx.unprotect_rtp(&mut buf, n, 3).unwrap(), plain.len());
            assert_eq!(
                buf[..plain.len()],
                plain[..],
                "{profile} csrcs {csrcs} ext {ext}"
            );
        }
    }
}

#[test]
fn rtp_tampering_fails_authentication() {
    for profile in SrtpProfile::ALL {
        let (tx, rx) = pair(profile);
        let (plain, header_len) = rtp(1, 7, 1, true, 100);
        let mut sealed = plain.clone();
        sealed.resize(plain.len() + profile.rtp_overhead(), 0);
        let n = tx
            .protect_rtp(&mut sealed, plain.len(), header_len, 0)
            .unwrap();
        // Flip a bit in the tag, the payload, the header; or open with the wrong ROC.
        for (at, roc) in [(n - 1, 0), (header_len + 5, 0), (1, 0), (0, 1)] {
            let mut buf = sealed.clone();
            if roc == 0 {
                buf[at] ^= 0x01;
            }
            assert_eq!(
                rx.unprotect_rtp(&mut buf, n, roc),
                Err(SrtpError::AuthenticationFailed),
                "{profile} byte {at} roc {roc}"
            );
        }
        // The other direction's keys do not open it.
        let wrong = keys(profile).rx(false).unwrap();
        let mut buf = sealed.clone();
        assert_eq!(
            wrong.unprotect_rtp(&mut buf, n, 0),
            Err(SrtpError::AuthenticationFailed)
        );
    }
}

#[test]
fn rtp_bad_lengths_are_errors_not_panics() {
    for profile in SrtpProfile::ALL {
        let (tx, rx) = pair(profile);
        let (plain, header_len) = rtp(1, 7, 0, false, 50);
        let len = plain.len();
        // No room for the tag (one byte short), and len beyond the buffer.
        let mut buf = plain.clone();
        buf.resize(len + profile.rtp_overhead() - 1, 0);
        let before = buf.clone();
        assert!(matches!(
            tx.protect_rtp(&mut buf, len, header_len, 0),
            Err(SrtpError::BufferTooSmall { .. })
        ));
        assert_eq!(buf, before, "{profile}: unchanged on error");
        let too_long = buf.len() + 1;
        assert!(matches!(
            tx.protect_rtp(&mut buf, too_long, 12, 0),
            Err(SrtpError::BufferTooSmall { .. })
        ));
        assert!(matches!(
            tx.protect_rtp(&mut buf, usize::MAX, 12, 0),
            Err(SrtpError::BufferTooSmall { .. })
        ));
        // Header length shorter than the fixed header or longer than the packet.
        let mut buf = plain.clone();
        buf.resize(len + 16, 0);
        assert!(matches!(
            tx.protect_rtp(&mut buf, len, 11, 0),
            Err(SrtpError::Malformed(_))
        ));
        assert!(matches!(
            tx.protect_rtp(&mut buf, len, len + 1, 0),
            Err(SrtpError::Malformed(_))
        ));
        assert!(matches!(
            tx.protect_rtp(&mut [0; 40], 0, 0, 0),
            Err(SrtpError::Malformed(_))
        ));
        // Header exactly the packet: an empty payload is fine.
        assert_eq!(
            tx.protect_rtp(&mut buf, 12, 12, 0).unwrap(),
            12 + profile.rtp_overhead()
        );
        // Opening garbage and truncations.
        let mut buf = plain.clone();
        buf.resize(len + profile.rtp_overhead(), 0);
        let n = tx.protect_rtp(&mut buf, len, header_len, 0).unwrap();
        for cut in 0..n {
            let mut b = buf.clone();
            assert!(
                rx.unprotect_rtp(&mut b, cut, 0).is_err(),
                "{profile} cut {cut}"
            );
        }
        assert!(rx.unprotect_rtp(&mut buf.clone(), n + 1, 0).is_err());
    }
}

#[test]
fn rollover_counter_is_part_of_the_index() {
    for profile in SrtpProfile::ALL {
        let (tx, rx) = pair(profile);
        // Extended sequence numbers across a wrap: ROC 0 → 1, and a large ROC.
        let mut seen = Vec::new();
        for ext in [0xfffeu64, 0xffff, 0x1_0000, 0x1_0001, 0xffff_ffff_0005] {
            let (seq, roc) = (ext as u16, (ext >> 16) as u32);
            let (plain, header_len) = rtp(seq, 42, 0, false, 40);
            let mut buf = plain.clone();
            buf.resize(plain.len() + 16, 0);
            let n = tx
                .protect_rtp(&mut buf, plain.len(), header_len, roc)
                .unwrap();
            // Same SEQ, different ROC: a different keystream and tag.
            let mut other = plain.clone();
            other.resize(plain.len() + 16, 0);
            tx.protect_rtp(&mut other, plain.len(), header_len, roc.wrapping_add(1))
                .unwrap();
            assert_ne!(buf[..n], other[..n]);
            seen.push(buf[..n].to_vec());
            let mut wrong = buf.clone();
            assert!(rx
                .unprotect_rtp(&mut wrong, n, roc.wrapping_sub(1))
                .is_err());
            assert_eq!(rx.unprotect_rtp(&mut buf, n, roc).unwrap(), plain.len());
            assert_eq!(buf[..plain.len()], plain[..]);
        }
        seen.dedup();
        assert_eq!(seen.len(), 5);
    }
}

#[test]
fn rtcp_round_trips_and_counts_its_index() {
    for profile in SrtpProfile::ALL {
        let (mut tx, mut rx) = pair(profile);
        assert_eq!(tx.srtcp_index(), 0);
        for i in 0..5u32 {
            let plain = rtcp(0x1111_0000 + i % 2);
            let mut buf = plain.clone();
            buf.resize(plain.len() + profile.rtcp_overhead(), 0);
            let n = tx.protect_rtcp(&mut buf, plain.len()).unwrap();
            assert_eq!(n, plain.len() + profile.rtcp_overhead());
            assert_eq!(tx.srtcp_index(), i + 1);
            // E flag set and the index, where the profile puts it.
            let at = if profile.is_aead() {
                n - 4
            } else {
                plain.len()
            };
            assert_eq!(buf[at..at + 4], (0x8000_0000 | i).to_be_bytes());
            assert_eq!(buf[..8], plain[..8], "first 8 octets clear");
            let sealed = buf.clone();
            assert_eq!(rx.unprotect_rtcp(&mut buf, n).unwrap(), plain.len());
            assert_eq!(buf[..plain.len()], plain[..]);
            // The same packet again is a replay.
            let mut again = sealed.clone();
            assert_eq!(rx.unprotect_rtcp(&mut again, n), Err(SrtpError::Replayed));
            // Tampering anywhere fails.
            for at in [0, 9, n - 5, n - 1] {
                let mut bad = sealed.clone();
                bad[at] ^= 0x40;
                let r = rx.unprotect_rtcp(&mut bad, n);
                assert!(
                    matches!(
                        r,
                        Err(SrtpError::AuthenticationFailed
                            | SrtpError::Replayed
                            | SrtpError::Malformed(_))
                    ),
                    "{profile} byte {at}: {r:?}"
                );
            }
        }
    }
}

#[test]
fn rtcp_bad_lengths_and_exhausted_index() {
    for profile in SrtpProfile::ALL {
        let (mut tx, mut rx) = pair(profile);
        let plain = rtcp(9);
        let mut buf = plain.clone();
        buf.resize(plain.len() + profile.rtcp_overhead() - 1, 0);
        assert!(matches!(
            tx.protect_rtcp(&mut buf, plain.len()),
            Err(SrtpError::BufferTooSmall { .. })
        ));
        assert_eq!(tx.srtcp_index(), 0, "no index consumed on error");
        assert!(matches!(
            tx.protect_rtcp(&mut [0x80; 40], 7),
            Err(SrtpError::Malformed(_))
        ));
        assert!(matches!(
            tx.protect_rtcp(&mut [0x00; 40], 8),
            Err(SrtpError::Malformed(_))
        ));
        for len in 0..8 + profile.rtcp_overhead() {
            assert!(rx.unprotect_rtcp(&mut [0x80; 64], len).is_err());
        }
        assert!(rx.unprotect_rtcp(&mut [0x80; 64], 65).is_err());

        // The last index, then exhaustion.
        tx.set_srtcp_index(0x7fff_ffff).unwrap();
        let mut buf = plain.clone();
        buf.resize(plain.len() + profile.rtcp_overhead(), 0);
        let n = tx.protect_rtcp(&mut buf, plain.len()).unwrap();
        assert_eq!(rx.unprotect_rtcp(&mut buf, n).unwrap(), plain.len());
        let mut buf = plain.clone();
        buf.resize(plain.len() + profile.rtcp_overhead(), 0);
        assert_eq!(
            tx.protect_rtcp(&mut buf, plain.len()),
            Err(SrtpError::IndexExhausted)
        );
        assert_eq!(
            tx.set_srtcp_index(0x8000_0000),
            Err(SrtpError::IndexExhausted)
        );
    }
}

#[test]
fn keys_pick_the_right_half() {
    let profile = SrtpProfile::Aes128CmSha1_80;
    let k = keys(profile);
    // What the client sends (its tx), we open with rx(false) — and vice versa.
    let client_tx = k.tx(true).unwrap();
    let server_rx = k.rx(false).unwrap();
    let (plain, h) = rtp(5, 5, 0, false, 20);
    let mut buf = plain.clone();
    buf.resize(plain.len() + 10, 0);
    let n = client_tx.protect_rtp(&mut buf, plain.len(), h, 0).unwrap();
    assert_eq!(
        server_rx.unprotect_rtp(&mut buf, n, 0).unwrap(),
        plain.len()
    );
    // A context built from the MasterKey directly is the same.
    let tx = SrtpTx::new(profile, k.client()).unwrap();
    let mut again = plain.clone();
    again.resize(plain.len() + 10, 0);
    tx.protect_rtp(&mut again, plain.len(), h, 0).unwrap();
    let mut first = plain.clone();
    first.resize(plain.len() + 10, 0);
    client_tx
        .protect_rtp(&mut first, plain.len(), h, 0)
        .unwrap();
    assert_eq!(again, first);
    // A master key of another profile is refused.
    let gcm = MasterKey::new(SrtpProfile::AeadAes128Gcm, &[1; 16], &[2; 12]).unwrap();
    assert!(matches!(
        SrtpTx::new(profile, &gcm),
        Err(SrtpError::BadKeyLength { .. })
    ));
    assert!(matches!(
        SrtpRx::new(SrtpProfile::AeadAes256Gcm, &gcm),
        Err(SrtpError::BadKeyLength { .. })
    ));
    assert_eq!(k.profile(), profile);
    let _: &DtlsSrtpKeys = &k;
}

#[test]
fn contexts_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SrtpTx>();
    assert_send_sync::<SrtpRx>();
    assert_send_sync::<DtlsSrtpKeys>();
    assert_send_sync::<SrtpError>();
}

/// An SRTCP-only context (what Chorus keeps per subscriber for its receiver reports)
/// opens SRTCP like a full one and refuses SRTP.
#[test]
fn an_rtcp_only_context_opens_srtcp_and_no_srtp() {
    for profile in SrtpProfile::ALL {
        let k = keys(profile);
        let mut tx = k.tx(false).unwrap();
        let mut rx = k.rtcp_rx(true).unwrap();
        let plain = rtcp(0x1234_5678);
        let mut buf = plain.clone();
        buf.resize(plain.len() + 64, 0);
        let n = tx.protect_rtcp(&mut buf, plain.len()).unwrap();
        assert_eq!(rx.unprotect_rtcp(&mut buf, n).unwrap(), plain.len());
        assert_eq!(buf[..plain.len()], plain[..], "{profile}");

        let (rtp_plain, header_len) = rtp(1, 2, 0, false, 20);
        let mut buf = rtp_plain.clone();
        buf.resize(rtp_plain.len() + profile.rtp_overhead(), 0);
        let n = tx
            .protect_rtp(&mut buf, rtp_plain.len(), header_len, 0)
            .unwrap();
        assert_eq!(
            rx.unprotect_rtp(&mut buf, n, 0),
            Err(SrtpError::NoRtpCipher)
        );
    }
}
