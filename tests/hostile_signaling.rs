//! Abuse of the signaling port while a call goes on: garbage frames, oversized frames
//! and SDP, messages out of order, thousands of idle TCP connections, idle WebSockets,
//! slow senders, and a join flood from one address. Each gets its documented answer,
//! and the bystanders' audio (a real call over UDP) flows as before, during and after.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chorus_signaling::{NodeConfig, RunningNode};
use chorus_tests::live::{wait_until, LiveClient};
use chorus_tests::ws::{self, connect, expect_close, expect_error, send};
use futures_util::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const WINDOW: Duration = Duration::from_secs(3);

/// Packets `to` received from `from` and packets `from` sent, over one window.
async fn window(
    to: &LiveClient,
    from: &LiveClient,
    during: impl std::future::Future<Output = ()>,
) -> (u64, u64) {
    let (r0, s0) = (to.received_from(from.csrc()), from.sent());
    let ((), ()) = tokio::join!(during, tokio::time::sleep(WINDOW));
    // Packets in flight at the end of the window arrive a moment later.
    tokio::time::sleep(Duration::from_millis(100)).await;
    (to.received_from(from.csrc()) - r0, from.sent() - s0)
}

/// Every kind of bad frame and out-of-order message, each with its answer.
async fn garbage(node: &RunningNode) {
    let mut s = connect(node).await;
    send(&mut s, json!({"type": "offer", "sdp": "v=0"})).await;
    expect_error(&mut s, "not_joined").await;
    s.send(Message::Text("{not json".into())).await.unwrap();
    expect_error(&mut s, "bad_request").await;
    send(&mut s, json!({"type": "teleport"})).await;
    expect_error(&mut s, "bad_request").await;
    let big = format!(r#"{{"type":"offer","sdp":"{}"}}"#, "a".repeat(70 * 1024));
    s.send(Message::Text(big.into())).await.unwrap();
    expect_error(&mut s, "bad_request").await;
    send(
        &mut s,
        json!({"type": "join", "room": "attack", "name": "x"}),
    )
    .await;
    assert_eq!(ws::recv(&mut s).await["type"], "joined");
    send(
        &mut s,
        json!({"type": "join", "room": "attack", "name": "x"}),
    )
    .await;
    expect_error(&mut s, "bad_request").await;
    send(
        &mut s,
        json!({"type": "offer", "sdp": "v=0\r\ngarbage\r\n"}),
    )
    .await;
    expect_error(&mut s, "bad_request").await;
    let huge_sdp = format!("v=0\r\n{}", "a=x\r\n".repeat(12_000));
    send(&mut s, json!({"type": "offer", "sdp": huge_sdp})).await;
    expect_error(&mut s, "bad_request").await;
    send(
        &mut s,
        json!({"type": "candidate", "candidate": "nonsense"}),
    )
    .await;
    expect_error(&mut s, "bad_request").await;
    // A frame over 1 MiB: the node closes the connection (1009) at its header; the
    // client may see the close or a reset, as it is still sending.
    let huge = "x".repeat(2 * 1024 * 1024);
    let _ = s.send(Message::Text(huge.into())).await;
}

/// Thousands of TCP connections that never send a byte, and a few slow senders
/// (headers trickled a byte at a time): all refused or cut at the header deadline.
async fn idle_tcp(node: &RunningNode, n: usize) -> (usize, usize) {
    let mut conns = Vec::new();
    for _ in 0..n {
        if let Ok(c) = TcpStream::connect(node.http).await {
            conns.push(c);
        }
    }
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut c = TcpStream::connect(node.http).await.unwrap();
        c.write_all(b"GET /v1/signal HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(c);
    }
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        for c in &mut slow {
            let _ = c.write_all(b"X").await;
        }
    }
    // Count the connections the node has closed (read returns 0 or an error).
    let mut closed = 0;
    for mut c in conns.into_iter().chain(slow) {
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(1500), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            // A 408 (or any answer) first counts as cut too, once the socket ends.
            Ok(Ok(_)) => closed += 1,
            Err(_) => {}
        }
    }
    (n + 20, closed)
}

