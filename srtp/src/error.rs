//! [`SrtpError`]: what sealing, opening and keying can fail with.

use crate::SrtpProfile;

/// An SRTP or SRTCP operation failed. `Copy`, so the hot path can return it freely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SrtpError {
    /// The buffer cannot hold the sealed packet (or the given length exceeds it).
    #[error("buffer too small: {needed} bytes needed, {available} available")]
    BufferTooSmall {
        /// Bytes the operation needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// The packet (or the lengths given for it) does not parse.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The authentication tag does not verify.
    #[error("authentication failed")]
    AuthenticationFailed,
    /// An SRTCP packet whose index was already seen (RFC 3711 §3.3.2).
    #[error("replayed SRTCP index")]
    Replayed,
    /// A key or salt of the wrong length for the profile, or keying material of the
    /// wrong length.
    #[error("{what} for {profile} must be {expected} bytes, got {got}")]
    BadKeyLength {
        /// The profile the key was for.
        profile: SrtpProfile,
        /// "master key", "master salt" or "keying material".
        what: &'static str,
        /// The length the profile needs.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// The 31-bit SRTCP index is used up (RFC 3711 §3.4): re-key before sending more.
    #[error("SRTCP index exhausted: re-key")]
    IndexExhausted,
    /// An SRTCP-only context was asked to open SRTP.
    #[error("this context opens SRTCP only")]
    NoRtpCipher,
    /// The crypto library refused an operation (not expected with valid keys).
    #[error("crypto library error")]
    Crypto,
}

impl From<aws_lc_rs::error::Unspecified> for SrtpError {
    fn from(_: aws_lc_rs::error::Unspecified) -> Self {
        SrtpError::Crypto
    }
}
