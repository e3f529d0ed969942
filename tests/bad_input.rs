//! Bad input gets a clear error or is dropped and counted; it never disturbs the
//! other participants.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use chorus_engine::{CloseReason, Command};
use chorus_protocol::signal::{DisplayName, ErrorCode, ParticipantId, RoomId, ServerMessage};
use chorus_tests::sim::Sim;
use str0m::media::{Direction, MediaKind};

fn errors(sim: &Sim, idx: usize) -> Vec<(ErrorCode, String)> {
    sim.clients[idx]
        .messages("error")
        .into_iter()
        .map(|m| match m {
            ServerMessage::Error { code, message } => (*code, message.clone()),
            _ => unreachable!(),
        })
        .collect()
}

/// Two participants talking; returns (a, b) and how much a heard of b so far.
fn talking_pair(sim: &mut Sim) -> (usize, usize) {
    let a = sim.connect("a", "r");
    let b = sim.connect("b", "r");
    sim.clients[a].speaking = Some(20);
    sim.clients[b].speaking = Some(20);
    sim.run_for(Duration::from_millis(500));
    (a, b)
}

fn assert_still_talking(sim: &mut Sim, a: usize, b: usize) {
    let (ab, ba) = (
        sim.clients[a].from(b).count(),
        sim.clients[b].from(a).count(),
    );
    sim.run_for(Duration::from_secs(1));
    assert!(sim.clients[a].from(b).count() >= ab + 49, "a still hears b");
    assert!(sim.clients[b].from(a).count() >= ba + 49, "b still hears a");
}

#[test]
fn garbage_sdp_is_a_bad_request_and_harms_no_one() {
    let mut sim = Sim::new();
    let (a, b) = talking_pair(&mut sim);
    let c = sim.join("c", "r");
    let id = sim.clients[c].id;
    for sdp in [
        "",
        "garbage",
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n",
        &"m=audio 9 X 1\r\na=mid:x\r\n".repeat(5000),
    ] {
        sim.command(Command::Offer {
            participant: id,
            sdp: sdp.to_owned(),
            sources: Vec::new(),
        });
    }
    let errs = errors(&sim, c);
    assert_eq!(errs.len(), 5, "{errs:?}");
    assert!(errs.iter().all(|(code, _)| *code == ErrorCode::BadRequest));
    assert!(errs[0].1.contains("no m-sections"), "{}", errs[0].1);
    assert!(errs[2].1.contains("a=mid"), "{}", errs[2].1);
    assert!(errs[4].1.contains("larger than"), "{}", errs[4].1);
    assert!(
        errs.iter().all(|(_, text)| text.starts_with("invalid ")),
        "{errs:?}"
    );
    // What str0m's parser said (its text names a memory address) stays in the log.
    assert_eq!(errs[3].1, "invalid SDP: str0m could not parse it");
    // c can still negotiate properly afterwards.
    sim.offer(c, 8);
    sim.run_until(Duration::from_secs(5), |s| s.clients[c].connected);
    assert!(sim.clients[c].connected);
    assert!(errors(&sim, a).is_empty() && errors(&sim, b).is_empty());
    assert_still_talking(&mut sim, a, b);
}

