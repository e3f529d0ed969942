//! A running node's place in its cluster: what ties the engine, the directory and
//! the relay together.
//!
//! - The engine's [`Event::Roster`](chorus_engine::Event::Roster)s (changes of this
//!   node's members) go to every other node holding members of the room, as
//!   [`RelayMessage::Member`]/[`RelayMessage::Left`]; theirs come back into the engine
//!   as [`RosterChange`]s for the room's home shard. Which nodes hold a room is learnt
//!   on the relay ([`RelayMessage::Interest`]), so a node joining a room gets its
//!   roster from the nodes already there.
//! - A shard's local speaker packet in such a room reaches [`Cluster::relay_sink`] on
//!   the shard thread: encoded once, sent as one QUIC datagram to each of those nodes;
//!   a datagram in goes to [`CommandSender::relay_in`].
//! - Every [`HEARTBEAT_EVERY`] the node renews its directory record and reads the
//!   others': new ones are dialled, vanished ones are dropped with their members, and
//!   rooms whose home vanished are taken over (first node wins).
//! - A join asks [`Cluster::place_join`] where it belongs.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chorus_engine::{CommandSender, RelayOut, RelaySink, RosterChange};
use chorus_protocol::signal::RoomId;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::directory::{Directory, NodeRecord, RoomRecord, HEARTBEAT_EVERY, NODE_TTL};
use crate::error::ClusterError;
use crate::relay::{NodeIndex, Relay, RelayConfig, RelayEvent};
use crate::task::{Input, Task};
use crate::wire::{encode_audio, encode_video, source_byte, RelayMessage};

/// Bytes of a relay connection's datagram send buffer that video must leave free:
/// room for the voice of a large raid (~2 s of 100 speakers at 1 packet of ~100 B
/// each per 20 ms) before anything would push it out.
pub const VOICE_RESERVE: usize = 64 * 1024;

/// How long a node waits for another node's answer (a room's policy, a call).
pub const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// How long an ask waits for the relay connection to a node the directory lists but
/// that is not connected yet: a node that just started is dialled (by the lower
/// number) at the next heartbeat, [`HEARTBEAT_EVERY`] at most, and authenticates in a
/// few milliseconds. A join that needs it waits this long rather than being told to
/// retry.
pub const CONNECT_WAIT: Duration = Duration::from_millis(1500);

/// How often an ask looks for that connection meanwhile.
const CONNECT_POLL: Duration = Duration::from_millis(25);

/// How a node joins its cluster.
#[derive(Clone)]
pub struct ClusterConfig {
    /// The directory (`--redis`).
    pub redis: String,
    /// Key prefix in Redis.
    pub prefix: String,
    /// Where the relay listens (`--relay`).
    pub relay: SocketAddr,
    /// The relay address other nodes dial (the listen address unless it is
    /// unspecified, then `advertise_ip` on its port).
    pub relay_advertised: SocketAddr,
    /// `--cluster-secret`.
    pub secret: Vec<u8>,
    /// The signaling URL other nodes send clients to (`--advertise-url`).
    pub url: String,
}

/// What the cluster layer asks of the node it runs in (signaling implements it).
pub trait ClusterHost: Send + Sync + 'static {
    /// The `room.create` params of a room this node runs, for another node that is
    /// to run it too; `None` if there is no such room here.
    fn room_policy(&self, room: RoomId) -> BoxFuture<Option<Value>>;
    /// A control-plane call another node forwarded: its JSON-RPC result or error.
    fn call(&self, method: String, params: Value) -> BoxFuture<Result<Value, Value>>;
    /// Participants connected, and the share of the node's cores in use (0..=1).
    fn load(&self) -> (u64, f32);
    /// The node drains: it takes no new rooms.
    fn draining(&self) -> bool;
    /// This node became the room's home: a replica of it here is the room now
    /// (it reports its closing, and outlives being empty as its policy says).
    fn promote(&self, room: RoomId);
    /// Something makes this node unfit to serve in the cluster (its node number was
    /// taken by another node): it should drain.
    fn fatal(&self, why: String);
    /// The room's home changed its policy: apply the `room.update` params here.
    fn apply_update(&self, params: Value);
    /// The room's home closed it: close it here too, with its reason.
    fn close_replica(&self, room: RoomId, reason: String);
    /// A draining home hands the room over: make sure it runs here with `params`
    /// (`room.create` params), then [`Cluster::take_over_from`] `home`.
    fn adopt(&self, room: RoomId, params: Value, home: String) -> BoxFuture<Result<(), String>>;
}

