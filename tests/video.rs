//! Video slots (issue 12): a publisher's simulcast camera reaches a subscriber's video
//! slot at the layer its `subscribe` asks for; the slot switches layers and
//! publishers only on a keyframe of the new one (asked for with a PLI) and stays one
//! continuous stream (sequence numbers, VP8 picture ids); `video_slots` tells the
//! client what each slot forwards; bad requests get `bad_request`; H.264 simulcast
//! switches on IDR pictures as VP8 does on keyframes; video goes over ICE-TCP. str0m
//! clients, a simulated clock.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chorus_engine::VideoQuality::{High, Low, Medium};
use chorus_protocol::control::NodeEvent;
use chorus_protocol::signal::{ErrorCode, ServerMessage, VideoQuality, VideoSlotInfo};
use chorus_tests::sim::{Received, Sim};

const RIDS: &[&str] = &["q", "h", "f"];

/// The last `video_slots` map the client was sent.
fn video_slots(sim: &Sim, idx: usize) -> Vec<VideoSlotInfo> {
    sim.clients[idx]
        .inbox
        .iter()
        .rev()
        .find_map(|m| match m {
            ServerMessage::VideoSlots { slots } => Some(slots.clone()),
            _ => None,
        })
        .expect("a video_slots message")
}

fn last_error(sim: &Sim, idx: usize) -> Option<(ErrorCode, String)> {
    sim.clients[idx].inbox.iter().rev().find_map(|m| match m {
        ServerMessage::Error { code, message } => Some((*code, message.clone())),
        _ => None,
    })
}

/// Every packet after the first continues the sequence (after the padding packets
/// between them), and each frame's picture id follows the last one's.
fn assert_continuous(packets: &[Received]) {
    for w in packets.windows(2) {
        assert_eq!(
            w[1].seq,
            w[0].seq + 1 + w[1].padded,
            "sequence gap: {:?} then {:?}",
            w[0],
            w[1]
        );
        let (a, b) = (w[0].video.unwrap(), w[1].video.unwrap());
        assert_eq!(
            b.picture_id,
            (a.picture_id + 1) & 0x7fff,
            "picture id jumps: {a:?} then {b:?}"
        );
        assert_eq!(b.tl0picidx, a.tl0picidx.wrapping_add(1), "{a:?} then {b:?}");
    }
}

fn layers(packets: &[Received]) -> Vec<u8> {
    let mut l: Vec<u8> = packets.iter().map(|p| p.video.unwrap().layer).collect();
    l.dedup();
    l
}

/// `a` publishes a three-layer camera (H.264 with `h264`, else VP8), `b` shows it in
/// slot 0 at high for 2 s: it gets the top layer, from a keyframe on.
fn camera_at_high(h264: bool) -> (Sim, usize, usize, Vec<Received>) {
    let mut sim = Sim::new();
    let a = sim.connect_video("a", "v", Some(RIDS));
    let b = sim.connect_video("b", "v", None);
    assert_eq!(
        sim.clients[b].video_slots.len(),
        4,
        "the room's video slots"
    );
    sim.clients[a].camera.h264 = h264;
    sim.publish(a, true);
    sim.subscribe(b, 0, Some(a), High);
    sim.run_for(Duration::from_secs(2));

    let got = sim.video_from(b, 0, a);
    assert!(got.len() > 40, "{} packets in 2 s", got.len());
    // Until the publisher's rates are measured, the subscriber's initial estimate
    // (800 kbit/s) does not fit a top layer's usual 1.5 Mbit/s: the slot starts lower
    // and moves up once measured (these layers send ~30 kbit/s).
    assert_eq!(
        layers(&got).last(),
        Some(&2),
        "the top layer: {:?}",
        layers(&got)
    );
    assert!(
        got[0].video.unwrap().keyframe,
        "a slot starts on a keyframe"
    );
    (sim, a, b, got)
}

