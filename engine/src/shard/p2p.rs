//! The home shard's side of p2p mode ([`crate::p2p`]): a room's mode after each change
//! and as time passes, told to its members and the backend; the relay of the members'
//! connection set-up; their own speaking reports, handed to every shard of the room
//! in place of the levels their packets would carry.

use std::time::Instant;

use chorus_protocol::signal::{ParticipantId, RoomId};

use super::Shard;
use crate::client_event::{ClientEvent, Refusal};
use crate::mesh::ShardMessage;
use crate::p2p::{self, ModeChange, RoomMode};
use crate::report::Notice;

impl Shard {
    /// Looks at a room homed here after something changed in it: a change of mode is
    /// told to every member but `except` (a joiner, who reads it in `joined`).
    pub(super) fn reconsider_mode(
        &mut self,
        now: Instant,
        room_id: &RoomId,
        except: Option<ParticipantId>,
    ) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        if let Some(change) = p2p::reconsider(room, now) {
            self.announce_mode(room_id, change, except);
        }
    }

    fn announce_mode(
        &mut self,
        room_id: &RoomId,
        change: ModeChange,
        except: Option<ParticipantId>,
    ) {
        let ModeChange { mode, reason } = change;
        tracing::info!(room = %room_id, ?mode, ?reason, "mode changed");
        self.broadcast(room_id, except, || ClientEvent::Mode { mode, reason });
        self.notify(Notice::ModeChanged {
            room: room_id.clone(),
            mode,
            reason,
        });
    }

    /// At a tick: rooms in `sfu` that met the p2p conditions long enough go back.
    pub(super) fn downgrade_due_rooms(&mut self, now: Instant) {
        let due: Vec<RoomId> = self
            .rooms
            .values()
            .filter(|r| p2p::downgrade_due(r).is_some_and(|at| at <= now))
            .map(|r| r.id.clone())
            .collect();
        for room in due {
            self.reconsider_mode(now, &room, None);
        }
    }

    /// A member's `p2p_signal`: relayed to `to` if the room is in p2p mode and `to`
    /// a p2p member of it; otherwise refused.
    pub(super) fn relay_p2p_signal(
        &mut self,
        from: ParticipantId,
        to: ParticipantId,
        data: String,
    ) {
        let Some(room) = self.room_of_member(from).and_then(|r| self.rooms.get(&r)) else {
            return;
        };
        match p2p::signal_refusal(room, from, to) {
            Some(why) => self.refuse(from, Refusal::BadRequest, &why),
            None => self.signal(to, ClientEvent::P2pSignal { from, data }),
        }
    }

    /// A member's own level in a room in p2p mode, for every shard of the room (each
    /// announces speakers to its own members; the member's media shard reports its
    /// speaking to the backend). Ignored in `sfu`, where the node reads levels from
    /// packets, and while the member is muted.
    pub(super) fn speaking_report(&mut self, now: Instant, pid: ParticipantId, level: f32) {
        let Some(room_id) = self.room_of_member(pid) else {
            return;
        };
        let Some(room) = self.rooms.get(&room_id) else {
            return;
        };
        let heard = room.members.get(&pid).is_some_and(|m| {
            !(m.info.muted || m.info.server_muted) && m.permissions.publishes_microphone()
        });
        if room.mode.mode != RoomMode::P2p || !heard {
            return;
        }
        for s in room.notified.clone() {
            if s == self.id {
                self.apply_speaking(now, &room_id, pid, level);
            } else {
                self.send(
                    s,
                    ShardMessage::Speaking {
                        room: room_id.clone(),
                        speaker: pid,
                        level,
                    },
                );
            }
        }
    }

    /// A speaking report from the room's home shard, for this shard's view.
    pub(super) fn apply_speaking(
        &mut self,
        now: Instant,
        room: &RoomId,
        speaker: ParticipantId,
        level: f32,
    ) {
        if let Some(view) = self.views.get_mut(room) {
            view.on_report(now, speaker, level);
        }
    }

    /// A member's peer connection to `peer` failed: the room moves to `sfu` for the
    /// rest of its life (only while it is in p2p mode and `peer` a member).
    pub(super) fn p2p_failed(&mut self, now: Instant, pid: ParticipantId, peer: ParticipantId) {
        let Some(room_id) = self.room_of_member(pid) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        if room.mode.mode != RoomMode::P2p || !room.members.contains_key(&peer) {
            return;
        }
        tracing::info!(room = %room_id, participant = %pid, %peer, "peer connection failed");
        room.mode.failed = true;
        self.reconsider_mode(now, &room_id, None);
    }
}
