//! Client faults through the sans-IO engine: a network change with an ICE restart,
//! and a client that vanishes without `leave`.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chorus_engine::CloseReason;
use chorus_protocol::signal::ServerMessage;
use chorus_tests::sim::Sim;

fn left(sim: &Sim, idx: usize) -> usize {
    sim.clients[idx]
        .messages("participant_left")
        .into_iter()
        .filter(|m| matches!(m, ServerMessage::ParticipantLeft { .. }))
        .count()
}

#[test]
fn an_ice_restart_on_a_new_network_keeps_the_call_going() {
    for target_shard in [1, 0] {
        let mut sim = Sim::with_shards(2, |_| {});
        let (a, b, c) = sim.three_talking("r");
        let old_ufrag_answers = sim.clients[b].messages("answer").len();
        // b's network changes: new address (on either shard), new ICE credentials.
        let addr = "198.51.100.7:50000".parse().unwrap();
        sim.restart_ice(b, addr, target_shard);
        assert_eq!(
            sim.clients[b].messages("answer").len(),
            old_ufrag_answers + 1
        );
        sim.run_for(Duration::from_secs(2));
        assert_eq!(
            sim.holder(b),
            Some(target_shard),
            "media follows the new address"
        );
        let heard = (
            sim.clients[a].from(b).count(),
            sim.clients[b].from(a).count(),
            sim.clients[c].from(b).count(),
        );
        sim.run_for(Duration::from_secs(1));
        assert!(sim.clients[a].from(b).count() >= heard.0 + 45, "a hears b");
        assert!(sim.clients[b].from(a).count() >= heard.1 + 45, "b hears a");
        assert!(sim.clients[c].from(b).count() >= heard.2 + 45, "c hears b");
        // Nobody saw b leave, even after the disconnect timeout passed.
        sim.run_for(Duration::from_secs(25));
        assert_eq!(left(&sim, a), 0);
        assert_eq!(left(&sim, c), 0);
        assert!(sim.closed.is_empty(), "{:?}", sim.closed);
    }
}

#[test]
fn a_client_that_vanishes_is_removed_and_announced_within_the_timeout() {
    let mut sim = Sim::with_shards(2, |c| c.disconnect_timeout = Duration::from_secs(5));
    let (a, b, c) = sim.three_talking("r");
    sim.clients[b].online = false;
    let gone_at = sim.elapsed();
    sim.run_until(Duration::from_secs(10), |s| !s.closed.is_empty());
    let took = sim.elapsed() - gone_at;
    assert!(took <= Duration::from_secs(6), "removed after {took:?}");
    assert_eq!(sim.closed, vec![(sim.clients[b].id, CloseReason::Timeout)]);
    for i in [a, c] {
        assert_eq!(left(&sim, i), 1);
    }
    // The others are undisturbed.
    let heard = sim.clients[a].from(c).count();
    sim.run_for(Duration::from_secs(1));
    assert!(sim.clients[a].from(c).count() >= heard + 45);
}