/// `b`'s slot 0 asks for `a`'s low layer: the node asks `a` for a keyframe of it (PLI)
/// and switches on it. Returns what `b` got of `a` and the index of its first low
/// packet (a keyframe).
fn down_to_low(sim: &mut Sim, a: usize, b: usize) -> (Vec<Received>, usize) {
    let plis = sim.clients[a].camera.plis[0];
    let before = sim.video_from(b, 0, a).len();
    sim.subscribe(b, 0, Some(a), Low);
    sim.run_for(Duration::from_secs(2));
    assert!(sim.clients[a].camera.plis[0] > plis, "a PLI for layer 0");
    let got = sim.video_from(b, 0, a);
    assert_eq!(layers(&got[before..]).last(), Some(&0));
    let first_low = before
        + got[before..]
            .iter()
            .position(|p| p.video.unwrap().layer == 0)
            .unwrap();
    assert!(
        got[first_low].video.unwrap().keyframe,
        "switched on a keyframe"
    );
    (got, first_low)
}

#[test]
fn a_slot_forwards_the_layer_asked_for_and_switches_on_keyframes() {
    let (mut sim, a, b, got) = camera_at_high(false);
    assert_continuous(&got);
    let map = video_slots(&sim, b);
    assert_eq!(map.len(), 4);
    assert_eq!(map[0].participant_id, Some(sim.clients[a].id));
    assert_eq!(map[0].quality, VideoQuality::High);
    assert_eq!(map[0].layer, Some(VideoQuality::High));
    assert_eq!(map[1].participant_id, None);

    // Down to low: layer 0 had its only keyframe at the start, so the node asks for
    // one, and forwards the top layer until it comes.
    let (got, _) = down_to_low(&mut sim, a, b);
    assert_continuous(&got);
    assert_eq!(video_slots(&sim, b)[0].layer, Some(VideoQuality::Low));

    // Medium: the middle layer.
    sim.subscribe(b, 0, Some(a), Medium);
    sim.run_for(Duration::from_secs(2));
    let got = sim.video_from(b, 0, a);
    assert_eq!(layers(&got).last(), Some(&1));
    assert_continuous(&got);
    assert_eq!(video_slots(&sim, b)[0].layer, Some(VideoQuality::Medium));
}

#[test]
fn a_slot_waits_for_a_publisher_and_is_cleared_when_it_leaves() {
    let mut sim = Sim::new();
    let a = sim.connect_video("a", "v", Some(RIDS));
    let b = sim.connect_video("b", "v", None);
    // Subscribing before anything is published is accepted: the slot waits.
    sim.subscribe(b, 1, Some(a), Medium);
    sim.run_for(Duration::from_millis(500));
    let map = video_slots(&sim, b);
    assert_eq!(map[1].participant_id, Some(sim.clients[a].id));
    assert_eq!(map[1].layer, None, "nothing forwarded yet");
    assert!(last_error(&sim, b).is_none());

    sim.publish(a, true);
    sim.run_for(Duration::from_secs(1));
    assert!(!sim.video_from(b, 1, a).is_empty());
    assert_eq!(video_slots(&sim, b)[1].layer, Some(VideoQuality::Medium));
    // Everyone sees the camera on; the backend gets track_published.
    let updated = sim.clients[b].inbox.iter().any(
        |m| matches!(m, ServerMessage::ParticipantUpdated { participant } if participant.camera),
    );
    assert!(updated, "participant_updated with camera: true");
    assert!(sim.events.iter().any(|e| matches!(e,
        NodeEvent::TrackPublished { source, .. } if source.as_str() == "camera")));

    let id = sim.clients[a].id;
    sim.command(chorus_engine::Command::Leave { participant: id });
    sim.run_for(Duration::from_millis(200));
    let map = video_slots(&sim, b);
    assert_eq!(map[1].participant_id, None, "the publisher left");
    assert_eq!(map[1].layer, None);
}

