//! Keys: the master keys a DTLS-SRTP handshake exports (RFC 5764 §4.2) and the session
//! keys derived from them (RFC 3711 §4.3, RFC 7714 §11).
//!
//! - [`MasterKey`]: one direction's master key and salt, fixed arrays, no heap.
//! - [`DtlsSrtpKeys`]: both directions, split out of the exporter output; hands out the
//!   [`SrtpTx`] that seals with our half and the [`SrtpRx`] that opens the peer's.
//! - `SessionKeys` (crate-private): the six derived keys one context uses.

use std::fmt;

use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128, AES_256};
use aws_lc_rs::iv::FixedLength;

use crate::{SrtpError, SrtpProfile, SrtpRx, SrtpTx};

/// The longest master key (AES-256).
const MAX_KEY: usize = 32;
/// The longest master salt (AES-CM's 112 bits).
const MAX_SALT: usize = 14;
/// HMAC-SHA1 session authentication key length, n_a (RFC 3711 §8.2: 160 bits).
pub(crate) const AUTH_KEY_LEN: usize = 20;

/// One direction's SRTP master key and master salt.
///
/// `Debug` does not print the key material.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    profile: SrtpProfile,
    key: [u8; MAX_KEY],
    salt: [u8; MAX_SALT],
}

impl MasterKey {
    /// A master key for `profile`: `key` must be [`SrtpProfile::master_key_len`] bytes and
    /// `salt` [`SrtpProfile::master_salt_len`] bytes.
    pub fn new(profile: SrtpProfile, key: &[u8], salt: &[u8]) -> Result<Self, SrtpError> {
        let bad = |what, expected, got| SrtpError::BadKeyLength {
            profile,
            what,
            expected,
            got,
        };
        if key.len() != profile.master_key_len() {
            return Err(bad("master key", profile.master_key_len(), key.len()));
        }
        if salt.len() != profile.master_salt_len() {
            return Err(bad("master salt", profile.master_salt_len(), salt.len()));
        }
        let mut k = [0; MAX_KEY];
        k[..key.len()].copy_from_slice(key);
        let mut s = [0; MAX_SALT];
        s[..salt.len()].copy_from_slice(salt);
        Ok(MasterKey {
            profile,
            key: k,
            salt: s,
        })
    }

    /// The profile this key is for.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// The master key bytes.
    pub fn key(&self) -> &[u8] {
        &self.key[..self.profile.master_key_len()]
    }

