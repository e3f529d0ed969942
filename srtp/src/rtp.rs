//! SRTP: [`SrtpTx`] seals RTP packets in place, [`SrtpRx`] opens them; both hold the
//! precomputed cipher state of one crypto context (RFC 3711 §3.2) for SRTP and SRTCP.
//!
//! - AES_CM_128_HMAC_SHA1_80: RFC 3711 §3.3 (packet processing), §4.1.1 (counter-mode IV),
//!   §4.2 (HMAC-SHA1 over the packet and the ROC, truncated to 80 bits).
//! - AEAD_AES_128_GCM / AEAD_AES_256_GCM: RFC 7714 §8 (12-octet IV, AAD = the RTP
//!   header, 16-octet tag).
//!
//! The SRTCP half lives in `rtcp.rs`. Nothing here allocates after `new`: the AES key
//! schedules, the GCM contexts and the keyed HMAC state are built once, and sealing
//! only copies them on the stack.

use std::fmt;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128};
use aws_lc_rs::constant_time;
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;

use crate::keys::{MasterKey, SessionKeySet, SessionKeys};
use crate::rtcp::RtcpReplay;
use crate::{SrtpError, SrtpProfile};

/// RFC 3711 §3.1: the fixed RTP header.
const RTP_FIXED_HEADER: usize = 12;
/// RFC 3711 §4.2: the HMAC-SHA1 tag is truncated to 80 bits.
const CM_TAG_LEN: usize = 10;
/// RFC 7714 §8.1: the AES-GCM tag.
const GCM_TAG_LEN: usize = 16;

/// Seals the RTP and RTCP Chorus sends on one DTLS session (one direction, every SSRC).
///
/// `protect_rtp` takes `&self`: the caller supplies the rollover counter, so one context
/// can seal for many streams (and threads, it is `Sync`). Never seal two packets with the
/// same SSRC and index (ROC, SEQ): for GCM that reuses a nonce.
pub struct SrtpTx {
    profile: SrtpProfile,
    pub(crate) rtp: Cipher,
    pub(crate) rtcp: Cipher,
    /// The SRTCP index the next `protect_rtcp` uses (RFC 3711 §3.4; 31 bits).
    pub(crate) srtcp_index: u32,
}

/// Opens what the peer sends on one DTLS session: its SRTCP (with a replay check) and,
/// for tests and tools, its SRTP.
pub struct SrtpRx {
    profile: SrtpProfile,
    /// `None` in a context made for SRTCP only ([`SrtpRx::new_rtcp_only`]).
    pub(crate) rtp: Option<Cipher>,
    pub(crate) rtcp: Cipher,
    pub(crate) replay: RtcpReplay,
}

impl SrtpTx {
    /// A sealing context for `master` (our own half of the DTLS-SRTP keys): derives the
    /// session keys and builds all cipher state now.
    pub fn new(profile: SrtpProfile, master: &MasterKey) -> Result<SrtpTx, SrtpError> {
        let keys = SessionKeys::derive(&checked(profile, master)?)?;
        Self::from_session_keys(&keys)
    }

    pub(crate) fn from_session_keys(keys: &SessionKeys) -> Result<SrtpTx, SrtpError> {
        Ok(SrtpTx {
            profile: keys.profile,
            rtp: Cipher::new(keys.profile, &keys.rtp)?,
            rtcp: Cipher::new(keys.profile, &keys.rtcp)?,
            srtcp_index: 0,
        })
    }

    /// The profile this context seals with.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// Seals the RTP packet `buf[..len]` in place.
    ///
    /// Its header (fixed 12 bytes, CSRCs, extension) is `buf[..header_len]`; SSRC and
    /// sequence number are read from it, `roc` is the rollover counter (extended sequence
    /// number >> 16). Encrypts the payload, writes the tag at `buf[len..]` and returns the
    /// sealed length, `len + profile().rtp_overhead()`.
    ///
    /// Errors, never panics, if `buf` has no room for the tag or `header_len` / `len` do
    /// not fit; `buf` is then unchanged.
    pub fn protect_rtp(
        &self,
        buf: &mut [u8],
        len: usize,
        header_len: usize,
        roc: u32,
    ) -> Result<usize, SrtpError> {
        let sealed = checked_lengths(buf.len(), len, self.profile.rtp_overhead())?;
        if header_len < RTP_FIXED_HEADER || header_len > len {
            return Err(SrtpError::Malformed("RTP header length"));
        }
        let (seq, ssrc) = seq_ssrc(buf);
        let (header, rest) = buf.split_at_mut(header_len);
        let (payload, trailer) = rest.split_at_mut(len - header_len);
        match &self.rtp {
            Cipher::Cm(cm) => {
                // RFC 3711 §3.3: i = 2^16 * ROC + SEQ; encrypt, then authenticate the
                // whole packet followed by the ROC (§4.2).
                cm.apply_keystream(ssrc, srtp_index(roc, seq), payload)?;
                let tag = cm.tag(&[header, payload, &roc.to_be_bytes()]);
                trailer[..CM_TAG_LEN].copy_from_slice(&tag);
            }
            Cipher::Gcm(gcm) => {
                // RFC 7714 §8.1/§8.2: AAD = the header, tag after the ciphertext.
                let nonce = gcm.rtp_nonce(ssrc, roc, seq);
                let tag =
                    gcm.aead
                        .seal_in_place_separate_tag(nonce, Aad::from(&*header), payload)?;
                trailer[..GCM_TAG_LEN].copy_from_slice(tag.as_ref());
            }
        }
        Ok(sealed)
    }
}