/// A boxed future, as [`ClusterHost`] returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Where a join belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Here: the room is homed here, or it may span nodes and this node takes it.
    Local,
    /// Here too, in a room homed on `home` that spans: its policy must be fetched
    /// first ([`Cluster::fetch_policy`]) unless the room runs here already.
    Span { home: NodeIndex },
    /// At another node: its signaling URL.
    Redirect { url: String },
}

/// A node's handle on its cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) node_id: String,
    pub(crate) index: NodeIndex,
    pub(crate) url: String,
    pub(crate) relay_addr: SocketAddr,
    pub(crate) started_ms: u64,
    pub(crate) directory: Directory,
    pub(crate) relay: Relay,
    /// For each room this node holds members of: the connected nodes that do too.
    /// Read by the shard threads for every local speaker packet.
    pub(crate) routes: RwLock<HashMap<RoomId, Vec<NodeIndex>>>,
    /// The live nodes as last read from the directory (this one included).
    pub(crate) nodes: RwLock<Vec<NodeRecord>>,
    /// Rooms' directory records as last read or written here.
    pub(crate) rooms: Mutex<HashMap<RoomId, RoomRecord>>,
    /// Answers awaited from other nodes, by request id.
    pub(crate) pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    pub(crate) next_ask: AtomicU64,
    /// Engine roster events for the cluster task.
    pub(crate) input: mpsc::UnboundedSender<Input>,
    pub(crate) input_rx: Mutex<Option<mpsc::UnboundedReceiver<Input>>>,
    pub(crate) relay_rx: Mutex<Option<mpsc::Receiver<RelayEvent>>>,
    /// Speaker packets relayed out and in, and relayed datagrams that did not parse.
    pub(crate) relayed_out: AtomicU64,
    pub(crate) relayed_in: AtomicU64,
    /// Video packets relayed out and in, and those not sent to keep room for voice.
    pub(crate) video_out: AtomicU64,
    pub(crate) video_in: AtomicU64,
    pub(crate) video_dropped: AtomicU64,
    pub(crate) bad_datagrams: AtomicU64,
}

/// An answer from another node.
pub(crate) enum Reply {
    Policy(Option<Value>),
    Call(Result<Value, Value>),
    Adopted(Result<(), String>),
}

impl Cluster {
    /// Joins the cluster: connects to the directory, takes a node number, binds the
    /// relay. Call [`Cluster::attach`] once the engine runs (with
    /// [`Cluster::index`] as its `ShardConfig::node`).
    pub async fn join(config: ClusterConfig) -> Result<Cluster, ClusterError> {
        let directory = Directory::connect(&config.redis, &config.prefix).await?;
        let node_id = random_id()?;
        let index = directory.claim_index(&node_id).await?;
        let (relay, relay_rx) = Relay::bind(RelayConfig {
            listen: config.relay,
            secret: config.secret.clone(),
            index,
            node_id: node_id.clone(),
        })?;
        let bound = relay.local_addr();
        let mut relay_addr = config.relay_advertised;
        if relay_addr.port() == 0 {
            relay_addr.set_port(bound.port());
        }
        let (input, input_rx) = mpsc::unbounded_channel();
        let started_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        tracing::info!(node = index, id = %node_id, relay = %relay_addr, url = %config.url, "joined the cluster");
        let cluster = Cluster {
            inner: Arc::new(Inner {
                node_id,
                index,
                url: config.url,
                relay_addr,
                started_ms,
                directory,
                relay,
                routes: RwLock::new(HashMap::new()),
                nodes: RwLock::new(Vec::new()),
                rooms: Mutex::new(HashMap::new()),
                pending: Mutex::new(HashMap::new()),
                next_ask: AtomicU64::new(1),
                input,
                input_rx: Mutex::new(Some(input_rx)),
                relay_rx: Mutex::new(Some(relay_rx)),
                relayed_out: AtomicU64::new(0),
                relayed_in: AtomicU64::new(0),
                video_out: AtomicU64::new(0),
                video_in: AtomicU64::new(0),
                video_dropped: AtomicU64::new(0),
                bad_datagrams: AtomicU64::new(0),
            }),
        };
        // Registered before the first join can be placed here.
        cluster
            .inner
            .directory
            .heartbeat(&cluster.record((0, 0.0), false), NODE_TTL)
            .await?;
        Ok(cluster)
    }

