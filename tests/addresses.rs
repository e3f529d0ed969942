//! A node reached at several addresses (issue 11, `--public-ip` given more than once):
//! every address is a host candidate on the UDP port and on the TCP port, and a client
//! of either IP family connects to the one of its family and talks with everyone.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use chorus_tests::sim::Sim;

const SECOND: Duration = Duration::from_secs(1);

fn dual_stack() -> Sim {
    Sim::with_shards(2, |c| {
        c.extra_ips = vec![
            "2001:db8::7".parse::<IpAddr>().unwrap(),
            "198.51.100.7".parse::<IpAddr>().unwrap(),
        ];
    })
}

#[test]
fn every_address_is_a_candidate_on_both_transports() {
    let mut sim = dual_stack();
    let a = sim.connect("a", "many");
    let sdp = sim.last_answer(a).unwrap().0.to_owned();
    let candidates: Vec<&str> = sdp
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    for (addr, n) in [
        ("10.0.0.1 7882", 2),
        ("2001:db8::7 7882", 2),
        ("198.51.100.7 7882", 2),
    ] {
        let found = candidates.iter().filter(|l| l.contains(addr)).count();
        // Once per m-section, for UDP and for TCP.
        assert!(
            found >= n && found % 2 == 0,
            "{addr}: {found} candidates in {candidates:#?}"
        );
        assert!(candidates
            .iter()
            .any(|l| l.contains(addr) && l.contains("tcptype passive")));
    }
}

#[test]
fn ipv4_and_ipv6_clients_talk() {
    let mut sim = dual_stack();
    let v6: SocketAddr = "[2001:db8:1::10]:50000".parse().unwrap();
    let a = sim.connect_from("a6", "dual", v6);
    let b = sim.connect("b4", "dual");
    let c = sim.connect_from("c6", "dual", "[2001:db8:1::11]:50001".parse().unwrap());
    for x in [a, b, c] {
        sim.clients[x].speaking = Some(20);
    }
    for (to, from) in [(a, b), (b, a), (c, a), (a, c), (b, c)] {
        assert!(sim.heard_over(to, from, SECOND) >= 45, "{to} hears {from}");
    }
}

#[test]
fn a_client_of_a_family_the_node_does_not_advertise_cannot_connect() {
    // No IPv6 address: the IPv6 client has no candidate pair at all.
    let mut sim = Sim::with_shards(1, |_| {});
    let v6: SocketAddr = "[2001:db8:1::10]:50000".parse().unwrap();
    let b = sim.connect("b4", "v4only");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sim.connect_from("a6", "v4only", v6);
    }));
    assert!(
        outcome.is_err(),
        "an IPv6 client connected to an IPv4-only node"
    );
    assert!(sim.clients[b].connected);
}
