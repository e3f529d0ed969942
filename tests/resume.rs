//! A client whose WebSocket drops while its media lives on resumes its session on a
//! new socket within the window, and the room never sees it leave; one that does not
//! come back leaves when the window ends. Real node, real str0m clients over UDP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chorus_signaling::NodeConfig;
use chorus_tests::live::{wait_until, LiveClient};
use chorus_tests::ws;
use serde_json::json;

const T: Duration = Duration::from_secs(10);

async fn node(resume_window: Duration) -> chorus_signaling::RunningNode {
    ws::node_with(NodeConfig {
        dev: true,
        shards: 2,
        resume_window,
        ..NodeConfig::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_is_resumed_and_the_room_never_sees_it_leave() {
    let node = node(Duration::from_secs(5)).await;
    let a = LiveClient::join(&node, "r", "a", None, 2).await.unwrap();
    let b = LiveClient::join(&node, "r", "b", None, 2).await.unwrap();
    assert!(b.joined()["resume_token"]
        .as_str()
        .is_some_and(|t| t.len() >= 32));
    a.set_speaking(true);
    assert!(wait_until(T, || b.received_from(a.csrc()) > 10).await);

    b.drop_signaling().await;
    // Media goes on while b has no signaling.
    // (30 packets are 0.6 s of speech; waited for rather than slept on, so a loaded
    // machine does not fail it.)
    let before = b.received_from(a.csrc());
    assert!(
        wait_until(T, || b.received_from(a.csrc()) > before + 30).await,
        "b still hears a"
    );

    let resumed = b.resume(&node).await.unwrap();
    assert_eq!(resumed["participant_id"], b.participant_id());
    assert_eq!(resumed["room"], "r");
    let others = resumed["participants"].as_array().unwrap();
    assert_eq!(others.len(), 1);
    assert_eq!(others[0]["participant_id"], a.participant_id());

    // The new socket carries the session: b's mute reaches a, a's reaches b.
    b.send(json!({"type": "mute", "muted": true}));
    let update = a
        .wait_for("participant_updated", T)
        .await
        .expect("a sees b's mute");
    assert_eq!(update["participant"]["participant_id"], b.participant_id());
    b.wait_for("participant_updated", T)
        .await
        .expect("b hears back");

    // Past the window, nobody saw b leave.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(a.messages("participant_left").is_empty());
    assert!(b.received_from(a.csrc()) > before + 200);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_not_resumed_leaves_when_the_window_ends() {
    let node = node(Duration::from_secs(1)).await;
    let a = LiveClient::join(&node, "r", "a", None, 2).await.unwrap();
    let b = LiveClient::join(&node, "r", "b", None, 2).await.unwrap();
    b.drop_signaling().await;
    let left = a.wait_for("participant_left", T).await.expect("b leaves");
    assert_eq!(left["participant_id"], b.participant_id());
    let e = b.resume(&node).await.unwrap_err();
    assert!(e.contains("resume_failed"), "{e}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_takes_over_from_a_socket_the_node_thinks_is_alive() {
    let node = node(Duration::from_secs(5)).await;
    let a = LiveClient::join(&node, "r", "a", None, 2).await.unwrap();
    let b = LiveClient::join(&node, "r", "b", None, 2).await.unwrap();
    // A stale socket: b's old connection is still open when it resumes elsewhere.
    let mut old = ws::connect(&node).await;
    ws::send(&mut old, json!({"type": "join", "room": "r", "name": "c"})).await;
    let joined = ws::recv(&mut old).await;
    let (pid, token) = (
        joined["participant_id"].as_str().unwrap().to_owned(),
        joined["resume_token"].as_str().unwrap().to_owned(),
    );
    a.wait_for("participant_joined", T).await.expect("c joined");
    let mut new = ws::connect(&node).await;
    ws::send(
        &mut new,
        json!({"type": "resume", "participant_id": pid, "resume_token": token}),
    )
    .await;
    let resumed = ws::recv(&mut new).await;
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    assert_eq!(resumed["participants"].as_array().unwrap().len(), 2);
    let code = ws::expect_close(&mut old).await;
    assert_eq!(
        u16::from(code),
        4001,
        "the old socket is told it was superseded"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        a.messages("participant_left").is_empty(),
        "no one saw c leave"
    );
    // And a leave on the new socket is a real leave.
    ws::send(&mut new, json!({"type": "leave"})).await;
    let left = a.wait_for("participant_left", T).await.expect("c left");
    assert_eq!(left["participant_id"], pid.as_str());
    drop(b);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_resume_is_refused_and_the_socket_can_still_join() {
    let node = node(Duration::from_secs(5)).await;
    let _a = LiveClient::join(&node, "r", "a", None, 2).await.unwrap();
    let mut s = ws::connect(&node).await;
    ws::send(
        &mut s,
        json!({"type": "resume", "participant_id": "p123", "resume_token": "nope"}),
    )
    .await;
    ws::expect_error(&mut s, "resume_failed").await;
    ws::send(&mut s, json!({"type": "resume", "participant_id": 5})).await;
    ws::expect_error(&mut s, "bad_request").await;
    let joined = ws::join(&mut s, "r", "late").await;
    assert_eq!(joined["type"], "joined");
    // A token is only good for its own participant.
    let token = joined["resume_token"].as_str().unwrap().to_owned();
    let mut t = ws::connect(&node).await;
    ws::send(
        &mut t,
        json!({"type": "resume", "participant_id": _a.participant_id(), "resume_token": token}),
    )
    .await;
    ws::expect_error(&mut t, "resume_failed").await;
    node.stop().await;
}
