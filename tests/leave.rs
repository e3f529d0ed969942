//! Leaving, and vanishing: the room is told, slots are freed, bystanders carry on.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chorus_engine::{CloseReason, Command};
use chorus_protocol::signal::ServerMessage;
use chorus_tests::sim::Sim;

fn left(sim: &Sim, idx: usize) -> Vec<String> {
    sim.clients[idx]
        .messages("participant_left")
        .into_iter()
        .map(|m| match m {
            ServerMessage::ParticipantLeft { participant_id } => participant_id.to_string(),
            _ => unreachable!(),
        })
        .collect()
}

#[test]
fn leave_announces_and_frees_the_slot() {
    let mut sim = Sim::with_config(|c| c.audio_slots = 2);
    let (a, b, c) = sim.three_talking("r");
    let c_id = sim.clients[c].id;
    let c_slot_at_a = sim.clients[a].from(c).last().unwrap().ssrc;
    sim.clients[c].speaking = None;
    sim.command(Command::Leave { participant: c_id });
    assert_eq!(sim.closed, vec![(c_id, CloseReason::Left)]);
    assert_eq!(left(&sim, a), vec![c_id.to_string()]);
    assert_eq!(left(&sim, b), vec![c_id.to_string()]);
    assert_eq!(
        sim.shards[0].room_members(&"r".parse_room()).unwrap().len(),
        2
    );

    // A newcomer takes the freed slot at once (a's slots were full with b and c).
    let d = sim.connect("d", "r");
    sim.clients[d].speaking = Some(40);
    sim.run_for(Duration::from_secs(1));
    let d_at_a: Vec<_> = sim.clients[a].from(d).collect();
    assert!(d_at_a.len() > 40);
    assert_eq!(d_at_a[0].ssrc, c_slot_at_a, "d got the slot c left");
    assert_eq!(sim.shards[0].stats().dropped_no_slot, 0);
}

#[test]
fn a_client_that_vanishes_is_removed_after_the_timeout() {
    let mut sim = Sim::with_config(|c| c.disconnect_timeout = Duration::from_secs(5));
    let (a, b, c) = sim.three_talking("r");
    let c_id = sim.clients[c].id;
    sim.clients[c].online = false; // no leave, no more datagrams: gone
    let a_from_b = sim.clients[a].from(b).count();
    sim.run_for(Duration::from_millis(4500));
    assert!(left(&sim, a).is_empty(), "not before the timeout");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(left(&sim, a), vec![c_id.to_string()]);
    assert_eq!(left(&sim, b), vec![c_id.to_string()]);
    assert_eq!(sim.closed, vec![(c_id, CloseReason::Timeout)]);
    // The bystanders never stopped hearing each other: 5.5 s of frames, none lost.
    let heard = sim.clients[a].from(b).count() - a_from_b;
    assert!(heard >= 274, "a heard {heard} frames of b");
    assert_eq!(sim.shards[0].participant_count(), 2);
}

trait ParseRoom {
    fn parse_room(&self) -> chorus_protocol::signal::RoomId;
}
impl ParseRoom for str {
    fn parse_room(&self) -> chorus_protocol::signal::RoomId {
        chorus_protocol::signal::RoomId::new(self).unwrap()
    }
}
