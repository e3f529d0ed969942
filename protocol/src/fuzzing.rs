//! Fuzz harness bodies: the cargo-fuzz targets in `fuzz/` are one-line calls into
//! these, and the unit tests below run them over the seed inputs, so the harnesses are
//! checked on stable too. Not API: they panic when they find an inconsistency.
//!
//! Compiled only for tests and under cargo-fuzz (`cfg(fuzzing)`): not public API.

use crate::demux;
use crate::encode::Encode;
use crate::rtcp::{
    Compound, FirWriter, NackWriter, PliWriter, ReceiverReportWriter, RembWriter, RtcpPacket,
    SenderReportWriter,
};
use crate::rtp::{AudioLevel, RtpPacket, RtpPacketMut, RtpWriter, SeqNo, Ssrc};
use crate::stun::{self, StunMessage};

/// Parses; if that works, rebuilds the packet with the writer and rewrites a copy in
/// place, and checks both against the original view.
pub fn rtp(data: &[u8]) {
    let _ = demux::classify(data);
    let Ok(p) = RtpPacket::parse(data) else {
        return;
    };
    let elements: Vec<_> = p.extension_elements().collect();
    let csrcs: Vec<Ssrc> = p.csrcs().collect();
    assert_eq!(csrcs.len(), usize::from(p.csrc_count()));
    assert_eq!(
        p.header_len() + p.payload().len() + usize::from(p.padding_len()),
        data.len()
    );

    // Writer round trip: everything survives a rebuild.
    let mut rebuilt = Vec::new();
    let n = RtpWriter::from_packet(&p, &csrcs)
        .encode_vec(&mut rebuilt)
        .expect("a parsed packet can be rebuilt");
    assert_eq!(n, data.len());
    let q = RtpPacket::parse(&rebuilt).expect("a rebuilt packet parses");
    assert_same_rtp(&p, &q);
    assert_eq!(q.extension_elements().collect::<Vec<_>>(), elements);

    // Rewriter: exactly the fields asked change.
    let mut buf = data.to_vec();
    let mut m = RtpPacketMut::parse(&mut buf).expect("parses as the view did");
    let seq = p.sequence_number().wrapping_add(1);
    m.set_sequence_number(seq);
    m.set_timestamp(!p.timestamp());
    m.set_ssrc(Ssrc(p.ssrc().0 ^ 0x5555_5555));
    m.set_marker(!p.marker());
    m.set_payload_type(p.payload_type() ^ 0x40)
        .expect("7-bit payload type");
    let first = elements.first().copied();
    let level = AudioLevel {
        voice_activity: true,
        level_dbov: 42,
    };
    if let Some((id, value)) = first {
        let rewrite = m.set_audio_level(id, level);
        assert_eq!(rewrite.is_ok(), !value.is_empty());
    }
    let r = RtpPacket::parse(&buf).expect("a rewritten packet parses");
    assert_eq!(r.sequence_number(), seq);
    assert_eq!(r.timestamp(), !p.timestamp());
    assert_eq!(r.ssrc(), Ssrc(p.ssrc().0 ^ 0x5555_5555));
    assert_eq!(r.marker(), !p.marker());
    assert_eq!(r.payload_type(), p.payload_type() ^ 0x40);
    assert_eq!(r.csrcs().collect::<Vec<_>>(), csrcs);
    assert_eq!(r.payload(), p.payload());
    assert_eq!(r.header_len(), p.header_len());
    let after: Vec<_> = r.extension_elements().collect();
    assert_eq!(after.len(), elements.len());
    for (i, ((id, old), (new_id, new))) in elements.iter().zip(&after).enumerate() {
        assert_eq!(id, new_id);
        if i == 0 && !old.is_empty() {
            // Only the first byte of the first element changed.
            assert_eq!(new.first(), Some(&level.to_byte()));
            assert_eq!(new.get(1..), old.get(1..));
        } else {
            assert_eq!(old, new);
        }
    }
}