#[test]
fn bad_subscriptions_are_refused() {
    let mut sim = Sim::new();
    let a = sim.connect_video("a", "v", Some(RIDS));
    let b = sim.connect_video("b", "v", None);
    let other = sim.connect_video("o", "elsewhere", Some(RIDS));

    sim.subscribe(b, 4, Some(a), High);
    let (code, message) = last_error(&sim, b).unwrap();
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("out of range"), "{message}");

    sim.subscribe(b, 0, Some(other), High);
    let (code, message) = last_error(&sim, b).unwrap();
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("not in the room"), "{message}");

    sim.subscribe(b, 0, Some(b), High);
    let (code, _) = last_error(&sim, b).unwrap();
    assert_eq!(code, ErrorCode::BadRequest);

    // Clearing a slot is always fine.
    let errors = sim.clients[b].messages("error").len();
    sim.subscribe(b, 0, None, High);
    assert_eq!(sim.clients[b].messages("error").len(), errors);
    assert_eq!(video_slots(&sim, b)[0].participant_id, None);
}

#[test]
fn a_slot_switches_publishers_on_a_keyframe_and_stays_one_stream() {
    let mut sim = Sim::new();
    let a = sim.connect_video("a", "v", Some(RIDS));
    let c = sim.connect_video("c", "v", Some(RIDS));
    let b = sim.connect_video("b", "v", None);
    sim.publish(a, true);
    sim.publish(c, true);
    sim.subscribe(b, 0, Some(a), Medium);
    sim.run_for(Duration::from_secs(1));
    sim.subscribe(b, 0, Some(c), Medium);
    sim.run_for(Duration::from_secs(1));
    let slot = sim.clients[b].video_slots[0];
    let got: Vec<Received> = sim.clients[b]
        .received
        .iter()
        .filter(|r| r.video.is_some() && r.mid == Some(slot))
        .cloned()
        .collect();
    let first_c = got
        .iter()
        .position(|p| p.from == c)
        .expect("c reached the slot");
    assert!(first_c > 0 && got[..first_c].iter().all(|p| p.from == a));
    assert!(got[first_c..].iter().all(|p| p.from == c), "no more of a");
    assert!(got[first_c].video.unwrap().keyframe);
    assert_continuous(&got);
    // One SSRC for the slot throughout.
    assert!(got.iter().all(|p| p.ssrc == got[0].ssrc));
}

#[test]
fn video_crosses_shards_and_keyframe_requests_come_back() {
    let mut sim = Sim::with_shards(2, |_| {});
    let a = sim.connect_video("a", "v", Some(RIDS));
    let b = sim.connect_video("b", "v", None);
    assert_ne!(
        sim.holder(a),
        sim.holder(b),
        "publisher and subscriber apart"
    );
    sim.publish(a, true);
    sim.subscribe(b, 0, Some(a), High);
    sim.run_for(Duration::from_secs(2));
    let plis = sim.clients[a].camera.plis[0];
    sim.subscribe(b, 0, Some(a), Low);
    sim.run_for(Duration::from_secs(1));
    assert!(
        sim.clients[a].camera.plis[0] > plis,
        "the PLI crossed shards"
    );
    let got = sim.video_from(b, 0, a);
    assert_eq!(layers(&got).last(), Some(&0));
    assert!(layers(&got).contains(&2));
    assert_continuous(&got);
}

#[test]
fn a_stopped_layer_is_left_for_the_next_one_down() {
    let mut sim = Sim::new();
    let a = sim.connect_video("a", "v", Some(RIDS));
    let b = sim.connect_video("b", "v", None);
    sim.publish(a, true);
    sim.subscribe(b, 0, Some(a), High);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(layers(&sim.video_from(b, 0, a)).last(), Some(&2));
    // The publisher's uplink is short: it stops its top layer.
    sim.clients[a].camera.paused[2] = true;
    sim.run_for(Duration::from_secs(3));
    let got = sim.video_from(b, 0, a);
    assert_eq!(
        layers(&got).last(),
        Some(&1),
        "moved down to the middle layer"
    );
    assert_continuous(&got);
    assert_eq!(video_slots(&sim, b)[0].layer, Some(VideoQuality::Medium));
    assert_eq!(video_slots(&sim, b)[0].quality, VideoQuality::High);
}

