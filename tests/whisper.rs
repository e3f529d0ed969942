//! Whisper (issue 10, item 3): `{"type":"whisper","to":[…]}` sends a participant's
//! audio only to the participants it names, who see `whisper: true` on its `speakers`
//! entry (the others do not see it speaking at all); `"to":null` stops. Allowed by the
//! room's `whisper` policy (on for guild, party and raid rooms); the backend may set it
//! through `participant.set_whisper` in any room.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chorus_engine::{Command, Reply, Request, RequestError};
use chorus_protocol::control::{ParticipantSetWhisper, RoomCreate, RoomKind, RoomUpdate};
use chorus_protocol::signal::{ErrorCode, RoomId, ServerMessage};
use chorus_tests::sim::Sim;

fn room(name: &str) -> RoomId {
    RoomId::new(name).unwrap()
}

fn create(sim: &mut Sim, name: &str, kind: RoomKind) {
    create_with_slots(sim, name, kind, None);
}

fn create_with_slots(sim: &mut Sim, name: &str, kind: RoomKind, audio_slots: Option<u8>) {
    let replies = sim.request(Request::CreateRoom(RoomCreate {
        kind: Some(kind),
        audio_slots,
        ..RoomCreate::new(room(name))
    }));
    assert!(
        matches!(replies[..], [Ok(Reply::Room(ref r))] if r.whisper == (kind != RoomKind::Public))
    );
}

/// Packets `to` got from `from` over the next `d`.
/// The latest `speakers` a client got: (participant id, whisper) per entry.
fn last_speakers(sim: &Sim, who: usize) -> Vec<(String, bool)> {
    sim.clients[who]
        .last_speakers()
        .iter()
        .map(|s| (s.participant_id.to_string(), s.whisper))
        .collect()
}

fn whisper(sim: &mut Sim, from: usize, to: Option<Vec<usize>>) {
    let participant = sim.clients[from].id;
    let to = to.map(|v| v.iter().map(|&i| sim.clients[i].id).collect());
    sim.command(Command::SetWhisper { participant, to });
}

fn last_error(sim: &Sim, who: usize) -> Option<(ErrorCode, String)> {
    sim.clients[who].inbox.iter().rev().find_map(|m| match m {
        ServerMessage::Error { code, message } => Some((*code, message.clone())),
        _ => None,
    })
}

#[test]
fn a_whisper_reaches_only_its_audience_across_shards() {
    let mut sim = Sim::with_shards(2, |_| {});
    create(&mut sim, "squad", RoomKind::Guild);
    let lead = sim.connect("lead", "squad");
    let others: Vec<usize> = (0..4)
        .map(|i| sim.connect(&format!("m{i}"), "squad"))
        .collect();
    sim.clients[lead].speaking = Some(20);
    for &o in &others {
        sim.clients[o].speaking = Some(127);
    }
    sim.run_for(Duration::from_secs(1));
    for &o in &others {
        assert!(sim.heard_over(o, lead, Duration::from_millis(500)) > 20);
    }
    // The members' media sits on both shards.
    let holders: std::collections::HashSet<_> =
        others.iter().filter_map(|&o| sim.holder(o)).collect();
    assert_eq!(holders.len(), 2, "the room spans both shards");

    whisper(&mut sim, lead, Some(vec![others[0], others[2]]));
    sim.run_for(Duration::from_millis(100));
    for (k, &o) in others.iter().enumerate() {
        let got = sim.heard_over(o, lead, Duration::from_secs(1));
        if k == 0 || k == 2 {
            assert!(got > 45, "audience member {k} hears the whisper: {got}");
            let lead_id = sim.clients[lead].id.to_string();
            assert!(
                last_speakers(&sim, o).contains(&(lead_id, true)),
                "{:?}",
                last_speakers(&sim, o)
            );
        } else {
            assert_eq!(got, 0, "member {k} outside the audience hears nothing");
            let lead_id = sim.clients[lead].id.to_string();
            assert!(
                !last_speakers(&sim, o).iter().any(|(id, _)| *id == lead_id),
                "nor sees the whisperer speak: {:?}",
                last_speakers(&sim, o)
            );
        }
    }

    // null: everyone again.
    whisper(&mut sim, lead, None);
    sim.run_for(Duration::from_millis(100));
    for &o in &others {
        assert!(sim.heard_over(o, lead, Duration::from_millis(500)) > 20);
    }
}

/// A listener outside the audience gets the whisperer's slot back: another talker takes
/// it at once, instead of a slot that carries nothing for the whole whisper.
#[test]
fn a_whisperer_gives_its_slot_back_where_it_is_not_heard() {
    let mut sim = Sim::with_config(|_| {});
    create_with_slots(&mut sim, "squad", RoomKind::Guild, Some(1));
    let listener = sim.connect("listener", "squad");
    let lead = sim.connect("lead", "squad");
    let target = sim.connect("target", "squad");
    let other = sim.connect("other", "squad");
    sim.clients[listener].speaking = Some(127);
    sim.clients[lead].speaking = Some(20);
    sim.run_for(Duration::from_secs(2));
    sim.clients[other].speaking = Some(20);
    sim.run_for(Duration::from_millis(500));
    assert_eq!(
        sim.heard_over(listener, other, Duration::from_millis(500)),
        0,
        "the lead holds the listener's only slot"
    );
    whisper(&mut sim, lead, Some(vec![target]));
    sim.run_for(Duration::from_millis(200));
    assert!(
        sim.heard_over(listener, other, Duration::from_millis(500)) > 20,
        "the other talker gets the slot the whisperer left"
    );
}

