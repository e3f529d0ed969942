//! The protocol views on realistic packets: RTP parse, in-place rewrite and write,
//! RTCP compound parse, STUN parse, RFC 7983 demultiplexing.
//!
//! ```sh
//! cargo bench -p chorus-benches --bench rtp -- --warm-up-time 1 --measurement-time 3
//! ```
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use chorus_protocol::demux::classify;
use chorus_protocol::encode::Encode;
use chorus_protocol::rtcp::{
    Compound, ReceiverReportWriter, RembWriter, ReportBlock, RtcpPacket, SenderInfo,
    SenderReportWriter,
};
use chorus_protocol::rtp::{
    AudioLevel, ExtensionSpec, RtpPacket, RtpPacketMut, RtpWriter, SeqNo, Ssrc,
};
use chorus_protocol::stun::{self, StunMessage};
use criterion::{criterion_group, criterion_main, Criterion};

/// Chromium's one-byte extension ids for audio (RFC 8285).
const AUDIO_LEVEL: u8 = 1;
const ABS_SEND_TIME: u8 = 2;
const TRANSPORT_CC: u8 = 3;

/// A Chromium microphone packet: Opus, 80-byte payload (~32 kbit/s), one-byte
/// extensions audio level, abs-send-time and transport-wide sequence number.
fn opus_packet() -> Vec<u8> {
    let payload: Vec<u8> = (0..80u8).collect();
    let elements: [(u8, &[u8]); 3] = [
        (AUDIO_LEVEL, &[0x80 | 30]),
        (ABS_SEND_TIME, &[0x12, 0x34, 0x56]),
        (TRANSPORT_CC, &[0x01, 0x02]),
    ];
    let w = RtpWriter {
        payload_type: 111,
        sequence_number: SeqNo(4711),
        timestamp: 0x1234_5678,
        ssrc: Ssrc(0xdead_beef),
        extension: ExtensionSpec::Elements(&elements),
        payload: &payload,
        ..Default::default()
    };
    let mut out = Vec::new();
    w.encode_vec(&mut out).unwrap();
    out
}

/// A browser's compound report: SR with one report block, then SDES CNAME.
fn sr_sdes() -> Vec<u8> {
    let mut out = Vec::new();
    let block = ReportBlock {
        ssrc: Ssrc(0x5566_7788),
        fraction_lost: 3,
        cumulative_lost: 12,
        extended_highest_seq: 0x0001_1000,
        jitter: 42,
        last_sr: 0x5e4a_8000,
        delay_since_last_sr: 0x0001_0000,
    };
    SenderReportWriter {
        ssrc: Ssrc(0x1122_3344),
        info: SenderInfo {
            ntp_timestamp: 0xe93c_5e4a_8000_0000,
            rtp_timestamp: 0x0001_e240,
            packet_count: 100,
            octet_count: 16_000,
        },
        blocks: &[block],
    }
    .encode_vec(&mut out)
    .unwrap();
    // RFC 3550 §6.5: SDES, one chunk, CNAME of 16 characters, null and padding.
    out.extend_from_slice(&[0x81, 0xca, 0x00, 0x06, 0x11, 0x22, 0x33, 0x44, 0x01, 0x10]);
    out.extend_from_slice(b"pQ8xmJafur5zV43w");
    out.extend_from_slice(&[0x00, 0x00]);
    out
}

/// A receiver's compound: RR with one report block, then REMB for one SSRC.
fn rr_remb() -> Vec<u8> {
    let mut out = Vec::new();
    let block = ReportBlock {
        ssrc: Ssrc(0x1122_3344),
        fraction_lost: 0,
        cumulative_lost: 0,
        extended_highest_seq: 0x0000_2000,
        jitter: 17,
        last_sr: 0x5e4a_8000,
        delay_since_last_sr: 0x0000_4000,
    };
    ReceiverReportWriter {
        ssrc: Ssrc(1),
        blocks: &[block],
    }
    .encode_vec(&mut out)
    .unwrap();
    RembWriter {
        sender_ssrc: Ssrc(1),
        bitrate_bps: 256_000,
        ssrcs: &[Ssrc(0x1122_3344)],
    }
    .encode_vec(&mut out)
    .unwrap();
    out
}

/// Chromium's ICE connectivity check (RFC 8445 §7.1): USERNAME, GOOG-NETWORK-INFO,
/// ICE-CONTROLLING, USE-CANDIDATE, PRIORITY, MESSAGE-INTEGRITY, FINGERPRINT. The
/// integrity and fingerprint values are placeholders: the parser does not check them.
fn binding_request() -> Vec<u8> {
    let attrs: [(u16, &[u8]); 7] = [
        (stun::attr::USERNAME, b"c1r7p42x9q:Ab3d"),
        (0xc057, &[0x00, 0x01, 0x00, 0x0a]),
        (stun::attr::ICE_CONTROLLING, &[1, 2, 3, 4, 5, 6, 7, 8]),
        (stun::attr::USE_CANDIDATE, &[]),
        (stun::attr::PRIORITY, &[0x6e, 0x7f, 0x1e, 0xff]),
        (stun::attr::MESSAGE_INTEGRITY, &[0xa5; 20]),
        (stun::attr::FINGERPRINT, &[0, 0, 0, 0]),
    ];
    let mut body = Vec::new();
    for (ty, value) in attrs {
        body.extend_from_slice(&ty.to_be_bytes());
        body.extend_from_slice(&(value.len() as u16).to_be_bytes());
        body.extend_from_slice(value);
        body.resize(body.len().next_multiple_of(4), 0);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&stun::BINDING.to_be_bytes());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&stun::MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(b"txn-id-12345");
    out.extend_from_slice(&body);
    out
}

