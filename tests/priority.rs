//! Priority speakers (issue 10, item 2): while speaking, a participant with the
//! `priority` grant takes a slot at every listener at once, ahead of loudest-N, and no
//! ordinary speaker takes it back while it is in conversation; `speakers` entries say
//! `priority: true`; `participant.set_permissions` grants and lifts it.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use chorus_engine::{Permissions, Request};
use chorus_protocol::control::ParticipantSetPermissions;
use chorus_protocol::signal::{RoomId, ServerMessage};
use chorus_tests::sim::Sim;

/// Who a listener heard in its received packets from `from` on.
fn heard(sim: &Sim, listener: usize, from: usize) -> HashSet<usize> {
    sim.clients[listener].received[from..]
        .iter()
        .map(|r| r.from)
        .collect()
}

/// Whether the listener's latest `speakers` names `who` with `priority: true`.
fn announced_as_priority(sim: &Sim, listener: usize, who: usize) -> bool {
    let id = sim.clients[who].id;
    sim.clients[listener]
        .inbox
        .iter()
        .rev()
        .find_map(|m| match m {
            ServerMessage::Speakers { speakers } => Some(speakers.clone()),
            _ => None,
        })
        .is_some_and(|s| s.iter().any(|e| e.participant_id == id && e.priority))
}

#[test]
fn a_quiet_priority_speaker_is_heard_by_every_listener_at_once() {
    // Two shards: the room spans them, and the grant travels with the packets.
    let mut sim = Sim::with_shards(2, |c| c.audio_slots = 2);
    let listeners: Vec<usize> = (0..3)
        .map(|i| sim.connect(&format!("l{i}"), "raid"))
        .collect();
    let b = sim.connect("b", "raid");
    let c = sim.connect("c", "raid");
    let lead = sim.connect_with_permissions(
        "lead",
        "raid",
        Permissions {
            publish: true,
            subscribe: true,
            priority: true,
            sources: chorus_engine::Sources::ALL,
        },
    );
    for &l in &listeners {
        sim.clients[l].speaking = Some(127);
    }
    sim.clients[b].speaking = Some(10);
    sim.clients[c].speaking = Some(12);
    sim.run_for(Duration::from_secs(3));
    let marks: Vec<usize> = listeners
        .iter()
        .map(|&l| sim.clients[l].received.len())
        .collect();

    // The leader speaks, 20 dB quieter than b and c, who keep talking.
    sim.clients[lead].speaking = Some(30);
    sim.run_for(Duration::from_millis(300));
    for (&l, &mark) in listeners.iter().zip(&marks) {
        let first = sim.clients[l].received[mark..]
            .iter()
            .find(|r| r.from == lead)
            .map(|r| r.at);
        assert!(
            first.is_some(),
            "listener {l} hears the leader within 300 ms"
        );
    }
    sim.run_for(Duration::from_secs(3));
    for (&l, &mark) in listeners.iter().zip(&marks) {
        let got = heard(&sim, l, mark);
        assert!(got.contains(&lead), "listener {l} keeps hearing the leader");
        assert!(
            announced_as_priority(&sim, l, lead),
            "speakers says priority"
        );
    }
    // b and c, 20 dB louder, did not take the leader's slot back: at the end each
    // listener hears the leader and exactly one of them.
    for &l in &listeners {
        let n = sim.clients[l].received.len();
        sim.run_for(Duration::from_millis(500));
        let got = heard(&sim, l, n);
        assert!(
            got.contains(&lead) && got.len() == 2,
            "listener {l}: {got:?}"
        );
    }
}

#[test]
fn set_permissions_grants_and_lifts_priority() {
    let mut sim = Sim::with_config(|c| c.audio_slots = 1);
    let listener = sim.connect("listener", "raid");
    let b = sim.connect("b", "raid");
    let lead = sim.connect("lead", "raid");
    sim.clients[listener].speaking = Some(127);
    sim.clients[b].speaking = Some(10);
    sim.run_for(Duration::from_secs(2));
    sim.clients[lead].speaking = Some(20);
    let mark = sim.clients[listener].received.len();
    sim.run_for(Duration::from_secs(2));
    assert!(
        !heard(&sim, listener, mark).contains(&lead),
        "without the grant, the quieter one waits"
    );

    let set = |sim: &mut Sim, priority| {
        let id = sim.clients[lead].id;
        let replies = sim.request(Request::SetPermissions(ParticipantSetPermissions {
            room: RoomId::new("raid").unwrap(),
            participant_id: id,
            publish: None,
            subscribe: None,
            priority: Some(priority),
            sources: None,
        }));
        assert!(replies.iter().all(Result::is_ok), "{replies:?}");
    };
    set(&mut sim, true);
    assert!(sim.clients[lead]
        .inbox
        .contains(&ServerMessage::Permissions {
            publish: true,
            subscribe: true,
            priority: true,
            sources: chorus_protocol::signal::Source::ALL.to_vec(),
        }));
    let mark = sim.clients[listener].received.len();
    sim.run_for(Duration::from_millis(500));
    assert!(
        heard(&sim, listener, mark).contains(&lead),
        "granted: heard"
    );

    // Lifted: an ordinary speaker again; b, louder, takes the slot back.
    set(&mut sim, false);
    sim.run_for(Duration::from_secs(2));
    let mark = sim.clients[listener].received.len();
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        heard(&sim, listener, mark),
        HashSet::from([b]),
        "lifted: the louder one has the slot again"
    );
}
