//! An OpenSSL DTLS 1.2 client with an RSA certificate, as GStreamer's webrtcbin is,
//! against the DTLS session Chorus gives str0m (`capture::dtls_session`), over an
//! in-memory wire: the handshake completes, the server reports the client's RSA
//! certificate (str0m checks its fingerprint against the SDP), and both sides export the
//! same SRTP keys. dimpl alone refuses such a client (`handshake_failure`).
//!
//! `tests/capture.rs` covers ECDSA clients (str0m's, as browsers are); the GStreamer
//! test (`tools/native-test/run.sh`) the real client end to end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::Instant;

use chorus_srtp::capture::{dtls_session, CapturedKeys, KeyCapture};
use chorus_srtp::SrtpProfile;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::ssl::{
    HandshakeError, Ssl, SslContext, SslMethod, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::{X509NameBuilder, X509};
use str0m::crypto::dtls::{DtlsInstance, DtlsOutput};

/// One side's datagrams in flight: what it will read, what it wrote.
#[derive(Debug, Default)]
struct Wire {
    incoming: VecDeque<Vec<u8>>,
    outgoing: Vec<Vec<u8>>,
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let datagram = self.incoming.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
        let n = datagram.len().min(buf.len());
        buf[..n].copy_from_slice(&datagram[..n]);
        Ok(n)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.push(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A self-signed RSA certificate of `bits`, as webrtcbin makes (RSA-2048, SHA-256).
fn rsa_certificate(bits: u32) -> (X509, PKey<Private>) {
    self_signed_padded(PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap(), 0)
}

/// A self-signed ECDSA P-256 certificate, as browsers make.
fn ecdsa_certificate() -> (X509, PKey<Private>) {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    self_signed_padded(
        PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap(),
        0,
    )
}

/// A self-signed certificate for `key`, its name padded with `padding` characters of
/// organizational units (60 characters each at most).
fn self_signed_padded(key: PKey<Private>, padding: usize) -> (X509, PKey<Private>) {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "webrtcbin").unwrap();
    let mut left = padding;
    while left > 0 {
        let n = left.min(60);
        name.append_entry_by_text("OU", &"x".repeat(n)).unwrap();
        left -= n;
    }
    let name = name.build();
    let mut cert = X509::builder().unwrap();
    cert.set_version(2).unwrap();
    let serial = BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap();
    cert.set_serial_number(&serial).unwrap();
    cert.set_subject_name(&name).unwrap();
    cert.set_issuer_name(&name).unwrap();
    cert.set_pubkey(&key).unwrap();
    cert.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    cert.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    cert.sign(&key, MessageDigest::sha256()).unwrap();
    (cert.build(), key)
}

/// An OpenSSL DTLS 1.2 client configured as GStreamer 1.22's `dtlsconnection` is: its
/// certificate, the SRTP profiles it offers, no certificate verification (WebRTC
/// checks fingerprints instead).
fn client(cert: &X509, key: &PKey<Private>, srtp: &str) -> Ssl {
    let mut ctx = SslContext::builder(SslMethod::dtls()).unwrap();
    // OpenSSL 3's default security level refuses keys under 2,048 bits itself: level 0
    // lets the weak-key test reach the server.
    ctx.set_security_level(0);
    ctx.set_max_proto_version(Some(SslVersion::DTLS1_2))
        .unwrap();
    ctx.set_certificate(cert).unwrap();
    ctx.set_private_key(key).unwrap();
    ctx.set_tlsext_use_srtp(srtp).unwrap();
    ctx.set_verify(SslVerifyMode::NONE);
    let mut ssl = Ssl::new(&ctx.build()).unwrap();
    ssl.set_mtu(1200).unwrap();
    ssl
}

/// What the server side reported.
#[derive(Default)]
struct ServerSide {
    peer_cert: Option<Vec<u8>>,
    connected: bool,
}

/// Runs the handshake to its end: the client's stream once done, or the error the
/// server or the client stopped with.
fn handshake(
    ssl: Ssl,
    server: &mut Box<dyn DtlsInstance>,
    seen: &mut ServerSide,
) -> Result<SslStream<Wire>, String> {
    let now = Instant::now();
    server.set_active(false);
    server.handle_timeout(now).map_err(|e| e.to_string())?;
    let mut mid = match ssl.connect(Wire::default()) {
        Err(HandshakeError::WouldBlock(mid)) => mid,
        Ok(_) => return Err("connected without a server".into()),
        Err(e) => return Err(format!("client: {e}")),
    };
    // What str0m polls DTLS with.
    let mut buf = vec![0u8; chorus_srtp::capture::STR0M_DTLS_BUFFER];
    for _ in 0..50 {
        for datagram in std::mem::take(&mut mid.get_mut().outgoing) {
            server
                .handle_packet(&datagram)
                .map_err(|e| format!("server: {e}"))?;
        }
        let mut to_client = Vec::new();
        loop {
            match server.poll_output(&mut buf) {
                DtlsOutput::Packet(p) => to_client.push(p.to_vec()),
                DtlsOutput::PeerCert(der) => seen.peer_cert = Some(der.to_vec()),
                DtlsOutput::Connected => seen.connected = true,
                DtlsOutput::Timeout(_) => break,
                _ => {}
            }
        }
        mid.get_mut().incoming.extend(to_client);
        match mid.handshake() {
            Ok(stream) => return Ok(stream),
            Err(HandshakeError::WouldBlock(next)) => mid = next,
            Err(e) => return Err(format!("client: {e}")),
        }
    }
    Err("handshake stuck".into())
}

fn server() -> (Box<dyn DtlsInstance>, KeyCapture) {
    let cert = str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate()
        .unwrap();
    dtls_session(&cert, Instant::now()).unwrap()
}

#[test]
fn an_rsa_client_certificate_is_accepted() {
    let (cert, key) = rsa_certificate(2048);
    // GStreamer 1.22 offers these two.
    let ssl = client(&cert, &key, "SRTP_AES128_CM_SHA1_80:SRTP_AES128_CM_SHA1_32");
    let (mut server, capture) = server();
    let mut seen = ServerSide::default();
    let stream = handshake(ssl, &mut server, &mut seen).expect("handshake");

    assert!(seen.connected, "the server finished its side");
    assert_eq!(seen.peer_cert, Some(cert.to_der().unwrap()));
    let profile = stream.ssl().selected_srtp_profile().expect("a profile");
    assert_eq!(profile.name(), "SRTP_AES128_CM_SHA1_80");
    let keys = same_keys(&stream, &capture);
    assert_eq!(keys.profile, SrtpProfile::Aes128CmSha1_80);
    assert!(!keys.dtls_client);
}

/// The keys the server captured, once checked to be what the client exports too.
fn same_keys(stream: &SslStream<Wire>, capture: &KeyCapture) -> CapturedKeys {
    let keys = capture.take().expect("keys captured");
    let mut material = vec![0u8; keys.material.len()];
    stream
        .ssl()
        .export_keying_material(&mut material, "EXTRACTOR-dtls_srtp", None)
        .unwrap();
    assert_eq!(material, keys.material, "both sides export the same keys");
    keys
}

#[test]
fn an_rsa_client_with_gcm_gets_gcm() {
    let (cert, key) = rsa_certificate(2048);
    let ssl = client(&cert, &key, "SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80");
    let (mut server, capture) = server();
    let mut seen = ServerSide::default();
    let stream = handshake(ssl, &mut server, &mut seen).expect("handshake");
    assert_eq!(
        same_keys(&stream, &capture).profile,
        SrtpProfile::AeadAes128Gcm
    );
}

#[test]
fn a_weak_rsa_key_is_refused() {
    // 1,024 bits: below what Chorus verifies (2,048 to 8,192).
    let (cert, key) = rsa_certificate(1024);
    let ssl = client(&cert, &key, "SRTP_AES128_CM_SHA1_80");
    let (mut server, capture) = server();
    let mut seen = ServerSide::default();
    let Err(error) = handshake(ssl, &mut server, &mut seen) else {
        panic!("a 1,024-bit key was accepted");
    };
    assert!(
        error.starts_with("server:"),
        "the server refused it: {error}"
    );
    assert!(!seen.connected);
    assert!(capture.take().is_none(), "no keys for a refused client");
}

#[test]
fn an_ecdsa_client_certificate_still_works() {
    let (cert, key) = ecdsa_certificate();
    let ssl = client(&cert, &key, "SRTP_AEAD_AES_128_GCM");
    let (mut server, capture) = server();
    let mut seen = ServerSide::default();
    handshake(ssl, &mut server, &mut seen).expect("handshake");
    assert_eq!(seen.peer_cert, Some(cert.to_der().unwrap()));
    assert_eq!(
        capture.take().map(|k| k.profile),
        Some(SrtpProfile::AeadAes128Gcm)
    );
}

#[test]
fn an_oversized_certificate_is_refused_without_harm() {
    // Over str0m's 2,000-byte DTLS buffer, by a little (2,001 to 2,042 bytes: a
    // Certificate message under 2,048) and by a lot: dimpl would panic copying it out
    // (`capture::MAX_CERTIFICATE_MESSAGE`); the node drops it instead.
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    // (The DER length varies by a few bytes between signings: ECDSA signatures do.)
    for (target, sizes) in [(2_012, 2_001..=2_042), (2_500, 2_043..=4_000)] {
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let (cert, key) = certificate_of_about(key, target);
        let len = cert.to_der().unwrap().len();
        assert!(sizes.contains(&len), "{len} bytes, not in {sizes:?}");
        let ssl = client(&cert, &key, "SRTP_AEAD_AES_128_GCM");
        let (mut server, capture) = server();
        let mut seen = ServerSide::default();
        assert!(
            handshake(ssl, &mut server, &mut seen).is_err(),
            "{len} bytes"
        );
        assert!(!seen.connected && seen.peer_cert.is_none());
        assert!(capture.take().is_none());
    }
}

/// A self-signed certificate for `key` whose DER is at least `target` bytes and at most
/// a few dozen more (its name padded as little as that takes).
fn certificate_of_about(key: PKey<Private>, target: usize) -> (X509, PKey<Private>) {
    let len = |padding| {
        self_signed_padded(key.clone(), padding)
            .0
            .to_der()
            .unwrap()
            .len()
    };
    // The length grows with the padding: the least padding that reaches `target`.
    let (mut low, mut high) = (0, 4 * target);
    while low < high {
        let mid = (low + high) / 2;
        if len(mid) >= target {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    self_signed_padded(key.clone(), low)
}
