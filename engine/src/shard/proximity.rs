//! Proximity rooms across shards. The home shard keeps every member's position
//! (from `room.set_positions`, or from clients, batched per tick) and sends them to
//! each shard of the room; each shard keeps them in its view's [`Space`], which
//! indexes its own listeners. The home shard also tells each shard what forwarding in
//! the room follows (radius, spam thresholds) when the policy changes and when the
//! shard starts holding members.

use std::time::Instant;

use chorus_protocol::control::{
    is_position, PositionSource, PositionsSet, RoomSetPositions, SpamGuard,
};
use chorus_protocol::signal::{ErrorCode, ParticipantId, RoomId, ServerMessage};

use super::Shard;
use crate::io::{Reply, RequestError};
use crate::mesh::ShardMessage;
use crate::participants::Key;
use crate::proximity::{distance, Point, Positions, Space};
use crate::spam::SpamRules;

impl Shard {
    // ---- home side -------------------------------------------------------------

    /// `room.set_positions`: members' positions are taken and sent to the room's
    /// shards at once; ids that are not members are reported back.
    pub(super) fn request_positions(&mut self, s: RoomSetPositions) -> Result<Reply, RequestError> {
        let room = self
            .rooms
            .get_mut(&s.room)
            .ok_or_else(|| RequestError::RoomNotFound(s.room.clone()))?;
        if room.policy.proximity.is_none() {
            return Err(RequestError::Invalid(format!(
                "room {} is not a proximity room (room.update its proximity policy first)",
                s.room
            )));
        }
        let mut moved = Vec::with_capacity(s.positions.len());
        let mut unknown = Vec::new();
        for (id, at) in s.positions {
            if room.members.contains_key(&id) {
                room.positions.insert(id, at);
                // The backend is authoritative: a client's position of this tick is
                // older news.
                room.pending_positions.remove(&id);
                moved.push((id, at));
            } else {
                unknown.push(id);
            }
        }
        let updated = moved.len();
        self.spread_positions(&s.room, moved.into(), false);
        Ok(Reply::Positions(PositionsSet {
            room: s.room,
            updated,
            unknown,
        }))
    }

    /// A client's `position`: kept until the tick sends the room's batch (the latest
    /// per member counts).
    pub(super) fn client_position(&mut self, pid: ParticipantId, at: Point) {
        let Some(room) = self
            .room_of_member(pid)
            .and_then(|r| self.rooms.get_mut(&r))
        else {
            return;
        };
        let refused = match room.policy.proximity {
            None => Some((ErrorCode::BadRequest, "this room is not a proximity room")),
            Some(p) if p.positions != PositionSource::Client => Some((
                ErrorCode::Forbidden,
                "positions in this room come from the game's backend",
            )),
            Some(_) if !is_position(&at) => Some((
                ErrorCode::BadRequest,
                "position must be 3 finite numbers of at most 1e9",
            )),
            Some(_) => {
                room.pending_positions.insert(pid, at);
                None
            }
        };
        if let Some((code, message)) = refused {
            self.signal(pid, ServerMessage::error(code, message));
        }
    }

    /// Home side of the tick: the clients' positions go out, one batch per room.
    pub(super) fn flush_positions(&mut self) {
        let rooms: Vec<RoomId> = self
            .rooms
            .values()
            .filter(|r| !r.pending_positions.is_empty())
            .map(|r| r.id.clone())
            .collect();
        for id in rooms {
            let Some(room) = self.rooms.get_mut(&id) else {
                continue;
            };
            let moved: Vec<(ParticipantId, Point)> = room.pending_positions.drain().collect();
            room.positions.extend(moved.iter().copied());
            self.spread_positions(&id, moved.into(), false);
        }
    }

    /// Sends positions to every shard of the room (this one directly).
    fn spread_positions(&mut self, room_id: &RoomId, positions: Positions, all: bool) {
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        if positions.is_empty() && !all {
            return;
        }
        for s in room.notified.clone() {
            if s == self.id {
                self.apply_positions(room_id, &positions, all);
            } else {
                self.send(
                    s,
                    ShardMessage::Positions {
                        room: room_id.clone(),
                        positions: positions.clone(),
                        all,
                    },
                );
            }
        }
    }

    /// Tells shards `to` what forwarding in the room follows, and every position.
    pub(super) fn publish_room_media(&mut self, now: Instant, room_id: &RoomId, to: &[usize]) {
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        let proximity = room.policy.proximity.map(|p| p.radius);
        let spam_guard = room.policy.spam_guard;
        let positions: Positions = room.positions.iter().map(|(p, at)| (*p, *at)).collect();
        for &s in to {
            if s == self.id {
                self.room_media(now, room_id, proximity, spam_guard);
                self.apply_positions(room_id, &positions, true);
            } else {
                self.send(
                    s,
                    ShardMessage::RoomMedia {
                        room: room_id.clone(),
                        proximity,
                        spam_guard,
                    },
                );
                self.send(
                    s,
                    ShardMessage::Positions {
                        room: room_id.clone(),
                        positions: positions.clone(),
                        all: true,
                    },
                );
            }
        }
    }