    /// The master salt bytes.
    pub fn salt(&self) -> &[u8] {
        &self.salt[..self.profile.master_salt_len()]
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// Both directions' master keys from one DTLS-SRTP handshake.
#[derive(Clone, PartialEq, Eq)]
pub struct DtlsSrtpKeys {
    profile: SrtpProfile,
    client: MasterKey,
    server: MasterKey,
}

impl DtlsSrtpKeys {
    /// Splits the DTLS exporter output (label "EXTRACTOR-dtls_srtp",
    /// [`SrtpProfile::keying_material_len`] bytes).
    pub fn from_exporter(profile: SrtpProfile, material: &[u8]) -> Result<Self, SrtpError> {
        let (k, s) = (profile.master_key_len(), profile.master_salt_len());
        if material.len() != profile.keying_material_len() {
            return Err(SrtpError::BadKeyLength {
                profile,
                what: "keying material",
                expected: profile.keying_material_len(),
                got: material.len(),
            });
        }
        // RFC 5764 §4.2: client_write_SRTP_master_key | server_write_SRTP_master_key |
        // client_write_SRTP_master_salt | server_write_SRTP_master_salt.
        let (client_key, rest) = material.split_at(k);
        let (server_key, rest) = rest.split_at(k);
        let (client_salt, server_salt) = rest.split_at(s);
        Ok(DtlsSrtpKeys {
            profile,
            client: MasterKey::new(profile, client_key, client_salt)?,
            server: MasterKey::new(profile, server_key, server_salt)?,
        })
    }

    /// The negotiated profile.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// The DTLS client's write key (what the client sends with).
    pub fn client(&self) -> &MasterKey {
        &self.client
    }

    /// The DTLS server's write key (what the server sends with).
    pub fn server(&self) -> &MasterKey {
        &self.server
    }

    /// The sealing context for what we send: our own half (the client's if we are the
    /// DTLS client, else the server's; Chorus answers passive, so it is the server).
    pub fn tx(&self, dtls_client: bool) -> Result<SrtpTx, SrtpError> {
        SrtpTx::new(self.profile, self.own(dtls_client))
    }

    /// The opening context for what the peer sends: the other half.
    pub fn rx(&self, dtls_client: bool) -> Result<SrtpRx, SrtpError> {
        SrtpRx::new(self.profile, self.own(!dtls_client))
    }

    /// [`DtlsSrtpKeys::rx`] for the peer's SRTCP only.
    pub fn rtcp_rx(&self, dtls_client: bool) -> Result<SrtpRx, SrtpError> {
        SrtpRx::new_rtcp_only(self.profile, self.own(!dtls_client))
    }

    fn own(&self, dtls_client: bool) -> &MasterKey {
        if dtls_client {
            &self.client
        } else {
            &self.server
        }
    }
}

impl fmt::Debug for DtlsSrtpKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsSrtpKeys")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// The session keys of one of SRTP or SRTCP: encryption key, authentication key (AES-CM
/// only) and salt.
#[derive(Clone)]
pub(crate) struct SessionKeySet {
    pub(crate) enc: [u8; MAX_KEY],
    pub(crate) auth: [u8; AUTH_KEY_LEN],
    pub(crate) salt: [u8; MAX_SALT],
}

/// All six session keys of one crypto context.
#[derive(Clone)]
pub(crate) struct SessionKeys {
    pub(crate) profile: SrtpProfile,
    pub(crate) rtp: SessionKeySet,
    pub(crate) rtcp: SessionKeySet,
}

impl SessionKeys {
    /// RFC 3711 §4.3: derive the session keys with the AES-CM PRF, key_derivation_rate 0.
    pub(crate) fn derive(master: &MasterKey) -> Result<Self, SrtpError> {
        let profile = master.profile();
        // RFC 3711 §4.3.3 / RFC 7714 §11: the PRF is AES-CM keyed with the master key, of
        // the master key's size (AES-256 for AEAD_AES_256_GCM).
        let algorithm = match profile.master_key_len() {
            32 => &AES_256,
            _ => &AES_128,
        };
        let prf = EncryptingKey::ctr(UnboundCipherKey::new(algorithm, master.key())?)?;
        let set = |first_label: u8| -> Result<SessionKeySet, SrtpError> {
            let mut out = SessionKeySet {
                enc: [0; MAX_KEY],
                auth: [0; AUTH_KEY_LEN],
                salt: [0; MAX_SALT],
            };
            let key_len = profile.master_key_len();
            prf_fill(&prf, master.salt(), first_label, &mut out.enc[..key_len])?;
            // RFC 7714 §11: AEAD profiles have no authentication key.
            if !profile.is_aead() {
                prf_fill(&prf, master.salt(), first_label + 1, &mut out.auth)?;
            }
            let salt_len = profile.master_salt_len();
            prf_fill(
                &prf,
                master.salt(),
                first_label + 2,
                &mut out.salt[..salt_len],
            )?;
            Ok(out)
        };
        // RFC 3711 §4.3.1 / §4.3.2: labels 0x00..0x02 for SRTP, 0x03..0x05 for SRTCP.
        Ok(SessionKeys {
            profile,
            rtp: set(0x00)?,
            rtcp: set(0x03)?,
        })
    }

    /// Session keys given directly (RFC 7714 §16/§17 vectors, which skip the KDF): the same
    /// key and salt for SRTP and SRTCP.
    #[cfg(test)]
    pub(crate) fn given(profile: SrtpProfile, enc: &[u8], auth: &[u8], salt: &[u8]) -> Self {
        let mut set = SessionKeySet {
            enc: [0; MAX_KEY],
            auth: [0; AUTH_KEY_LEN],
            salt: [0; MAX_SALT],
        };
        set.enc[..enc.len()].copy_from_slice(enc);
        set.auth[..auth.len()].copy_from_slice(auth);
        set.salt[..salt.len()].copy_from_slice(salt);
        SessionKeys {
            profile,
            rtp: set.clone(),
            rtcp: set,
        }
    }
}

/// RFC 3711 §4.3.1 with kdr = 0 (so r = 0): x = (label << 48) XOR master_salt, and the
/// output is the AES-CM keystream of IV x * 2^16. The label lands in byte 7 of the
/// 14-byte salt; RFC 7714 §11's 96-bit salt is zero-padded to 112 bits on the right
/// (as libsrtp and browsers do).
fn prf_fill(
    prf: &EncryptingKey,
    master_salt: &[u8],
    label: u8,
    out: &mut [u8],
) -> Result<(), SrtpError> {
    let mut iv = [0u8; 16];
    iv[..master_salt.len()].copy_from_slice(master_salt);
    iv[7] ^= label;
    out.fill(0);
    prf.less_safe_encrypt(out, EncryptionContext::Iv128(FixedLength::from(iv)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::tests_util::hex;

    /// RFC 3711 Appendix B.3: key derivation test vectors.
    #[test]
    fn rfc3711_b3_key_derivation() {
        let master = MasterKey::new(
            SrtpProfile::Aes128CmSha1_80,
            &hex("E1F97A0D3E018BE0D64FA32C06DE4139"),
            &hex("0EC675AD498AFEEBB6960B3AABE6"),
        )
        .unwrap();
        let keys = SessionKeys::derive(&master).unwrap();
        assert_eq!(
            keys.rtp.enc[..16],
            hex("C61E7A93744F39EE10734AFE3FF7A087")[..]
        );
        assert_eq!(keys.rtp.salt[..], hex("30CBBC08863D8C85D49DB34A9AE1")[..]);
        assert_eq!(
            keys.rtp.auth[..],
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")[..]
        );
    }

    /// RFC 3711 Appendix B.2: the AES-CM keystream (the PRF with the shifted salt as IV).
    #[test]
    fn rfc3711_b2_aes_cm_keystream() {
        let prf = EncryptingKey::ctr(
            UnboundCipherKey::new(&AES_128, &hex("2B7E151628AED2A6ABF7158809CF4F3C")).unwrap(),
        )
        .unwrap();
        // Label 0 leaves the salt as it is.
        let mut out = [0u8; 48];
        prf_fill(&prf, &hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"), 0, &mut out).unwrap();
        let want = hex(
            "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB
             41E95B3BB0A2E8DD477901E4FCA894C0",
        );
        assert_eq!(out[..], want[..]);
        // The end of the 65282-block segment.
        let mut seg = vec![0u8; 65282 * 16];
        prf_fill(&prf, &hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"), 0, &mut seg).unwrap();
        let tail = hex(
            "EC8CDF7398607CB0F2D21675EA9EA1E4 362B7C3C6773516318A077D7FC5073AE
             6A2CC3787889374FBEB4C81B17BA6C44",
        );
        assert_eq!(seg[seg.len() - 48..], tail[..]);
    }

    #[test]
    fn exporter_layout_and_halves() {
        let p = SrtpProfile::AeadAes128Gcm;
        let material: Vec<u8> = (0..56).collect();
        let keys = DtlsSrtpKeys::from_exporter(p, &material).unwrap();
        assert_eq!(keys.client().key(), &material[0..16]);
        assert_eq!(keys.server().key(), &material[16..32]);
        assert_eq!(keys.client().salt(), &material[32..44]);
        assert_eq!(keys.server().salt(), &material[44..56]);
        assert!(matches!(
            DtlsSrtpKeys::from_exporter(p, &material[..55]),
            Err(SrtpError::BadKeyLength { got: 55, .. })
        ));
        assert!(MasterKey::new(p, &[0; 16], &[0; 14]).is_err());
        assert!(MasterKey::new(p, &[0; 32], &[0; 12]).is_err());
        assert!(!format!("{:?}", keys.client()).contains("key:"));
    }
}
