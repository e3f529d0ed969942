//! Chorus's own SRTP for the streams it sends.
//!
//! Where it sits: the engine forwards a speaker's packet to a subscriber's slot by
//! writing the RTP header itself and sealing it here, without going through str0m's
//! send machinery. str0m keeps ICE, DTLS and the SRTP of what clients send; the DTLS
//! handshake's exported keying material is captured on its way to str0m
//! ([`capture`]) and turned into session keys here (RFC 3711 §4.3, RFC 5764 §4.2).
//!
//! - [`SrtpProfile`]: the negotiated protection profile.
//! - [`keys`]: [`MasterKey`], [`DtlsSrtpKeys`] (RFC 5764 §4.2) and key derivation.
//! - [`SrtpTx`]: seals RTP (in place, no allocation) and SRTCP (with its own index).
//! - [`SrtpRx`]: opens the client's SRTCP (receiver reports for our streams), and SRTP
//!   for tests and tools.
//! - [`capture`]: a str0m crypto provider that reports each session's keys, lets go of
//!   DTLS state after the handshake, and builds str0m's SRTP ciphers on first use.
//!
//! Profiles: `SRTP_AES128_CM_HMAC_SHA1_80` (RFC 3711), `SRTP_AEAD_AES_128_GCM` and
//! `SRTP_AEAD_AES_256_GCM` (RFC 7714), all on aws-lc-rs. All cipher state is built in
//! `new`; sealing and opening never allocate, on the Rust heap
//! (`tests/no_alloc.rs`) nor in aws-lc's C code (`tests/no_alloc_c.rs`).
//!
//! ```
//! use chorus_srtp::{DtlsSrtpKeys, SrtpProfile};
//!
//! let profile = SrtpProfile::AeadAes128Gcm;
//! let material = [7u8; 56]; // from the DTLS exporter
//! let keys = DtlsSrtpKeys::from_exporter(profile, &material)?;
//! let tx = keys.tx(false)?; // we are the DTLS server: seal with the server half
//! let rx = keys.rx(true)?; // the peer's view: it opens with the server half too
//!
//! let mut buf = [0u8; 1500];
//! buf[..12].copy_from_slice(&[0x80, 111, 0, 1, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]);
//! let len = 12 + 80;
//! let sealed = tx.protect_rtp(&mut buf, len, 12, 0)?;
//! assert_eq!(sealed, len + profile.rtp_overhead());
//! assert_eq!(rx.unprotect_rtp(&mut buf, sealed, 0)?, len);
//! # Ok::<(), chorus_srtp::SrtpError>(())
//! ```

#![forbid(unsafe_code)]

pub mod capture;
mod error;
pub mod keys;
mod lazy_ciphers;
mod profile;
mod rtcp;
mod rtp;

pub use error::SrtpError;
pub use keys::{DtlsSrtpKeys, MasterKey};
pub use profile::SrtpProfile;
pub use rtp::{SrtpRx, SrtpTx};

#[cfg(test)]
mod tests_util {
    /// Hex to bytes, whitespace ignored (test vectors as the RFCs print them).
    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s
            .bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .map(|b| match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => b - b'A' + 10,
                _ => panic!("not hex: {b}"),
            })
            .collect();
        digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
    }

    /// RFC 7714 §16/§17: the session keys and salt the vectors use directly.
    pub(crate) const RFC7714_KEY_128: &str = "000102030405060708090a0b0c0d0e0f";
    pub(crate) const RFC7714_KEY_256: &str =
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    pub(crate) const RFC7714_SALT: &str = "517569642070726f2071756f"; // "Quid pro quo"
}
