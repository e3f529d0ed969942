//! A call on a real node: three real clients (WebSocket + str0m over UDP on
//! 127.0.0.1) in one room of a two-shard node; whoever speaks is heard by the two
//! others, by its CSRC, and never by itself. Timeouts are upper bounds only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chorus_signaling::NodeConfig;
use chorus_tests::live::{wait_until, LiveClient};
use chorus_tests::ws::node_with;

/// Upper bound of every wait: generous, it only matters when something is broken.
const LIMIT: Duration = Duration::from_secs(10);
/// Packets a listener must get from a speaker: 0.6 s of audio at 50 packets a second.
const HEARD: u64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_hear_whoever_speaks() {
    let node = node_with(NodeConfig {
        dev: true,
        shards: 2,
        ..NodeConfig::default()
    })
    .await;
    let join = |name: &'static str| LiveClient::join(&node, "live-call", name, None, 8);
    let a = join("a").await.expect("a joins");
    let b = join("b").await.expect("b joins");
    let c = join("c").await.expect("c joins");

    // Each later joiner learns A's CSRC from `joined`, the earlier ones from
    // `participant_joined`.
    let listed = &b.joined()["participants"][0];
    assert_eq!(listed["participant_id"], a.participant_id(), "{listed}");
    assert_eq!(listed["csrc"], a.csrc(), "{listed}");
    let b_seen_by_a = a.wait_for("participant_joined", LIMIT).await.unwrap(); // b
    assert_eq!(b_seen_by_a["participant"]["csrc"], b.csrc());
    let csrcs = [a.csrc(), b.csrc(), c.csrc()];
    assert!(csrcs.iter().all(|&x| x != 0) && csrcs[0] != csrcs[1] && csrcs[1] != csrcs[2]);

    // A speaks: B and C hear it, A hears nothing at all (nobody else sends).
    a.set_speaking(true);
    let heard = wait_until(LIMIT, || {
        b.received_from(a.csrc()) >= HEARD && c.received_from(a.csrc()) >= HEARD
    })
    .await;
    a.set_speaking(false);
    assert!(
        heard,
        "B got {} and C {} of A's packets (A sent {})",
        b.received_from(a.csrc()),
        c.received_from(a.csrc()),
        a.sent()
    );
    assert_eq!(a.received_from(a.csrc()), 0, "A heard itself");
    assert_eq!(
        a.received_total(),
        0,
        "A received packets while only A spoke"
    );
    // Packets from A carry A's CSRC only.
    assert_eq!(b.received_total(), b.received_from(a.csrc()));
    let a_id = a.participant_id().to_owned();
    let a_was_speaker = wait_until(LIMIT, || {
        b.messages("speakers").iter().any(|m| {
            m["speakers"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["participant_id"] == a_id.as_str()))
        })
    })
    .await;
    assert!(a_was_speaker, "B never saw A in `speakers`");

    // B speaks: A and C hear it, B never hears itself.
    b.set_speaking(true);
    let heard = wait_until(LIMIT, || {
        a.received_from(b.csrc()) >= HEARD && c.received_from(b.csrc()) >= HEARD
    })
    .await;
    b.set_speaking(false);
    assert!(
        heard,
        "A got {} and C {} of B's packets (B sent {})",
        a.received_from(b.csrc()),
        c.received_from(b.csrc()),
        b.sent()
    );
    assert_eq!(b.received_from(b.csrc()), 0, "B heard itself");
    assert_eq!(a.received_from(a.csrc()), 0, "A heard itself");
    assert_eq!(c.received_from(c.csrc()), 0, "C heard itself");

    // A leaves: the node closes its socket with 1000 and tells the others.
    a.leave();
    assert_eq!(a.wait_closed(LIMIT).await, Some(1000));
    for listener in [&b, &c] {
        let left = listener.wait_for("participant_left", LIMIT).await;
        let left = left.expect("participant_left");
        assert_eq!(left["participant_id"], a.participant_id(), "{left}");
    }
    drop((a, b, c));
    node.stop().await;
}

#[tokio::test]
async fn a_refused_join_is_an_error_saying_why() {
    let node = node_with(NodeConfig {
        dev: false,
        token_secret: Some("secret".into()),
        ..NodeConfig::default()
    })
    .await;
    let refused = LiveClient::join(&node, "live-call", "a", None, 8).await;
    let why = refused.err().expect("a join without a token is refused");
    assert!(why.contains("unauthorized"), "{why}");
    node.stop().await;
}