#[test]
fn a_video_packet_lost_between_shards_holds_the_layer_until_a_keyframe() {
    use std::cell::RefCell;
    use std::rc::Rc;

    use chorus_engine::ShardMessage;

    let mut sim = Sim::with_shards(2, |_| {});
    let a = sim.connect_video("a", "v", Some(RIDS));
    let b = sim.connect_video("b", "v", None);
    assert_ne!(sim.holder(a), sim.holder(b));
    sim.publish(a, true);
    sim.subscribe(b, 0, Some(a), High);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(layers(&sim.video_from(b, 0, a)).last(), Some(&2));
    let before = sim.video_from(b, 0, a).len();
    let plis = sim.clients[a].camera.plis[2];

    // The driver's video ring to b's shard overflows once: the packet is gone and the
    // driver says so (ShardMessage::VideoGap).
    let lost: Rc<RefCell<Option<ShardMessage>>> = Rc::default();
    let seen = lost.clone();
    sim.lose = Some(Box::new(move |_, m| match m {
        ShardMessage::Video { room, packet } if packet.layer == 2 && seen.borrow().is_none() => {
            *seen.borrow_mut() = Some(ShardMessage::VideoGap {
                room: room.clone(),
                publisher: packet.publisher,
                source: packet.source,
                layer: packet.layer,
                origin: packet.origin,
            });
            true
        }
        _ => false,
    }));
    sim.run_until(Duration::from_secs(1), |_| lost.borrow().is_some());
    sim.lose = None;
    let gap = lost.borrow_mut().take().unwrap();
    let to = sim.holder(b).unwrap();
    let now = sim.now;
    let at_gap = sim.video_from(b, 0, a).len();
    sim.shards[to].handle_shard_message(now, gap);
    sim.run_for(Duration::from_secs(2));

    assert!(
        sim.clients[a].camera.plis[2] > plis,
        "a keyframe was asked for"
    );
    let got = sim.video_from(b, 0, a);
    assert!(got.len() > before);
    let resumed = &got[at_gap..];
    assert!(
        resumed.first().is_some_and(|p| p.video.unwrap().keyframe),
        "after the gap the slot goes on at a keyframe: {:?}",
        resumed.first()
    );
    let stats = sim.shards[to].stats();
    // (The publisher answered the PLI at its next frame: nothing had to be held back.)
    assert_eq!(stats.video_gaps, 1);
}

#[test]
fn a_slot_cleared_and_subscribed_again_continues_its_stream() {
    let mut sim = Sim::new();
    let a = sim.connect_video("a", "v", Some(RIDS));
    let b = sim.connect_video("b", "v", None);
    sim.publish(a, true);
    sim.subscribe(b, 0, Some(a), Low);
    sim.run_for(Duration::from_secs(1));
    sim.subscribe(b, 0, None, Low);
    sim.run_for(Duration::from_secs(1));
    let paused = sim.video_from(b, 0, a).len();
    // The same publisher, source and layer as before: the slot must not pick up the
    // offsets it had (the publisher's stream went on meanwhile).
    sim.subscribe(b, 0, Some(a), Low);
    sim.run_for(Duration::from_secs(1));
    let got = sim.video_from(b, 0, a);
    assert!(got.len() > paused + 10, "forwarding again");
    assert!(got[paused].video.unwrap().keyframe, "again from a keyframe");
    assert_continuous(&got);
}

/// The payload type `idx` negotiated for H.264 in packetization mode 1.
fn h264_pt(sim: &Sim, idx: usize) -> u8 {
    *sim.clients[idx]
        .rtc
        .codec_config()
        .params()
        .iter()
        .find(|p| {
            p.spec().codec == str0m::format::Codec::H264
                && p.spec().format.packetization_mode == Some(1)
        })
        .map(|p| p.pt())
        .unwrap()
}

