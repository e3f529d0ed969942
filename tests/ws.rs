//! A WebSocket client for tests against a real node (`chorus_signaling::start`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chorus_signaling::{NodeConfig, RunningNode};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A node on free loopback ports, in dev mode or not.
pub async fn node(dev: bool) -> RunningNode {
    node_with(NodeConfig {
        dev,
        ..NodeConfig::default()
    })
    .await
}

/// A node on free loopback ports with this configuration otherwise.
pub async fn node_with(config: NodeConfig) -> RunningNode {
    chorus_signaling::start(NodeConfig {
        http: "127.0.0.1:0".parse().unwrap(),
        udp: "127.0.0.1:0".parse().unwrap(),
        ..config
    })
    .await
    .unwrap()
}

pub async fn connect(node: &RunningNode) -> Ws {
    let url = format!("ws://{}/v1/signal", node.http);
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next text message, skipping `speakers`.
pub async fn recv(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("socket open")
            .unwrap();
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] != "speakers" {
                return v;
            }
        }
    }
}

pub async fn expect_error(ws: &mut Ws, code: &str) -> Value {
    let v = recv(ws).await;
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    v
}

pub async fn expect_close(ws: &mut Ws) -> CloseCode {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a close within 5 s");
        match msg {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code,
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => panic!("closed without a code"),
            Some(Ok(_)) => continue,
        }
    }
}

pub async fn join(ws: &mut Ws, room: &str, name: &str) -> Value {
    send(ws, json!({"type":"join","room":room,"name":name})).await;
    let v = recv(ws).await;
    assert_eq!(v["type"], "joined", "{v}");
    v
}

/// `GET /metrics`'s body (headers included) from the node at `addr`.
pub async fn metrics(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