fn assert_same_rtp(p: &RtpPacket<'_>, q: &RtpPacket<'_>) {
    assert_eq!(p.marker(), q.marker());
    assert_eq!(p.payload_type(), q.payload_type());
    assert_eq!(p.sequence_number(), q.sequence_number());
    assert_eq!(p.timestamp(), q.timestamp());
    assert_eq!(p.ssrc(), q.ssrc());
    assert!(p.csrcs().eq(q.csrcs()));
    assert_eq!(p.extension(), q.extension());
    assert_eq!(p.header_len(), q.header_len());
    assert_eq!(p.payload(), q.payload());
    assert_eq!(p.padding_len(), q.padding_len());
}

/// Walks a compound packet to the end, runs every iterator of every view, and
/// re-encodes the packets that have writers.
pub fn rtcp(data: &[u8]) {
    let _ = demux::classify(data);
    for packet in Compound::new(data).flatten() {
        rtcp_packet(packet);
    }
}

fn reparse(out: &[u8]) -> RtcpPacket<'_> {
    let mut packets = Compound::new(out);
    let packet = packets
        .next()
        .expect("one packet")
        .expect("a written packet parses");
    assert!(packets.next().is_none());
    packet
}

fn rtcp_packet(packet: RtcpPacket<'_>) {
    let mut out = Vec::new();
    match packet {
        RtcpPacket::SenderReport(sr) => {
            let blocks: Vec<_> = sr.report_blocks().collect();
            let w = SenderReportWriter {
                ssrc: sr.ssrc(),
                info: sr.info(),
                blocks: &blocks,
            };
            w.encode_vec(&mut out).expect("SR re-encodes");
            let RtcpPacket::SenderReport(again) = reparse(&out) else {
                panic!("not an SR")
            };
            assert_eq!((again.ssrc(), again.info()), (sr.ssrc(), sr.info()));
            assert!(again.report_blocks().eq(blocks));
        }
        RtcpPacket::ReceiverReport(rr) => {
            let blocks: Vec<_> = rr.report_blocks().collect();
            let w = ReceiverReportWriter {
                ssrc: rr.ssrc(),
                blocks: &blocks,
            };
            w.encode_vec(&mut out).expect("RR re-encodes");
            let RtcpPacket::ReceiverReport(again) = reparse(&out) else {
                panic!("not an RR")
            };
            assert_eq!(again.ssrc(), rr.ssrc());
            assert!(again.report_blocks().eq(blocks));
        }
        RtcpPacket::Sdes(sdes) => {
            for chunk in sdes.chunks() {
                let _ = (chunk.items().count(), chunk.cname());
            }
        }
        RtcpPacket::Bye(bye) => {
            let _ = (bye.ssrcs().count(), bye.reason());
        }
        RtcpPacket::Nack(nack) => {
            let lost: Vec<SeqNo> = nack.lost().collect();
            if lost.is_empty() {
                return;
            }
            let w = NackWriter {
                sender_ssrc: nack.sender_ssrc(),
                media_ssrc: nack.media_ssrc(),
                lost: &lost,
            };
            w.encode_vec(&mut out).expect("NACK re-encodes");
            let RtcpPacket::Nack(again) = reparse(&out) else {
                panic!("not a NACK")
            };
            let mut want: Vec<u16> = lost.iter().map(|s| s.0).collect();
            let mut got: Vec<u16> = again.lost().map(|s| s.0).collect();
            want.sort_unstable();
            want.dedup();
            got.sort_unstable();
            got.dedup();
            assert_eq!(got, want);
        }
        RtcpPacket::Pli(pli) => {
            let w = PliWriter {
                sender_ssrc: pli.sender_ssrc,
                media_ssrc: pli.media_ssrc,
            };
            w.encode_vec(&mut out).expect("PLI re-encodes");
            assert_eq!(reparse(&out), RtcpPacket::Pli(pli));
        }
        RtcpPacket::Fir(fir) => {
            let entries: Vec<_> = fir.entries().collect();
            if entries.is_empty() {
                return;
            }
            let w = FirWriter {
                sender_ssrc: fir.sender_ssrc(),
                entries: &entries,
            };
            w.encode_vec(&mut out).expect("FIR re-encodes");
            let RtcpPacket::Fir(again) = reparse(&out) else {
                panic!("not a FIR")
            };
            assert!(again.entries().eq(entries));
        }
        RtcpPacket::Remb(remb) => {
            let ssrcs: Vec<_> = remb.ssrcs().collect();
            let w = RembWriter {
                sender_ssrc: remb.sender_ssrc(),
                bitrate_bps: remb.bitrate_bps(),
                ssrcs: &ssrcs,
            };
            w.encode_vec(&mut out).expect("REMB re-encodes");
            let RtcpPacket::Remb(again) = reparse(&out) else {
                panic!("not a REMB")
            };
            assert!(again.ssrcs().eq(ssrcs));
            // A saturated estimate has no exact encoding.
            if remb.bitrate_bps() != u64::MAX {
                assert_eq!(again.bitrate_bps(), remb.bitrate_bps());
            }
        }
        RtcpPacket::Twcc(twcc) => {
            let statuses = twcc.statuses();
            assert_eq!(statuses.len(), usize::from(twcc.status_count()));
            assert_eq!(statuses.count(), usize::from(twcc.status_count()));
        }
        RtcpPacket::Unknown { .. } => {}
    }
}

