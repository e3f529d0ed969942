//! A node's relay counters, read from its `GET /metrics` (Prometheus text) at the
//! window's edges when the rooms span several nodes.

use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The relay counters of one node (`chorus_relay_*_total`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relay {
    /// Speaker packet copies sent to other nodes.
    pub packets_out: u64,
    /// Speaker packets received from other nodes.
    pub packets_in: u64,
    /// Relay payload bytes (datagrams and stream frames, without QUIC's overhead).
    pub bytes_out: u64,
    pub bytes_in: u64,
}

impl Relay {
    /// What happened between `self` and `later`.
    pub fn delta(&self, later: &Relay) -> Relay {
        Relay {
            packets_out: later.packets_out.saturating_sub(self.packets_out),
            packets_in: later.packets_in.saturating_sub(self.packets_in),
            bytes_out: later.bytes_out.saturating_sub(self.bytes_out),
            bytes_in: later.bytes_in.saturating_sub(self.bytes_in),
        }
    }

    pub fn add(&mut self, other: &Relay) {
        self.packets_out += other.packets_out;
        self.packets_in += other.packets_in;
        self.bytes_out += other.bytes_out;
        self.bytes_in += other.bytes_in;
    }

    pub fn json(&self) -> Value {
        json!({
            "packets_out": self.packets_out,
            "packets_in": self.packets_in,
            "bytes_out": self.bytes_out,
            "bytes_in": self.bytes_in,
        })
    }

    /// Reads the counters from Prometheus text; `None` when the node has no relay.
    pub fn parse(text: &str) -> Option<Relay> {
        let mut r = Relay::default();
        let mut found = false;
        for line in text.lines() {
            let Some((name, value)) = line.split_once(' ') else {
                continue;
            };
            let slot = match name {
                "chorus_relay_packets_out_total" => &mut r.packets_out,
                "chorus_relay_packets_in_total" => &mut r.packets_in,
                "chorus_relay_bytes_out_total" => &mut r.bytes_out,
                "chorus_relay_bytes_in_total" => &mut r.bytes_in,
                _ => continue,
            };
            if let Ok(v) = value.trim().parse() {
                *slot = v;
                found = true;
            }
        }
        found.then_some(r)
    }
}

/// `GET /metrics` from `authority` (`host:port`), over plain HTTP/1.1.
pub async fn scrape(authority: &str) -> anyhow::Result<Relay> {
    let get = async {
        let mut stream = TcpStream::connect(authority).await?;
        let request =
            format!("GET /metrics HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut body = Vec::new();
        stream.read_to_end(&mut body).await?;
        anyhow::Ok(String::from_utf8_lossy(&body).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(2), get)
        .await
        .context("GET /metrics timed out")??;
    if !text.starts_with("HTTP/1.1 200") {
        bail!(
            "GET /metrics: {}",
            text.lines().next().unwrap_or("no answer")
        );
    }
    Relay::parse(&text)
        .context("no chorus_relay_* counters in /metrics (is the node in a cluster?)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_relay_counters() {
        let text = "# HELP chorus_relay_packets_out_total Speaker packet copies\n\
                    # TYPE chorus_relay_packets_out_total counter\n\
                    chorus_relay_packets_out_total 1500\n\
                    chorus_relay_packets_in_total 1499\n\
                    chorus_relay_bytes_out_total 170000\n\
                    chorus_relay_bytes_in_total 169886\n\
                    chorus_forwarded_total{shard=\"0\"} 9\n";
        let r = Relay::parse(text);
        assert_eq!(
            r,
            Some(Relay {
                packets_out: 1500,
                packets_in: 1499,
                bytes_out: 170_000,
                bytes_in: 169_886,
            })
        );
        assert_eq!(Relay::parse("chorus_joins_total 3\n"), None);
        let later = Relay {
            packets_out: 1600,
            ..Relay::default()
        };
        assert_eq!(r.map(|r| r.delta(&later).packets_out), Some(100));
    }
}
