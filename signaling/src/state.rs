//! What the WebSocket sessions, the control socket and the HTTP routes share: one
//! place of its own, built by `node.rs` and handed to each of them, so none of them
//! reaches into another for it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_engine::cluster::participant_id_on;
use chorus_engine::CommandSender;
use chorus_protocol::signal::ParticipantId;
use tokio::sync::watch;

use crate::config::NodeConfig;
use crate::hub::ControlHub;
use crate::metrics::JoinCounters;
use crate::routes::Routes;
use crate::token::TokenVerifier;

/// What every connection shares.
pub(crate) struct Shared {
    pub config: NodeConfig,
    pub engine: CommandSender,
    pub routes: Arc<Routes>,
    /// Checks join tokens, when a secret is configured.
    pub tokens: Option<TokenVerifier>,
    /// Open WebSocket connections per client IP address.
    pub connections_per_ip: parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    /// Set when the node drains: no new joins, `/readyz` says not ready.
    pub draining: AtomicBool,
    /// Turns true when a drain has finished (every room closed).
    pub drained: watch::Sender<bool>,
    /// Turns true when the node stops: every session closes (1001).
    pub stopping: watch::Receiver<bool>,
    /// Control-plane requests in flight and the event stream.
    pub control: Arc<ControlHub>,
    /// Joins by result, for `/metrics`.
    pub joins: JoinCounters,
    /// Sessions that may be resumed.
    pub resumes: crate::resume::Resumes,
    /// Joins (and resumes) per client IP address: a token bucket each.
    pub(crate) join_buckets:
        parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, crate::rate::RateLimiter>>,
    pub started: Instant,
    pub(crate) next_id: AtomicU64,
    /// The node's cluster (`--redis`); `None`: it runs alone.
    pub cluster: Option<chorus_cluster::Cluster>,
}

impl Shared {
    /// Whether `ip` may join now (`--join-rate-per-ip`, bursts of twice that).
    pub fn allow_join(&self, ip: std::net::IpAddr) -> bool {
        let rate = self.config.join_rate_per_ip;
        if rate == 0 {
            return true;
        }
        let now = Instant::now();
        let mut buckets = self.join_buckets.lock();
        if buckets.len() > 10_000 {
            // Forget addresses whose bucket has refilled: they lose nothing.
            buckets.retain(|_, b| !b.is_full(now));
        }
        buckets
            .entry(ip)
            .or_insert_with(|| crate::rate::RateLimiter::new(rate, now))
            .allow(now)
    }

    /// A fresh id whose home shard is `home` (the shard keeping its room's roster).
    pub fn next_participant_id(&self, home: usize) -> ParticipantId {
        let node = self.cluster.as_ref().map_or(0, |c| c.index());
        participant_id_on(node, self.next_id.fetch_add(1, Ordering::Relaxed), home)
    }
}

/// Starts draining (once; later calls do nothing): no new joins, then, when every
/// participant has left or at `deadline`, every room left is closed with
/// `room_closed {reason: "node_draining"}` and [`Shared::drained`] turns true.
pub(crate) fn start_drain(shared: Arc<Shared>, deadline: Duration) {
    if shared.draining.swap(true, Ordering::AcqRel) {
        return;
    }
    tracing::info!(?deadline, "draining");
    if shared.cluster.is_none() {
        shared.engine.start_draining();
    }
    tokio::spawn(async move {
        let end = tokio::time::Instant::now() + deadline;
        // In a cluster, the rooms homed here move to other nodes first (before the
        // engine closes the empty ones): their members elsewhere stay in them.
        if let Some(cluster) = shared.cluster.clone() {
            let host = Arc::new(crate::cluster::Host(
                Arc::downgrade(&shared),
                Default::default(),
            ));
            let moved = tokio::time::timeout(deadline, cluster.hand_over_homes(host)).await;
            tracing::info!(moved = ?moved.ok(), "drain: rooms' homes handed over");
            shared.engine.start_draining();
        }
        // The routing table is exact and current (shard snapshots lag by up to half
        // a second).
        while shared.routes.len() > 0 && tokio::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        shared.engine.close_all_rooms("node_draining");
        // Let the sessions send `room_closed` and their close frames.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = shared.drained.send(true);
    });
}
