//! What can go wrong in the cluster layer.

use std::net::SocketAddr;

/// An error of the directory (Redis) or the relay (QUIC between nodes).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Redis refused or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A directory record that does not parse.
    #[error("directory record {key}: {reason}")]
    BadRecord { key: String, reason: String },
    /// Every node number (1–255) is taken by a live node.
    #[error("no free node number: 255 nodes are registered")]
    NoNodeNumber,
    /// The relay's socket.
    #[error("relay socket: {0}")]
    Io(#[from] std::io::Error),
    /// The relay's TLS set-up.
    #[error("relay TLS: {0}")]
    Tls(String),
    /// A relay connection to another node could not be made.
    #[error("relay connection to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    /// A peer did not prove it knows the cluster secret.
    #[error("relay peer failed authentication: {0}")]
    Auth(String),
    /// A relay frame or datagram that does not parse.
    #[error("relay frame: {0}")]
    Frame(String),
    /// Our node number expired and another node claimed it before our heartbeat.
    #[error("node number {0} was taken by another node")]
    IndexLost(u16),
    /// A relay configuration value that cannot be used (empty secret, node 0…).
    #[error("relay configuration: {0}")]
    Config(String),
    /// Another node did not answer (not connected, or no answer in time).
    #[error("node {0} did not answer")]
    Unreachable(u16),
    /// The room is changing home (its home died or drains): ask again in a moment.
    #[error("room {0} is moving to another node")]
    Moving(String),
}