#[test]
fn h264_simulcast_is_forwarded_and_switches_on_idr_pictures() {
    let (mut sim, a, b, got) = camera_at_high(true);
    // Each layer change happened on an IDR picture of the new layer.
    for w in got.windows(2) {
        let (x, y) = (w[0].video.unwrap(), w[1].video.unwrap());
        assert!(x.layer == y.layer || y.keyframe, "{x:?} then {y:?}");
    }
    let pt = h264_pt(&sim, b);
    assert!(
        got.iter().all(|p| p.pt == pt),
        "the subscriber's H.264 payload type"
    );
    for w in got.windows(2) {
        assert_eq!(
            w[1].seq,
            w[0].seq + 1 + w[1].padded,
            "one continuous stream"
        );
    }

    // Down to low: forwarded from the low layer's next IDR picture (asked for: an IDR
    // slice in FU-A fragments), with the sequence going on.
    let (got, first_low) = down_to_low(&mut sim, a, b);
    assert!(got[first_low..].iter().all(|p| p.video.unwrap().layer == 0));
    for w in got.windows(2) {
        assert_eq!(
            w[1].seq,
            w[0].seq + 1 + w[1].padded,
            "one continuous stream across the switch"
        );
    }
    assert_eq!(video_slots(&sim, b)[0].layer, Some(VideoQuality::Low));
}

#[test]
fn video_goes_over_ice_tcp_with_its_bandwidth_estimate() {
    // Both ends over ICE-TCP only: the camera's layers come in over TCP, the slot goes
    // out over TCP, and the subscriber's estimate (transport-cc over that connection)
    // lets the slot reach the layer it asked for.
    let mut sim = Sim::new();
    let a = sim.connect_video_over("a", "v", Some(RIDS), true);
    let b = sim.connect_video_over("b", "v", None, true);
    sim.publish(a, true);
    sim.subscribe(b, 0, Some(a), Medium);
    sim.run_for(Duration::from_secs(3));
    let got = sim.video_from(b, 0, a);
    assert!(got.len() > 60, "{} packets in 3 s over TCP", got.len());
    assert_eq!(layers(&got).last(), Some(&1), "the middle layer");
    assert!(got[0].video.unwrap().keyframe);
    assert_continuous(&got);
    assert_eq!(video_slots(&sim, b)[0].layer, Some(VideoQuality::Medium));
}

/// Whether `datagram` is RTP in a video payload type (not Opus, not RTCP).
fn is_video_rtp(datagram: &[u8]) -> bool {
    datagram.len() > 12
        && datagram[0] >> 6 == 2
        && !(200..=206).contains(&datagram[1])
        && (96..128).contains(&(datagram[1] & 0x7f))
        && datagram[1] & 0x7f != 111
}

#[test]
fn a_video_packet_lost_on_the_way_is_sent_again_on_the_subscribers_nack() {
    // The node sends the video slot itself: the subscriber's NACK is answered from
    // the slot's history, on the slot's SSRC with the lost packet's number.
    let (mut sim, a, b, got) = camera_at_high(false);
    let ssrc = got[0].ssrc;
    // str0m NACKs only streams with RTX unless told otherwise; browsers NACK any
    // stream that negotiated `nack`.
    sim.clients[b]
        .rtc
        .direct_api()
        .stream_rx(&ssrc.into())
        .unwrap()
        .suppress_nack(false);
    let lost = std::rc::Rc::new(std::cell::RefCell::new(Vec::<u16>::new()));
    let lost_bytes = std::rc::Rc::new(std::cell::RefCell::new(Vec::<Vec<u8>>::new()));
    let mut video_to_b = 0;
    let record = lost.clone();
    let record_bytes = lost_bytes.clone();
    sim.clients[b].tap = Some(Vec::new());
    sim.lose_to_client = Some(Box::new(move |to, datagram| {
        if to != b || !is_video_rtp(datagram) || datagram[8..12] != ssrc.to_be_bytes() {
            return false;
        }
        video_to_b += 1;
        // Every 15th video packet to b (the first time it is sent), four times.
        let seq = u16::from_be_bytes([datagram[2], datagram[3]]);
        let mut lost = record.borrow_mut();
        let lose = video_to_b % 15 == 0 && lost.len() < 4 && !lost.contains(&seq);
        if lose {
            lost.push(seq);
            record_bytes.borrow_mut().push(datagram.to_vec());
        }
        lose
    }));
    sim.run_for(Duration::from_secs(3));
    sim.lose_to_client = None;
    sim.run_for(Duration::from_millis(500));
    let lost = lost.borrow().clone();
    assert_eq!(lost.len(), 4, "four packets lost");
    let resent: u64 = sim.shards.iter().map(|s| s.stats().video_resent).sum();
    assert!(
        resent >= 4,
        "{resent} packets sent again: {:?}",
        sim.shards[0].stats().counters()
    );
    // Each lost number arrived in the end, as the packet it was.
    let got = sim.video_from(b, 0, a);
    for seq in lost {
        let again: Vec<_> = got.iter().filter(|p| p.seq as u16 == seq).collect();
        assert_eq!(again.len(), 1, "{seq} sent again once: {again:?}");
        assert_eq!(again[0].ssrc, ssrc, "on the slot's own SSRC");
    }
    // Byte for byte the datagram first sent: under AES-GCM the same nonce (SSRC and
    // index) may never seal a different packet.
    let tap = sim.clients[b].tap.take().unwrap();
    for first in lost_bytes.borrow().iter() {
        let resent = tap
            .iter()
            .find(|d| d.len() > 12 && d[2..4] == first[2..4] && d[8..12] == first[8..12])
            .expect("the resend");
        assert_eq!(resent, first, "the resend is the same datagram");
    }
}

