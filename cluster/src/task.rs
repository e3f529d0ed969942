//! The cluster's room state on one node, owned by one task: which nodes run each
//! room (and which of them have listeners), this node's members of each, and what
//! each other node told it. It turns the engine's roster changes into relay frames,
//! relay frames into roster changes for the engine, and keeps the shard threads'
//! routes (where a local speaker's packet goes) up to date.
//!
//! A room's home node holds it for the room's life (its roster is room-wide: it
//! answers `room.get`, counts the room's capacity, closes it when empty long enough),
//! with or without members of its own. Any other node runs a room while it has
//! members there, then lets it go.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_engine::{CommandSender, RemoteMember, RosterChange};
use chorus_protocol::signal::{ParticipantId, RoomId};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::directory::NodeRecord;
use crate::node::{Cluster, ClusterHost, Inner, Reply};
use crate::relay::{NodeIndex, RelayEvent};
use crate::wire::{decode_audio, decode_video, source_of, RelayMessage, WireMember, VIDEO_V1};

/// What the task is told by the rest of the node.
pub(crate) enum Input {
    /// A member of this node joined, changed or left a room.
    Roster(RoomId, RosterChange),
    /// This node is the room's home.
    Hold(RoomId),
    /// `room.update` ran here (the room's home): these params.
    Updated(RoomId, Value),
    /// This node handed the room's home over (it drains): it runs the room only
    /// while it has members there.
    Unhold(RoomId),
}

/// A room as this node runs it.
#[derive(Default)]
struct LocalRoom {
    /// This node's members there.
    members: HashMap<ParticipantId, RemoteMember>,
    /// This node is its home: it keeps it with no members of its own.
    home: bool,
}

pub(crate) struct Task {
    cluster: Cluster,
    engine: CommandSender,
    host: Arc<dyn ClusterHost>,
    /// Per room: the connected nodes that run it, and whether they have listeners
    /// there (members of their own: speaker packets go only to those).
    interest: HashMap<RoomId, BTreeMap<NodeIndex, bool>>,
    /// The rooms this node runs.
    local: HashMap<RoomId, LocalRoom>,
    /// Per node: the members it told us of, per room (to drop when it goes).
    received: HashMap<NodeIndex, HashMap<RoomId, HashSet<ParticipantId>>>,
    /// Connected nodes.
    peers: HashSet<NodeIndex>,
    /// The other live nodes as last read: number → id.
    known: HashMap<NodeIndex, String>,
    /// Roster changes the engine's queue refused (full): tried again before anything
    /// newer, so that no member is left behind.
    retry: VecDeque<(RoomId, RosterChange)>,
}

/// How often refused roster changes are tried again.
const RETRY_EVERY: Duration = Duration::from_millis(20);

impl Task {
    pub(crate) fn new(cluster: Cluster, engine: CommandSender, host: Arc<dyn ClusterHost>) -> Task {
        Task {
            cluster,
            engine,
            host,
            interest: HashMap::new(),
            local: HashMap::new(),
            received: HashMap::new(),
            peers: HashSet::new(),
            known: HashMap::new(),
            retry: VecDeque::new(),
        }
    }

    /// Hands a roster change to the room's home shard, in order with the ones the
    /// engine refused before.
    fn hand_to_engine(&mut self, room: RoomId, change: RosterChange) {
        self.retry.push_back((room, change));
        self.flush_retry();
    }

    fn flush_retry(&mut self) {
        while let Some((room, change)) = self.retry.pop_front() {
            if !self.engine.remote_roster(room.clone(), change.clone()) {
                self.retry.push_front((room, change));
                return;
            }
        }
    }

