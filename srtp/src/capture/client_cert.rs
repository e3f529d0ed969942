//! RSA client certificates, which dimpl 0.9 refuses and OpenSSL-based clients present.
//!
//! A WebRTC peer proves it holds the certificate whose fingerprint its SDP names by
//! signing the DTLS handshake (CertificateVerify, RFC 5246 §7.4.8). Browsers use ECDSA
//! keys; GStreamer's webrtcbin, and other clients built on OpenSSL, use RSA-2048. As a
//! DTLS 1.2 server dimpl asks only for ECDSA certificates (its CertificateRequest names
//! `ecdsa_sign` and ECDSA signature schemes), so such a client sends no certificate and
//! dimpl aborts with `handshake_failure`.
//!
//! Two changes, on the server side, let them in without touching anything else:
//! 1. [`widen_certificate_request`]: the CertificateRequest dimpl sends gains
//!    `rsa_sign` and the RSA signature schemes of [`RSA_SCHEMES`] on its way out
//!    (handshake epoch 0, cleartext). dimpl's transcript keeps its own bytes; a
//!    transcript patch ([`super::Patches`]) makes the hash and the signature verifier
//!    see the bytes the client received, so Finished and CertificateVerify cover
//!    exactly what was on the wire.
//! 2. [`verify_rsa`]: dimpl parses a CertificateVerify of any algorithm and hands it
//!    to the provider's signature verifier; ours checks the RSA ones (PKCS#1 v1.5 and
//!    PSS with SHA-256/384/512, keys of 2,048 to 8,192 bits, aws-lc-rs) and passes
//!    every other one to dimpl's.
//!
//! What is not changed: the server's own certificate and key exchange (ECDSA, ECDHE),
//! the cipher suites, the fingerprint check str0m makes of the peer's certificate, and
//! dimpl's checks of ECDSA signatures. SHA-1, MD5 and RSA keys under 2,048 bits are
//! refused.

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use dimpl::crypto::{HashAlgorithm, SignatureAlgorithm};
use dimpl::{CryptoError, CryptoOperation};
use x509_cert::der::Decode;

use super::handshake_fragments;

/// The RSA signature schemes added to the CertificateRequest (RFC 5246 §7.4.1.4.1 and
/// RFC 8446 §4.2.3 code points): `rsa_pkcs1_sha256/384/512`, then
/// `rsa_pss_rsae_sha256/384/512`.
const RSA_SCHEMES: [u16; 6] = [0x0401, 0x0501, 0x0601, 0x0804, 0x0805, 0x0806];

/// The `rsa_sign` client certificate type (RFC 5246 §7.4.4).
const RSA_SIGN: u8 = 1;

/// The handshake type of a CertificateRequest (RFC 5246 §7.4).
const CERTIFICATE_REQUEST: u8 = 13;

/// A datagram whose CertificateRequest was widened.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Widened {
    /// The datagram as sent.
    pub datagram: Vec<u8>,
    /// dimpl's CertificateRequest as its transcript holds it: the 12-byte DTLS
    /// handshake header (RFC 6347 §4.2.2, fragment offset 0 and the full length) and
    /// the body.
    pub dimpl: Vec<u8>,
    /// The same message as the client received it and hashes it.
    pub sent: Vec<u8>,
}

/// `datagram` with its CertificateRequest, if it carries one whole in a record of epoch
/// 0, accepting RSA certificates too; `None` if it carries none (or one already
/// accepting them, or a fragment of one: dimpl sends it whole in the server's first
/// flight).
pub(super) fn widen_certificate_request(datagram: &[u8]) -> Option<Widened> {
    for f in handshake_fragments(datagram) {
        let Some(data) = f.data.filter(|_| f.msg_type == CERTIFICATE_REQUEST) else {
            continue;
        };
        if f.offset != 0 || data.len() != f.length {
            // dimpl fragments to its MTU: a larger server certificate or a smaller MTU
            // would do this, on every retransmission alike.
            tracing::warn!(
                "CertificateRequest fragmented: RSA client certificates are not accepted in this handshake"
            );
            continue;
        }
        let widened = widen_body(&datagram[data.clone()])?;
        let grown = widened.len() - data.len();
        let mut sent = Vec::with_capacity(12 + widened.len());
        sent.push(CERTIFICATE_REQUEST);
        sent.extend_from_slice(&u24_bytes(widened.len()));
        sent.extend_from_slice(&datagram[f.at + 4..f.at + 6]);
        sent.extend_from_slice(&[0, 0, 0]);
        sent.extend_from_slice(&u24_bytes(widened.len()));
        sent.extend_from_slice(&widened);
        let record_len = u16::try_from(f.record.len() + grown).ok()?;
        let mut out = Vec::with_capacity(datagram.len() + grown);
        out.extend_from_slice(&datagram[..f.record.start - 2]);
        out.extend_from_slice(&record_len.to_be_bytes());
        out.extend_from_slice(&datagram[f.record.start..f.at]);
        out.extend_from_slice(&sent);
        out.extend_from_slice(&datagram[data.end..]);
        return Some(Widened {
            datagram: out,
            dimpl: datagram[f.at..data.end].to_vec(),
            sent,
        });
    }
    None
}