/// A client that negotiated no video (a voice offer in a room with video slots) but
/// asked a slot for a camera is still told, at the shard's next tick, when that
/// publisher leaves: the tick visits whoever is owed a slot map, not only those with
/// video.
#[test]
fn a_voice_client_owed_a_slot_map_gets_it_when_the_publisher_leaves() {
    let mut sim = Sim::new();
    let a = sim.connect_video("a", "v", Some(RIDS));
    let c = sim.connect("c", "v");
    assert!(sim.clients[c].video_slots.is_empty(), "no video negotiated");
    sim.publish(a, true);
    sim.subscribe(c, 0, Some(a), High);
    sim.run_for(Duration::from_millis(200));
    let a_id = sim.clients[a].id;
    assert_eq!(video_slots(&sim, c)[0].participant_id, Some(a_id));
    sim.clients[c].inbox.clear();
    sim.command(chorus_engine::Command::Leave { participant: a_id });
    sim.run_for(Duration::from_millis(200));
    assert_eq!(video_slots(&sim, c)[0].participant_id, None);
}

/// A voice client in a room with video slots holds no slot state until it needs it
/// (tests/memory.rs); its slot map is the room's all the same: every slot listed,
/// free ones at their defaults, and a subscription lands on the slot it names.
#[test]
fn a_voice_clients_slot_map_lists_every_slot_before_and_after_a_subscription() {
    let mut sim = Sim::new();
    let a = sim.connect_video("a", "v", Some(RIDS));
    let c = sim.connect("c", "v");
    sim.publish(a, true);
    sim.subscribe(c, 0, None, High);
    let map = video_slots(&sim, c);
    assert_eq!(map.len(), 4, "{map:?}");
    for (i, s) in map.iter().enumerate() {
        assert_eq!(s.slot as usize, i);
        assert_eq!(s.participant_id, None);
        assert_eq!(s.source, chorus_protocol::signal::Source::Camera);
        assert_eq!(s.quality, VideoQuality::High);
        assert_eq!(s.layer, None);
    }
    sim.subscribe(c, 2, Some(a), Medium);
    let map = video_slots(&sim, c);
    assert_eq!(map.len(), 4, "{map:?}");
    let a_id = sim.clients[a].id;
    let taken: Vec<_> = map.iter().map(|s| s.participant_id).collect();
    assert_eq!(taken, [None, None, Some(a_id), None]);
    assert_eq!(map[2].quality, VideoQuality::Medium);
    sim.subscribe(c, 4, Some(a), High);
    let (code, message) = last_error(&sim, c).unwrap();
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("out of range (0..4)"), "{message}");
}