/// A party room where a (talking) whispers to b, and c listens.
fn a_whispers_to_b() -> (Sim, usize, usize, usize) {
    let mut sim = Sim::with_config(|_| {});
    create(&mut sim, "party", RoomKind::Party);
    let a = sim.connect("a", "party");
    let b = sim.connect("b", "party");
    let c = sim.connect("c", "party");
    sim.clients[a].speaking = Some(20);
    whisper(&mut sim, a, Some(vec![b]));
    sim.run_for(Duration::from_millis(300));
    (sim, a, b, c)
}

/// A target that leaves is taken out of the whisper; with no target left, the whisper
/// ends and everyone hears the whisperer again.
#[test]
fn a_whisper_loses_targets_that_leave_and_ends_without_any() {
    let (mut sim, a, b, c) = a_whispers_to_b();
    assert_eq!(sim.heard_over(c, a, Duration::from_millis(500)), 0);
    let b_id = sim.clients[b].id;
    sim.command(Command::Leave { participant: b_id });
    sim.run_for(Duration::from_millis(200));
    assert!(
        sim.heard_over(c, a, Duration::from_millis(500)) > 20,
        "the whisper ended with its last target"
    );
    let a_id = sim.clients[a].id;
    let replies = sim.request(Request::GetParticipant(
        chorus_protocol::control::ParticipantRef {
            room: room("party"),
            participant_id: a_id,
        },
    ));
    assert!(matches!(replies[0], Ok(Reply::Participant(ref p)) if p.whisper_to.is_none()));
}

/// Stopping a whisper is allowed even after the room turned whispering off.
#[test]
fn a_whisper_can_always_be_stopped() {
    let (mut sim, a, _b, c) = a_whispers_to_b();
    sim.request(Request::UpdateRoom(RoomUpdate {
        whisper: Some(false),
        ..RoomUpdate::new(room("party"))
    }));
    whisper(&mut sim, a, None);
    sim.run_for(Duration::from_millis(200));
    assert!(last_error(&sim, a).is_none(), "{:?}", last_error(&sim, a));
    assert!(sim.heard_over(c, a, Duration::from_millis(500)) > 20);
}

#[test]
fn bad_whispers_are_refused_with_a_reason_and_change_nothing() {
    let mut sim = Sim::with_config(|_| {});
    create(&mut sim, "party", RoomKind::Party);
    let a = sim.connect("a", "party");
    let b = sim.connect("b", "party");
    let elsewhere = sim.connect("c", "other-room");
    sim.clients[a].speaking = Some(20);
    sim.run_for(Duration::from_millis(500));

    whisper(&mut sim, a, Some(vec![a]));
    sim.run_for(Duration::from_millis(50));
    let (code, why) = last_error(&sim, a).unwrap();
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(why.contains("oneself"), "{why}");

    whisper(&mut sim, a, Some(vec![elsewhere]));
    sim.run_for(Duration::from_millis(50));
    let (code, why) = last_error(&sim, a).unwrap();
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(why.contains("not in the room"), "{why}");

    whisper(&mut sim, a, Some(vec![]));
    sim.run_for(Duration::from_millis(50));
    assert_eq!(last_error(&sim, a).unwrap().0, ErrorCode::BadRequest);

    assert!(
        sim.heard_over(b, a, Duration::from_millis(500)) > 20,
        "a refused whisper changes nothing"
    );

    // A public room (the kind --dev rooms get) has whisper off.
    let p = sim.connect("p", "lobby");
    let q = sim.connect("q", "lobby");
    whisper(&mut sim, p, Some(vec![q]));
    sim.run_for(Duration::from_millis(50));
    assert_eq!(last_error(&sim, p).unwrap().0, ErrorCode::Forbidden);
}

#[test]
fn the_backend_sets_a_whisper_in_any_room() {
    let mut sim = Sim::with_config(|_| {});
    let a = sim.connect("a", "lobby");
    let b = sim.connect("b", "lobby");
    let c = sim.connect("c", "lobby");
    sim.clients[a].speaking = Some(20);
    sim.run_for(Duration::from_millis(500));
    let set = |sim: &mut Sim, to: Option<Vec<usize>>| {
        let participant_id = sim.clients[a].id;
        let to = to.map(|v| v.iter().map(|&i| sim.clients[i].id).collect());
        sim.request(Request::SetWhisper(ParticipantSetWhisper {
            room: room("lobby"),
            participant_id,
            to,
        }))
    };
    let replies = set(&mut sim, Some(vec![b]));
    let Ok(Reply::Participant(p)) = &replies[0] else {
        panic!("{replies:?}")
    };
    assert_eq!(p.whisper_to, Some(vec![sim.clients[b].id]));
    sim.run_for(Duration::from_millis(100));
    assert!(sim.heard_over(b, a, Duration::from_millis(500)) > 20);
    assert_eq!(sim.heard_over(c, a, Duration::from_millis(500)), 0);

    let replies = set(&mut sim, Some(vec![a]));
    assert!(
        matches!(replies[0], Err(RequestError::Invalid(_))),
        "{replies:?}"
    );
    let replies = set(&mut sim, None);
    assert!(matches!(replies[0], Ok(Reply::Participant(ref p)) if p.whisper_to.is_none()));
    sim.run_for(Duration::from_millis(100));
    assert!(sim.heard_over(c, a, Duration::from_millis(500)) > 20);
}