    // ---- every shard of the room -------------------------------------------------

    /// What forwarding in a room follows changed (or this shard just joined it).
    pub(super) fn room_media(
        &mut self,
        now: Instant,
        room: &RoomId,
        proximity: Option<f64>,
        spam_guard: SpamGuard,
    ) {
        let Some(view) = self.views.get_mut(room) else {
            return;
        };
        view.proximity = match (view.proximity.take(), proximity) {
            (_, None) => None,
            (Some(s), Some(r)) if s.radius() == r => Some(s),
            (Some(s), Some(r)) => Some(s.with_radius(r)),
            (None, Some(r)) => Some(Space::new(r)),
        };
        let rules = SpamRules::of(&spam_guard);
        view.members_dirty = true;
        for m in &view.local {
            if let Some(p) = self.participants.at_mut(m.key) {
                p.spam.set_rules(now, rules);
                // What it hears, and the distances it is told, follow the policy.
                p.speakers_dirty = true;
            }
        }
    }

    /// Positions from the home shard. A speaker out of a listener's reach loses its
    /// slot there (priority speakers and whispers excepted), and listeners for whom a
    /// speaking member came into or went out of the radius are owed `speakers`.
    ///
    /// Cost: O(positions + local listeners × slots + moved listeners × speaking); the
    /// listeners near a moved speaker come from the index.
    pub(super) fn apply_positions(
        &mut self,
        room: &RoomId,
        positions: &[(ParticipantId, Point)],
        all: bool,
    ) {
        let Some(view) = self.views.get_mut(room) else {
            return;
        };
        let speaking = view.speaking().to_vec();
        let Some(space) = view.proximity.as_mut() else {
            return;
        };
        let mut dirty: Vec<Key> = Vec::new();
        if all {
            let mut fresh = Space::new(space.radius());
            for &(id, at) in positions {
                fresh.place(id, at, None);
            }
            for m in &view.local {
                fresh.index(m.id, m.key);
            }
            *space = fresh;
            dirty.extend(view.local.iter().map(|m| m.key));
        } else {
            let radius = space.radius();
            let inside = |a: Option<Point>, b: Option<Point>| {
                a.zip(b).is_some_and(|(a, b)| distance(a, b) <= radius)
            };
            let speakers_before: Vec<Option<Point>> =
                speaking.iter().map(|s| space.position(*s)).collect();
            let mut listeners_moved = Vec::new();
            let mut speakers_moved = Vec::new();
            for &(id, at) in positions {
                let before = space.position(id);
                let local = self.participants.key(&id);
                space.place(id, at, local);
                if let Some(key) = local {
                    listeners_moved.push((key, id, before, at));
                }
                if speaking.binary_search(&id).is_ok() {
                    speakers_moved.push((id, before, at));
                }
            }
            let speakers_after: Vec<Option<Point>> =
                speaking.iter().map(|s| space.position(*s)).collect();
            // A listener moved: did a speaker come into or go out of its radius?
            for (key, id, before, at) in listeners_moved {
                let changed = speaking
                    .iter()
                    .zip(speakers_before.iter().zip(&speakers_after))
                    .any(|(s, (b, a))| *s != id && inside(before, *b) != inside(Some(at), *a));
                if changed {
                    dirty.push(key);
                }
            }
            // A speaker moved: the listeners near where it was or is now.
            for (id, before, at) in speakers_moved {
                for spot in [before, Some(at)].into_iter().flatten() {
                    space.near(spot, |l, _| {
                        if l.id != id && inside(before, Some(l.at)) != inside(Some(at), Some(l.at))
                        {
                            dirty.push(l.key);
                        }
                    });
                }
            }
        }
        // Slots held by speakers now out of reach are freed (a speaker that left the
        // reach and comes back into the hysteresis band is a newcomer again).
        let mut gone: Vec<(Key, ParticipantId)> = Vec::new();
        for m in &view.local {
            let Some(p) = self.participants.at_mut(m.key) else {
                continue;
            };
            let me = space.position(m.id);
            for o in p.table.occupants() {
                let near = me
                    .zip(space.position(o))
                    .is_some_and(|(a, b)| space.within_reach(distance(a, b)));
                if !near {
                    gone.push((m.key, o));
                }
            }
        }
        for (key, speaker) in gone {
            if view.ignores_distance(speaker) {
                continue;
            }
            if let Some(p) = self.participants.at_mut(key) {
                if p.table.release(speaker).is_some() {
                    dirty.push(key);
                }
            }
        }
        if !dirty.is_empty() {
            view.members_dirty = true;
            for key in dirty {
                if let Some(p) = self.participants.at_mut(key) {
                    p.speakers_dirty = true;
                }
            }
        }
    }
}
