//! SRTCP: [`SrtpTx::protect_rtcp`] seals a compound RTCP packet under the context's own
//! SRTCP index, [`SrtpRx::unprotect_rtcp`] opens the peer's (with a replay check).
//!
//! - AES_CM_128_HMAC_SHA1_80 (RFC 3711 §3.4): the first 8 octets stay clear, the rest is
//!   encrypted with the index as packet index; then E flag + 31-bit index, then the
//!   80-bit tag over everything before it.
//! - AES-GCM (RFC 7714 §9, §17): AAD = first 8 octets || E + index; output is
//!   header || ciphertext || 16-octet tag || E + index.

use aws_lc_rs::aead::Aad;

use crate::rtp::{checked_lengths, Cipher};
use crate::{SrtpError, SrtpRx, SrtpTx};

/// RFC 3711 §3.4: the SRTCP index is 31 bits.
const MAX_SRTCP_INDEX: u32 = 0x7fff_ffff;
/// RFC 3711 §3.4: the E flag, the top bit of the index word.
const E_FLAG: u32 = 0x8000_0000;
/// RTCP header (V/P/RC, PT, length) and the sender SSRC: sent in the clear.
const RTCP_CLEAR: usize = 8;
/// RFC 3711 §4.2: 80-bit HMAC-SHA1 tag.
const CM_TAG_LEN: usize = 10;
/// RFC 7714 §9.1: 16-octet GCM tag.
const GCM_TAG_LEN: usize = 16;

impl SrtpTx {
    /// Seals the (compound) RTCP packet `buf[..len]` in place with this context's SRTCP
    /// index (0 first, +1 per call, E flag set) and appends the trailer; returns the
    /// sealed length, `len + profile().rtcp_overhead()`.
    ///
    /// The index is per context, shared by every SSRC this context sends for; the SSRC in
    /// the nonce keeps sources apart. Errors with [`SrtpError::IndexExhausted`] after 2^31
    /// packets. On error `buf` is unchanged and the index not consumed.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let sealed = checked_lengths(buf.len(), len, self.profile().rtcp_overhead())?;
        let ssrc = rtcp_ssrc(&buf[..len])?;
        let index = self.srtcp_index;
        if index > MAX_SRTCP_INDEX {
            return Err(SrtpError::IndexExhausted);
        }
        let e_index = (E_FLAG | index).to_be_bytes();
        let (clear, rest) = buf.split_at_mut(RTCP_CLEAR);
        let (body, trailer) = rest.split_at_mut(len - RTCP_CLEAR);
        match &self.rtcp {
            Cipher::Cm(cm) => {
                // RFC 3711 §3.4: encrypt with the SRTCP index as packet index, then the
                // tag over header || ciphertext || E + index.
                cm.apply_keystream(ssrc, u64::from(index), body)?;
                trailer[..4].copy_from_slice(&e_index);
                let tag = cm.tag(&[clear, body, &e_index]);
                trailer[4..4 + CM_TAG_LEN].copy_from_slice(&tag);
            }
            Cipher::Gcm(gcm) => {
                // RFC 7714 §9.1/§9.2: AAD = first 8 octets || E + index (12 octets).
                let aad = gcm_rtcp_aad(clear, e_index);
                let nonce = gcm.rtcp_nonce(ssrc, index);
                let tag = gcm
                    .aead
                    .seal_in_place_separate_tag(nonce, Aad::from(aad), body)?;
                trailer[..GCM_TAG_LEN].copy_from_slice(tag.as_ref());
                trailer[GCM_TAG_LEN..GCM_TAG_LEN + 4].copy_from_slice(&e_index);
            }
        }
        self.srtcp_index = index + 1;
        Ok(sealed)
    }

    /// The SRTCP index the next [`protect_rtcp`](Self::protect_rtcp) uses.
    pub fn srtcp_index(&self) -> u32 {
        self.srtcp_index
    }

    /// Sets the SRTCP index the next [`protect_rtcp`](Self::protect_rtcp) uses (at most
    /// 2^31 - 1). Never go back to an index already used with these keys.
    pub fn set_srtcp_index(&mut self, next: u32) -> Result<(), SrtpError> {
        if next > MAX_SRTCP_INDEX {
            return Err(SrtpError::IndexExhausted);
        }
        self.srtcp_index = next;
        Ok(())
    }
}

