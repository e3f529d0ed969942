//! Interop with an SRTP implementation we did not write: webrtc-rs's `webrtc-srtp`
//! (pure Rust, RustCrypto AES/GCM/HMAC-SHA1, its own key derivation). For each profile it
//! opens what `SrtpTx` sealed and we open what it sealed, RTP (CSRCs, extensions,
//! a sequence-number wrap) and SRTCP, from the same master key and salt.
#![allow(clippy::unwrap_used)]

mod common;

use chorus_srtp::{SrtpProfile, SrtpRx, SrtpTx};
use common::{keys, rtcp, rtp};
use webrtc_srtp::context::Context;
use webrtc_srtp::protection_profile::ProtectionProfile;

fn theirs(profile: SrtpProfile) -> ProtectionProfile {
    match profile {
        SrtpProfile::Aes128CmSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        SrtpProfile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm => ProtectionProfile::AeadAes256Gcm,
    }
}

/// Our sending context and theirs for the same (server) master key, and the same for
/// receiving.
fn contexts(profile: SrtpProfile) -> (SrtpTx, SrtpRx, Context, Context) {
    let k = keys(profile);
    let m = k.server();
    let ctx = || Context::new(m.key(), m.salt(), theirs(profile), None, None).unwrap();
    (k.tx(false).unwrap(), k.rx(true).unwrap(), ctx(), ctx())
}

/// Extended sequence numbers across a wrap (webrtc-srtp estimates the ROC from them).
const EXT_SEQS: [u64; 6] = [0xfffc, 0xfffd, 0xfffe, 0xffff, 0x1_0000, 0x1_0001];

#[test]
fn they_open_our_srtp() {
    for profile in SrtpProfile::ALL {
        let (tx, _, mut their_rx, _) = contexts(profile);
        for (i, ext) in EXT_SEQS.into_iter().enumerate() {
            let (plain, header_len) = rtp(
                ext as u16,
                0x0102_0304,
                (i % 3) as u8,
                i % 2 == 0,
                40 + i * 50,
            );
            let mut buf = plain.clone();
            buf.resize(plain.len() + profile.rtp_overhead(), 0);
            let n = tx
                .protect_rtp(&mut buf, plain.len(), header_len, (ext >> 16) as u32)
                .unwrap();
            let opened = their_rx
                .decrypt_rtp(&buf[..n])
                .unwrap_or_else(|e| panic!("{profile} ext seq {ext:#x}: {e}"));
            assert_eq!(&opened[..], &plain[..], "{profile} ext seq {ext:#x}");
        }
    }
}

#[test]
fn we_open_their_srtp() {
    for profile in SrtpProfile::ALL {
        let (_, rx, _, mut their_tx) = contexts(profile);
        for (i, ext) in EXT_SEQS.into_iter().enumerate() {
            let (plain, _) = rtp(
                ext as u16,
                0x0506_0708,
                (i % 3) as u8,
                i % 2 == 1,
                10 + i * 70,
            );
            let sealed = their_tx.encrypt_rtp(&plain).unwrap();
            assert_eq!(sealed.len(), plain.len() + profile.rtp_overhead());
            let mut buf = sealed.to_vec();
            let n = rx
                .unprotect_rtp(&mut buf, sealed.len(), (ext >> 16) as u32)
                .unwrap_or_else(|e| panic!("{profile} ext seq {ext:#x}: {e}"));
            assert_eq!(buf[..n], plain[..], "{profile} ext seq {ext:#x}");
        }
    }
}

#[test]
fn they_open_our_srtcp() {
    for profile in SrtpProfile::ALL {
        let (mut tx, _, mut their_rx, _) = contexts(profile);
        for i in 0..4 {
            let plain = rtcp(0x0a0b_0c0d + i % 2);
            let mut buf = plain.clone();
            buf.resize(plain.len() + profile.rtcp_overhead(), 0);
            let n = tx.protect_rtcp(&mut buf, plain.len()).unwrap();
            let opened = their_rx
                .decrypt_rtcp(&buf[..n])
                .unwrap_or_else(|e| panic!("{profile} packet {i}: {e}"));
            assert_eq!(&opened[..], &plain[..], "{profile} packet {i}");
        }
    }
}

#[test]
fn we_open_their_srtcp() {
    for profile in SrtpProfile::ALL {
        let (_, mut rx, _, mut their_tx) = contexts(profile);
        for i in 0..4 {
            let plain = rtcp(0x1a1b_1c1d + i % 2);
            let sealed = their_tx.encrypt_rtcp(&plain).unwrap();
            assert_eq!(sealed.len(), plain.len() + profile.rtcp_overhead());
            let mut buf = sealed.to_vec();
            let n = rx
                .unprotect_rtcp(&mut buf, sealed.len())
                .unwrap_or_else(|e| panic!("{profile} packet {i}: {e}"));
            assert_eq!(buf[..n], plain[..], "{profile} packet {i}");
        }
    }
}
