//! A whole node: the media engine on its UDP socket and the HTTP server beside it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chorus_engine::tcp::TcpLimits;
use chorus_engine::{Driver, EngineError, Event, ShardConfig};
use chorus_protocol::signal::MAX_FRAME_BYTES;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::config::NodeConfig;
use crate::error::SignalingError;
use crate::hub::ControlHub;
use crate::metrics::JoinCounters;
use crate::routes::Routes;
use crate::state::Shared;
use crate::token::TokenVerifier;
use crate::websocket::{self, WebSocket};
use crate::{assets, session};
use hyper_util::rt::TokioIo;

/// A node that is running. Dropping it does not stop it; call [`RunningNode::stop`].
pub struct RunningNode {
    /// Where HTTP and the WebSocket listen (the real port when 0 was asked).
    pub http: SocketAddr,
    /// Where media is received (the real port when 0 was asked).
    pub udp: SocketAddr,
    /// Where ICE-TCP connections are taken, when they are.
    pub tcp: Option<SocketAddr>,
    /// The control socket, when there is one.
    pub control: Option<PathBuf>,
    stop: Option<oneshot::Sender<()>>,
    stopping: watch::Sender<bool>,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
    driver: Driver,
}

impl RunningNode {
    /// Drains the node: refuses new joins (`/readyz` turns 503), waits until every
    /// participant has left or `deadline` passed, then closes the rooms left with
    /// `room_closed {reason: "node_draining"}`. Call [`RunningNode::stop`] after. If a
    /// drain is under way already (`node.drain`), waits for that one.
    pub async fn drain(&self, deadline: Duration) {
        crate::state::start_drain(self.shared.clone(), deadline);
        self.drained().await;
    }