/// A CertificateRequest body (RFC 5246 §7.4.4: certificate_types<1..2^8-1>,
/// supported_signature_algorithms<2..2^16-2>, certificate_authorities<0..2^16-1>)
/// with `rsa_sign` and [`RSA_SCHEMES`] added where missing; `None` if malformed or if
/// nothing is missing.
fn widen_body(body: &[u8]) -> Option<Vec<u8>> {
    let types_len = usize::from(*body.first()?);
    let types = body.get(1..1 + types_len)?;
    let at = 1 + types_len;
    let algs_len = usize::from(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]));
    let algs = body.get(at + 2..at + 2 + algs_len)?;
    let rest = body.get(at + 2 + algs_len..)?;
    if algs_len % 2 != 0 {
        return None;
    }
    let mut new_types = types.to_vec();
    if !types.contains(&RSA_SIGN) {
        new_types.push(RSA_SIGN);
    }
    let mut new_algs = algs.to_vec();
    for scheme in RSA_SCHEMES {
        if !algs.chunks_exact(2).any(|c| c == scheme.to_be_bytes()) {
            new_algs.extend_from_slice(&scheme.to_be_bytes());
        }
    }
    if new_types.len() == types.len() && new_algs.len() == algs.len() {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() + 1 + 2 * RSA_SCHEMES.len());
    out.push(u8::try_from(new_types.len()).ok()?);
    out.extend_from_slice(&new_types);
    out.extend_from_slice(&u16::try_from(new_algs.len()).ok()?.to_be_bytes());
    out.extend_from_slice(&new_algs);
    out.extend_from_slice(rest);
    Some(out)
}

fn u24_bytes(n: usize) -> [u8; 3] {
    let b = (n as u32).to_be_bytes();
    [b[1], b[2], b[3]]
}