/// Checks the demux test, then reads everything a STUN view offers.
pub fn stun(data: &[u8]) {
    let looks_like_stun = stun::is_stun(data);
    assert_eq!(
        demux::classify(data) == demux::DatagramKind::Stun,
        looks_like_stun
    );
    let Ok(m) = StunMessage::parse(data) else {
        return;
    };
    if data.first().is_some_and(|&b| b <= 3) {
        assert!(looks_like_stun, "parsed but is_stun said no");
    }
    let _ = (m.message_type().to_u16(), m.transaction_id(), m.len());
    let _ = (m.attributes().count(), m.username(), m.ice_ufrags());
    let _ = (m.has_message_integrity(), m.has_fingerprint());
    let _ = m.fingerprint_valid();
}

/// Decodes a client signaling message; if it decodes, it must encode again.
pub fn signal(data: &[u8]) {
    if let Ok(msg) = serde_json::from_slice::<crate::signal::ClientMessage>(data) {
        let _ = serde_json::to_vec(&msg);
    }
}

/// Decodes a control-protocol line as the node does (envelope, then method and
/// params); a request that decodes must survive a re-encode unchanged, and every
/// error must carry a JSON-RPC code and a message. Also decodes it as an event
/// notification and re-encodes that.
pub fn control(data: &[u8]) {
    use crate::control::{Call, Notification, Request};
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    match Request::decode(line) {
        Ok(request) => {
            let text = serde_json::to_string(&request).expect("a request re-encodes");
            let again = Request::decode(&text).expect("a re-encoded request decodes");
            // Not `again == request`: serde_json's float parsing is not exact (no
            // `float_roundtrip`), so numbers may differ in their last bit.
            assert_eq!(again.method, request.method);
            assert_eq!(again.id.is_some(), request.id.is_some());
            assert_eq!(again.params.is_some(), request.params.is_some());
            match Call::decode(&request.method, request.params.clone()) {
                Ok(call) => assert_eq!(call.method(), request.method),
                Err(e) => assert!(e.code < 0 && !e.message.is_empty()),
            }
        }
        Err((_, e)) => assert!(e.code < 0 && !e.message.is_empty()),
    }
    if let Ok(n) = serde_json::from_str::<Notification>(line) {
        let back: Notification = serde_json::from_str(&n.to_line()).expect("an event re-encodes");
        assert_eq!(back.params.kind(), n.params.kind());
    }
}