/// Offers built to trip str0m (found by an audit): a payload type mapped twice off
/// the m= line (str0m 0.25 asserts `Pt locked multiple times`), one mapped twice on
/// it, RTX repairing itself, the node asked to be the DTLS client. Each is refused or
/// defused; the shard, and everyone on it, carry on.
#[test]
fn offers_that_trip_str0m_are_refused_or_defused() {
    let mut sim = Sim::new();
    let (a, b) = talking_pair(&mut sim);
    let c = sim.join("c", "r");
    let id = sim.clients[c].id;
    let head = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
    let transport =
        "c=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
                     a=fingerprint:sha-256 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:\
                     AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99\r\n\
                     a=setup:actpass\r\na=rtcp-mux\r\n";
    let offers = [
        // Off the m= line, twice (listener: str0m sees this section, made inactive).
        format!(
            "{head}m=audio 9 UDP/TLS/RTP/SAVPF 0\r\n{transport}a=mid:0\r\na=recvonly\r\n\
             a=rtpmap:0 PCMU/8000\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:111 rtx/48000\r\n\
             a=fmtp:111 apt=111\r\n"
        ),
        // A closed section first (not in the bundle), the same trick in it: what the
        // audit sent.
        format!(
            "{head}a=group:BUNDLE 1\r\nm=audio 0 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\n\
             a=mid:0\r\na=recvonly\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:111 opus/48000/2\r\n\
             a=rtpmap:111 rtx/48000\r\na=fmtp:111 apt=111\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n{transport}a=mid:1\r\na=sendrecv\r\n\
             a=rtpmap:111 opus/48000/2\r\n"
        ),
        // A closed section first, the same trick in it.
        format!(
            "{head}m=audio 0 UDP/TLS/RTP/SAVPF 0\r\n{transport}a=mid:x\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:111 opus/48000/2\r\na=rtpmap:111 rtx/48000\r\na=fmtp:111 apt=111\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n{transport}a=mid:m\r\na=sendonly\r\n\
             a=rtpmap:111 opus/48000/2\r\n"
        ),
        // On the m= line, twice.
        format!(
            "{head}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n{transport}a=mid:m\r\na=sendonly\r\n\
             a=rtpmap:111 opus/48000/2\r\na=rtpmap:111 rtx/48000\r\n"
        ),
        // RTX repairing itself.
        format!(
            "{head}m=audio 9 UDP/TLS/RTP/SAVPF 111 112\r\n{transport}a=mid:m\r\na=sendonly\r\n\
             a=rtpmap:111 opus/48000/2\r\na=rtpmap:112 rtx/48000\r\na=fmtp:112 apt=112\r\n"
        ),
        // The node as DTLS client.
        format!(
            "{head}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n{}a=mid:m\r\na=sendonly\r\n\
             a=rtpmap:111 opus/48000/2\r\n",
            transport.replace("actpass", "passive")
        ),
    ];
    for sdp in &offers {
        sim.command(Command::Offer {
            participant: id,
            sdp: sdp.clone(),
            sources: Vec::new(),
        });
    }
    let errs = errors(&sim, c);
    assert!(
        errs.iter()
            .any(|(_, m)| m.contains("mapped more than once")),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|(_, m)| m.contains("repairs itself")),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|(_, m)| m.contains("DTLS client")),
        "{errs:?}"
    );
    // Nobody else noticed, and the shard takes new participants (c's own session took
    // the defused offers, with their made-up ICE and DTLS credentials: it is c's).
    assert_still_talking(&mut sim, a, b);
    let d = sim.connect("d", "r");
    assert!(sim.clients[d].connected);
}

#[test]
fn extra_slots_are_inactive_and_video_is_rejected_in_a_room_without_video() {
    let mut sim = Sim::with_config(|c| {
        c.audio_slots = 2;
        c.video_slots = 0;
    });
    let a = sim.join("a", "r");
    let c = &mut sim.clients[a];
    let mut api = c.rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    for _ in 0..4 {
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    }
    api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
    let (offer, _pending) = api.apply().unwrap();
    let id = c.id;
    sim.command(Command::Offer {
        participant: id,
        sdp: offer.to_sdp_string(),
        sources: Vec::new(),
    });
    let answer = sim.clients[a].messages("answer")[0].clone();
    let ServerMessage::Answer { sdp, slots, .. } = answer else {
        unreachable!()
    };
    assert_eq!(slots.len(), 2, "only the room's slot count");
    let sections: Vec<&str> = sdp.split("\r\nm=").skip(1).collect();
    assert_eq!(sections.len(), 6, "{sdp}");
    assert!(
        sections[0].contains("a=recvonly"),
        "the microphone: {}",
        sections[0]
    );
    for s in &sections[1..3] {
        assert!(
            s.contains("a=sendonly") && s.contains("a=ssrc:"),
            "a slot: {s}"
        );
        assert!(
            s.contains("a=candidate:"),
            "candidates in every m-section: {s}"
        );
    }
    for s in &sections[3..5] {
        assert!(s.contains("a=inactive"), "beyond the slot count: {s}");
    }
    assert!(
        sections[5].starts_with("video 0 "),
        "video rejected: {}",
        sections[5]
    );
}