    /// This node's number: the engine's `ShardConfig::node`.
    pub fn index(&self) -> NodeIndex {
        self.inner.index
    }

    /// This node's id in the directory.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The relay's address as other nodes dial it.
    pub fn relay_addr(&self) -> SocketAddr {
        self.inner.relay_addr
    }

    /// The live nodes as last read from the directory (this one included).
    pub fn nodes(&self) -> Vec<NodeRecord> {
        self.inner.nodes.read().clone()
    }

    /// The relay's counters, and speaker packets relayed out and in.
    pub fn stats(&self) -> ClusterStats {
        let relay = self.inner.relay.stats();
        ClusterStats {
            peers: self.inner.relay.peers().len(),
            packets_out: self.inner.relayed_out.load(Ordering::Relaxed),
            packets_in: self.inner.relayed_in.load(Ordering::Relaxed),
            video_out: self.inner.video_out.load(Ordering::Relaxed),
            video_in: self.inner.video_in.load(Ordering::Relaxed),
            video_dropped: self.inner.video_dropped.load(Ordering::Relaxed),
            bad_datagrams: self.inner.bad_datagrams.load(Ordering::Relaxed),
            datagrams_out: relay.datagrams_out,
            datagrams_in: relay.datagrams_in,
            bytes_out: relay.bytes_out,
            bytes_in: relay.bytes_in,
            auth_failures: relay.auth_failures,
        }
    }

    /// What the engine's shard threads call with what they put out for other nodes
    /// (rooms that span nodes): a packet is encoded once and sent as one datagram to
    /// each other node of its room with listeners; video only while the link keeps
    /// [`VOICE_RESERVE`] free for voice; a keyframe request to its publisher's node.
    pub fn relay_sink(&self) -> RelaySink {
        let inner = self.inner.clone();
        Arc::new(move |out: &RelayOut| {
            let (room, data, video) = match out {
                RelayOut::Audio(room, packet) => {
                    let mut buf = Vec::with_capacity(64 + packet.payload.len());
                    encode_audio(room, packet, &mut buf);
                    (room, Bytes::from(buf), false)
                }
                RelayOut::Video(room, packet) => {
                    let mut buf = Vec::with_capacity(96 + packet.payload.len());
                    encode_video(room, packet, &mut buf);
                    (room, Bytes::from(buf), true)
                }
                RelayOut::Keyframe {
                    publisher,
                    source,
                    layer,
                } => {
                    let node = chorus_engine::cluster::node_of(*publisher);
                    let m = RelayMessage::Keyframe {
                        publisher: publisher.0,
                        source: source_byte(*source),
                        layer: *layer,
                    };
                    inner.relay.send_message(node, m.to_frame());
                    return;
                }
            };
            let routes = inner.routes.read();
            let Some(nodes) = routes.get(room) else {
                return;
            };
            for &node in nodes {
                let sent = if video {
                    inner
                        .relay
                        .send_datagram_leaving(node, data.clone(), VOICE_RESERVE)
                } else {
                    inner.relay.send_datagram(node, data.clone())
                };
                match (sent, video) {
                    (true, false) => inner.relayed_out.fetch_add(1, Ordering::Relaxed),
                    (true, true) => inner.video_out.fetch_add(1, Ordering::Relaxed),
                    (false, true) => inner.video_dropped.fetch_add(1, Ordering::Relaxed),
                    (false, false) => 0,
                };
            }
        })
    }

    /// An engine roster event (from the engine's event callback; never blocks).
    pub fn on_roster(&self, room: RoomId, change: RosterChange) {
        let _ = self.inner.input.send(Input::Roster(room, change));
    }

    /// `room.update` ran here, at the room's home: the other nodes running it apply
    /// the same params.
    pub fn room_updated(&self, room: RoomId, params: Value) {
        let _ = self.inner.input.send(Input::Updated(room, params));
    }

    /// This node is the room's home (it created it, or took it over): it keeps the
    /// room-wide roster for the room's life, with or without members of its own.
    pub fn hold(&self, room: RoomId) {
        let _ = self.inner.input.send(Input::Hold(room));
    }

