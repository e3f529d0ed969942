//! A room that spans nodes, on its home shard: members other nodes hold come and go
//! ([`RosterChange`] in), this node's members' changes go out ([`Event::Roster`]),
//! and a node that is lost takes its members with it.

use std::time::Instant;

use chorus_protocol::signal::{ParticipantId, RoomId};

use super::Shard;
use crate::client_event::ClientEvent;
use crate::cluster::{node_of, NodeIndex, RemoteMember, RosterChange};
use crate::io::{CloseReason, Event};
use crate::proximity::Point;
use crate::room::Member;

impl Shard {
    /// At the home shard, in a cluster: tells the other nodes of the room what a
    /// member of this node now is (or that it left, once it is gone).
    pub(super) fn report_member(&mut self, room_id: &RoomId, pid: ParticipantId) {
        if self.config.node == 0 {
            return;
        }
        let change = match self.rooms.get(room_id).and_then(|r| r.members.get(&pid)) {
            Some(m) if m.remote => return,
            Some(m) => RosterChange::Upsert(RemoteMember {
                info: m.info.clone(),
                identity: m.identity.clone(),
                permissions: m.permissions,
                whisper_to: m.whisper_to.clone(),
            }),
            None => RosterChange::Left(pid),
        };
        self.events.push_back(Event::Roster {
            room: room_id.clone(),
            change,
        });
    }

    /// In a cluster: the room closed on this node.
    pub(super) fn report_closed(&mut self, room_id: &RoomId, reason: &str) {
        if self.config.node != 0 {
            self.events.push_back(Event::Roster {
                room: room_id.clone(),
                change: RosterChange::Closed(reason.to_owned()),
            });
        }
    }

    /// At the home shard, in a cluster: positions taken here (a client's, or the
    /// backend's) go to the other nodes of the room.
    pub(super) fn report_moved(&mut self, room_id: &RoomId, moved: &[(ParticipantId, Point)]) {
        if self.config.node == 0 || moved.is_empty() {
            return;
        }
        let spans = self.rooms.get(room_id).is_some_and(|r| r.spans_nodes());
        if spans {
            self.events.push_back(Event::Roster {
                room: room_id.clone(),
                change: RosterChange::Moved(moved.to_vec()),
            });
        }
    }

    /// At the home shard: a member another node holds joined, changed or left. A
    /// room this node does not run is not its business (the change is dropped).
    pub(super) fn remote_roster(&mut self, now: Instant, room_id: RoomId, change: RosterChange) {
        match change {
            RosterChange::Upsert(m) => self.remote_upsert(now, &room_id, m),
            RosterChange::Moved(moved) => self.remote_positions(&room_id, moved),
            RosterChange::Closed(_) => {}
            RosterChange::Left(pid) => {
                let remote = self
                    .rooms
                    .get(&room_id)
                    .and_then(|r| r.members.get(&pid))
                    .is_some_and(|m| m.remote);
                if remote {
                    self.leave_room(now, pid, CloseReason::Left);
                    self.publish_relay(now, &room_id);
                }
            }
        }
    }

    fn remote_upsert(&mut self, now: Instant, room_id: &RoomId, m: RemoteMember) {
        let pid = m.info.id;
        if node_of(pid) == self.config.node {
            return;
        }
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        match room.members.get(&pid) {
            Some(existing) if !existing.remote => {}
            Some(_) => {
                self.update_member(now, pid, |member| {
                    member.info = m.info;
                    member.identity = m.identity;
                    member.permissions = m.permissions;
                    member.whisper_to = m.whisper_to;
                });
            }
            None => {
                tracing::info!(room = %room_id, participant = %pid, node = node_of(pid), "remote member joined");
                let info = m.info.clone();
                room.add(Member {
                    info: m.info,
                    shard: self.id,
                    identity: m.identity,
                    permissions: m.permissions,
                    whisper_to: m.whisper_to,
                    p2p: false,
                    remote: true,
                });
                self.member_of.insert(pid, room_id.clone());
                self.broadcast(room_id, Some(pid), || {
                    ClientEvent::MemberJoined(info.clone())
                });
                self.reconsider_mode(now, room_id, None);
                self.publish_relay(now, room_id);
                // Its node learns where this node's members are (it knows nothing of
                // them before): one batch, on the first member of that node here.
                let node = node_of(pid);
                let ours: Vec<(ParticipantId, Point)> = self
                    .rooms
                    .get(room_id)
                    .filter(|r| r.policy.proximity.is_some())
                    .filter(|r| {
                        !r.members
                            .values()
                            .any(|m| m.remote && m.info.id != pid && node_of(m.info.id) == node)
                    })
                    .map(|r| {
                        r.local_members()
                            .filter_map(|m| r.positions.get(&m.info.id).map(|at| (m.info.id, *at)))
                            .collect()
                    })
                    .unwrap_or_default();
                self.report_moved(room_id, &ours);
            }
        }
    }

    /// At the home shard: every member node `node` held is gone (it died or left the
    /// cluster), in every room homed here.
    pub(super) fn node_lost(&mut self, now: Instant, node: NodeIndex) {
        let lost: Vec<(RoomId, ParticipantId)> = self
            .rooms
            .values()
            .flat_map(|r| {
                r.members
                    .values()
                    .filter(|m| m.remote && node_of(m.info.id) == node)
                    .map(|m| (r.id.clone(), m.info.id))
            })
            .collect();
        if !lost.is_empty() {
            tracing::info!(node, members = lost.len(), "node lost: its members leave");
        }
        let mut rooms: Vec<RoomId> = Vec::new();
        for (room, pid) in lost {
            self.leave_room(now, pid, CloseReason::Left);
            if !rooms.contains(&room) {
                rooms.push(room);
            }
        }
        for room in rooms {
            self.publish_relay(now, &room);
        }
    }

    /// At the home shard: the room's shards learn whether its speakers' packets go to
    /// other nodes (when that changed).
    pub(super) fn publish_relay(&mut self, now: Instant, room_id: &RoomId) {
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        let relay = room.spans_nodes();
        if room.relayed == relay {
            return;
        }
        let shards = room.shards();
        if let Some(room) = self.rooms.get_mut(room_id) {
            room.relayed = relay;
        }
        self.publish_room_media(now, room_id, &shards);
    }
}
