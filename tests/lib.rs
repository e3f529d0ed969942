//! Cross-crate test support.
//!
//! [`sim`] drives a real [`chorus_engine::Shard`] against real str0m `Rtc` clients
//! (ICE, DTLS, SRTP and all) over a simulated network and a simulated clock: no
//! sockets, no sleeps, and a bound on steps so a livelock fails instead of hanging.
//! [`ws`] speaks the signaling protocol to a real node over a real WebSocket, and
//! [`live`] is a whole client of a real node: real WebSocket, real str0m over real UDP
//! on 127.0.0.1, on the real clock. [`rpc`] speaks the control protocol over the
//! node's Unix socket, and [`redis`] runs a real `redis-server` for the cluster tests.
//! [`held`] reads a counting allocator's figures for the memory test and bench.
//! The test files beside this one each check one behaviour.

pub mod held;
pub mod live;
pub mod redis;
pub mod rpc;
pub mod sim;
pub mod ws;