    /// Whether the directory (as last read or written here) names this node the
    /// room's home.
    pub fn is_home(&self, room: &RoomId) -> bool {
        self.inner
            .rooms
            .lock()
            .get(room)
            .is_some_and(|r| r.home == self.inner.node_id)
    }

    /// Starts the cluster's tasks (on the current tokio runtime): the relay's events,
    /// the engine's roster events, and the heartbeat.
    pub fn attach(&self, engine: CommandSender, host: Arc<dyn ClusterHost>) {
        let (Some(input_rx), Some(relay_rx)) = (
            self.inner.input_rx.lock().take(),
            self.inner.relay_rx.lock().take(),
        ) else {
            return; // attached already
        };
        let (nodes_tx, nodes_rx) = mpsc::channel(4);
        let task = Task::new(self.clone(), engine, host.clone());
        tokio::spawn(task.run(input_rx, relay_rx, nodes_rx));
        tokio::spawn(heartbeat(self.clone(), host, nodes_tx));
    }

    /// Becomes the room's home in place of `home` (a draining node handing it over,
    /// or a vanished one): the directory's compare-and-set decides.
    pub async fn take_over_from(&self, room: &RoomId, home: &str) -> Result<bool, ClusterError> {
        let record = self
            .inner
            .directory
            .take_over_room(room.as_str(), home, &self.inner.node_id)
            .await?;
        let ours = record.home == self.inner.node_id;
        self.inner.rooms.lock().insert(room.clone(), record);
        if ours {
            self.hold(room.clone());
        }
        Ok(ours)
    }

