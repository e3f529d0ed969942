//! The control plane end to end: a real node (2 shards, tokens required), driven
//! through its Unix socket while real str0m clients join over WebSocket + UDP, speak,
//! are muted by the server, lose a permission, are kicked, and their room is deleted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use chorus_signaling::NodeConfig;
use chorus_tests::live::{wait_until, LiveClient};
use chorus_tests::rpc::{socket_path, Rpc};
use chorus_tests::ws;
use serde_json::{json, Value};

const SECRET: &str = "control-test-secret-0123456789abcdef";
const T: Duration = Duration::from_secs(10);

fn config(tag: &str) -> NodeConfig {
    NodeConfig {
        dev: false,
        shards: 2,
        token_secret: Some(SECRET.into()),
        control: Some(socket_path(tag)),
        quality_interval: Some(Duration::from_secs(1)),
        ..NodeConfig::default()
    }
}

fn is(kind: &str, pid: &str) -> impl Fn(&Value) -> bool {
    let (kind, pid) = (kind.to_owned(), pid.to_owned());
    move |e: &Value| {
        e["type"] == kind.as_str()
            && (e["participant_id"] == pid.as_str()
                || e["participant"]["participant_id"] == pid.as_str())
    }
}

/// How many packets `to` receives from `from` over `d`.
async fn heard_over(to: &LiveClient, from: &LiveClient, d: Duration) -> u64 {
    let before = to.received_from(from.csrc());
    tokio::time::sleep(d).await;
    to.received_from(from.csrc()) - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_runs_a_room_through_the_control_socket() {
    let node = ws::node_with(config("room")).await;
    let path = node.control.clone().expect("control socket");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the owner may drive the node");

    let mut events = Rpc::connect(&path).await;
    let sub = events.ok("events.subscribe", json!({})).await;
    assert_eq!(sub["subscribed"], true);
    let mut rpc = Rpc::connect(&path).await;

    // Rooms.
    let room = rpc
        .ok(
            "room.create",
            json!({"room": "guild-7", "kind": "guild", "metadata": "m1"}),
        )
        .await;
    assert_eq!(room["kind"], "guild");
    assert_eq!(room["max_participants"], 100);
    assert_eq!(room["participants"], 0);
    events
        .event(T, |e| e["type"] == "room_created" && e["room"] == "guild-7")
        .await;
    assert_eq!(
        rpc.err("room.create", json!({"room": "guild-7"})).await,
        -32002
    );
    assert_eq!(rpc.err("room.get", json!({"room": "nope"})).await, -32001);

    // Tokens from the control plane admit real clients.
    let mut clients = Vec::new();
    for (who, name) in [("u-a", "Ann"), ("u-b", "Bob"), ("u-c", "Cyd")] {
        let t = rpc
            .ok(
                "token.create",
                json!({"room": "guild-7", "identity": who, "name": name, "ttl_s": 600,
                       "priority": who == "u-c"}),
            )
            .await;
        assert!(t["expires_at"].as_u64().unwrap() > 0);
        let token = t["token"].as_str().unwrap().to_owned();
        let c = LiveClient::join(&node, "guild-7", "ignored", Some(&token), 3)
            .await
            .unwrap();
        let joined = events
            .event(T, is("participant_joined", c.participant_id()))
            .await;
        assert_eq!(joined["participant"]["identity"], who);
        assert_eq!(joined["participant"]["name"], name, "the token's name");
        assert_eq!(
            joined["participant"]["priority"],
            who == "u-c",
            "the token's priority grant"
        );
        clients.push(c);
    }
    let (a, b, c) = (&clients[0], &clients[1], &clients[2]);

    let room = rpc.ok("room.get", json!({"room": "guild-7"})).await;
    assert_eq!(room["participants"], 3);
    let list = rpc.ok("room.list", json!({})).await;
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["room"] == "guild-7"));
    let people = rpc.ok("participant.list", json!({"room": "guild-7"})).await;
    let ids: Vec<&str> = people
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identity"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["u-a", "u-b", "u-c"]);
    let one = rpc
        .ok(
            "participant.get",
            json!({"room": "guild-7", "participant_id": a.participant_id()}),
        )
        .await;
    assert_eq!(one["csrc"], a.csrc());
    assert_eq!(
        rpc.err(
            "participant.get",
            json!({"room": "guild-7", "participant_id": "p123456789"})
        )
        .await,
        -32003
    );

    // Speaking and quality.
    a.set_speaking(true);
    events
        .event(T, is("speaking_started", a.participant_id()))
        .await;
    assert!(
        wait_until(T, || b.received_from(a.csrc()) > 20
            && c.received_from(a.csrc()) > 20)
        .await
    );
    let q = events.event(T, is("quality", a.participant_id())).await;
    assert!(q["bitrate_in"].as_u64().unwrap() > 0, "{q}");

    // Server mute: the client cannot lift it.
    let p = rpc
        .ok(
            "participant.mute",
            json!({"room": "guild-7", "participant_id": a.participant_id(), "muted": true}),
        )
        .await;
    assert_eq!(p["server_muted"], true);
    let upd = events
        .event(T, is("participant_updated", a.participant_id()))
        .await;
    assert_eq!(upd["participant"]["server_muted"], true);
    events
        .event(T, is("speaking_stopped", a.participant_id()))
        .await;
    a.wait_for("participant_updated", T)
        .await
        .expect("a is told");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(heard_over(b, a, Duration::from_millis(700)).await, 0);
    a.send(json!({"type": "mute", "muted": false}));
    let refused = a.wait_for("error", T).await.expect("refused");
    assert_eq!(refused["code"], "forbidden");
    assert_eq!(heard_over(b, a, Duration::from_millis(500)).await, 0);
    rpc.ok(
        "participant.mute",
        json!({"room": "guild-7", "participant_id": a.participant_id(), "muted": false}),
    )
    .await;
    assert!(
        heard_over(b, a, Duration::from_millis(700)).await > 10,
        "lifted"
    );

    // Permissions: b may no longer listen.
    let p = rpc
        .ok(
            "participant.set_permissions",
            json!({"room": "guild-7", "participant_id": b.participant_id(), "subscribe": false}),
        )
        .await;
    assert_eq!(
        (p["publish"].as_bool(), p["subscribe"].as_bool()),
        (Some(true), Some(false))
    );
    let perms = b.wait_for("permissions", T).await.expect("b is told");
    assert_eq!(perms["subscribe"], false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(heard_over(b, a, Duration::from_millis(500)).await, 0);
    assert!(
        heard_over(c, a, Duration::from_millis(500)).await > 10,
        "c unaffected"
    );

    // Kick.
    rpc.ok(
        "participant.kick",
        json!({"room": "guild-7", "participant_id": c.participant_id(), "reason": "spam"}),
    )
    .await;
    let kicked = c.wait_for("kicked", T).await.expect("c is told");
    assert_eq!(kicked["reason"], "spam");
    assert_eq!(c.wait_closed(T).await, Some(1000));
    let left = events
        .event(T, is("participant_left", c.participant_id()))
        .await;
    assert_eq!(left["reason"], "kicked");
    let gone = b.wait_for("participant_left", T).await.expect("b is told");
    assert_eq!(gone["participant_id"], c.participant_id());

    // Figures.
    let stats = rpc.ok("node.stats", json!({})).await;
    assert_eq!(stats["participants"], 2);
    assert_eq!(stats["rooms"], 1);
    assert_eq!(stats["shards"].as_array().unwrap().len(), 2);
    assert!(stats["totals"]["rtp_forwarded"].as_u64().unwrap() > 50);
    assert!(stats["totals"]["bytes_out"].as_u64().unwrap() > 0);
    let metrics = reqwest_metrics(&node).await;
    assert!(
        metrics.contains("chorus_joins_total{result=\"ok\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("chorus_forwarding_latency_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains("chorus_bytes_in_total"), "{metrics}");

    // Update, then delete: the members are told, the room is gone.
    let room = rpc
        .ok(
            "room.update",
            json!({"room": "guild-7", "max_participants": 2}),
        )
        .await;
    assert_eq!(room["max_participants"], 2);
    rpc.ok(
        "room.delete",
        json!({"room": "guild-7", "reason": "raid over"}),
    )
    .await;
    for m in [a, b] {
        let closed = m.wait_for("room_closed", T).await.expect("told");
        assert_eq!(closed["reason"], "raid over");
    }
    let closed = events.event(T, |e| e["type"] == "room_closed").await;
    assert_eq!(closed["reason"], "raid over");
    assert_eq!(
        rpc.err("room.get", json!({"room": "guild-7"})).await,
        -32001
    );

    drop(clients);
    node.stop().await;
    assert!(!path.exists(), "the socket file is removed on stop");
}

/// GET /metrics over plain HTTP/1.1 (no client crate needed for one request).
async fn reqwest_metrics(node: &chorus_signaling::RunningNode) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(node.http).await.unwrap();
    let req = format!(
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        node.http
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_stable_error_codes_and_the_connection_survives() {
    let node = ws::node_with(config("errors")).await;
    let path = node.control.clone().unwrap();
    let mut rpc = Rpc::connect(&path).await;
    for (line, code) in [
        ("this is not json", -32700),
        ("[]", -32600),
        (r#"{"jsonrpc":"2.0","id":1}"#, -32600),
        (
            r#"{"jsonrpc":"2.0","id":2,"method":"room.explode"}"#,
            -32601,
        ),
        (
            r#"{"jsonrpc":"2.0","id":3,"method":"room.create","params":{"room":"a b"}}"#,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":4,"method":"room.create","params":{"room":"r","audio_slots":99}}"#,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":5,"method":"token.create","params":{"room":"r","identity":"u","ttl_s":99999999}}"#,
            -32602,
        ),
    ] {
        rpc.send_line(line).await;
        let v = rpc.read().await.expect("an answer");
        assert_eq!(v["error"]["code"], code, "{line}: {v}");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // A notification (no id) is not answered; the next request is.
    rpc.send_line(r#"{"jsonrpc":"2.0","method":"room.list"}"#)
        .await;
    assert!(rpc.ok("room.list", json!({})).await.is_array());
    // An oversized line is refused and the connection closed; the node is fine.
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":9,"method":"room.create","params":{{"room":"r","metadata":"{}"}}}}"#,
        "x".repeat(300 * 1024)
    );
    // The node answers as soon as the line passes the limit, then closes, so the
    // rest of the write may fail.
    let _ = rpc.try_send_line(&huge).await;
    let v = rpc.read().await.expect("an answer");
    assert_eq!(v["error"]["code"], -32600);
    assert!(rpc.read().await.is_none(), "closed");
    let mut again = Rpc::connect(&path).await;
    assert!(again.ok("node.stats", json!({})).await["shards"].is_array());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_create_needs_a_secret_and_a_live_socket_is_not_taken_over() {
    let path = socket_path("nosecret");
    let node = ws::node_with(NodeConfig {
        dev: true,
        control: Some(path.clone()),
        ..NodeConfig::default()
    })
    .await;
    let mut rpc = Rpc::connect(&path).await;
    let code = rpc
        .err(
            "token.create",
            json!({"room": "r", "identity": "u", "ttl_s": 60}),
        )
        .await;
    assert_eq!(code, -32006);
    // A second node on the same path refuses to start rather than steal it.
    let second = chorus_signaling::start(NodeConfig {
        http: "127.0.0.1:0".parse().unwrap(),
        udp: "127.0.0.1:0".parse().unwrap(),
        control: Some(path.clone()),
        ..NodeConfig::default()
    })
    .await;
    let err = second.err().expect("refused").to_string();
    assert!(err.contains("in use"), "{err}");
    assert!(
        rpc.ok("room.list", json!({})).await.is_array(),
        "first node unharmed"
    );
    node.stop().await;
    // A stale socket file (no node behind it) is replaced.
    std::os::unix::net::UnixListener::bind(&path).map(drop).ok();
    let node = ws::node_with(NodeConfig {
        dev: true,
        control: Some(path.clone()),
        ..NodeConfig::default()
    })
    .await;
    let mut rpc = Rpc::connect(&path).await;
    assert!(rpc.ok("room.list", json!({})).await.is_array());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_drain_refuses_joins_then_closes_rooms_at_the_deadline() {
    let node = ws::node_with(NodeConfig {
        dev: true,
        control: Some(socket_path("drain")),
        ..NodeConfig::default()
    })
    .await;
    let path = node.control.clone().unwrap();
    let mut rpc = Rpc::connect(&path).await;
    rpc.ok("events.subscribe", json!({"types": ["room_closed"]}))
        .await;
    let a = LiveClient::join(&node, "lobby", "a", None, 2)
        .await
        .unwrap();
    let r = rpc.ok("node.drain", json!({"deadline_s": 1})).await;
    assert_eq!(r["draining"], true);
    let stats = rpc.ok("node.stats", json!({})).await;
    assert_eq!(stats["draining"], true);
    assert_eq!(rpc.err("room.create", json!({"room": "new"})).await, -32004);
    let mut late = ws::connect(&node).await;
    ws::send(
        &mut late,
        json!({"type": "join", "room": "lobby", "name": "late"}),
    )
    .await;
    ws::expect_error(&mut late, "unavailable").await;
    let closed = a
        .wait_for("room_closed", T)
        .await
        .expect("closed at the deadline");
    assert_eq!(closed["reason"], "node_draining");
    let e = rpc.event(T, |e| e["type"] == "room_closed").await;
    assert_eq!(e["reason"], "node_draining");
    tokio::time::timeout(T, node.drained())
        .await
        .expect("drained");
    node.stop().await;
}
