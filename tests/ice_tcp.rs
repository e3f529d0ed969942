//! ICE-TCP in the engine (issue 11): str0m clients whose only candidate is TCP join
//! alongside UDP clients; their datagrams come in through `Shard::handle_tcp` (as the
//! driver's TCP thread hands them, to the participant's home shard) and go out as TCP
//! transmits; across shards, the datagram goes to wherever the media is. A TCP client
//! that goes away leaves like any other, and nobody else notices; the shard holding its
//! media forgets the address of a connection that closed.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chorus_protocol::demux::{classify, DatagramKind};
use chorus_tests::sim::Sim;

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn tcp_and_udp_clients_hear_each_other_across_shards() {
    let mut sim = Sim::with_shards(2, |_| {});
    let a = sim.connect_tcp("a", "mixed");
    let b = sim.connect("b", "mixed");
    let c = sim.connect_tcp("c", "mixed");
    let d = sim.connect("d", "mixed");
    for x in [a, b, c, d] {
        sim.clients[x].speaking = Some(20);
    }
    for (to, from) in [(a, b), (b, a), (a, c), (c, a), (d, c), (c, d)] {
        assert!(sim.heard_over(to, from, SECOND) >= 45, "{to} hears {from}");
    }
    // A TCP client's media lives on its home shard; UDP clients' wherever the kernel
    // puts them: the room spans both, and TCP datagrams never moved anyone.
    let stats: u64 = sim.shards.iter().map(|s| s.stats().migrations_in).sum();
    assert!(
        stats <= 2,
        "UDP clients may move once each; TCP ones never: {stats}"
    );

    // a's connection goes away: it leaves after the disconnect timeout; the others
    // keep hearing each other throughout.
    sim.clients[a].online = false;
    for _ in 0..25 {
        assert!(sim.heard_over(b, c, SECOND) >= 45);
    }
    let a_id = sim.clients[a].id;
    assert!(
        sim.closed.iter().any(|(p, _)| *p == a_id),
        "a left: {:?}",
        sim.closed
    );
    assert!(sim.heard_over(c, d, SECOND) >= 45);
}

#[test]
fn a_tcp_connection_bound_to_one_participant_cannot_speak_for_another() {
    let mut sim = Sim::new();
    let a = sim.connect_tcp("a", "r");
    let b = sim.connect("b", "r");
    sim.clients[a].speaking = Some(20);
    assert!(sim.heard_over(b, a, SECOND) >= 45);
    // Datagrams from a's connection handed over as if it were b's: nothing happens.
    let before = sim.shards[0].stats().dropped_unknown_source;
    let (a_addr, b_id) = (sim.clients[a].addr, sim.clients[b].id);
    let now = sim.now;
    sim.shards[0].handle_tcp(
        now,
        b_id,
        a_addr,
        &[0x80, 0x6f, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],
    );
    assert!(sim.shards[0].stats().dropped_unknown_source > before);
    assert!(sim.heard_over(b, a, SECOND) >= 45, "a is unaffected");
}

#[test]
fn a_closed_tcp_connection_is_forgotten_where_the_media_is() {
    // Two shards and a TCP listener whose media may sit on either: the TCP thread's
    // notice goes to its home shard, which passes it on to wherever the media is.
    let mut sim = Sim::with_shards(2, |_| {});
    let a = sim.connect_tcp("a", "r");
    let b = sim.connect("b", "r");
    let c = sim.connect("c", "r");
    for x in [b, c] {
        sim.clients[x].speaking = Some(20);
    }
    assert!(sim.heard_over(a, b, SECOND) >= 45, "a hears b over TCP");

    // Audio sent towards a's address from here on (RTCP, which str0m still sends on
    // its own pair, is not a slot stream).
    let to_a = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let seen = to_a.clone();
    sim.lose_to_client = Some(Box::new(move |i, d: &[u8]| {
        if i == a && classify(d) != DatagramKind::Rtcp {
            seen.set(seen.get() + 1);
        }
        false
    }));

    // a's connection closes: the TCP thread hands its home shard an empty datagram,
    // as the driver passes it on. The client is gone with it.
    let malformed: u64 = sim.shards.iter().map(|s| s.stats().dropped_malformed).sum();
    let (id, addr) = (sim.clients[a].id, sim.clients[a].addr);
    let home = chorus_engine::home_of(id, sim.shards.len());
    let now = sim.now;
    sim.clients[a].online = false;
    sim.shards[home].handle_tcp(now, id, addr, &[]);
    sim.pump();
    to_a.set(0);

    for _ in 0..3 {
        assert!(sim.heard_over(b, c, SECOND) >= 45, "b and c are unaffected");
        assert!(sim.heard_over(c, b, SECOND) >= 45);
    }
    assert_eq!(
        to_a.get(),
        0,
        "no slot stream goes to the closed connection"
    );
    let after: u64 = sim.shards.iter().map(|s| s.stats().dropped_malformed).sum();
    assert_eq!(after, malformed, "the notice is not a malformed datagram");
}