    /// At a drain: every room homed here gets another home before the node goes —
    /// a live, undrained node that runs it (has members there), else the
    /// least-loaded one. Returns how many moved.
    pub async fn hand_over_homes(&self, host: Arc<dyn ClusterHost>) -> usize {
        let inner = &self.inner;
        let rooms = match inner.directory.rooms_homed_on(&inner.node_id).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "drain: the rooms homed here are unknown; none moved");
                return 0;
            }
        };
        let others: Vec<NodeRecord> = self
            .nodes()
            .into_iter()
            .filter(|n| n.index != inner.index && !n.draining)
            .collect();
        let mut moved = 0;
        for name in rooms {
            let Ok(room) = RoomId::new(&name) else {
                continue;
            };
            let holders = inner.directory.room_nodes(&name).await.unwrap_or_default();
            let target = others
                .iter()
                .filter(|n| holders.contains(&n.id))
                .min_by_key(|n| n.participants)
                .or_else(|| crate::directory::least_loaded(&others));
            let Some(target) = target else {
                tracing::warn!(%room, "drain: no other node to hand the room to");
                continue;
            };
            let Some(params) = host.room_policy(room.clone()).await else {
                continue; // closed meanwhile
            };
            let id = inner.next_ask.fetch_add(1, Ordering::Relaxed);
            let message = RelayMessage::Adopt {
                id,
                room: name.clone(),
                params,
                home: inner.node_id.clone(),
            };
            match self.ask(target.index, id, message).await {
                Ok(Reply::Adopted(Ok(()))) => {
                    moved += 1;
                    tracing::info!(%room, to = target.index, "drain: room handed over");
                    // The new home is known without asking Redis again: this node must
                    // not take itself for the home when the room closes here.
                    let mut rooms = inner.rooms.lock();
                    let record = rooms.entry(room.clone()).or_insert_with(|| RoomRecord {
                        home: String::new(),
                        epoch: 0,
                        span: false,
                    });
                    record.home = target.id.clone();
                    record.epoch += 1;
                    drop(rooms);
                    let _ = inner.input.send(Input::Unhold(room));
                }
                Ok(Reply::Adopted(Err(e))) => {
                    tracing::warn!(%room, to = target.index, error = %e, "drain: the room was not taken over")
                }
                Ok(_) => tracing::warn!(%room, "drain: a wrong answer to a hand-over"),
                Err(e) => tracing::warn!(%room, error = %e, "drain: no answer to a hand-over"),
            }
        }
        moved
    }

    /// Leaves the directory at once (drain, stop) and closes the relay.
    pub async fn leave(&self) {
        if let Err(e) = self
            .inner
            .directory
            .leave(&self.inner.node_id, self.inner.index)
            .await
        {
            tracing::warn!(error = %e, "could not leave the directory");
        }
        self.inner.relay.close();
    }

    fn record(&self, load: (u64, f32), draining: bool) -> NodeRecord {
        NodeRecord {
            id: self.inner.node_id.clone(),
            index: self.inner.index,
            url: self.inner.url.clone(),
            relay: self.inner.relay_addr,
            participants: load.0,
            cpu: load.1,
            draining,
            started_ms: self.inner.started_ms,
        }
    }

    fn live(&self, node_id: &str) -> Option<NodeRecord> {
        self.inner
            .nodes
            .read()
            .iter()
            .find(|n| n.id == node_id)
            .cloned()
    }

    /// Where a join to `room` belongs. A room no node has yet is homed here (`span`
    /// as given: a room made by a join is `false`); a room whose home is gone is
    /// taken over. While the directory is unreachable, rooms this node knows are
    /// placed as they were, and others wait (an error).
    pub async fn place_join(&self, room: &RoomId) -> Result<Placement, ClusterError> {
        let moving = || ClusterError::Moving(room.to_string());
        let cached = self.inner.rooms.lock().get(room).cloned();
        let record = match self.inner.directory.room(room.as_str()).await {
            Ok(Some(r)) => r,
            // Not in the directory: a new room, or one whose record was lost (Redis
            // came back empty): as this node knew it, else homed here.
            Ok(None) => {
                let (home, span) = cached
                    .as_ref()
                    .map_or((self.inner.node_id.as_str(), false), |r| {
                        (r.home.as_str(), r.span)
                    });
                self.inner
                    .directory
                    .claim_room(room.as_str(), home, span)
                    .await?
            }
            Err(e) => cached.ok_or(e)?,
        };
        let record = if record.home == self.inner.node_id || self.live(&record.home).is_some() {
            record
        } else if self.runs(room) || !self.live_holders(room).await {
            // Its home is gone: a node running the room takes it over (or any node,
            // when none does: then nobody is in it).
            tracing::info!(%room, dead = %record.home, "room's home is gone: taking it over");
            self.inner
                .directory
                .take_over_room(room.as_str(), &record.home, &self.inner.node_id)
                .await?
        } else {
            // A node running it is taking it over (within a heartbeat).
            return Err(moving());
        };
        self.inner.rooms.lock().insert(room.clone(), record.clone());
        if record.home == self.inner.node_id {
            self.hold(room.clone());
            return Ok(Placement::Local);
        }
        let Some(home) = self.live(&record.home) else {
            // Taken over by a node this one has not read yet.
            return Err(moving());
        };
        if home.draining {
            // It is handing its rooms over: the new home is named within moments.
            return Err(moving());
        }
        if record.span && !self.draining_self() {
            Ok(Placement::Span { home: home.index })
        } else {
            Ok(Placement::Redirect { url: home.url })
        }
    }

    /// Whether this node runs `room` (has members there, or is its home).
    fn runs(&self, room: &RoomId) -> bool {
        self.inner.routes.read().contains_key(room)
    }

    /// Whether a live node other than this one has members in `room`.
    async fn live_holders(&self, room: &RoomId) -> bool {
        let holders = self
            .inner
            .directory
            .room_nodes(room.as_str())
            .await
            .unwrap_or_default();
        holders
            .iter()
            .any(|id| *id != self.inner.node_id && self.live(id).is_some())
    }

    /// A join placed here found no room to join (and rooms are not made by joins):
    /// the claim `place_join` made goes again.
    pub async fn release_claim(&self, room: &RoomId) {
        let _ = self.inner.input.send(Input::Unhold(room.clone()));
        self.room_closed(room).await;
    }

    /// Makes sure the directory still names this node the home of a room it is home
    /// of (its record may have gone: the room closed and ran again here, or Redis
    /// came back empty).
    pub async fn reassert_home(&self, room: &RoomId) {
        let Some(record) = self.inner.rooms.lock().get(room).cloned() else {
            return;
        };
        if record.home != self.inner.node_id {
            return;
        }
        if let Err(e) = self
            .inner
            .directory
            .claim_room(room.as_str(), &record.home, record.span)
            .await
        {
            tracing::warn!(%room, error = %e, "directory: the room's home not reasserted");
        }
    }

    /// Where a join goes while this node drains: the room's home if that is another
    /// live node that does not drain, else the least-loaded such node.
    pub async fn drain_target(&self, room: &RoomId) -> Option<String> {
        let others: Vec<NodeRecord> = self
            .nodes()
            .into_iter()
            .filter(|n| n.index != self.inner.index && !n.draining)
            .collect();
        if let Ok(Some(record)) = self.inner.directory.room(room.as_str()).await {
            if let Some(home) = others.iter().find(|n| n.id == record.home) {
                return Some(home.url.clone());
            }
        }
        crate::directory::least_loaded(&others).map(|n| n.url.clone())
    }

    /// Records a room created here (`room.create`) as homed here.
    pub async fn claim_room(&self, room: &RoomId, span: bool) -> Result<RoomRecord, ClusterError> {
        let mut record = self
            .inner
            .directory
            .claim_room(room.as_str(), &self.inner.node_id, span)
            .await?;
        if record.home != self.inner.node_id && self.live(&record.home).is_none() {
            // A record left by a node that is gone (nobody runs the room).
            record = self
                .inner
                .directory
                .take_over_room(room.as_str(), &record.home, &self.inner.node_id)
                .await?;
            if record.home == self.inner.node_id && record.span != span {
                self.inner
                    .directory
                    .set_room_span(room.as_str(), span)
                    .await?;
                record.span = span;
            }
        }
        self.inner.rooms.lock().insert(room.clone(), record.clone());
        if record.home == self.inner.node_id {
            self.hold(room.clone());
        }
        Ok(record)
    }

    /// The node a room lives on: its home's record, if the room and the home exist.
    pub async fn room_home(&self, room: &RoomId) -> Result<Option<NodeRecord>, ClusterError> {
        let record = match self.inner.directory.room(room.as_str()).await {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(None),
            // Redis is away: the home as this node last knew it.
            Err(e) => match self.inner.rooms.lock().get(room).cloned() {
                Some(r) => r,
                None => return Err(e),
            },
        };
        Ok(self.live(&record.home))
    }

    /// Forgets a room homed here that closed.
    pub async fn room_closed(&self, room: &RoomId) {
        self.inner.rooms.lock().remove(room);
        if let Err(e) = self
            .inner
            .directory
            .remove_room(room.as_str(), &self.inner.node_id)
            .await
        {
            tracing::warn!(%room, error = %e, "could not remove the room from the directory");
        }
    }

    fn draining_self(&self) -> bool {
        self.inner
            .nodes
            .read()
            .iter()
            .any(|n| n.id == self.inner.node_id && n.draining)
    }

    /// Asks the room's home node for its policy (`room.create` params).
    pub async fn fetch_policy(
        &self,
        home: NodeIndex,
        room: &RoomId,
    ) -> Result<Option<Value>, ClusterError> {
        let id = self.inner.next_ask.fetch_add(1, Ordering::Relaxed);
        let message = RelayMessage::PolicyAsk {
            id,
            room: room.as_str().to_owned(),
        };
        match self.ask(home, id, message).await? {
            Reply::Policy(p) => Ok(p),
            _ => Err(ClusterError::Frame("not an answer to a policy ask".into())),
        }
    }

    /// Runs a control-plane call on another node: its result, or its JSON-RPC error.
    pub async fn call(
        &self,
        node: NodeIndex,
        method: &str,
        params: Value,
    ) -> Result<Result<Value, Value>, ClusterError> {
        let id = self.inner.next_ask.fetch_add(1, Ordering::Relaxed);
        let message = RelayMessage::Call {
            id,
            method: method.to_owned(),
            params,
        };
        match self.ask(node, id, message).await? {
            Reply::Call(r) => Ok(r),
            _ => Err(ClusterError::Frame("not an answer to a call".into())),
        }
    }

    pub(crate) async fn ask(
        &self,
        node: NodeIndex,
        id: u64,
        message: RelayMessage,
    ) -> Result<Reply, ClusterError> {
        let (tx, rx) = oneshot::channel();
        self.inner.pending.lock().insert(id, tx);
        let frame = message.to_frame();
        let connect_by = tokio::time::Instant::now() + CONNECT_WAIT;
        while !self.inner.relay.send_message(node, frame.clone()) {
            if tokio::time::Instant::now() >= connect_by {
                self.inner.pending.lock().remove(&id);
                return Err(ClusterError::Unreachable(node));
            }
            tokio::time::sleep(CONNECT_POLL).await;
        }
        match tokio::time::timeout(ASK_TIMEOUT, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            _ => {
                self.inner.pending.lock().remove(&id);
                Err(ClusterError::Unreachable(node))
            }
        }
    }
}