impl SrtpRx {
    /// An opening context for `master` (the peer's half of the DTLS-SRTP keys).
    pub fn new(profile: SrtpProfile, master: &MasterKey) -> Result<SrtpRx, SrtpError> {
        let keys = SessionKeys::derive(&checked(profile, master)?)?;
        Self::from_session_keys(&keys)
    }

    /// An opening context for the peer's SRTCP alone (what a sender needs: the
    /// receiver reports on its streams); it opens no SRTP and holds no cipher for it.
    pub fn new_rtcp_only(profile: SrtpProfile, master: &MasterKey) -> Result<SrtpRx, SrtpError> {
        let keys = SessionKeys::derive(&checked(profile, master)?)?;
        Ok(SrtpRx {
            profile: keys.profile,
            rtp: None,
            rtcp: Cipher::new(keys.profile, &keys.rtcp)?,
            replay: RtcpReplay::default(),
        })
    }

    pub(crate) fn from_session_keys(keys: &SessionKeys) -> Result<SrtpRx, SrtpError> {
        Ok(SrtpRx {
            profile: keys.profile,
            rtp: Some(Cipher::new(keys.profile, &keys.rtp)?),
            rtcp: Cipher::new(keys.profile, &keys.rtcp)?,
            replay: RtcpReplay::default(),
        })
    }

    /// The profile this context opens.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// Opens the SRTP packet `buf[..len]` in place (header length parsed from the packet,
    /// `roc` given): checks the tag, decrypts, returns the plaintext RTP length. No replay
    /// check: for tests and tools.
    pub fn unprotect_rtp(&self, buf: &mut [u8], len: usize, roc: u32) -> Result<usize, SrtpError> {
        let available = buf.len();
        let pkt = buf.get_mut(..len).ok_or(SrtpError::BufferTooSmall {
            needed: len,
            available,
        })?;
        let header_len = rtp_header_len(pkt)?;
        let tag_len = self.profile.rtp_overhead();
        let plain_len = len
            .checked_sub(tag_len)
            .filter(|&n| n >= header_len)
            .ok_or(SrtpError::Malformed(
                "SRTP packet shorter than header and tag",
            ))?;
        let (seq, ssrc) = seq_ssrc(pkt);
        let (header, rest) = pkt.split_at_mut(header_len);
        let (payload, tag) = rest.split_at_mut(plain_len - header_len);
        let rtp = self.rtp.as_ref().ok_or(SrtpError::NoRtpCipher)?;
        match rtp {
            Cipher::Cm(cm) => {
                // RFC 3711 §3.3 step 5-6: authenticate first, then decrypt.
                cm.verify(&[header, payload, &roc.to_be_bytes()], tag)?;
                cm.apply_keystream(ssrc, srtp_index(roc, seq), payload)?;
            }
            Cipher::Gcm(gcm) => {
                let nonce = gcm.rtp_nonce(ssrc, roc, seq);
                gcm.aead
                    .open_in_place_separate_tag(nonce, Aad::from(&*header), tag, payload)
                    .map_err(|_| SrtpError::AuthenticationFailed)?;
            }
        }
        Ok(plain_len)
    }
}

impl fmt::Debug for SrtpTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpTx")
            .field("profile", &self.profile)
            .field("srtcp_index", &self.srtcp_index)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for SrtpRx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpRx")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// A master key of the context's profile (its lengths are the profile's).
fn checked(profile: SrtpProfile, master: &MasterKey) -> Result<MasterKey, SrtpError> {
    MasterKey::new(profile, master.key(), master.salt())
}

/// `len` fits `buf_len` and leaves `overhead` bytes after it: returns `len + overhead`.
pub(crate) fn checked_lengths(
    buf_len: usize,
    len: usize,
    overhead: usize,
) -> Result<usize, SrtpError> {
    let needed = len.checked_add(overhead).ok_or(SrtpError::BufferTooSmall {
        needed: usize::MAX,
        available: buf_len,
    })?;
    if needed > buf_len {
        return Err(SrtpError::BufferTooSmall {
            needed,
            available: buf_len,
        });
    }
    Ok(needed)
}