    /// Returns once a drain (SIGTERM or the control plane's `node.drain`) has
    /// finished: the node should then stop and exit.
    pub async fn drained(&self) {
        let mut rx = self.shared.drained.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Stops accepting, closes connections, and stops the engine. In a cluster the
    /// node leaves the directory first (the others drop it at once, not after its
    /// record's TTL).
    pub async fn stop(mut self) {
        if let Some(cluster) = &self.shared.cluster {
            cluster.leave().await;
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Graceful shutdown waits for open connections: close the WebSockets.
        let _ = self.stopping.send(true);
        let _ = self.server.await;
        // Joining the engine thread blocks; keep it off the async workers.
        let driver = self.driver;
        let _ = tokio::task::spawn_blocking(move || driver.stop()).await;
        if let Some(path) = &self.control {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds both sockets and starts serving. Must run inside a tokio runtime.
pub async fn start(config: NodeConfig) -> Result<RunningNode, SignalingError> {
    let primary = config.public_ips.first().copied();
    let advertised = SocketAddr::new(primary.unwrap_or(config.udp.ip()), config.udp.port());
    let mut shard = ShardConfig::new(advertised);
    shard.extra_ips = config.public_ips.iter().skip(1).copied().collect();
    shard.audio_slots = config.audio_slots;
    shard.video_slots = config.video_slots;
    shard.max_participants = config.max_participants;
    shard.auto_create_rooms = config.dev || config.auto_create_rooms;
    shard.disconnect_timeout = config.disconnect_timeout;
    shard.quality_interval = config.quality_interval;
    shard.srtp_profiles = config.srtp_profiles.clone();
    shard.seed = seed();

    let routes = Arc::new(Routes::default());
    let control = Arc::new(ControlHub::default());
    let (sink, hub) = (routes.clone(), control.clone());
    // The TCP candidate: the advertised IP, the TCP port (filled in once bound).
    shard.tcp_addr = config
        .tcp
        .map(|t| SocketAddr::new(primary.unwrap_or(t.ip()), t.port()));
    let limits = TcpLimits {
        per_ip: match config.tcp_connections_per_ip {
            0 => usize::MAX,
            n => n,
        },
        ..TcpLimits::default()
    };
    let tcp = config.tcp.map(|t| (t, limits));
    // HTTP first: its port is in the URL other nodes of a cluster hand out.
    let listener = TcpListener::bind(config.http)
        .await
        .map_err(|source| SignalingError::Bind {
            what: "HTTP listener",
            addr: config.http,
            source,
        })?;
    let http = listener.local_addr()?;
    let cluster = match &config.cluster {
        Some(settings) => Some(join_cluster(settings, &config, http).await?),
        None => None,
    };
    if let Some(c) = &cluster {
        shard.node = c.index();
    }
    let roster = cluster.clone();
    let driver = Driver::spawn_with_relay(
        shard,
        config.udp,
        tcp,
        config.shards,
        move |event| match event {
            Event::Reply { id, result, .. } => hub.reply(id, result),
            Event::Notify(e) => hub.event(crate::wire::node_event(e)),
            Event::Roster { room, change } => {
                if let Some(c) = &roster {
                    c.on_roster(room, change);
                }
            }
            other => sink.deliver(other),
        },
        cluster.as_ref().map(|c| c.relay_sink()),
    )
    .map_err(|e| match e {
        EngineError::Io(source) => SignalingError::Bind {
            what: "UDP media sockets and the ICE-TCP listener",
            addr: config.udp,
            source,
        },
        other => SignalingError::Engine(other),
    })?;
    let udp = driver.local_addr();
    let advertised = SocketAddr::new(advertised.ip(), udp.port());

    let control_listener = match &config.control {
        Some(path) => Some((crate::control::bind(path).await?, path.clone())),
        None => None,
    };
    let (stopping_tx, stopping) = watch::channel(false);
    let config_shards = config.shards;
    let config_public_ips = config.public_ips.clone();
    let tokens = config
        .token_secret
        .as_ref()
        .map(|s| TokenVerifier::new(s.as_bytes()));
    let shared = Arc::new(Shared {
        config,
        tokens,
        engine: driver.sender(),
        routes,
        connections_per_ip: Default::default(),
        draining: AtomicBool::new(false),
        drained: watch::channel(false).0,
        stopping,
        control,
        joins: JoinCounters::default(),
        resumes: Default::default(),
        join_buckets: Default::default(),
        started: Instant::now(),
        next_id: AtomicU64::new(seed() >> 24),
        cluster: cluster.clone(),
    });
    if let Some(c) = &cluster {
        c.attach(
            shared.engine.clone(),
            Arc::new(crate::cluster::Host(
                Arc::downgrade(&shared),
                Default::default(),
            )),
        );
    }
    let shared_for_node = shared.clone();
    let control_path = control_listener.map(|(listener, path)| {
        tokio::spawn(crate::control::serve(listener, shared.clone()));
        tracing::info!(path = %path.display(), "control socket");
        path
    });
    let app = Router::new()
        .route("/v1/signal", get(signal))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .merge(assets::router())
        .with_state(shared.clone());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    // TCP connections per address: room for plain HTTP beside the WebSocket sessions.
    let tcp_limit = shared_for_node
        .config
        .max_connections_per_ip
        .saturating_mul(2);
    let header_timeout = shared_for_node.config.header_timeout;
    let server = tokio::spawn(crate::http::serve(
        listener,
        app,
        tcp_limit,
        header_timeout,
        stop_rx,
    ));
    let shards = config_shards;
    let tcp = driver.tcp_addr();
    tracing::info!(%http, %udp, ?tcp, %advertised, public_ips = ?config_public_ips, shards, "node started");
    Ok(RunningNode {
        http,
        udp,
        tcp,
        control: control_path,
        stop: Some(stop_tx),
        stopping: stopping_tx,
        shared: shared_for_node,
        server,
        driver,
    })
}

async fn signal(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(shared): State<Arc<Shared>>,
    mut request: Request,
) -> Response {
    let response = match websocket::accept(request.headers()) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        // Messages up to MAX_FRAME_BYTES reach the protocol layer; larger ones, up to
        // 1 MiB, are skipped and answered with `bad_request`; beyond that the
        // connection is closed (1009).
        let ws = WebSocket::new(
            TokioIo::new(upgraded),
            MAX_FRAME_BYTES,
            (MAX_FRAME_BYTES * 16) as u64,
        );
        // Per-address limits (connections, joins) count an IPv6 /64 as one address.
        session::run(ws, shared, chorus_engine::tcp::limit_key(peer.ip())).await;
    });
    response
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::render(&shared.engine, &shared.joins, shared.cluster.as_ref()),
    )
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if shared.draining.load(Ordering::Relaxed) {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "ready": false, "reason": "draining" })),
        )
    } else {
        (
            axum::http::StatusCode::OK,
            Json(serde_json::json!({ "ready": true })),
        )
    }
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Seeds the engine's randomness and participant ids from the process and the clock.
fn seed() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Joins the cluster `settings` name: the directory, a node number, the relay.
async fn join_cluster(
    settings: &crate::config::ClusterSettings,
    config: &NodeConfig,
    http: SocketAddr,
) -> Result<chorus_cluster::Cluster, SignalingError> {
    // What other nodes reach this one at: the first public IP, else the bound one.
    let ip = config
        .public_ips
        .first()
        .copied()
        .unwrap_or(if http.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            http.ip()
        });
    let url = settings
        .advertise_url
        .clone()
        .unwrap_or_else(|| format!("ws://{}/v1/signal", SocketAddr::new(ip, http.port())));
    let relay_advertised = if settings.relay.ip().is_unspecified() {
        SocketAddr::new(ip, settings.relay.port())
    } else {
        settings.relay
    };
    Ok(
        chorus_cluster::Cluster::join(chorus_cluster::ClusterConfig {
            redis: settings.redis.clone(),
            prefix: chorus_cluster::directory::DEFAULT_PREFIX.to_owned(),
            relay: settings.relay,
            relay_advertised,
            secret: settings.secret.as_bytes().to_vec(),
            url,
        })
        .await?,
    )
}
