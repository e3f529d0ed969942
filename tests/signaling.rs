//! The node over a real WebSocket: the join handshake, errors that keep the socket
//! open, leave and close, and that one client's bad input never reaches another.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chorus_signaling::NodeConfig;
use chorus_tests::ws::{connect, expect_close, expect_error, join, node, node_with, recv, send};
use futures_util::SinkExt;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn bad_frames_get_errors_and_the_socket_stays_open() {
    let node = node(true).await;
    let mut ws = connect(&node).await;
    ws.send(Message::Text("not json".into())).await.unwrap();
    expect_error(&mut ws, "bad_request").await;
    send(&mut ws, json!({"type":"nope"})).await;
    let e = expect_error(&mut ws, "bad_request").await;
    assert!(e["message"].as_str().unwrap().contains("nope"));
    send(&mut ws, json!({"type":"mute","muted":true})).await;
    expect_error(&mut ws, "not_joined").await;
    send(&mut ws, json!({"type":"ping","id":1})).await;
    expect_error(&mut ws, "not_joined").await;
    send(
        &mut ws,
        json!({"type":"join","room":"no spaces allowed","name":"a"}),
    )
    .await;
    expect_error(&mut ws, "bad_request").await;
    let huge = json!({"type":"offer","sdp":"x".repeat(70 * 1024)});
    send(&mut ws, huge).await;
    let e = expect_error(&mut ws, "bad_request").await;
    assert!(e["message"].as_str().unwrap().contains("larger than"));
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    expect_error(&mut ws, "bad_request").await;

    let joined = join(&mut ws, "r1", "Alice").await;
    assert_eq!(joined["room"], "r1");
    assert_eq!(joined["audio_slots"], 8);
    assert!(joined["participant_id"].as_str().unwrap().starts_with('p'));
    assert!(joined["csrc"].as_u64().unwrap() > 0);
    assert_eq!(joined["participants"], json!([]));
    assert!(joined["ice_servers"].is_array());
    send(&mut ws, json!({"type":"join","room":"r1","name":"Alice"})).await;
    expect_error(&mut ws, "bad_request").await;
    send(&mut ws, json!({"type":"offer","sdp":"garbage"})).await;
    expect_error(&mut ws, "bad_request").await;
    send(&mut ws, json!({"type":"candidate","candidate":"candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host","sdp_mid":"0"})).await;
    send(&mut ws, json!({"type":"ping","id":7})).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"type":"pong","id":7}),
        "a valid candidate is no error"
    );
    node.stop().await;
}

#[tokio::test]
async fn one_clients_garbage_never_reaches_another() {
    let node = node(true).await;
    let mut a = connect(&node).await;
    let mut b = connect(&node).await;
    let ja = join(&mut a, "room", "A").await;
    let jb = join(&mut b, "room", "B").await;
    assert_eq!(
        jb["participants"][0]["participant_id"],
        ja["participant_id"]
    );
    let announced = recv(&mut a).await;
    assert_eq!(announced["type"], "participant_joined");
    assert_eq!(announced["participant"]["name"], "B");
    for bad in [
        "{",
        "[]",
        "{\"type\":1}",
        "{\"type\":\"offer\"}",
        "{\"type\":\"mute\",\"muted\":1}",
    ] {
        b.send(Message::Text(bad.into())).await.unwrap();
        expect_error(&mut b, "bad_request").await;
    }
    send(
        &mut b,
        json!({"type":"offer","sdp":"v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"}),
    )
    .await;
    expect_error(&mut b, "bad_request").await;
    // a saw none of it, and the room still works for both.
    send(&mut b, json!({"type":"mute","muted":true})).await;
    let ua = recv(&mut a).await;
    assert_eq!(ua["type"], "participant_updated", "{ua}");
    assert_eq!(ua["participant"]["muted"], true);
    let ub = recv(&mut b).await;
    assert_eq!(ub["type"], "participant_updated", "the sender is told too");
    send(&mut a, json!({"type":"deafen","deafened":true})).await;
    assert_eq!(recv(&mut b).await["participant"]["deafened"], true);
    assert_eq!(recv(&mut a).await["participant"]["deafened"], true);
    node.stop().await;
}

