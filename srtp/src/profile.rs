//! The SRTP protection profiles Chorus speaks, with their key, salt and tag sizes.
//!
//! The three profiles browsers negotiate through DTLS-SRTP (RFC 5764 §4.1.2, RFC 7714 §14.2):
//! AES-128 counter mode with an 80-bit HMAC-SHA1 tag (RFC 3711), and AES-GCM with a 128-
//! or 256-bit key and a 128-bit tag (RFC 7714).

use std::fmt;

/// A negotiated SRTP protection profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpProfile {
    /// `SRTP_AES128_CM_HMAC_SHA1_80` (RFC 5764 §4.1.2): AES-128 in counter mode, HMAC-SHA1
    /// tag truncated to 80 bits.
    Aes128CmSha1_80,
    /// `SRTP_AEAD_AES_128_GCM` (RFC 7714 §14.2).
    AeadAes128Gcm,
    /// `SRTP_AEAD_AES_256_GCM` (RFC 7714 §14.2).
    AeadAes256Gcm,
}

impl SrtpProfile {
    /// Every profile, in no particular order of preference.
    pub const ALL: [SrtpProfile; 3] = [
        SrtpProfile::Aes128CmSha1_80,
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm,
    ];

    /// Length of the master key (and of the session encryption keys) in bytes.
    pub const fn master_key_len(self) -> usize {
        match self {
            SrtpProfile::Aes128CmSha1_80 | SrtpProfile::AeadAes128Gcm => 16,
            SrtpProfile::AeadAes256Gcm => 32,
        }
    }

    /// Length of the master salt (and of the session salts) in bytes: 112 bits for AES-CM
    /// (RFC 3711 §8.2), 96 bits for AES-GCM (RFC 7714 §12).
    pub const fn master_salt_len(self) -> usize {
        match self {
            SrtpProfile::Aes128CmSha1_80 => 14,
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => 12,
        }
    }

    /// Length of the authentication tag in bytes.
    pub const fn tag_len(self) -> usize {
        match self {
            // RFC 3711 §5.2: HMAC-SHA1 truncated to 80 bits.
            SrtpProfile::Aes128CmSha1_80 => 10,
            // RFC 7714 §6: a 16-octet tag.
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => 16,
        }
    }

    /// Bytes [`SrtpTx::protect_rtp`](crate::SrtpTx::protect_rtp) appends: the tag (no MKI).
    pub const fn rtp_overhead(self) -> usize {
        self.tag_len()
    }

    /// Bytes [`SrtpTx::protect_rtcp`](crate::SrtpTx::protect_rtcp) appends: the tag and the
    /// 4-byte E flag + SRTCP index.
    pub const fn rtcp_overhead(self) -> usize {
        self.tag_len() + 4
    }

    /// Whether this is an AEAD (AES-GCM) profile.
    pub const fn is_aead(self) -> bool {
        matches!(
            self,
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm
        )
    }

    /// Length of the DTLS exporter output this profile needs (RFC 5764 §4.2):
    /// two keys and two salts.
    pub const fn keying_material_len(self) -> usize {
        2 * (self.master_key_len() + self.master_salt_len())
    }

    /// The IANA name (RFC 5764 §4.1.2, RFC 7714 §14.2).
    pub const fn name(self) -> &'static str {
        match self {
            SrtpProfile::Aes128CmSha1_80 => "SRTP_AES128_CM_HMAC_SHA1_80",
            SrtpProfile::AeadAes128Gcm => "SRTP_AEAD_AES_128_GCM",
            SrtpProfile::AeadAes256Gcm => "SRTP_AEAD_AES_256_GCM",
        }
    }

    /// The profile with this IANA name, compared case-insensitively.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for SrtpProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_case_insensitively() {
        for p in SrtpProfile::ALL {
            assert_eq!(SrtpProfile::from_name(p.name()), Some(p));
            assert_eq!(SrtpProfile::from_name(&p.name().to_lowercase()), Some(p));
        }
        assert_eq!(SrtpProfile::from_name("SRTP_AES128_CM_HMAC_SHA1_32"), None);
        assert_eq!(SrtpProfile::from_name(""), None);
    }

    #[test]
    fn sizes() {
        use SrtpProfile::*;
        assert_eq!(Aes128CmSha1_80.keying_material_len(), 60);
        assert_eq!(AeadAes128Gcm.keying_material_len(), 56);
        assert_eq!(AeadAes256Gcm.keying_material_len(), 88);
        assert_eq!(Aes128CmSha1_80.rtp_overhead(), 10);
        assert_eq!(Aes128CmSha1_80.rtcp_overhead(), 14);
        assert_eq!(AeadAes256Gcm.rtp_overhead(), 16);
        assert_eq!(AeadAes256Gcm.rtcp_overhead(), 20);
    }
}