/// RFC 3550 §5.1: sequence number and SSRC. `pkt` holds at least the fixed header.
fn seq_ssrc(pkt: &[u8]) -> (u16, u32) {
    let mut seq = [0; 2];
    let mut ssrc = [0; 4];
    seq.copy_from_slice(&pkt[2..4]);
    ssrc.copy_from_slice(&pkt[8..12]);
    (u16::from_be_bytes(seq), u32::from_be_bytes(ssrc))
}

/// RFC 3711 §3.3.1: the 48-bit packet index i = 2^16 * ROC + SEQ.
fn srtp_index(roc: u32, seq: u16) -> u64 {
    (u64::from(roc) << 16) | u64::from(seq)
}

/// RFC 3550 §5.1/§5.3.1: the header length, fixed part + CSRCs + extension.
pub(crate) fn rtp_header_len(pkt: &[u8]) -> Result<usize, SrtpError> {
    let first = *pkt.first().ok_or(SrtpError::Malformed("empty packet"))?;
    if pkt.len() < RTP_FIXED_HEADER {
        return Err(SrtpError::Malformed("RTP shorter than its fixed header"));
    }
    if first >> 6 != 2 {
        return Err(SrtpError::Malformed("RTP version is not 2"));
    }
    let mut n = RTP_FIXED_HEADER + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        let words = pkt
            .get(n + 2..n + 4)
            .ok_or(SrtpError::Malformed("RTP extension header truncated"))?;
        n += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    if n > pkt.len() {
        return Err(SrtpError::Malformed("RTP header longer than the packet"));
    }
    Ok(n)
}

/// The cipher state of one of SRTP or SRTCP.
///
/// The CM variant's AES key schedule and keyed HMAC state take ~1.7 KB; boxed, they
/// cost only the sessions that use that profile (a context has two ciphers and a
/// participant two contexts: AES-GCM sessions, what browsers pick, stay small).
pub(crate) enum Cipher {
    Cm(Box<CmCipher>),
    Gcm(GcmCipher),
}

impl Cipher {
    fn new(profile: SrtpProfile, keys: &SessionKeySet) -> Result<Self, SrtpError> {
        let key = &keys.enc[..profile.master_key_len()];
        Ok(match profile {
            SrtpProfile::Aes128CmSha1_80 => {
                let mut salt = [0; 14];
                salt.copy_from_slice(&keys.salt[..14]);
                Cipher::Cm(Box::new(CmCipher {
                    ctr: EncryptingKey::ctr(UnboundCipherKey::new(&AES_128, key)?)?,
                    auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &keys.auth),
                    salt,
                }))
            }
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => {
                let algorithm = if profile == SrtpProfile::AeadAes256Gcm {
                    &aead::AES_256_GCM
                } else {
                    &aead::AES_128_GCM
                };
                let mut salt = [0; 12];
                salt.copy_from_slice(&keys.salt[..12]);
                Cipher::Gcm(GcmCipher {
                    aead: LessSafeKey::new(UnboundKey::new(algorithm, key)?),
                    salt,
                })
            }
        })
    }
}

/// AES-128 counter mode + HMAC-SHA1 (RFC 3711).
pub(crate) struct CmCipher {
    ctr: EncryptingKey,
    /// Keyed once; each tag clones the keyed state (a copy, no allocation).
    auth: hmac::Key,
    salt: [u8; 14],
}

impl CmCipher {
    /// RFC 3711 §4.1.1: IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16), then the
    /// keystream XORed onto `data`.
    pub(crate) fn apply_keystream(
        &self,
        ssrc: u32,
        index: u64,
        data: &mut [u8],
    ) -> Result<(), SrtpError> {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&self.salt);
        for (d, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *d ^= s;
        }
        for (d, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *d ^= s;
        }
        if data.is_empty() {
            return Ok(());
        }
        self.ctr
            .less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from(iv)))?;
        Ok(())
    }

    /// RFC 3711 §4.2.1: HMAC-SHA1 over the concatenation of `parts`, truncated to 80 bits.
    pub(crate) fn tag(&self, parts: &[&[u8]]) -> [u8; CM_TAG_LEN] {
        let mut ctx = hmac::Context::with_key(&self.auth);
        for part in parts {
            ctx.update(part);
        }
        let full = ctx.sign();
        let mut tag = [0; CM_TAG_LEN];
        tag.copy_from_slice(&full.as_ref()[..CM_TAG_LEN]);
        tag
    }

    /// Compares the tag in constant time.
    pub(crate) fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> Result<(), SrtpError> {
        constant_time::verify_slices_are_equal(&self.tag(parts), tag)
            .map_err(|_| SrtpError::AuthenticationFailed)
    }
}

