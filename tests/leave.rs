//! Leaving, and vanishing: the room is told, slots are freed, bystanders carry on.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use aws_lc_rs::hmac;
use chorus_engine::{CloseReason, Command};
use chorus_protocol::demux::{classify, DatagramKind};
use chorus_protocol::signal::ServerMessage;
use chorus_tests::sim::Sim;
use str0m::ice::StunMessage;

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

/// Consent checks on a nominated pair are answered by the shard itself, all but one
/// every 7 s (`chorus_engine` `consent.rs`), which str0m sees so that its ice-lite
/// agent keeps the pair. The answers pass the client's own STUN code (str0m's: a
/// success response to its transaction, the integrity of the node's ICE password, the
/// address it came from), and a minute of checks keeps both ends' connections up.
#[test]
fn consent_checks_answered_by_the_shard_keep_both_ends_up() {
    let mut sim = Sim::new();
    let (a, b, _) = sim.three_talking("r");
    let a_id = sim.clients[a].id;
    let password = sim
        .last_answer(a)
        .and_then(|(sdp, _)| sdp.lines().find_map(|l| l.strip_prefix("a=ice-pwd:")))
        .unwrap()
        .trim()
        .to_owned();
    sim.clients[a].tap = Some(Vec::new());
    let before = sim.shards[0].stats().consent_answered;
    sim.run_for(Duration::from_secs(60));
    let by_shard = sim.shards[0].stats().consent_answered - before;

    let hmac_sha1 = |key: &[u8], parts: &[&[u8]]| {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
        let mut context = hmac::Context::with_key(&key);
        for part in parts {
            context.update(part);
        }
        let mut mac = [0u8; 20];
        mac.copy_from_slice(context.sign().as_ref());
        mac
    };
    let tapped = sim.clients[a].tap.take().unwrap();
    let answers: Vec<&Vec<u8>> = tapped
        .iter()
        .filter(|d| classify(d) == DatagramKind::Stun)
        .collect();
    for answer in &answers {
        let m = StunMessage::parse(answer).unwrap();
        assert!(m.is_successful_binding_response());
        assert!(m.verify(password.as_bytes(), hmac_sha1), "integrity");
        assert_eq!(m.mapped_address(), Some(sim.clients[a].addr));
    }
    // Three clients' checks, a's among them: most answered without str0m.
    assert!(answers.len() >= 20, "{} answers in 60 s", answers.len());
    assert!(
        by_shard >= 3 * answers.len() as u64 * 3 / 5,
        "{by_shard} of ~{} checks answered by the shard",
        3 * answers.len()
    );
    assert!(sim.clients[a].rtc.is_connected(), "the client's ICE is up");
    assert_eq!(
        sim.shards[0].str0m_connected(a_id),
        Some(true),
        "str0m's pair is kept"
    );
    assert!(sim.closed.is_empty());
    assert!(sim.heard_over(a, b, Duration::from_secs(1)) >= 45);
    assert!(sim.heard_over(b, a, Duration::from_secs(1)) >= 45);
}

trait ParseRoom {
    fn parse_room(&self) -> chorus_protocol::signal::RoomId;
}
impl ParseRoom for str {
    fn parse_room(&self) -> chorus_protocol::signal::RoomId {
        chorus_protocol::signal::RoomId::new(self).unwrap()
    }
}
