//! Chorus across machines: where a node sits in a cluster.
//!
//! A node without `--redis` runs alone. With it, [`directory`] registers the node in
//! Redis (a heartbeat key with a TTL), finds the others, and maps each room to its
//! home node and the nodes holding its members. [`relay`] is the QUIC endpoint
//! between nodes (`--relay`, mutually authenticated from `--cluster-secret`): speaker
//! packets as datagrams, one copy per remote node with listeners, and room state on a
//! reliable stream. [`node`] ties them to the engine: [`Cluster`] is what a running
//! node holds.

pub mod directory;
pub mod error;
pub mod node;
pub mod relay;
mod task;
pub mod wire;

pub use error::ClusterError;
pub use node::{Cluster, ClusterConfig, ClusterHost, ClusterStats, Placement};
