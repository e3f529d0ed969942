//! str0m's own SRTP ciphers, built when first used.
//!
//! str0m 0.25 gives every session two SRTP contexts, one per direction, and each
//! creates an encrypting and a decrypting cipher for RTP and for RTCP (str0m
//! `src/rtp/srtp.rs` ~900–990): eight aws-lc cipher states per session, ~580 bytes
//! each for AES-GCM. A Chorus session uses three of them: str0m decrypts the
//! microphone's SRTP and SRTCP and encrypts the receiver reports it sends; the slots'
//! SRTP and SRTCP are Chorus's own contexts (`crate::rtp`). The [`SrtpProvider`] here
//! hands str0m ciphers that hold only their key until the first packet, then build the
//! real cipher from str0m's default (aws-lc-rs) provider and pass every call through.
//! Behaviour is unchanged; the five ciphers a session never uses cost 56 bytes each.

use std::fmt;
use std::sync::OnceLock;

use str0m::crypto::{AeadAes128GcmCipher, AeadAes256GcmCipher, Aes128CmSha1_80Cipher};
use str0m::crypto::{CryptoError, CryptoProvider, SrtpProvider};
use str0m::crypto::{SupportedAeadAes128Gcm, SupportedAeadAes256Gcm, SupportedAes128CmSha1_80};

/// The SRTP provider str0m's sessions get from [`crate::capture::build_rtc`].
pub(crate) fn provider() -> &'static dyn SrtpProvider {
    static LAZY: LazySrtp = LazySrtp;
    &LAZY
}

/// str0m's default (aws-lc-rs) provider, which builds the real ciphers.
pub(crate) fn default_provider() -> &'static CryptoProvider {
    static DEFAULT: OnceLock<CryptoProvider> = OnceLock::new();
    DEFAULT.get_or_init(str0m::crypto::from_feature_flags)
}

fn inner() -> &'static dyn SrtpProvider {
    default_provider().srtp_provider
}

#[derive(Debug)]
struct LazySrtp;

impl SrtpProvider for LazySrtp {
    fn aes_128_cm_sha1_80(&self) -> &'static dyn SupportedAes128CmSha1_80 {
        static FACTORY: LazyFactory = LazyFactory;
        &FACTORY
    }

    fn aead_aes_128_gcm(&self) -> &'static dyn SupportedAeadAes128Gcm {
        static FACTORY: LazyFactory = LazyFactory;
        &FACTORY
    }

    fn aead_aes_256_gcm(&self) -> &'static dyn SupportedAeadAes256Gcm {
        static FACTORY: LazyFactory = LazyFactory;
        &FACTORY
    }

    fn srtp_aes_128_ecb_round(&self, key: &[u8], input: &[u8], output: &mut [u8]) {
        inner().srtp_aes_128_ecb_round(key, input, output)
    }

    fn srtp_aes_256_ecb_round(&self, key: &[u8], input: &[u8], output: &mut [u8]) {
        inner().srtp_aes_256_ecb_round(key, input, output)
    }
}

/// Makes [`Lazy`] ciphers of every profile.
#[derive(Debug)]
struct LazyFactory;

impl SupportedAes128CmSha1_80 for LazyFactory {
    fn create_cipher(&self, key: [u8; 16], encrypt: bool) -> Box<dyn Aes128CmSha1_80Cipher> {
        Box::new(Lazy::<[u8; 16], dyn Aes128CmSha1_80Cipher>::new(
            key, encrypt,
        ))
    }
}

impl SupportedAeadAes128Gcm for LazyFactory {
    fn create_cipher(&self, key: [u8; 16], encrypt: bool) -> Box<dyn AeadAes128GcmCipher> {
        Box::new(Lazy::<[u8; 16], dyn AeadAes128GcmCipher>::new(key, encrypt))
    }
}

impl SupportedAeadAes256Gcm for LazyFactory {
    fn create_cipher(&self, key: [u8; 32], encrypt: bool) -> Box<dyn AeadAes256GcmCipher> {
        Box::new(Lazy::<[u8; 32], dyn AeadAes256GcmCipher>::new(key, encrypt))
    }
}

/// A key, and the real cipher once a packet needed it.
struct Lazy<K, C: ?Sized> {
    key: K,
    encrypt: bool,
    cipher: Option<Box<C>>,
}

impl<K, C: ?Sized> Lazy<K, C> {
    fn new(key: K, encrypt: bool) -> Self {
        Lazy {
            key,
            encrypt,
            cipher: None,
        }
    }
}