impl SrtpRx {
    /// Opens the SRTCP packet `buf[..len]` in place: checks the tag and the replay window
    /// (per sender SSRC), decrypts if the E flag is set; returns the plaintext compound
    /// length.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let available = buf.len();
        let pkt = buf.get_mut(..len).ok_or(SrtpError::BufferTooSmall {
            needed: len,
            available,
        })?;
        let overhead = self.profile().rtcp_overhead();
        if len < RTCP_CLEAR + overhead {
            return Err(SrtpError::Malformed(
                "SRTCP shorter than header and trailer",
            ));
        }
        let ssrc = rtcp_ssrc(pkt)?;
        let body_end = len - overhead;
        // CM: ... || E+index || tag; GCM: ... || tag || E+index.
        let index_at = match self.rtcp {
            Cipher::Cm(_) => body_end,
            Cipher::Gcm(_) => len - 4,
        };
        let mut e_index = [0; 4];
        e_index.copy_from_slice(&pkt[index_at..index_at + 4]);
        let word = u32::from_be_bytes(e_index);
        let encrypted = word & E_FLAG != 0;
        let index = word & MAX_SRTCP_INDEX;
        // RFC 3711 §3.3.2: a cheap replay check before the crypto, the window moves after.
        self.replay.check(ssrc, index)?;
        match &self.rtcp {
            Cipher::Cm(cm) => {
                let (authenticated, tag) = pkt.split_at_mut(len - CM_TAG_LEN);
                cm.verify(&[authenticated], tag)?;
                if encrypted {
                    cm.apply_keystream(ssrc, u64::from(index), &mut pkt[RTCP_CLEAR..body_end])?;
                }
            }
            Cipher::Gcm(gcm) => {
                let nonce = gcm.rtcp_nonce(ssrc, index);
                let mut tag = [0; GCM_TAG_LEN];
                tag.copy_from_slice(&pkt[body_end..body_end + GCM_TAG_LEN]);
                let opened = if encrypted {
                    let (clear, rest) = pkt.split_at_mut(RTCP_CLEAR);
                    let aad = gcm_rtcp_aad(clear, e_index);
                    let body = &mut rest[..body_end - RTCP_CLEAR];
                    gcm.aead
                        .open_in_place_separate_tag(nonce, Aad::from(aad), &tag, body)
                        .map(|_| ())
                } else {
                    // RFC 7714 §9.3: unencrypted SRTCP authenticates the whole packet
                    // || E + index. Move the index word next to the packet (the tag is
                    // copied out) so the AAD is contiguous.
                    pkt.copy_within(index_at..index_at + 4, body_end);
                    gcm.aead
                        .open_in_place_separate_tag(
                            nonce,
                            Aad::from(&pkt[..body_end + 4]),
                            &tag,
                            &mut [],
                        )
                        .map(|_| ())
                };
                opened.map_err(|_| SrtpError::AuthenticationFailed)?;
            }
        }
        self.replay.accept(ssrc, index);
        Ok(body_end)
    }
}

/// RFC 7714 §9.1: AAD = the first 8 octets || E flag + SRTCP index.
fn gcm_rtcp_aad(clear: &[u8], e_index: [u8; 4]) -> [u8; 12] {
    let mut aad = [0; 12];
    aad[..RTCP_CLEAR].copy_from_slice(&clear[..RTCP_CLEAR]);
    aad[RTCP_CLEAR..].copy_from_slice(&e_index);
    aad
}

/// RFC 3550 §6.4: version 2, and the first packet's sender SSRC (octets 4..8).
fn rtcp_ssrc(pkt: &[u8]) -> Result<u32, SrtpError> {
    let head = pkt
        .get(..RTCP_CLEAR)
        .ok_or(SrtpError::Malformed("RTCP shorter than its header"))?;
    if head[0] >> 6 != 2 {
        return Err(SrtpError::Malformed("RTCP version is not 2"));
    }
    Ok(u32::from_be_bytes([head[4], head[5], head[6], head[7]]))
}

/// How many sender SSRCs the SRTCP replay check remembers (least recently seen leaves).
const REPLAY_SSRCS: usize = 8;
/// RFC 3711 §3.3.2: the replay window, at least 64 packets.
const REPLAY_WINDOW: u32 = 64;

#[derive(Clone, Copy, Default)]
struct ReplaySlot {
    ssrc: u32,
    highest: u32,
    /// Bit n: index `highest - n` was seen.
    seen: u64,
    last_used: u64,
    used: bool,
}

/// RFC 3711 §3.3.2 replay lists for SRTCP, one 64-packet window per sender SSRC, in a
/// fixed table (no allocation). An SSRC pushed out of the table starts afresh.
#[derive(Clone, Default)]
pub(crate) struct RtcpReplay {
    slots: [ReplaySlot; REPLAY_SSRCS],
    clock: u64,
}

impl RtcpReplay {
    fn slot(&self, ssrc: u32) -> Option<usize> {
        self.slots.iter().position(|s| s.used && s.ssrc == ssrc)
    }

    pub(crate) fn check(&self, ssrc: u32, index: u32) -> Result<(), SrtpError> {
        let Some(i) = self.slot(ssrc) else {
            return Ok(());
        };
        let s = &self.slots[i];
        if index > s.highest {
            return Ok(());
        }
        let behind = s.highest - index;
        if behind >= REPLAY_WINDOW || s.seen & (1 << behind) != 0 {
            return Err(SrtpError::Replayed);
        }
        Ok(())
    }

