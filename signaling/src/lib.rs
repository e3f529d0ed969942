//! Chorus signaling: the node's HTTP face.
//!
//! Browsers load the demo page and `chorus.js` from here and speak the signaling
//! protocol (`docs/protocol.md`) over the WebSocket at `/v1/signal`. Each connection
//! becomes [`Command`](chorus_engine::Command)s for the engine; the engine's
//! [`Event`](chorus_engine::Event)s come back through a routing table to the right
//! connection. Signaling never touches media: it only talks to the engine through
//! channels.
//!
//! Beside it, the control plane (`docs/control.md`): JSON-RPC 2.0 on a local Unix
//! socket for the app's backend and `chorusctl`, answered by the engine's shards.
//!
//! [`node::start`] runs a whole node (UDP media engine + HTTP) and is what the
//! `chorus serve` binary and the integration tests call.

mod assets;
pub mod cli;
mod cluster;
pub mod config;
mod control;
mod error;
mod http;
mod hub;
pub mod ice;
mod metrics;
pub mod node;
mod rate;
mod resume;
mod routes;
mod session;
mod state;
pub mod token;
mod websocket;
pub mod wire;

pub use config::NodeConfig;
pub use control::ControlError;
pub use error::SignalingError;
pub use node::{start, RunningNode};