#[test]
fn stray_datagrams_are_dropped_and_counted() {
    let mut sim = Sim::new();
    let (a, b) = talking_pair(&mut sim);
    let now = sim.now;
    let stranger: SocketAddr = "198.51.100.7:5000".parse().unwrap();
    let stun_unknown_ufrag = {
        // A binding request naming a ufrag nobody has.
        let mut m = vec![0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&[0x00, 0x06, 0x00, 0x08]);
        m.extend_from_slice(b"nope:abc");
        m
    };
    let before = sim.shards[0].stats().clone();
    for data in [
        &[][..],
        &[0u8; 1][..],
        &[0x80; 1500][..],
        &stun_unknown_ufrag[..],
        &[0xff; 60][..],
    ] {
        sim.shards[0].handle_datagram(now, stranger, data);
    }
    // Garbage from a participant's own address: refused by its Rtc, nothing else.
    let a_addr = sim.clients[a].addr;
    for data in [
        &[0x80u8, 111, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9, 1, 2, 3][..],
        &[0x16; 40][..],
        &[0x90; 3][..],
    ] {
        sim.shards[0].handle_datagram(now, a_addr, data);
    }
    sim.pump();
    let after = sim.shards[0].stats();
    // Not WebRTC at all (empty, one byte, 0xff…, the 3-byte one): malformed, whoever
    // sent it. RTP-like bytes and STUN naming nobody from a stranger: unknown source.
    assert_eq!(after.dropped_malformed - before.dropped_malformed, 4);
    assert_eq!(
        after.dropped_unknown_source - before.dropped_unknown_source,
        2
    );
    assert_still_talking(&mut sim, a, b);
}

#[test]
fn a_full_room_refuses_the_next_join() {
    let mut sim = Sim::with_config(|c| c.max_participants = 2);
    let (a, b) = talking_pair(&mut sim);
    let c = sim.join("c", "r");
    assert_eq!(errors(&sim, c)[0].0, ErrorCode::RoomFull);
    assert_eq!(sim.closed, vec![(sim.clients[c].id, CloseReason::Rejected)]);
    assert_eq!(
        sim.clients[a].messages("participant_joined").len(),
        1,
        "b only"
    );
    assert_still_talking(&mut sim, a, b);
}

#[test]
fn commands_for_unknown_or_duplicate_participants_are_harmless() {
    let mut sim = Sim::with_config(|c| c.auto_create_rooms = false);
    let a = sim.join("a", "r");
    assert_eq!(errors(&sim, a)[0].0, ErrorCode::RoomNotFound);
    let ghost = ParticipantId(99_999);
    for cmd in [
        Command::Offer {
            participant: ghost,
            sdp: "v=0".into(),
            sources: Vec::new(),
        },
        Command::SetMuted {
            participant: ghost,
            muted: true,
        },
        Command::SetDeafened {
            participant: ghost,
            deafened: true,
        },
        Command::Candidate {
            participant: ghost,
            candidate: "x".into(),
        },
        Command::Leave { participant: ghost },
    ] {
        sim.command(cmd);
    }
    let mut sim = Sim::new();
    let (a, b) = talking_pair(&mut sim);
    let id = sim.clients[a].id;
    sim.command(Command::Join {
        participant: id,
        room: RoomId::new("other").unwrap(),
        name: DisplayName::new("again").unwrap(),
        identity: None,
        permissions: chorus_engine::Permissions::ALL,
        p2p: false,
    });
    assert_eq!(
        errors(&sim, a),
        vec![(ErrorCode::BadRequest, "already joined".into())]
    );
    sim.command(Command::Candidate {
        participant: id,
        candidate: "garbage".into(),
    });
    assert_eq!(errors(&sim, a).len(), 2);
    sim.command(Command::Candidate {
        participant: id,
        candidate: "candidate:1 1 udp 2130706431 192.0.2.9 5000 typ host".into(),
    });
    assert_eq!(
        errors(&sim, a).len(),
        2,
        "a valid candidate is accepted silently"
    );
    assert_still_talking(&mut sim, a, b);
}