#[tokio::test]
async fn leave_closes_with_1000_and_a_dropped_socket_leaves_too() {
    // A dropped socket is kept for the resume window (tests/resume.rs), then leaves.
    let node = node_with(NodeConfig {
        dev: true,
        resume_window: Duration::from_millis(500),
        ..NodeConfig::default()
    })
    .await;
    let (mut a, mut b, mut c) = (
        connect(&node).await,
        connect(&node).await,
        connect(&node).await,
    );
    join(&mut a, "r", "A").await;
    let jb = join(&mut b, "r", "B").await;
    let jc = join(&mut c, "r", "C").await;
    assert_eq!(recv(&mut a).await["type"], "participant_joined");
    assert_eq!(recv(&mut a).await["type"], "participant_joined");

    send(&mut b, json!({"type":"leave"})).await;
    assert_eq!(expect_close(&mut b).await, CloseCode::Normal);
    let left = recv(&mut a).await;
    assert_eq!(
        left,
        json!({"type":"participant_left","participant_id":jb["participant_id"]})
    );

    drop(c); // no leave, no close frame: just gone (and not resumed)
    let left = recv(&mut a).await;
    assert_eq!(
        left,
        json!({"type":"participant_left","participant_id":jc["participant_id"]})
    );
    node.stop().await;
}

#[tokio::test]
async fn a_node_without_dev_refuses_joins_without_a_valid_token() {
    let node = node(false).await;
    let mut ws = connect(&node).await;
    send(&mut ws, json!({"type":"join","room":"r","name":"A"})).await;
    expect_error(&mut ws, "unauthorized").await;
    assert_eq!(expect_close(&mut ws).await, CloseCode::Policy);
    node.stop().await;
}

#[tokio::test]
async fn floods_are_rate_limited_without_closing() {
    let node = node(true).await;
    let mut ws = connect(&node).await;
    join(&mut ws, "r", "A").await;
    for id in 0..300 {
        send(&mut ws, json!({"type":"ping","id":id})).await;
    }
    let (mut pongs, mut limited) = (0, 0);
    for _ in 0..300 {
        let v = recv(&mut ws).await;
        match v["type"].as_str().unwrap() {
            "pong" => pongs += 1,
            "error" if v["code"] == "rate_limited" => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // A burst of 100 (the join took one), then refused: the flood is far faster than 50/s.
    assert!(
        pongs >= 99 && limited >= 100,
        "pongs {pongs}, limited {limited}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    send(&mut ws, json!({"type":"ping","id":1})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong", "the socket survives");
    node.stop().await;
}

#[tokio::test]
async fn serves_health_and_the_demo_assets() {
    let node = node(true).await;
    for (path, content_type, needle) in [
        ("/healthz", "application/json", "\"ok\""),
        ("/", "text/html", "<html"),
        ("/chorus.js", "text/javascript", "ChorusClient"),
        ("/demo.js", "text/javascript", "chorus"),
        ("/demo.css", "text/css", "{"),
    ] {
        let (ct, body) = http_get(node.http, path).await;
        assert!(ct.starts_with(content_type), "{path}: {ct}");
        assert!(body.contains(needle), "{path}");
    }
    node.stop().await;
}

#[tokio::test]
async fn metrics_count_participants_and_drops_per_shard() {
    let node = node(true).await;
    let (mut a, mut b) = (connect(&node).await, connect(&node).await);
    join(&mut a, "r", "A").await;
    join(&mut b, "r", "B").await;
    // Garbage on the media port: dropped as malformed, and counted.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..3 {
        udp.send_to(&[0xff; 20], node.udp).unwrap();
    }
    // Shards publish their figures twice a second.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (ct, body) = http_get(node.http, "/metrics").await;
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    for line in [
        "chorus_participants{shard=\"0\"} 2",
        "chorus_rooms{shard=\"0\"} 1",
        "chorus_dropped_total{shard=\"0\",reason=\"malformed\"} 3",
        "chorus_rtp_forwarded_total{shard=\"0\"} 0",
        "chorus_driver_dropped_total{reason=\"handoff_overflow\"} 0",
    ] {
        assert!(body.lines().any(|l| l == line), "{line:?} not in:\n{body}");
    }
    node.stop().await;
}

#[tokio::test]
async fn draining_refuses_joins_then_closes_the_rooms_left() {
    let node = node(true).await;
    let mut a = connect(&node).await;
    join(&mut a, "r", "A").await;
    let (ready, _) = http_get_status(node.http, "/readyz").await;
    assert_eq!(ready, 200);
    let during = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (status, body) = http_get_status(node.http, "/readyz").await;
        assert_eq!(status, 503, "{body}");
        let mut late = connect(&node).await;
        send(&mut late, json!({"type":"join","room":"r","name":"Late"})).await;
        expect_error(&mut late, "unavailable").await;
        assert_eq!(expect_close(&mut late).await, CloseCode::Away);
        // At the deadline, the room still in use is closed.
        assert_eq!(
            recv(&mut a).await,
            json!({"type":"room_closed","reason":"node_draining"})
        );
        assert_eq!(expect_close(&mut a).await, CloseCode::Normal);
    };
    tokio::join!(node.drain(Duration::from_millis(600)), during);
    node.stop().await;
}

