//! Packets and keys shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use chorus_srtp::{DtlsSrtpKeys, SrtpProfile};

/// Deterministic keying material for `profile` (a stand-in for the DTLS exporter).
pub fn material(profile: SrtpProfile, seed: u8) -> Vec<u8> {
    (0..profile.keying_material_len())
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub fn keys(profile: SrtpProfile) -> DtlsSrtpKeys {
    DtlsSrtpKeys::from_exporter(profile, &material(profile, 0x5a)).unwrap()
}

/// An RTP packet: `csrcs` CSRCs, an optional one-byte-header extension (RFC 8285) with
/// audio level and MID, and a `payload_len`-byte payload. Returns (packet, header length).
pub fn rtp(
    seq: u16,
    ssrc: u32,
    csrcs: u8,
    extension: bool,
    payload_len: usize,
) -> (Vec<u8>, usize) {
    let mut p = vec![0x80 | if extension { 0x10 } else { 0 } | csrcs, 0x80 | 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for c in 0..u32::from(csrcs) {
        p.extend_from_slice(&(0x1000 + c).to_be_bytes());
    }
    if extension {
        // 0xBEDE, 2 words: audio level (id 1, 1 byte), MID (id 2, 2 bytes "a0"), padding.
        p.extend_from_slice(&[0xbe, 0xde, 0, 2, 0x10, 0x9e, 0x21, b'a', b'0', 0, 0, 0]);
    }
    let header_len = p.len();
    p.extend((0..payload_len).map(|i| i as u8));
    (p, header_len)
}

/// A compound RTCP packet: SR (no report blocks) + SDES CNAME, from `ssrc`.
pub fn rtcp(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[
        0xe9, 0x30, 0x4c, 0x75, 0x6e, 0x61, 0, 0, 0, 0, 0, 42, 0, 0, 0, 7, 0, 0, 3, 0x20,
    ]);
    // SDES: one chunk, CNAME "chorus", end, padding to a word.
    p.extend_from_slice(&[0x81, 202, 0, 3]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[1, 6, b'c', b'h', b'o', b'r', b'u', b's', 0, 0]);
    p
}