fn rtp(c: &mut Criterion) {
    let packet = opus_packet();
    assert!(RtpPacket::parse(&packet).is_ok());
    let mut g = c.benchmark_group("rtp");
    g.bench_function("parse", |b| {
        b.iter(|| RtpPacket::parse(black_box(&packet)).unwrap());
    });
    g.bench_function("parse_audio_level", |b| {
        b.iter(|| {
            let p = RtpPacket::parse(black_box(&packet)).unwrap();
            p.audio_level(AUDIO_LEVEL).unwrap()
        });
    });
    // What a forwarder does to each copy when it rewrites in place.
    let mut buf = packet.clone();
    let mut i = 0u32;
    g.bench_function("rewrite_in_place", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let mut p = RtpPacketMut::parse(black_box(&mut buf)).unwrap();
            p.set_ssrc(Ssrc(0x0bad_cafe ^ i));
            p.set_sequence_number(SeqNo(i as u16));
            p.set_timestamp(i.wrapping_mul(960));
            p.set_marker(i & 1 == 0);
            p.set_audio_level(
                AUDIO_LEVEL,
                AudioLevel {
                    voice_activity: true,
                    level_dbov: (i & 0x7f) as u8,
                },
            )
            .unwrap();
        });
    });
    // The packet the engine's slots carry: speaker's CSRC and audio level only.
    let payload = RtpPacket::parse(&packet).unwrap().payload().to_vec();
    let mut out = [0u8; 1500];
    g.bench_function("write_csrc_audio_level", |b| {
        b.iter(|| {
            let csrc = [Ssrc(0x0000_0101)];
            let level = [0x80 | 30];
            let elements = [(AUDIO_LEVEL, &level[..])];
            let w = RtpWriter {
                marker: false,
                payload_type: 111,
                sequence_number: SeqNo(4711),
                timestamp: 0x1234_5678,
                ssrc: Ssrc(0xdead_beef),
                csrcs: &csrc,
                extension: ExtensionSpec::Elements(&elements),
                payload: black_box(&payload),
                padding: 0,
            };
            w.encode(&mut out).unwrap()
        });
    });
    // Copying a parsed packet with a new CSRC list (extensions verbatim).
    g.bench_function("parse_and_write_with_csrc", |b| {
        b.iter(|| {
            let p = RtpPacket::parse(black_box(&packet)).unwrap();
            let csrc = [Ssrc(0x0000_0101)];
            RtpWriter::from_packet(&p, &csrc).encode(&mut out).unwrap()
        });
    });
    g.finish();
}

/// Walks a compound and reads what an SFU looks at in each packet.
fn read_compound(buf: &[u8]) -> u64 {
    let mut acc = 0u64;
    for packet in Compound::new(buf) {
        match packet.unwrap() {
            RtcpPacket::SenderReport(sr) => {
                acc ^= sr.info().ntp_timestamp;
                for block in sr.report_blocks() {
                    acc ^= u64::from(block.jitter);
                }
            }
            RtcpPacket::ReceiverReport(rr) => {
                for block in rr.report_blocks() {
                    acc ^= u64::from(block.extended_highest_seq);
                }
            }
            RtcpPacket::Sdes(sdes) => {
                for chunk in sdes.chunks() {
                    acc ^= chunk.cname().map_or(0, |c| c.len() as u64);
                }
            }
            RtcpPacket::Remb(remb) => acc ^= remb.bitrate_bps(),
            _ => acc ^= 1,
        }
    }
    acc
}

fn rtcp(c: &mut Criterion) {
    let sr_sdes = sr_sdes();
    let rr_remb = rr_remb();
    assert_eq!(Compound::new(&sr_sdes).filter(Result::is_ok).count(), 2);
    assert_eq!(Compound::new(&rr_remb).filter(Result::is_ok).count(), 2);
    assert!(Compound::new(&rr_remb).any(|p| matches!(p, Ok(RtcpPacket::Remb(_)))));
    let mut g = c.benchmark_group("rtcp");
    g.bench_function("compound_sr_sdes", |b| {
        b.iter(|| read_compound(black_box(&sr_sdes)));
    });
    g.bench_function("compound_rr_remb", |b| {
        b.iter(|| read_compound(black_box(&rr_remb)));
    });
    g.finish();
}

fn stun_and_demux(c: &mut Criterion) {
    let request = binding_request();
    let ufrags = StunMessage::parse(&request).unwrap().ice_ufrags();
    assert_eq!(ufrags, Some(("c1r7p42x9q", "Ab3d")));
    let mut g = c.benchmark_group("stun");
    g.bench_function("parse_ice_ufrags", |b| {
        b.iter(|| {
            let msg = StunMessage::parse(black_box(&request)).unwrap();
            msg.ice_ufrags().unwrap().0.len()
        });
    });
    g.finish();

    let dtls = [22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 1, 0, 0];
    let datagrams: [(&str, Vec<u8>); 4] = [
        ("rtp", opus_packet()),
        ("rtcp", sr_sdes()),
        ("stun", request),
        ("dtls", dtls.to_vec()),
    ];
    let mut g = c.benchmark_group("demux");
    for (name, d) in &datagrams {
        g.bench_function(*name, |b| b.iter(|| classify(black_box(d))));
    }
    g.finish();
}

criterion_group!(benches, rtp, rtcp, stun_and_demux);
criterion_main!(benches);
