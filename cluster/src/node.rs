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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chorus_engine::{CommandSender, RelaySink, RemoteMember, RosterChange, SpeakerPacket};
use chorus_protocol::signal::{ParticipantId, RoomId};
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::directory::{Directory, NodeRecord, RoomRecord, HEARTBEAT_EVERY, NODE_TTL};
use crate::error::ClusterError;
use crate::relay::{NodeIndex, Relay, RelayConfig, RelayEvent};
use crate::wire::{decode_audio, encode_audio, RelayMessage, WireMember};

/// How long a node waits for another node's answer (a room's policy, a call).
pub const ASK_TIMEOUT: Duration = Duration::from_secs(3);

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
    inner: Arc<Inner>,
}

struct Inner {
    node_id: String,
    index: NodeIndex,
    url: String,
    relay_addr: SocketAddr,
    started_ms: u64,
    directory: Directory,
    relay: Relay,
    /// For each room this node holds members of: the connected nodes that do too.
    /// Read by the shard threads for every local speaker packet.
    routes: RwLock<HashMap<RoomId, Vec<NodeIndex>>>,
    /// The live nodes as last read from the directory (this one included).
    nodes: RwLock<Vec<NodeRecord>>,
    /// Rooms' directory records as last read or written here.
    rooms: Mutex<HashMap<RoomId, RoomRecord>>,
    /// Answers awaited from other nodes, by request id.
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    next_ask: AtomicU64,
    /// Engine roster events for the cluster task.
    roster: mpsc::UnboundedSender<(RoomId, RosterChange)>,
    roster_rx: Mutex<Option<mpsc::UnboundedReceiver<(RoomId, RosterChange)>>>,
    relay_rx: Mutex<Option<mpsc::Receiver<RelayEvent>>>,
    /// Speaker packets relayed out and in, and relayed datagrams that did not parse.
    pub(crate) relayed_out: AtomicU64,
    pub(crate) relayed_in: AtomicU64,
    pub(crate) bad_datagrams: AtomicU64,
}

