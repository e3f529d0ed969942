//! Everyone hears everyone: three participants, each speaking, each receiving the
//! other two on sticky slots with the speaker's CSRC and level, exactly once, in order.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use chorus_protocol::signal::ServerMessage;
use chorus_tests::sim::Sim;

#[test]
fn three_participants_hear_each_other() {
    let mut sim = Sim::new();
    let a = sim.connect("alice", "r1");
    let b = sim.connect("bob", "r1");
    let c = sim.connect("carol", "r1");
    for (i, level) in [(a, 20), (b, 30), (c, 40)] {
        sim.clients[i].speaking = Some(level);
    }
    sim.run_for(Duration::from_secs(2));
    for i in [a, b, c] {
        sim.clients[i].speaking = None;
    }
    sim.run_for(Duration::from_millis(200));

    for me in [a, b, c] {
        let rx = &sim.clients[me];
        assert!(rx.from(me).next().is_none(), "{} hears itself", rx.name);
        let mut slot_ssrcs = HashSet::new();
        for other in [a, b, c].into_iter().filter(|o| *o != me) {
            let tx = &sim.clients[other];
            let got: Vec<_> = rx.from(other).collect();
            // Every frame sent after the subscriber's media was up arrives exactly once.
            let frames: Vec<u32> = got.iter().map(|r| r.frame).collect();
            let first = frames[0];
            assert_eq!(
                frames,
                (first..tx.sent).collect::<Vec<_>>(),
                "{} from {}: frames in order, no loss, no duplicates",
                rx.name,
                tx.name
            );
            assert!(first <= 3, "forwarding started late: frame {first}");
            for r in &got {
                assert_eq!(r.csrc, vec![tx.csrc], "exactly one CSRC, the speaker's");
                assert_eq!(r.audio_level, Some(-[20, 30, 40][other]), "speaker's level");
                assert_eq!(r.pt, 111, "subscriber's Opus payload type");
            }
            // One sticky slot per speaker: one SSRC, one mid, continuous numbering.
            let ssrcs: HashSet<u32> = got.iter().map(|r| r.ssrc).collect();
            assert_eq!(ssrcs.len(), 1);
            slot_ssrcs.extend(ssrcs);
            assert!(got[0].mid.is_some_and(|m| rx.slots.contains(&m)));
            for w in got.windows(2) {
                assert_eq!(w[1].seq, w[0].seq + 1);
                assert_eq!(w[1].timestamp.wrapping_sub(w[0].timestamp), 960);
            }
            assert!(
                got[0].marker,
                "the first packet of a speaker on a slot is marked"
            );
        }
        assert_eq!(slot_ssrcs.len(), 2, "two speakers, two slots");
    }

    // The slot map and levels were announced.
    let speakers = sim.clients[a].messages("speakers");
    assert!(!speakers.is_empty());
    let ServerMessage::Speakers { speakers } = speakers[0] else {
        unreachable!()
    };
    assert!(speakers
        .iter()
        .any(|s| s.participant_id == sim.clients[b].id));
    assert_eq!(sim.shards[0].stats().dropped_no_slot, 0);
}

#[test]
fn joined_and_participant_messages_describe_the_room() {
    let mut sim = Sim::new();
    let a = sim.connect("alice", "r1");
    let b = sim.join("bob", "r1");
    let joined = sim.clients[b].messages("joined");
    let ServerMessage::Joined {
        participants,
        audio_slots,
        csrc,
        ..
    } = joined[0]
    else {
        unreachable!()
    };
    assert_eq!(*audio_slots, 8);
    assert_eq!(participants.len(), 1, "the others, not yourself");
    assert_eq!(participants[0].participant_id, sim.clients[a].id);
    assert_ne!(*csrc, 0);
    assert_ne!(*csrc, participants[0].csrc);
    let announced = sim.clients[a].messages("participant_joined");
    assert_eq!(announced.len(), 1);
    // A room of another name is another room.
    let c = sim.join("carol", "r2");
    let ServerMessage::Joined { participants, .. } = sim.clients[c].messages("joined")[0] else {
        unreachable!()
    };
    assert!(participants.is_empty());
}

#[test]
fn payload_types_are_mapped_per_subscriber() {
    let mut sim = Sim::new();
    let chromium = sim.connect_with_pt("chromium", "r1", 111);
    let aiortc = sim.connect_with_pt("aiortc", "r1", 96);
    sim.clients[chromium].speaking = Some(20);
    sim.clients[aiortc].speaking = Some(20);
    sim.run_for(Duration::from_millis(500));
    let to_aiortc: Vec<_> = sim.clients[aiortc].from(chromium).collect();
    let to_chromium: Vec<_> = sim.clients[chromium].from(aiortc).collect();
    assert!(to_aiortc.len() >= 20 && to_chromium.len() >= 20);
    assert!(to_aiortc.iter().all(|r| r.pt == 96));
    assert!(to_chromium.iter().all(|r| r.pt == 111));
}

#[test]
fn a_joiner_is_told_the_current_speakers() {
    let mut sim = Sim::new();
    let a = sim.connect("alice", "r1");
    sim.clients[a].speaking = Some(20);
    sim.run_for(Duration::from_secs(1));
    let b = sim.connect("bob", "r1");
    sim.run_for(Duration::from_millis(100));
    let first = sim.clients[b].messages("speakers");
    let ServerMessage::Speakers { speakers } = first.first().expect("a speakers message") else {
        unreachable!()
    };
    assert!(speakers
        .iter()
        .any(|s| s.participant_id == sim.clients[a].id));
}

#[test]
fn idle_participants_wake_str0m_only_for_its_own_timers() {
    let mut sim = Sim::new();
    for i in 0..4 {
        sim.connect(&format!("p{i}"), "quiet");
    }
    sim.run_for(Duration::from_secs(2));
    let before = sim.shards[0].stats().rtc_timeouts;
    let quality_before = sim.events_of("quality").len();
    sim.run_for(Duration::from_secs(60));
    let per_second = (sim.shards[0].stats().rtc_timeouts - before) as f64 / 60.0 / 4.0;
    eprintln!("rtc timeouts per idle participant per second: {per_second:.2}");
    // The room has video slots (the guild default) but these clients offer none: they
    // get the voice `Rtc`, without the estimator's pacer, which alone asked for a
    // turn every 40 ms (25 a second). What str0m still asks for (its ICE agent every
    // 3 s, statistics every 5 s: 0.38 turns a second) is served in one turn at most
    // every 5 s.
    assert!(per_second <= 0.21, "{per_second}");
    // The statistics keep their period: a `quality` event every 5 s for each.
    let quality = sim.events_of("quality").len() - quality_before;
    assert!(
        (44..=52).contains(&quality),
        "{quality} quality events in 60 s"
    );
}

#[test]
fn a_short_quality_interval_is_kept_for_idle_participants() {
    let mut sim = Sim::with_config(|c| c.quality_interval = Some(Duration::from_secs(1)));
    for i in 0..2 {
        sim.connect(&format!("p{i}"), "quiet");
    }
    sim.run_for(Duration::from_secs(10));
    let before = sim.events_of("quality").len();
    sim.run_for(Duration::from_secs(20));
    let quality = sim.events_of("quality").len() - before;
    assert!(
        (36..=42).contains(&quality),
        "{quality} quality events in 20 s"
    );
}
