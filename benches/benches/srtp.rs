//! chorus-srtp sealing on the forwarding path: `SrtpTx::protect_rtp` of a 200-byte Opus
//! packet (12-byte header + 3 words of one-byte extensions + payload) per profile, with
//! the `unprotect_rtp` and `protect_rtcp` counterparts for scale.
//!
//! ```sh
//! cargo bench -p chorus-benches --bench srtp -- --warm-up-time 1 --measurement-time 3
//! ```
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use chorus_srtp::{DtlsSrtpKeys, SrtpProfile};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// The sealed datagram is 200 bytes before the tag: header 24, payload 176.
const PACKET: usize = 200;

/// An Opus packet as the engine writes it: fixed header, RFC 8285 one-byte extensions
/// (audio level, abs-send-time, transport-wide seq), payload.
fn opus_packet() -> ([u8; 1500], usize) {
    let mut buf = [0u8; 1500];
    let header = [
        0x90, 111, 0x12, 0x67, 0x12, 0x34, 0x56, 0x78, 0xde, 0xad, 0xbe, 0xef, // fixed
        0xbe, 0xde, 0, 2, 0x10, 0x9e, 0x22, 0x12, 0x34, 0x56, 0x31, 0x00, // extension
    ];
    buf[..header.len()].copy_from_slice(&header);
    for (i, b) in buf[header.len()..PACKET].iter_mut().enumerate() {
        *b = i as u8;
    }
    (buf, header.len())
}

fn srtp(c: &mut Criterion) {
    let (packet, header_len) = opus_packet();
    let mut g = c.benchmark_group("srtp");
    g.throughput(Throughput::Elements(1));
    for profile in SrtpProfile::ALL {
        let material: Vec<u8> = (0..profile.keying_material_len() as u8).collect();
        let keys = DtlsSrtpKeys::from_exporter(profile, &material).unwrap();
        let tx = keys.tx(false).unwrap();
        let rx = keys.rx(true).unwrap();
        let name = profile.name();

        // Sealing in place re-encrypts the same bytes each time: the cost is the same,
        // and no copy is measured.
        let mut buf = packet;
        g.bench_function(format!("protect_rtp_200/{name}"), |b| {
            b.iter(|| {
                tx.protect_rtp(black_box(&mut buf), PACKET, header_len, black_box(1))
                    .unwrap()
            });
        });

        let mut sealed = packet;
        let n = tx.protect_rtp(&mut sealed, PACKET, header_len, 1).unwrap();
        let mut buf = sealed;
        g.bench_function(format!("unprotect_rtp_200/{name}"), |b| {
            b.iter(|| {
                buf[..n].copy_from_slice(&sealed[..n]);
                rx.unprotect_rtp(black_box(&mut buf), n, 1).unwrap()
            });
        });

        // An SR + SDES sized compound (60 bytes); a fresh index per call, so reset it
        // well before exhaustion.
        let mut rtcp_tx = keys.tx(false).unwrap();
        let mut rtcp = [0u8; 200];
        rtcp[0] = 0x80;
        rtcp[1] = 200;
        g.bench_function(format!("protect_rtcp_60/{name}"), |b| {
            b.iter(|| {
                if rtcp_tx.srtcp_index() > 0x7000_0000 {
                    rtcp_tx.set_srtcp_index(0).unwrap();
                }
                rtcp_tx.protect_rtcp(black_box(&mut rtcp), 60).unwrap()
            });
        });
    }
    g.finish();
}

criterion_group!(benches, srtp);
criterion_main!(benches);