/// An answer from another node.
enum Reply {
    Policy(Option<Value>),
    Call(Result<Value, Value>),
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
        let (roster, roster_rx) = mpsc::unbounded_channel();
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
                roster,
                roster_rx: Mutex::new(Some(roster_rx)),
                relay_rx: Mutex::new(Some(relay_rx)),
                relayed_out: AtomicU64::new(0),
                relayed_in: AtomicU64::new(0),
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
            bad_datagrams: self.inner.bad_datagrams.load(Ordering::Relaxed),
            datagrams_out: relay.datagrams_out,
            datagrams_in: relay.datagrams_in,
            bytes_out: relay.bytes_out,
            bytes_in: relay.bytes_in,
            auth_failures: relay.auth_failures,
        }
    }

    /// What the engine's shard threads call with each local speaker packet of a room
    /// that spans nodes: one encoding, one datagram per other node of the room.
    pub fn relay_sink(&self) -> RelaySink {
        let inner = self.inner.clone();
        Arc::new(move |room: &RoomId, packet: &SpeakerPacket| {
            let routes = inner.routes.read();
            let Some(nodes) = routes.get(room).filter(|n| !n.is_empty()) else {
                return;
            };
            let mut buf = Vec::with_capacity(64 + packet.payload.len());
            encode_audio(room, packet, &mut buf);
            let data = Bytes::from(buf);
            for &node in nodes {
                if inner.relay.send_datagram(node, data.clone()) {
                    inner.relayed_out.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    }

    /// An engine roster event (from the engine's event callback; never blocks).
    pub fn on_roster(&self, room: RoomId, change: RosterChange) {
        let _ = self.inner.roster.send((room, change));
    }

    /// Starts the cluster's tasks (on the current tokio runtime): the relay's events,
    /// the engine's roster events, and the heartbeat.
    pub fn attach(&self, engine: CommandSender, host: Arc<dyn ClusterHost>) {
        let (Some(roster_rx), Some(relay_rx)) = (
            self.inner.roster_rx.lock().take(),
            self.inner.relay_rx.lock().take(),
        ) else {
            return; // attached already
        };
        let (nodes_tx, nodes_rx) = mpsc::channel(4);
        let task = Task {
            cluster: self.clone(),
            engine,
            host: host.clone(),
            interest: HashMap::new(),
            local: HashMap::new(),
            received: HashMap::new(),
            peers: HashSet::new(),
            known: HashMap::new(),
        };
        tokio::spawn(task.run(roster_rx, relay_rx, nodes_rx));
        tokio::spawn(heartbeat(self.clone(), host, nodes_tx));
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
        let record = match self.inner.directory.room(room.as_str()).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.inner
                    .directory
                    .claim_room(room.as_str(), &self.inner.node_id, false)
                    .await?
            }
            Err(e) => match self.inner.rooms.lock().get(room) {
                Some(r) => r.clone(),
                None => return Err(e),
            },
        };
        let record = if record.home == self.inner.node_id || self.live(&record.home).is_some() {
            record
        } else {
            tracing::info!(%room, dead = %record.home, "room's home is gone: taking it over");
            self.inner
                .directory
                .take_over_room(room.as_str(), &record.home, &self.inner.node_id)
                .await?
        };
        self.inner.rooms.lock().insert(room.clone(), record.clone());
        if record.home == self.inner.node_id {
            return Ok(Placement::Local);
        }
        let Some(home) = self.live(&record.home) else {
            // Taken over by a node this one has not read yet: ask again shortly.
            return Err(ClusterError::Config(format!(
                "room {room} is moving to another node; retry"
            )));
        };
        if record.span && !self.draining_self() {
            Ok(Placement::Span { home: home.index })
        } else {
            Ok(Placement::Redirect { url: home.url })
        }
    }

    /// Records a room created here (`room.create`) as homed here.
    pub async fn claim_room(&self, room: &RoomId, span: bool) -> Result<RoomRecord, ClusterError> {
        let record = self
            .inner
            .directory
            .claim_room(room.as_str(), &self.inner.node_id, span)
            .await?;
        self.inner.rooms.lock().insert(room.clone(), record.clone());
        Ok(record)
    }

    /// The node a room lives on: its home's record, if the room and the home exist.
    pub async fn room_home(&self, room: &RoomId) -> Result<Option<NodeRecord>, ClusterError> {
        let record = match self.inner.directory.room(room.as_str()).await? {
            Some(r) => r,
            None => return Ok(None),
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
            Reply::Call(_) => Err(ClusterError::Frame("a call reply to a policy ask".into())),
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
            Reply::Policy(_) => Err(ClusterError::Frame("a policy reply to a call".into())),
        }
    }

    async fn ask(
        &self,
        node: NodeIndex,
        id: u64,
        message: RelayMessage,
    ) -> Result<Reply, ClusterError> {
        let (tx, rx) = oneshot::channel();
        self.inner.pending.lock().insert(id, tx);
        if !self.inner.relay.send_message(node, message.to_frame()) {
            self.inner.pending.lock().remove(&id);
            return Err(ClusterError::Unreachable(node));
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
    /// Relayed datagrams that did not parse.
    pub bad_datagrams: u64,
    pub datagrams_out: u64,
    pub datagrams_in: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub auth_failures: u64,
}

/// The cluster's state, owned by one task.
struct Task {
    cluster: Cluster,
    engine: CommandSender,
    host: Arc<dyn ClusterHost>,
    /// Per room: the connected nodes that said they hold members (whether this node
    /// does or not).
    interest: HashMap<RoomId, BTreeSet<NodeIndex>>,
    /// Per room this node holds members of: those members.
    local: HashMap<RoomId, HashMap<ParticipantId, RemoteMember>>,
    /// Per node: the members it told us of, per room (to drop when it goes).
    received: HashMap<NodeIndex, HashMap<RoomId, HashSet<ParticipantId>>>,
    /// Connected nodes.
    peers: HashSet<NodeIndex>,
    /// The other live nodes as last read: number → id.
    known: HashMap<NodeIndex, String>,
}

impl Task {
    async fn run(
        mut self,
        mut roster: mpsc::UnboundedReceiver<(RoomId, RosterChange)>,
        mut relay: mpsc::Receiver<RelayEvent>,
        mut nodes: mpsc::Receiver<Vec<NodeRecord>>,
    ) {
        loop {
            tokio::select! {
                Some((room, change)) = roster.recv() => self.on_local(room, change),
                Some(event) = relay.recv() => self.on_relay(event),
                Some(list) = nodes.recv() => self.on_nodes(list),
                else => return,
            }
        }
    }

    fn inner(&self) -> &Inner {
        &self.cluster.inner
    }

    fn send(&self, node: NodeIndex, message: &RelayMessage) {
        self.inner().relay.send_message(node, message.to_frame());
    }

    /// The nodes of `room` this node sends to: interested and connected.
    fn update_route(&self, room: &RoomId) {
        let mut routes = self.inner().routes.write();
        if !self.local.contains_key(room) {
            routes.remove(room);
            return;
        }
        let nodes: Vec<NodeIndex> = self
            .interest
            .get(room)
            .map(|s| {
                s.iter()
                    .copied()
                    .filter(|n| self.peers.contains(n))
                    .collect()
            })
            .unwrap_or_default();
        routes.insert(room.clone(), nodes);
    }

    /// A change of one of this node's members.
    fn on_local(&mut self, room: RoomId, change: RosterChange) {
        let name = room.as_str().to_owned();
        match change {
            RosterChange::Upsert(member) => {
                if !self.local.contains_key(&room) {
                    self.local.insert(room.clone(), HashMap::new());
                    let on = RelayMessage::Interest {
                        room: name.clone(),
                        on: true,
                    };
                    for &p in &self.peers {
                        self.send(p, &on);
                    }
                    self.update_route(&room);
                    let directory = self.inner().directory.clone();
                    let (r, id) = (name.clone(), self.inner().node_id.clone());
                    tokio::spawn(async move {
                        if let Err(e) = directory.add_room_node(&r, &id).await {
                            tracing::warn!(room = %r, error = %e, "directory: room's nodes not updated");
                        }
                    });
                }
                let message = RelayMessage::Member {
                    room: name,
                    member: WireMember::from(&member),
                };
                for p in self.room_peers(&room) {
                    self.send(p, &message);
                }
                if let Some(members) = self.local.get_mut(&room) {
                    members.insert(member.info.id, member);
                }
            }
            RosterChange::Left(pid) => {
                let Some(members) = self.local.get_mut(&room) else {
                    return;
                };
                members.remove(&pid);
                let empty = members.is_empty();
                let message = RelayMessage::Left {
                    room: name.clone(),
                    participant: pid.0,
                };
                for p in self.room_peers(&room) {
                    self.send(p, &message);
                }
                if empty {
                    self.withdraw(&room);
                }
            }
        }
    }

    /// This node holds no member of `room` any more: the others stop sending, and the
    /// room here lets go of their members (it closes if a join made it).
    fn withdraw(&mut self, room: &RoomId) {
        self.local.remove(room);
        let off = RelayMessage::Interest {
            room: room.as_str().to_owned(),
            on: false,
        };
        for &p in &self.peers {
            self.send(p, &off);
        }
        for rooms in self.received.values_mut() {
            for pid in rooms.remove(room).into_iter().flatten() {
                self.engine
                    .remote_roster(room.clone(), RosterChange::Left(pid));
            }
        }
        self.update_route(room);
        let directory = self.inner().directory.clone();
        let (r, id) = (room.as_str().to_owned(), self.inner().node_id.clone());
        tokio::spawn(async move {
            if let Err(e) = directory.remove_room_node(&r, &id).await {
                tracing::warn!(room = %r, error = %e, "directory: room's nodes not updated");
            }
        });
    }

    fn room_peers(&self, room: &RoomId) -> Vec<NodeIndex> {
        self.interest
            .get(room)
            .map(|s| {
                s.iter()
                    .copied()
                    .filter(|n| self.peers.contains(n))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn on_relay(&mut self, event: RelayEvent) {
        match event {
            RelayEvent::Datagram { from, data } => match decode_audio(&data, Instant::now()) {
                Ok((room, packet)) => {
                    // Only from a node of a room this node holds.
                    if self.local.contains_key(&room)
                        && chorus_engine::cluster::node_of(packet.speaker) == from
                    {
                        self.inner().relayed_in.fetch_add(1, Ordering::Relaxed);
                        self.engine.relay_in(&room, &packet);
                    }
                }
                Err(e) => {
                    self.inner().bad_datagrams.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(node = from, error = %e, "bad relayed datagram");
                }
            },
            RelayEvent::Message { from, frame } => match RelayMessage::from_frame(&frame) {
                Ok(m) => self.on_message(from, m),
                Err(e) => tracing::warn!(node = from, error = %e, "bad relay frame"),
            },
            RelayEvent::PeerUp { node, node_id } => {
                tracing::info!(node, id = %node_id, "relay peer up");
                self.peers.insert(node);
                for room in self.local.keys() {
                    self.send(
                        node,
                        &RelayMessage::Interest {
                            room: room.as_str().to_owned(),
                            on: true,
                        },
                    );
                }
            }
            RelayEvent::PeerDown { node } => {
                tracing::info!(node, "relay peer down: its members leave");
                self.peer_gone(node);
            }
        }
    }

    /// A node is gone (its connection closed, or it left the directory): its members
    /// leave every room here.
    fn peer_gone(&mut self, node: NodeIndex) {
        self.peers.remove(&node);
        let rooms: Vec<RoomId> = self.interest.keys().cloned().collect();
        for room in &rooms {
            if let Some(s) = self.interest.get_mut(room) {
                s.remove(&node);
            }
        }
        self.interest.retain(|_, s| !s.is_empty());
        self.received.remove(&node);
        self.engine.node_lost(node);
        for room in &rooms {
            self.update_route(room);
        }
    }

    fn on_message(&mut self, from: NodeIndex, message: RelayMessage) {
        match message {
            RelayMessage::Interest { room, on } => {
                let Ok(room) = RoomId::new(&room) else {
                    return;
                };
                if on {
                    self.interest.entry(room.clone()).or_default().insert(from);
                    if let Some(members) = self.local.get(&room) {
                        for m in members.values() {
                            self.send(
                                from,
                                &RelayMessage::Member {
                                    room: room.as_str().to_owned(),
                                    member: WireMember::from(m),
                                },
                            );
                        }
                    }
                } else {
                    if let Some(s) = self.interest.get_mut(&room) {
                        s.remove(&from);
                        if s.is_empty() {
                            self.interest.remove(&room);
                        }
                    }
                    let gone = self
                        .received
                        .get_mut(&from)
                        .and_then(|rooms| rooms.remove(&room));
                    for pid in gone.into_iter().flatten() {
                        self.engine
                            .remote_roster(room.clone(), RosterChange::Left(pid));
                    }
                }
                self.update_route(&room);
            }
            RelayMessage::Member { room, member } => {
                let Ok(room) = RoomId::new(&room) else {
                    return;
                };
                if !self.local.contains_key(&room) {
                    return;
                }
                let member = match RemoteMember::try_from(member) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(node = from, error = %e, "bad member from a node");
                        return;
                    }
                };
                if chorus_engine::cluster::node_of(member.info.id) != from {
                    tracing::warn!(node = from, participant = %member.info.id, "a node spoke for another's member");
                    return;
                }
                self.received
                    .entry(from)
                    .or_default()
                    .entry(room.clone())
                    .or_default()
                    .insert(member.info.id);
                self.engine
                    .remote_roster(room, RosterChange::Upsert(member));
            }
            RelayMessage::Left { room, participant } => {
                let Ok(room) = RoomId::new(&room) else {
                    return;
                };
                let pid = ParticipantId(participant);
                let known = self
                    .received
                    .get_mut(&from)
                    .and_then(|rooms| rooms.get_mut(&room))
                    .is_some_and(|s| s.remove(&pid));
                if known {
                    self.engine.remote_roster(room, RosterChange::Left(pid));
                }
            }
            RelayMessage::PolicyAsk { id, room } => {
                let host = self.host.clone();
                let relay = self.inner().relay.clone();
                tokio::spawn(async move {
                    let params = match RoomId::new(&room) {
                        Ok(room) => host.room_policy(room).await,
                        Err(_) => None,
                    };
                    relay.send_message(from, RelayMessage::Policy { id, params }.to_frame());
                });
            }
            RelayMessage::Call { id, method, params } => {
                let host = self.host.clone();
                let relay = self.inner().relay.clone();
                tokio::spawn(async move {
                    let (result, error) = match host.call(method, params).await {
                        Ok(v) => (Some(v), None),
                        Err(e) => (None, Some(e)),
                    };
                    relay.send_message(
                        from,
                        RelayMessage::CallReply { id, result, error }.to_frame(),
                    );
                });
            }
            RelayMessage::Policy { id, params } => {
                if let Some(tx) = self.inner().pending.lock().remove(&id) {
                    let _ = tx.send(Reply::Policy(params));
                }
            }
            RelayMessage::CallReply { id, result, error } => {
                if let Some(tx) = self.inner().pending.lock().remove(&id) {
                    let reply = match (result, error) {
                        (_, Some(e)) => Err(e),
                        (Some(v), None) => Ok(v),
                        (None, None) => Ok(Value::Null),
                    };
                    let _ = tx.send(Reply::Call(reply));
                }
            }
        }
    }

    /// The live nodes, as the heartbeat read them: new ones are dialled (the lower
    /// number dials), vanished ones dropped.
    fn on_nodes(&mut self, list: Vec<NodeRecord>) {
        let me = self.inner().index;
        let mut now_known = HashMap::new();
        for n in &list {
            if n.index == me {
                continue;
            }
            self.inner().relay.ensure_peer(n.index, n.relay);
            now_known.insert(n.index, n.id.clone());
        }
        let gone: Vec<NodeIndex> = self
            .known
            .iter()
            .filter(|(i, id)| now_known.get(i) != Some(id))
            .map(|(i, _)| *i)
            .collect();
        for node in gone {
            tracing::info!(node, "node left the directory");
            self.inner().relay.forget_peer(node);
            self.peer_gone(node);
        }
        self.known = now_known;
        *self.inner().nodes.write() = list;
    }
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
    let mut live: HashSet<String> = HashSet::new();
    loop {
        tick.tick().await;
        if nodes.is_closed() {
            return;
        }
        let record = cluster.record(host.load(), host.draining());
        if let Err(e) = inner.directory.heartbeat(&record, NODE_TTL).await {
            tracing::warn!(error = %e, "directory heartbeat failed; calls go on");
            continue;
        }
        let list = match inner.directory.nodes().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "directory read failed");
                continue;
            }
        };
        let ids: HashSet<String> = list.iter().map(|n| n.id.clone()).collect();
        let vanished: Vec<String> = live.difference(&ids).cloned().collect();
        live = ids;
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
                if record.home == inner.node_id {
                    tracing::info!(%room, "took over a room whose home vanished");
                }
                inner.rooms.lock().insert(room, record);
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