/// AES-GCM (RFC 7714).
pub(crate) struct GcmCipher {
    pub(crate) aead: LessSafeKey,
    salt: [u8; 12],
}

impl GcmCipher {
    /// RFC 7714 §8.1: IV = (00 00 || SSRC || ROC || SEQ) XOR salt.
    fn rtp_nonce(&self, ssrc: u32, roc: u32, seq: u16) -> Nonce {
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..10].copy_from_slice(&roc.to_be_bytes());
        iv[10..12].copy_from_slice(&seq.to_be_bytes());
        self.salted(iv)
    }

    /// RFC 7714 §9.1: IV = (00 00 || SSRC || 00 00 || 0 || SRTCP index) XOR salt.
    pub(crate) fn rtcp_nonce(&self, ssrc: u32, index: u32) -> Nonce {
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[8..12].copy_from_slice(&(index & 0x7fff_ffff).to_be_bytes());
        self.salted(iv)
    }

    fn salted(&self, mut iv: [u8; 12]) -> Nonce {
        for (d, s) in iv.iter_mut().zip(self.salt) {
            *d ^= s;
        }
        Nonce::assume_unique_for_key(iv)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::tests_util::{hex, RFC7714_KEY_128, RFC7714_KEY_256, RFC7714_SALT};

    /// RFC 7714 §16.1's RTP packet (12-byte header, 38-byte payload).
    const RTP: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973
                       20646976 69736120 696e2070 61727465 73207472 6573";

    fn kat(profile: SrtpProfile, key: &str, sealed: &str) {
        let keys = SessionKeys::given(profile, &hex(key), &[], &hex(RFC7714_SALT));
        let tx = SrtpTx::from_session_keys(&keys).unwrap();
        let rx = SrtpRx::from_session_keys(&keys).unwrap();
        let plain = hex(RTP);
        let want = hex(sealed);
        let mut buf = plain.clone();
        buf.resize(plain.len() + 16, 0);
        let n = tx.protect_rtp(&mut buf, plain.len(), 12, 0).unwrap();
        assert_eq!(buf[..n], want[..]);
        assert_eq!(rx.unprotect_rtp(&mut buf, n, 0).unwrap(), plain.len());
        assert_eq!(buf[..plain.len()], plain[..]);
    }

    /// RFC 7714 §16.1.1 / §16.1.2: AEAD_AES_128_GCM RTP.
    #[test]
    fn rfc7714_16_aes_128_gcm_rtp() {
        kat(
            SrtpProfile::AeadAes128Gcm,
            RFC7714_KEY_128,
            "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca
             be633bd5 0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1
             6a9152cf 765ee439 0cce",
        );
    }

    /// RFC 7714 §16.2.1 / §16.2.2: AEAD_AES_256_GCM RTP.
    #[test]
    fn rfc7714_16_aes_256_gcm_rtp() {
        kat(
            SrtpProfile::AeadAes256Gcm,
            RFC7714_KEY_256,
            "8040f17b 8041f8d3 5501a0b2 32b1de78 a822fe12 ef9f78fa 332e33aa
             b1801238 9a58e2f3 b50b2a02 76ffae0f 1ba63799 b87b7aa3 db36dfff
             d6b0f9bb 7878d7a7 6c13",
        );
    }

    /// RFC 7714 §16's IV: SSRC 0x5501a0b2, ROC 0, SEQ 0xf17b.
    #[test]
    fn rfc7714_rtp_iv() {
        let keys = SessionKeys::given(
            SrtpProfile::AeadAes128Gcm,
            &hex(RFC7714_KEY_128),
            &[],
            &hex(RFC7714_SALT),
        );
        let Cipher::Gcm(gcm) = Cipher::new(keys.profile, &keys.rtp).unwrap() else {
            panic!("GCM profile")
        };
        let nonce = gcm.rtp_nonce(0x5501_a0b2, 0, 0xf17b);
        assert_eq!(nonce.as_ref()[..], hex("51753c6580c2726f20718414")[..]);
    }

    #[test]
    fn header_len_parses_csrcs_and_extension() {
        let mut pkt = vec![0x80u8 | 0x10 | 2, 96, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4];
        pkt.extend_from_slice(&[0; 8]); // two CSRCs
        pkt.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0]); // one word
        pkt.extend_from_slice(b"payload");
        assert_eq!(rtp_header_len(&pkt).unwrap(), 12 + 8 + 8);
        assert!(rtp_header_len(&pkt[..22]).is_err());
        assert!(rtp_header_len(&[0x80; 11]).is_err());
        assert!(rtp_header_len(&[0x40; 12]).is_err());
    }
}