/// Seed inputs per target, shared with `fuzz/corpus/` (see `write_seed_corpus`).
#[cfg(test)]
pub(crate) fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    use crate::rtp::ExtensionSpec;
    let mut two_byte = Vec::new();
    let csrcs = [Ssrc(1), Ssrc(2)];
    RtpWriter {
        payload_type: 96,
        csrcs: &csrcs,
        extension: ExtensionSpec::Elements(&[(1, &[0x90]), (20, &[]), (3, &[7; 20])]),
        payload: b"opus",
        padding: 4,
        ..RtpWriter::default()
    }
    .encode_vec(&mut two_byte)
    .unwrap_or_default();
    let mut feedback = Vec::new();
    let lost = [SeqNo(1), SeqNo(3), SeqNo(40)];
    let nack = NackWriter {
        sender_ssrc: Ssrc(1),
        media_ssrc: Ssrc(2),
        lost: &lost,
    };
    let remb = RembWriter {
        sender_ssrc: Ssrc(1),
        bitrate_bps: 512_000,
        ssrcs: &csrcs,
    };
    let _ = nack.encode_vec(&mut feedback);
    let _ = remb.encode_vec(&mut feedback);
    vec![
        ("rtp_roundtrip", "opus_one_byte_ext", crate::rtp::tests::OPUS.to_vec()),
        ("rtp_roundtrip", "csrcs_two_byte_ext_padding", two_byte),
        ("rtcp_parse", "sr_sdes_bye", crate::rtcp::tests::SR_SDES.to_vec()),
        ("rtcp_parse", "twcc_vector", crate::rtcp::tests::TWCC.to_vec()),
        ("rtcp_parse", "nack_remb", feedback),
        ("stun_parse", "rfc5769_request", stun::tests::RFC5769_REQUEST.to_vec()),
        (
            "stun_parse",
            "ice_binding_request",
            stun::tests::binding_request("sfu1:Ab+/"),
        ),
        (
            "signal_decode",
            "join",
            br#"{"type":"join","room":"lobby","name":"Ada","token":"t0k"}"#.to_vec(),
        ),
        (
            "signal_decode",
            "candidate",
            br#"{"type":"candidate","candidate":"candidate:1 1 udp 2122260223 10.0.0.2 50000 typ host","sdp_mid":"0"}"#.to_vec(),
        ),
        ("signal_decode", "ping", br#"{"type":"ping","id":7}"#.to_vec()),
        ("signal_decode", "mute", br#"{"type":"mute","muted":true}"#.to_vec()),
        (
            "control_decode",
            "long_float",
            br#"{"jsonrpc":"2.0","id":1.5,"method":"event","params":{"type":"quality","x":444444464444444444440.01}}"#.to_vec(),
        ),
        (
            "control_decode",
            "room_create",
            br#"{"jsonrpc":"2.0","id":1,"method":"room.create","params":{"room":"g1","kind":"raid","max_participants":40,"metadata":"{}"}}"#.to_vec(),
        ),
        (
            "control_decode",
            "participant_mute",
            br#"{"jsonrpc":"2.0","id":"a","method":"participant.mute","params":{"room":"g1","participant_id":"p1f","muted":true}}"#.to_vec(),
        ),
        (
            "control_decode",
            "token_create",
            br#"{"jsonrpc":"2.0","id":3,"method":"token.create","params":{"room":"g1","identity":"u1","name":"Ann","ttl_s":60,"admin":true}}"#.to_vec(),
        ),
        (
            "control_decode",
            "events_subscribe",
            br#"{"jsonrpc":"2.0","id":4,"method":"events.subscribe","params":{"types":["quality","participant_left"],"room":"g1"}}"#.to_vec(),
        ),
        (
            "control_decode",
            "event",
            br#"{"jsonrpc":"2.0","method":"event","params":{"type":"quality","room":"g","participant_id":"p1","loss_in":0.01,"rtt_ms":12.5,"bitrate_in":32000,"bitrate_out":64000}}"#.to_vec(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harnesses_accept_the_seeds() {
        for (target, _, data) in seeds() {
            match target {
                "rtp_roundtrip" => rtp(&data),
                "rtcp_parse" => rtcp(&data),
                "stun_parse" => stun(&data),
                "signal_decode" => signal(&data),
                "control_decode" => control(&data),
                other => panic!("unknown target {other}"),
            }
        }
    }

    /// Regenerates `fuzz/corpus/<target>/<name>` from the seeds:
    /// `cargo test -p chorus-protocol -- --ignored write_seed_corpus`.
    #[test]
    #[ignore = "writes files under fuzz/corpus"]
    fn write_seed_corpus() -> std::io::Result<()> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        for (target, name, data) in seeds() {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join(name), data)?;
        }
        Ok(())
    }
}