    pub(crate) fn accept(&mut self, ssrc: u32, index: u32) {
        self.clock += 1;
        let i = match self.slot(ssrc) {
            Some(i) => i,
            None => {
                let i = self
                    .slots
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| (s.used, s.last_used))
                    .map_or(0, |(i, _)| i);
                self.slots[i] = ReplaySlot {
                    ssrc,
                    highest: index,
                    seen: 0,
                    last_used: 0,
                    used: true,
                };
                i
            }
        };
        let s = &mut self.slots[i];
        s.last_used = self.clock;
        if index > s.highest {
            let ahead = index - s.highest;
            s.seen = if ahead >= REPLAY_WINDOW {
                0
            } else {
                s.seen << ahead
            };
            s.highest = index;
        }
        s.seen |= 1 << (s.highest - index);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::keys::SessionKeys;
    use crate::tests_util::{hex, RFC7714_KEY_128, RFC7714_KEY_256, RFC7714_SALT};
    use crate::SrtpProfile;

    /// RFC 7714 §17's SRTCP packet: SR from SSRC "Mars".
    const RTCP: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
                        4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef";

    fn kat(profile: SrtpProfile, key: &str, sealed: &str, authenticated_only: &str) {
        let keys = SessionKeys::given(profile, &hex(key), &[], &hex(RFC7714_SALT));
        let mut tx = SrtpTx::from_session_keys(&keys).unwrap();
        let plain = hex(RTCP);
        let want = hex(sealed);
        tx.set_srtcp_index(0x5d4).unwrap();
        let mut buf = plain.clone();
        buf.resize(plain.len() + 20, 0);
        let n = tx.protect_rtcp(&mut buf, plain.len()).unwrap();
        assert_eq!(buf[..n], want[..]);
        assert_eq!(tx.srtcp_index(), 0x5d5);

        let mut rx = SrtpRx::from_session_keys(&keys).unwrap();
        assert_eq!(rx.unprotect_rtcp(&mut buf, n).unwrap(), plain.len());
        assert_eq!(buf[..plain.len()], plain[..]);

        // RFC 7714 §17.1.2 / §17.2.2: the same packet with E = 0, authenticated only.
        let mut rx = SrtpRx::from_session_keys(&keys).unwrap();
        let mut buf = hex(authenticated_only);
        let n = buf.len();
        assert_eq!(rx.unprotect_rtcp(&mut buf, n).unwrap(), plain.len());
        assert_eq!(buf[..plain.len()], plain[..]);
        let mut rx = SrtpRx::from_session_keys(&keys).unwrap();
        let mut buf = hex(authenticated_only);
        buf[20] ^= 1;
        assert_eq!(
            rx.unprotect_rtcp(&mut buf, n),
            Err(SrtpError::AuthenticationFailed)
        );
    }

    /// RFC 7714 §17.1: AEAD_AES_128_GCM SRTCP, index 0x5d4.
    #[test]
    fn rfc7714_17_aes_128_gcm_rtcp() {
        kat(
            SrtpProfile::AeadAes128Gcm,
            RFC7714_KEY_128,
            "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7
             6c06f32d c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458
             96cf4d2f c5abf872 45d9eade 800005d4",
            "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
             4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef 841dd968
             3dd78ec9 2ae58790 125f62b3 000005d4",
        );
    }

    /// RFC 7714 §17.2: AEAD_AES_256_GCM SRTCP, index 0x5d4.
    #[test]
    fn rfc7714_17_aes_256_gcm_rtcp() {
        kat(
            SrtpProfile::AeadAes256Gcm,
            RFC7714_KEY_256,
            "81c8000d 4d617273 d50ae4d1 f5ce5d30 4ba297e4 7d470c28 2c3ece5d
             bffe0a50 a2eaa5c1 110555be 8415f658 c61de047 6f1b6fad 1d1eb30c
             4446839f 57ff6f6c b26ac3be 800005d4",
            "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
             4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef 91db4afb
             feee5a97 8fab4393 ed2615fe 000005d4",
        );
    }

    #[test]
    fn replay_window() {
        let mut r = RtcpReplay::default();
        r.check(1, 10).unwrap();
        r.accept(1, 10);
        assert_eq!(r.check(1, 10), Err(SrtpError::Replayed));
        r.check(1, 9).unwrap();
        r.check(2, 10).unwrap();
        r.accept(1, 100);
        assert_eq!(r.check(1, 36), Err(SrtpError::Replayed));
        r.check(1, 37).unwrap();
        r.accept(1, 37);
        assert_eq!(r.check(1, 37), Err(SrtpError::Replayed));
        // Nine SSRCs: the least recently seen one is forgotten, the others kept.
        for ssrc in 2..=9 {
            r.accept(ssrc, 5);
        }
        r.check(1, 100).unwrap();
        assert_eq!(r.check(9, 5), Err(SrtpError::Replayed));
    }
}