/// The aws-lc-rs algorithm for an RSA signature scheme, given as dimpl splits the code
/// point (hash byte, signature byte); `None` for anything else.
fn rsa_algorithm(
    hash: HashAlgorithm,
    sig: SignatureAlgorithm,
) -> Option<&'static dyn VerificationAlgorithm> {
    Some(match (hash.as_u8(), sig.as_u8()) {
        (4, 1) => &signature::RSA_PKCS1_2048_8192_SHA256,
        (5, 1) => &signature::RSA_PKCS1_2048_8192_SHA384,
        (6, 1) => &signature::RSA_PKCS1_2048_8192_SHA512,
        (8, 4) => &signature::RSA_PSS_2048_8192_SHA256,
        (8, 5) => &signature::RSA_PSS_2048_8192_SHA384,
        (8, 6) => &signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

/// `rsaEncryption` (RFC 8017 Appendix C): the key of an RSA certificate, which signs
/// with PKCS#1 v1.5 or PSS ("rsae" schemes).
const RSA_ENCRYPTION: x509_cert::spki::ObjectIdentifier =
    x509_cert::spki::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Verifies an RSA signature of `data` by the key of `cert_der`; `None` if the scheme is
/// not an RSA one (the caller asks dimpl's verifier).
pub(super) fn verify_rsa(
    cert_der: &[u8],
    data: &[u8],
    signature: &[u8],
    hash: HashAlgorithm,
    sig: SignatureAlgorithm,
) -> Option<Result<(), CryptoError>> {
    let algorithm = rsa_algorithm(hash, sig)?;
    Some(verify_with(algorithm, cert_der, data, signature))
}

fn verify_with(
    algorithm: &'static dyn VerificationAlgorithm,
    cert_der: &[u8],
    data: &[u8],
    signature: &[u8],
) -> Result<(), CryptoError> {
    let cert = x509_cert::Certificate::from_der(cert_der)
        .map_err(|_| CryptoError::CertificateParseFailed)?;
    let spki = &cert.tbs_certificate().subject_public_key_info();
    if spki.algorithm.oid != RSA_ENCRYPTION {
        return Err(CryptoError::UnsupportedPublicKeyAlgorithm);
    }
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or(CryptoError::InvalidSubjectPublicKey)?;
    UnparsedPublicKey::new(algorithm, key)
        .verify(data, signature)
        .map_err(|_| CryptoError::OperationFailed(CryptoOperation::VerifySignature))
}

#[cfg(test)]
mod tests {
    use super::super::records;
    use super::*;

    /// A flight like dimpl's: ServerHelloDone-like filler record, then a record with a
    /// CertificateRequest for ECDSA only, then another record.
    fn flight() -> (Vec<u8>, Vec<u8>) {
        let cr_body = [
            1, 64, // ecdsa_sign
            0, 4, 4, 3, 5, 3, // ecdsa_secp256r1_sha256, ecdsa_secp384r1_sha384
            0, 0, // no certificate authorities
        ];
        let mut cr = vec![CERTIFICATE_REQUEST, 0, 0, 10, 0, 3, 0, 0, 0, 0, 0, 10];
        cr.extend_from_slice(&cr_body);
        let mut datagram = Vec::new();
        for (seq, body) in [
            (0u8, vec![2u8; 20]),
            (1, cr.clone()),
            (2, vec![14, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0]),
        ] {
            datagram.extend_from_slice(&[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, seq]);
            datagram.extend_from_slice(&(body.len() as u16).to_be_bytes());
            datagram.extend_from_slice(&body);
        }
        (datagram, cr)
    }

    #[test]
    fn widens_an_ecdsa_only_certificate_request() {
        let (datagram, cr) = flight();
        let widened = widen_certificate_request(&datagram).expect("widened");
        assert_eq!(widened.dimpl, cr);
        let grown = 1 + 2 * RSA_SCHEMES.len();
        assert_eq!(widened.datagram.len(), datagram.len() + grown);
        assert_eq!(widened.sent.len(), cr.len() + grown);
        // Header: same type and message_seq, new length and fragment length.
        let len = (10 + grown) as u8;
        assert_eq!(
            widened.sent[..12],
            [13, 0, 0, len, 0, 3, 0, 0, 0, 0, 0, len]
        );
        assert_eq!(widened.sent[12..15], [2, 64, RSA_SIGN]);
        assert_eq!(widened.sent[15..17], [0, 16]);
        assert_eq!(widened.sent[17..21], [4, 3, 5, 3]);
        assert_eq!(widened.sent[widened.sent.len() - 2..], [0, 0]);
        // Records still parse back to back, the middle one grown, the others as they were.
        let records: Vec<_> = records(&widened.datagram).collect();
        assert_eq!(records.len(), 3);
        assert_eq!(
            &widened.datagram[records[1].body.clone()],
            &widened.sent[..]
        );
        assert_eq!(
            &widened.datagram[records[2].body.clone()],
            &datagram[datagram.len() - 12..]
        );
        // Already wide: left alone.
        assert_eq!(widen_certificate_request(&widened.datagram), None);
    }

    #[test]
    fn leaves_fragments_and_other_records_alone() {
        let (datagram, _) = flight();
        // The CertificateRequest as a fragment (offset 2).
        let mut fragmented = datagram.clone();
        let cr_at = 13 + 20 + 13;
        fragmented[cr_at + 8] = 2;
        assert_eq!(widen_certificate_request(&fragmented), None);
        // An encrypted (epoch 1) record is never touched.
        let mut later = datagram;
        later[33 + 3..33 + 5].copy_from_slice(&[0, 1]);
        assert_eq!(widen_certificate_request(&later), None);
        // Truncated input.
        assert_eq!(widen_certificate_request(&[22, 0xfe]), None);
    }

    /// Made with the `openssl` command line (see `srtp/tests/fixtures/README.md`).
    const CERT: &[u8] = include_bytes!("../../tests/fixtures/rsa2048-cert.der");
    const PKCS1: &[u8] = include_bytes!("../../tests/fixtures/rsa2048-pkcs1-sha256.sig");
    const PSS: &[u8] = include_bytes!("../../tests/fixtures/rsa2048-pss-sha256.sig");
    const WEAK_CERT: &[u8] = include_bytes!("../../tests/fixtures/rsa1024-cert.der");
    const WEAK_PKCS1: &[u8] = include_bytes!("../../tests/fixtures/rsa1024-pkcs1-sha256.sig");
    const MESSAGE: &[u8] = b"the handshake transcript";

    fn rsa(
        hash: u8,
        sig: u8,
        cert: &[u8],
        data: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        verify_rsa(
            cert,
            data,
            signature,
            HashAlgorithm::from_u8(hash),
            SignatureAlgorithm::from_u8(sig),
        )
        .expect("an RSA scheme")
    }

    #[test]
    fn verifies_rsa_pkcs1_and_pss_signatures() {
        assert_eq!(rsa(4, 1, CERT, MESSAGE, PKCS1), Ok(()));
        assert_eq!(rsa(8, 4, CERT, MESSAGE, PSS), Ok(()));
        // The wrong data, the wrong padding, the wrong hash: refused.
        assert!(rsa(4, 1, CERT, b"another transcript", PKCS1).is_err());
        assert!(rsa(4, 1, CERT, MESSAGE, PSS).is_err());
        assert!(rsa(8, 4, CERT, MESSAGE, PKCS1).is_err());
        assert!(rsa(5, 1, CERT, MESSAGE, PKCS1).is_err());
        // A 1,024-bit key, though its signature is good: refused.
        assert!(rsa(4, 1, WEAK_CERT, MESSAGE, WEAK_PKCS1).is_err());
        // Not a certificate.
        assert_eq!(
            rsa(4, 1, b"junk", MESSAGE, PKCS1),
            Err(CryptoError::CertificateParseFailed)
        );
    }

    #[test]
    fn ecdsa_schemes_are_left_to_dimpl() {
        let none = verify_rsa(
            &[],
            b"data",
            &[],
            HashAlgorithm::SHA256,
            SignatureAlgorithm::ECDSA,
        );
        assert!(none.is_none());
        // SHA-1 with RSA is refused by omission: dimpl's verifier refuses it in turn.
        assert!(verify_rsa(&[], b"", &[], HashAlgorithm::SHA1, SignatureAlgorithm::RSA).is_none());
    }
}