#[tokio::test]
async fn draining_an_empty_node_is_immediate() {
    let node = node(true).await;
    let start = std::time::Instant::now();
    node.drain(Duration::from_secs(30)).await;
    assert!(start.elapsed() < Duration::from_secs(2));
    node.stop().await;
}

#[tokio::test]
async fn connections_per_address_are_limited_and_idle_ones_time_out() {
    let node = chorus_tests::ws::node_with(chorus_signaling::NodeConfig {
        dev: true,
        max_connections_per_ip: 2,
        join_timeout: Duration::from_millis(800),
        ..chorus_signaling::NodeConfig::default()
    })
    .await;
    let mut a = connect(&node).await;
    join(&mut a, "r", "A").await;
    let mut idle = connect(&node).await;
    // A third connection from 127.0.0.1 is refused, and says why.
    let mut third = connect(&node).await;
    expect_error(&mut third, "rate_limited").await;
    assert_eq!(expect_close(&mut third).await, CloseCode::Again);
    // The one that never joined is closed after the join timeout; the joined one stays.
    assert_eq!(expect_close(&mut idle).await, CloseCode::Policy);
    send(&mut a, json!({"type":"ping","id":1})).await;
    assert_eq!(recv(&mut a).await["type"], "pong");
    // Its slot is free again.
    let mut again = connect(&node).await;
    join(&mut again, "r", "B").await;
    node.stop().await;
}

/// A bare HTTP/1.1 GET that must answer 200: its content type and body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let (status, head, body) = http_request(addr, path).await;
    assert_eq!(status, 200, "{path}: {head}");
    let ct = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_owned();
    (ct, body)
}

/// Status and body of a bare HTTP/1.1 GET.
async fn http_get_status(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = http_request(addr, path).await;
    (status, body)
}

/// One HTTP/1.1 GET without a client crate: status, head, body.
async fn http_request(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

#[tokio::test]
async fn a_client_close_is_echoed_with_its_code() {
    let node = node(true).await;
    for code in [CloseCode::Normal, CloseCode::Library(4100)] {
        let mut ws = connect(&node).await;
        join(&mut ws, "echo", "A").await;
        ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code,
            reason: "bye".into(),
        }))
        .await
        .unwrap();
        assert_eq!(
            expect_close(&mut ws).await,
            code,
            "the node echoes the close frame"
        );
    }
    node.stop().await;
}