impl<K, C: ?Sized> fmt::Debug for Lazy<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lazy")
            .field("encrypt", &self.encrypt)
            .field("built", &self.cipher.is_some())
            .finish_non_exhaustive()
    }
}

impl Lazy<[u8; 16], dyn Aes128CmSha1_80Cipher> {
    fn cipher(&mut self) -> &mut dyn Aes128CmSha1_80Cipher {
        let (key, encrypt) = (self.key, self.encrypt);
        self.cipher
            .get_or_insert_with(|| inner().aes_128_cm_sha1_80().create_cipher(key, encrypt))
            .as_mut()
    }
}

impl Aes128CmSha1_80Cipher for Lazy<[u8; 16], dyn Aes128CmSha1_80Cipher> {
    fn encrypt(
        &mut self,
        iv: &[u8; 16],
        input: &[u8],
        output: &mut [u8],
    ) -> Result<(), CryptoError> {
        self.cipher().encrypt(iv, input, output)
    }

    fn decrypt(
        &mut self,
        iv: &[u8; 16],
        input: &[u8],
        output: &mut [u8],
    ) -> Result<(), CryptoError> {
        self.cipher().decrypt(iv, input, output)
    }
}

/// The two AEAD profiles differ only in key size and factory.
macro_rules! lazy_aead {
    ($key:ty, $cipher:ident, $factory:ident) => {
        impl Lazy<$key, dyn $cipher> {
            fn cipher(&mut self) -> &mut dyn $cipher {
                let (key, encrypt) = (self.key, self.encrypt);
                self.cipher
                    .get_or_insert_with(|| inner().$factory().create_cipher(key, encrypt))
                    .as_mut()
            }
        }

        impl $cipher for Lazy<$key, dyn $cipher> {
            fn encrypt(
                &mut self,
                iv: &[u8; 12],
                aad: &[u8],
                input: &[u8],
                output: &mut [u8],
            ) -> Result<(), CryptoError> {
                self.cipher().encrypt(iv, aad, input, output)
            }

            fn decrypt(
                &mut self,
                iv: &[u8; 12],
                aads: &[&[u8]],
                input: &[u8],
                output: &mut [u8],
            ) -> Result<usize, CryptoError> {
                self.cipher().decrypt(iv, aads, input, output)
            }
        }
    };
}

lazy_aead!([u8; 16], AeadAes128GcmCipher, aead_aes_128_gcm);
lazy_aead!([u8; 32], AeadAes256GcmCipher, aead_aes_256_gcm);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A lazy cipher seals and opens exactly as the real one does, and builds nothing
    /// until used.
    #[test]
    fn lazy_ciphers_match_the_real_ones() {
        let key = [7u8; 32];
        let iv = [3u8; 12];
        let plain = [0x42u8; 40];
        let mut lazy_enc = provider().aead_aes_256_gcm().create_cipher(key, true);
        assert!(format!("{lazy_enc:?}").contains("built: false"));
        let mut real_enc = inner().aead_aes_256_gcm().create_cipher(key, true);
        let (mut a, mut b) = ([0u8; 56], [0u8; 56]);
        lazy_enc
            .encrypt(&iv, b"twelve-bytes", &plain, &mut a)
            .unwrap();
        real_enc
            .encrypt(&iv, b"twelve-bytes", &plain, &mut b)
            .unwrap();
        assert_eq!(a, b);
        assert!(format!("{lazy_enc:?}").contains("built: true"));
        let mut lazy_dec = provider().aead_aes_256_gcm().create_cipher(key, false);
        let mut out = [0u8; 56];
        let n = lazy_dec
            .decrypt(&iv, &[b"twelve-bytes"], &a, &mut out)
            .unwrap();
        assert_eq!(&out[..n], &plain);

        let key = [9u8; 16];
        let mut lazy = provider().aes_128_cm_sha1_80().create_cipher(key, true);
        let mut real = inner().aes_128_cm_sha1_80().create_cipher(key, true);
        let (mut a, mut b) = ([0u8; 40], [0u8; 40]);
        lazy.encrypt(&[1u8; 16], &plain, &mut a).unwrap();
        real.encrypt(&[1u8; 16], &plain, &mut b).unwrap();
        assert_eq!(a, b);

        let mut lazy = provider().aead_aes_128_gcm().create_cipher(key, true);
        let mut real = inner().aead_aes_128_gcm().create_cipher(key, true);
        let (mut a, mut b) = ([0u8; 56], [0u8; 56]);
        lazy.encrypt(&iv, b"twelve-bytes", &plain, &mut a).unwrap();
        real.encrypt(&iv, b"twelve-bytes", &plain, &mut b).unwrap();
        assert_eq!(a, b);
    }
}