    pub(crate) async fn run(
        mut self,
        mut input: mpsc::UnboundedReceiver<Input>,
        mut relay: mpsc::Receiver<RelayEvent>,
        mut nodes: mpsc::Receiver<Vec<NodeRecord>>,
    ) {
        let mut retry = tokio::time::interval(RETRY_EVERY);
        loop {
            tokio::select! {
                Some(i) = input.recv() => self.on_input(i),
                Some(event) = relay.recv() => self.on_relay(event),
                Some(list) = nodes.recv() => self.on_nodes(list),
                _ = retry.tick(), if !self.retry.is_empty() => self.flush_retry(),
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

    /// Every connected node that runs `room`.
    fn room_peers(&self, room: &RoomId) -> Vec<NodeIndex> {
        self.connected_in(room, false)
    }

    /// The connected nodes that run `room` (with `listeners_only`: those with members
    /// there).
    fn connected_in(&self, room: &RoomId, listeners_only: bool) -> Vec<NodeIndex> {
        self.interest
            .get(room)
            .map(|s| {
                s.iter()
                    .filter(|(n, listeners)| {
                        (**listeners || !listeners_only) && self.peers.contains(n)
                    })
                    .map(|(n, _)| *n)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Where this node's speakers in `room` go: connected nodes with listeners.
    fn update_route(&self, room: &RoomId) {
        let mut routes = self.inner().routes.write();
        if !self.local.contains_key(room) {
            routes.remove(room);
            return;
        }
        routes.insert(room.clone(), self.connected_in(room, true));
    }

    /// What this node tells the others about running `room` now.
    fn interest_of(&self, room: &RoomId) -> RelayMessage {
        let local = self.local.get(room);
        RelayMessage::Interest {
            room: room.as_str().to_owned(),
            on: local.is_some(),
            listeners: local.is_some_and(|l| !l.members.is_empty()),
        }
    }

    fn announce(&self, room: &RoomId) {
        let m = self.interest_of(room);
        for &p in &self.peers {
            self.send(p, &m);
        }
    }

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Roster(room, change) => self.on_local(room, change),
            Input::Hold(room) => {
                let new = !self.local.contains_key(&room);
                self.local.entry(room.clone()).or_default().home = true;
                // A replica that becomes the home is a room of its own now.
                self.host.promote(room.clone());
                if new {
                    self.announce(&room);
                    self.update_route(&room);
                }
            }
            Input::Unhold(room) => {
                let Some(local) = self.local.get_mut(&room) else {
                    return;
                };
                local.home = false;
                if local.members.is_empty() {
                    // Empty and no longer home here, the drain closes it quietly.
                    self.local.remove(&room);
                    self.drop_remote_members(&room);
                    self.announce(&room);
                    self.update_route(&room);
                }
            }
            Input::Updated(room, params) => {
                let m = RelayMessage::Updated {
                    room: room.as_str().to_owned(),
                    params,
                };
                for p in self.room_peers(&room) {
                    self.send(p, &m);
                }
            }
        }
    }

    /// A change of one of this node's members.
    fn on_local(&mut self, room: RoomId, change: RosterChange) {
        let name = room.as_str().to_owned();
        match change {
            RosterChange::Closed(reason) => self.closed_here(room, reason),
            RosterChange::Moved(moved) => {
                let m = RelayMessage::Moved {
                    room: name,
                    positions: moved.into_iter().map(|(id, at)| (id.0, at)).collect(),
                };
                for p in self.room_peers(&room) {
                    self.send(p, &m);
                }
            }
            RosterChange::Upsert(member) => {
                if !self.local.contains_key(&room) {
                    // A room homed here that closed and runs again: its directory
                    // record may have gone with the old one.
                    let cluster = self.cluster.clone();
                    let r = room.clone();
                    tokio::spawn(async move { cluster.reassert_home(&r).await });
                }
                let entry = self.local.entry(room.clone()).or_default();
                let first = entry.members.is_empty();
                entry.members.insert(member.info.id, member.clone());
                if first {
                    // New to the room, or its first listener here: the others learn it
                    // (and answer with their members).
                    self.announce(&room);
                    self.update_route(&room);
                    let directory = self.inner().directory.clone();
                    let id = self.inner().node_id.clone();
                    let r = name.clone();
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
            }
            RosterChange::Left(pid) => {
                let Some(entry) = self.local.get_mut(&room) else {
                    return;
                };
                if entry.members.remove(&pid).is_none() {
                    return;
                }
                let (empty, home) = (entry.members.is_empty(), entry.home);
                let message = RelayMessage::Left {
                    room: name.clone(),
                    participant: pid.0,
                };
                for p in self.room_peers(&room) {
                    self.send(p, &message);
                }
                if !empty {
                    return;
                }
                if !home {
                    // Nobody of ours is left: let the room go here (a replica closes
                    // itself once the others' members are out of it).
                    self.local.remove(&room);
                    self.drop_remote_members(&room);
                }
                self.announce(&room);
                self.update_route(&room);
                let directory = self.inner().directory.clone();
                let id = self.inner().node_id.clone();
                tokio::spawn(async move {
                    if let Err(e) = directory.remove_room_node(&name, &id).await {
                        tracing::warn!(room = %name, error = %e, "directory: room's nodes not updated");
                    }
                });
            }
        }
    }

    /// The room closed on this node: if this node was its home, every other node
    /// running it closes it too, and the directory forgets it.
    fn closed_here(&mut self, room: RoomId, reason: String) {
        if self.cluster.is_home(&room) {
            let m = RelayMessage::Closed {
                room: room.as_str().to_owned(),
                reason,
            };
            for p in self.room_peers(&room) {
                self.send(p, &m);
            }
            let cluster = self.cluster.clone();
            let r = room.clone();
            tokio::spawn(async move { cluster.room_closed(&r).await });
        }
        if self.local.remove(&room).is_some() {
            for rooms in self.received.values_mut() {
                rooms.remove(&room);
            }
            self.announce(&room);
            self.update_route(&room);
        }
    }

    /// The room here forgets the members other nodes told it of.
    fn drop_remote_members(&mut self, room: &RoomId) {
        let mut gone = Vec::new();
        for rooms in self.received.values_mut() {
            gone.extend(rooms.remove(room).into_iter().flatten());
        }
        for pid in gone {
            self.hand_to_engine(room.clone(), RosterChange::Left(pid));
        }
    }

    /// Whether `from` is the room's home as this node last knew it (or this node
    /// knows no record of it: then it cannot tell, and believes it).
    fn sent_by_home(&self, room: &RoomId, from: NodeIndex) -> bool {
        let Some(record) = self.inner().rooms.lock().get(room).cloned() else {
            return true;
        };
        self.inner()
            .nodes
            .read()
            .iter()
            .find(|n| n.id == record.home)
            .is_none_or(|n| n.index == from)
    }

    fn on_relay(&mut self, event: RelayEvent) {
        match event {
            RelayEvent::Datagram { from, data } => {
                let now = Instant::now();
                let handled = match data.first() {
                    Some(&VIDEO_V1) => decode_video(&data, now).map(|(room, packet)| {
                        if self.accepts(from, &room, packet.publisher) {
                            self.inner().video_in.fetch_add(1, Ordering::Relaxed);
                            self.engine.relay_video_in(&room, &packet);
                        }
                    }),
                    _ => decode_audio(&data, now).map(|(room, packet)| {
                        let accepted = self.accepts(from, &room, packet.speaker)
                            && packet.csrc >> 24 == u32::from(from);
                        if accepted {
                            self.inner().relayed_in.fetch_add(1, Ordering::Relaxed);
                            self.engine.relay_in(&room, &packet);
                        }
                    }),
                };
                if let Err(e) = handled {
                    self.inner().bad_datagrams.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(node = from, error = %e, "bad relayed datagram");
                }
            }
            RelayEvent::Message { from, frame } => match RelayMessage::from_frame(&frame) {
                Ok(m) => self.on_message(from, m),
                Err(e) => tracing::warn!(node = from, error = %e, "bad relay frame"),
            },
            RelayEvent::PeerUp { node, node_id } => {
                tracing::info!(node, id = %node_id, "relay peer up");
                self.peers.insert(node);
                for room in self.local.keys() {
                    self.send(node, &self.interest_of(room));
                }
                let rooms: Vec<RoomId> = self.local.keys().cloned().collect();
                for room in &rooms {
                    self.update_route(room);
                }
            }
            RelayEvent::PeerDown { node } => {
                tracing::info!(node, "relay peer down: its members leave");
                self.peer_gone(node);
            }
        }
    }

    /// Whether a packet `from` a node, of `sender`, goes to the engine: only a member
    /// that node told us of, in a room with listeners here (a packet overtaking its
    /// member's `Left` would leave a level and a slot behind).
    fn accepts(&self, from: NodeIndex, room: &RoomId, sender: ParticipantId) -> bool {
        let listeners = self.local.get(room).is_some_and(|l| !l.members.is_empty());
        listeners
            && self
                .received
                .get(&from)
                .and_then(|rooms| rooms.get(room))
                .is_some_and(|s| s.contains(&sender))
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
            RelayMessage::Interest {
                room,
                on,
                listeners,
            } => {
                let Ok(room) = RoomId::new(&room) else {
                    return;
                };
                if on {
                    let known = self
                        .interest
                        .entry(room.clone())
                        .or_default()
                        .insert(from, listeners)
                        .is_some();
                    // A node new to the room gets our members there.
                    if !known {
                        if let Some(local) = self.local.get(&room) {
                            for m in local.members.values() {
                                self.send(
                                    from,
                                    &RelayMessage::Member {
                                        room: room.as_str().to_owned(),
                                        member: WireMember::from(m),
                                    },
                                );
                            }
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
                        self.hand_to_engine(room.clone(), RosterChange::Left(pid));
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
                self.hand_to_engine(room, RosterChange::Upsert(member));
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
                    self.hand_to_engine(room, RosterChange::Left(pid));
                }
            }
            RelayMessage::Moved { room, positions } => {
                let Ok(room) = RoomId::new(&room) else {
                    return;
                };
                if self.local.contains_key(&room) {
                    let moved = positions
                        .into_iter()
                        .map(|(id, at)| (ParticipantId(id), at))
                        .collect();
                    self.hand_to_engine(room, RosterChange::Moved(moved));
                }
            }
            RelayMessage::Updated { room, params } => {
                let Ok(room) = RoomId::new(&room) else {
                    return;
                };
                if self.local.contains_key(&room) && self.sent_by_home(&room, from) {
                    self.host.apply_update(params);
                }
            }
            RelayMessage::Closed { room, reason } => {
                let Ok(room) = RoomId::new(&room) else {
                    return;
                };
                if self.local.contains_key(&room) && self.sent_by_home(&room, from) {
                    self.host.close_replica(room, reason);
                }
            }
            RelayMessage::Adopt {
                id,
                room,
                params,
                home,
            } => {
                let host = self.host.clone();
                let relay = self.inner().relay.clone();
                tokio::spawn(async move {
                    let result = match RoomId::new(&room) {
                        Ok(room) => host.adopt(room, params, home).await,
                        Err(e) => Err(e.to_owned()),
                    };
                    let error = result.err();
                    relay.send_message(from, RelayMessage::Adopted { id, error }.to_frame());
                });
            }
            RelayMessage::Keyframe {
                publisher,
                source,
                layer,
            } => {
                let publisher = ParticipantId(publisher);
                let ours = chorus_engine::cluster::node_of(publisher) == self.inner().index;
                if let (true, Ok(source)) = (ours, source_of(source)) {
                    self.engine.relay_keyframe(publisher, source, layer);
                }
            }
            RelayMessage::Adopted { id, error } => {
                if let Some(tx) = self.inner().pending.lock().remove(&id) {
                    let _ = tx.send(Reply::Adopted(error.map_or(Ok(()), Err)));
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
            // A node missing from the directory but still connected over the relay
            // is alive (its heartbeats did not land: Redis was away, or came back
            // empty): the end of its connection decides.
            .filter(|(i, id)| now_known.get(i) != Some(id) && !self.peers.contains(i))
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