/// What [`Cluster::stats`] reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterStats {
    /// Nodes connected over the relay.
    pub peers: usize,
    /// Speaker packet copies sent to other nodes (one per packet per node).
    pub packets_out: u64,
    /// Speaker packets received from other nodes.
    pub packets_in: u64,
    /// Video packet copies sent to other nodes, received, and not sent (the link's
    /// room was kept for voice).
    pub video_out: u64,
    pub video_in: u64,
    pub video_dropped: u64,
    /// Relayed datagrams that did not parse.
    pub bad_datagrams: u64,
    pub datagrams_out: u64,
    pub datagrams_in: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub auth_failures: u64,
}

/// Renews this node's record every [`HEARTBEAT_EVERY`] and reads the others'. Rooms
/// homed on a node that vanished, and held here, are taken over.
async fn heartbeat(
    cluster: Cluster,
    host: Arc<dyn ClusterHost>,
    nodes: mpsc::Sender<Vec<NodeRecord>>,
) {
    let inner = &cluster.inner;
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut live: HashMap<String, NodeIndex> = HashMap::new();
    let mut failing = false;
    loop {
        tick.tick().await;
        if nodes.is_closed() {
            return;
        }
        let record = cluster.record(host.load(), host.draining());
        match inner.directory.heartbeat(&record, NODE_TTL).await {
            Ok(()) => {}
            Err(ClusterError::IndexLost(n)) => {
                tracing::error!(node = n, "another node took this node's number: draining");
                host.fatal(format!("node number {n} was taken by another node"));
                failing = true;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "directory heartbeat failed; calls go on");
                failing = true;
                continue;
            }
        }
        if std::mem::take(&mut failing) {
            // Redis is back (maybe empty): the rooms homed here are named again.
            let homes: Vec<RoomId> = inner
                .rooms
                .lock()
                .iter()
                .filter(|(_, r)| r.home == inner.node_id)
                .map(|(room, _)| room.clone())
                .collect();
            tracing::info!(
                rooms = homes.len(),
                "directory back: the rooms homed here reasserted"
            );
            for room in homes {
                cluster.reassert_home(&room).await;
            }
        }
        let list = match inner.directory.nodes().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "directory read failed");
                continue;
            }
        };
        // A node missing from the directory but connected over the relay is alive (its
        // heartbeats did not land); its rooms stay its own.
        let connected = inner.relay.peers();
        let mut vanished = Vec::new();
        let mut next: HashMap<String, NodeIndex> =
            list.iter().map(|n| (n.id.clone(), n.index)).collect();
        for (id, index) in live.drain() {
            if next.contains_key(&id) {
                continue;
            }
            if connected.contains(&index) {
                next.insert(id, index); // asked again at the next heartbeat
            } else {
                vanished.push(id);
            }
        }
        live = next;
        let _ = nodes.send(list).await;
        for dead in vanished {
            take_over_rooms(&cluster, &dead).await;
        }
    }
}

/// Rooms homed on a node that vanished, which this node runs too, get this node as
/// their home (the first node to ask wins).
async fn take_over_rooms(cluster: &Cluster, dead: &str) {
    let inner = &cluster.inner;
    let rooms = match inner.directory.rooms_homed_on(dead).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "directory: the vanished node's rooms are unknown");
            return;
        }
    };
    for name in rooms {
        let Ok(room) = RoomId::new(&name) else {
            continue;
        };
        if !inner.routes.read().contains_key(&room) {
            continue; // not run here
        }
        match inner
            .directory
            .take_over_room(&name, dead, &inner.node_id)
            .await
        {
            Ok(record) => {
                let ours = record.home == inner.node_id;
                inner.rooms.lock().insert(room.clone(), record);
                if ours {
                    tracing::info!(%room, "took over a room whose home vanished");
                    cluster.hold(room);
                }
            }
            Err(e) => tracing::warn!(%room, error = %e, "could not take over the room"),
        }
    }
}

fn random_id() -> Result<String, ClusterError> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| ClusterError::Config(format!("randomness: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}