/// WebSockets that never join: over the per-address limit they are refused at once,
/// the others are closed at the join deadline.
async fn idle_websockets(node: &RunningNode, n: usize) -> (usize, usize) {
    let url = format!("ws://{}/v1/signal", node.http);
    let mut sockets = Vec::new();
    let mut refused = 0;
    for _ in 0..n {
        match tokio_tungstenite::connect_async(&url).await {
            Ok((s, _)) => sockets.push(s),
            Err(_) => refused += 1,
        }
    }
    let mut by_code = (0, 0);
    for mut s in sockets {
        let code = u16::from(expect_close(&mut s).await);
        match code {
            1013 => by_code.0 += 1,
            1008 => by_code.1 += 1,
            other => panic!("closed with {other}"),
        }
    }
    (by_code.0 + refused, by_code.1)
}

/// Joins as fast as one address can send them.
async fn join_flood(node: &RunningNode, n: usize) -> (usize, usize) {
    let (mut joined, mut limited) = (0, 0);
    let mut keep = Vec::new();
    for i in 0..n {
        let mut s = connect(node).await;
        send(
            &mut s,
            json!({"type": "join", "room": "flood", "name": format!("f{i}")}),
        )
        .await;
        let v = ws::recv(&mut s).await;
        match v["type"].as_str() {
            Some("joined") => {
                joined += 1;
                keep.push(s);
            }
            Some("error") if v["code"] == "rate_limited" => {
                assert_eq!(u16::from(expect_close(&mut s).await), 1013);
                limited += 1;
            }
            _ => panic!("{v}"),
        }
    }
    (joined, limited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuse_of_the_signaling_port_leaves_a_call_in_progress_alone() {
    let node = ws::node_with(NodeConfig {
        dev: true,
        shards: 2,
        max_connections_per_ip: 256,
        join_timeout: Duration::from_secs(1),
        header_timeout: Duration::from_secs(1),
        join_rate_per_ip: 10,
        ..NodeConfig::default()
    })
    .await;
    let a = LiveClient::join(&node, "calm", "a", None, 2).await.unwrap();
    let b = LiveClient::join(&node, "calm", "b", None, 2).await.unwrap();
    a.set_speaking(true);
    assert!(wait_until(Duration::from_secs(10), || b.received_from(a.csrc()) > 10).await);
    // The join flood must not be counted against the bystanders' own earlier joins.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let before = window(&b, &a, async {}).await;
    let mut figures = None;
    let during = window(&b, &a, async {
        // The idle WebSockets come once the flood holds its connections: they fill
        // the per-address limit, and a flood connection refused at that limit
        // would test the limit, not the join rate.
        let ((flood, idle_ws), idle_tcp, ()) = tokio::join!(
            async {
                let flood = join_flood(&node, 60).await;
                (flood, idle_websockets(&node, 300).await)
            },
            idle_tcp(&node, 2000),
            garbage(&node),
        );
        figures = Some((flood, idle_ws, idle_tcp));
    })
    .await;
    let after = window(&b, &a, async {}).await;

    let ((joined, limited), (refused_ws, timed_out_ws), (tcp, tcp_closed)) = figures.unwrap();
    eprintln!(
        "bystander b, packets from a (received, sent): before {before:?}, during {during:?}, after {after:?}; \
         join flood: {joined} joined, {limited} rate-limited; idle WebSockets: {refused_ws} refused, \
         {timed_out_ws} closed at the join deadline; idle/slow TCP: {tcp_closed} of {tcp} cut"
    );
    // Loopback loses nothing: the bystander gets every packet sent in each window
    // (give or take the packets in flight at the window's edges).
    for (name, (received, sent)) in [("before", before), ("during", during), ("after", after)] {
        assert!(sent >= 130, "{name}: a sent {sent} in 3 s");
        assert!(received + 3 >= sent, "{name}: b got {received} of {sent}");
    }
    // Joins from one address: the burst (20) and what the rate refills, no more.
    assert!((15..=35).contains(&joined), "{joined} joined");
    assert_eq!(joined + limited, 60);
    // 256 WebSockets per address (the flood's held some): the rest refused at once.
    assert!(refused_ws >= 300 - 256, "{refused_ws} refused");
    assert_eq!(refused_ws + timed_out_ws, 300);
    // Every idle and slow TCP connection was refused or cut by the header deadline.
    assert_eq!(tcp_closed, tcp, "idle TCP connections left open");
    assert!(a.messages("participant_left").is_empty() && b.messages("participant_left").is_empty());
    assert!(b.closed().is_none() && a.closed().is_none());

    let metrics = {
        let mut s = TcpStream::connect(node.http).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        body
    };
    assert!(
        metrics.contains(&format!(
            "chorus_joins_total{{result=\"rate_limited\"}} {limited}"
        )),
        "{metrics}"
    );
    node.stop().await;
}
