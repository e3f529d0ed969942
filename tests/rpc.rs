//! A control-plane client for tests: JSON-RPC 2.0 lines over the node's Unix socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// A fresh socket path in a fresh private directory under the system temp dir.
pub fn socket_path(tag: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir()
        .join(format!("chorus-test-{}-{tag}-{n}", std::process::id()))
        .join("control.sock")
}

pub struct Rpc {
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
    next_id: u64,
    /// Notifications read while waiting for an answer.
    pub events: Vec<Value>,
}

impl Rpc {
    pub async fn connect(path: &Path) -> Rpc {
        let stream = UnixStream::connect(path).await.unwrap();
        let (read, write) = stream.into_split();
        Rpc {
            lines: BufReader::new(read).lines(),
            write,
            next_id: 0,
            events: Vec::new(),
        }
    }

    /// Writes one raw line.
    pub async fn send_line(&mut self, line: &str) {
        self.try_send_line(line).await.unwrap();
    }

    /// Writes one raw line; the node may close the socket before it is all written.
    pub async fn try_send_line(&mut self, line: &str) -> std::io::Result<()> {
        self.write.write_all(line.as_bytes()).await?;
        self.write.write_all(b"\n").await
    }

    /// The next line from the node, as JSON (`None`: closed, or nothing in 10 s).
    pub async fn read(&mut self) -> Option<Value> {
        let line = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
            .await
            .ok()?
            .ok()??;
        Some(serde_json::from_str(&line).unwrap())
    }

    /// Calls `method`; `Ok(result)` or `Err(error object)`.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_line(&line.to_string()).await;
        loop {
            let v = self.read().await.expect("an answer");
            if v.get("method").and_then(Value::as_str) == Some("event") {
                self.events.push(v["params"].clone());
                continue;
            }
            assert_eq!(v["jsonrpc"], "2.0");
            assert_eq!(v["id"], json!(id), "{v}");
            return match v.get("error") {
                Some(e) => Err(e.clone()),
                None => Ok(v["result"].clone()),
            };
        }
    }

    /// Calls and expects success.
    pub async fn ok(&mut self, method: &str, params: Value) -> Value {
        match self.call(method, params).await {
            Ok(v) => v,
            Err(e) => panic!("{method}: {e}"),
        }
    }

    /// Calls and expects an error; returns its code.
    pub async fn err(&mut self, method: &str, params: Value) -> i64 {
        match self.call(method, params).await {
            Ok(v) => panic!("{method} succeeded: {v}"),
            Err(e) => e["code"].as_i64().unwrap(),
        }
    }

    /// Waits (up to `timeout`) for an event matching `want`, keeping the others.
    pub async fn event(&mut self, timeout: Duration, want: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.events.iter().position(&want) {
            return self.events.remove(i);
        }
        let end = tokio::time::Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            let line = tokio::time::timeout(left, self.lines.next_line())
                .await
                .unwrap_or_else(|_| {
                    panic!("no matching event in {timeout:?}; had {:?}", self.events)
                })
                .unwrap()
                .expect("socket open");
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["method"], "event", "{v}");
            let e = v["params"].clone();
            if want(&e) {
                return e;
            }
            self.events.push(e);
        }
    }
}

impl Rpc {
    /// In a cluster: waits (up to 10 s) until `node.list` shows `n` nodes, and returns
    /// that list.
    pub async fn wait_nodes(&mut self, n: usize) -> Vec<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let list = self.call("node.list", json!({})).await.unwrap();
            if let Some(l) = list.as_array().filter(|l| l.len() == n) {
                return l.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node.list never showed {n} nodes: {list}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
