//! A real node bound to `[::]` and advertising an IPv4 and an IPv6 address (`--udp
//! [::]:PORT --public-ip 127.0.0.1 --public-ip ::1`): an IPv4 and an IPv6 client, each
//! over real UDP on loopback, join one room and hear each other. The dual-stack socket
//! sees the IPv4 client IPv4-mapped; the node knows it by its IPv4 address and answers
//! it there. Timeouts are upper bounds only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use chorus_signaling::NodeConfig;
use chorus_tests::live::{wait_until, LiveClient};

const LIMIT: Duration = Duration::from_secs(10);
const HEARD: u64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_and_ipv6_clients_of_a_dual_stack_node_hear_each_other() {
    let node = chorus_signaling::start(NodeConfig {
        dev: true,
        shards: 2,
        http: "127.0.0.1:0".parse().unwrap(),
        udp: "[::]:0".parse().unwrap(),
        public_ips: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
        tcp: None,
        ..NodeConfig::default()
    })
    .await
    .unwrap();
    let v4: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let v6: SocketAddr = "[::1]:0".parse().unwrap();
    let a = LiveClient::join_from(&node, "dual", "a4", None, 4, v4)
        .await
        .expect("the IPv4 client joins");
    let b = LiveClient::join_from(&node, "dual", "b6", None, 4, v6)
        .await
        .expect("the IPv6 client joins");
    assert!(a.node_addr().unwrap().is_ipv4(), "{:?}", a.node_addr());
    assert!(b.node_addr().unwrap().is_ipv6(), "{:?}", b.node_addr());
    let answer = b.answer()["sdp"].as_str().unwrap().to_owned();
    assert!(
        answer.contains(" 127.0.0.1 ") && answer.contains(" ::1 "),
        "{answer}"
    );

    a.set_speaking(true);
    b.set_speaking(true);
    let heard = wait_until(LIMIT, || {
        a.received_from(b.csrc()) >= HEARD && b.received_from(a.csrc()) >= HEARD
    })
    .await;
    assert!(
        heard,
        "a heard {} of b's packets, b {} of a's",
        a.received_from(b.csrc()),
        b.received_from(a.csrc())
    );
}
