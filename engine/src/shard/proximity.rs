//! Proximity rooms across shards. The home shard keeps every member's position
//! (from `room.set_positions`, or from clients, batched per tick) and sends them,
//! numbered, to each shard of the room; each shard keeps them in its view's [`Space`],
//! which indexes its own listeners. The home shard also sends each shard the room's
//! whole media state ([`MediaSync`]: policy and every position) when the shard starts
//! holding members, when the policy changes, and when the shard saw a gap in the
//! numbers (a message dropped under overload).

use std::time::Instant;

use chorus_protocol::control::{is_position, PositionSource, RoomSetPositions, MAX_COORDINATE};
use chorus_protocol::signal::{ParticipantId, RoomId};

use super::Shard;
use crate::client_event::Refusal;
use crate::io::{Reply, RequestError};
use crate::mesh::{room_home, MediaPolicy, MediaSync, ShardMessage};
use crate::participants::{Key, Participants};
use crate::proximity::{distance, Point, Positions, MIN_RADIUS};
use crate::report::PositionsApplied;
use crate::spam::SpamRules;
use crate::view::RoomView;

/// A batch moving fewer than one in this many of a shard's listeners frees the slots
/// of speakers now out of reach by looking around each mover; a larger one by one
/// pass over every listener's slots.
const TARGETED_BELOW: usize = 8;

/// Whether a radius is one the engine takes (the control plane checks it too).
pub(crate) fn valid_radius(r: f64) -> bool {
    r.is_finite() && (MIN_RADIUS..=MAX_COORDINATE).contains(&r)
}

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
        if let Some((id, _)) = s.positions.iter().find(|(_, p)| !is_position(p)) {
            return Err(RequestError::Invalid(format!(
                "the position of {id} must be 3 finite numbers of at most {MAX_COORDINATE:e}"
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
        self.report_moved(&s.room, &moved);
        self.spread_positions(&s.room, moved.into());
        Ok(Reply::Positions(PositionsApplied {
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
            None => Some((Refusal::BadRequest, "this room is not a proximity room")),
            Some(p) if p.positions != PositionSource::Client => Some((
                Refusal::Forbidden,
                "positions in this room come from the game's backend",
            )),
            Some(_) if !is_position(&at) => Some((
                Refusal::BadRequest,
                "position must be 3 finite numbers of at most 1e9",
            )),
            Some(_) => {
                room.pending_positions.insert(pid, at);
                None
            }
        };
        if let Some((code, message)) = refused {
            self.refuse(pid, code, message);
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
            self.report_moved(&id, &moved);
            self.spread_positions(&id, moved.into());
        }
    }

    /// At the home shard: positions that another node took (a client's there, or its
    /// backend's); spread like this node's own, and not reported back out.
    pub(super) fn remote_positions(
        &mut self,
        room_id: &RoomId,
        moved: Vec<(ParticipantId, Point)>,
    ) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        if room.policy.proximity.is_none() {
            return;
        }
        let moved: Vec<(ParticipantId, Point)> = moved
            .into_iter()
            .filter(|(id, at)| room.members.contains_key(id) && is_position(at))
            .collect();
        room.positions.extend(moved.iter().copied());
        self.spread_positions(room_id, moved.into());
    }

    /// Sends positions that changed to every shard of the room (this one directly),
    /// with the next number.
    fn spread_positions(&mut self, room_id: &RoomId, positions: Positions) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        if positions.is_empty() {
            return;
        }
        room.positions_seq += 1;
        let seq = room.positions_seq;
        for s in room.notified.clone() {
            if s == self.id {
                self.apply_positions(room_id, &positions, seq);
            } else {
                self.send(
                    s,
                    ShardMessage::Positions {
                        room: room_id.clone(),
                        positions: positions.clone(),
                        seq,
                    },
                );
            }
        }
    }

    /// Sends shards `to` the room's whole media state.
    pub(super) fn publish_room_media(&mut self, now: Instant, room_id: &RoomId, to: &[usize]) {
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        let sync = MediaSync {
            policy: MediaPolicy {
                proximity: room.policy.proximity.map(|p| p.radius),
                spam_guard: room.policy.spam_guard,
                relay: room.relayed,
            },
            positions: room.positions.iter().map(|(p, at)| (*p, *at)).collect(),
            seq: room.positions_seq,
        };
        for &s in to {
            if s == self.id {
                self.sync_room(now, room_id, sync.clone());
            } else {
                self.send(
                    s,
                    ShardMessage::RoomMedia {
                        room: room_id.clone(),
                        sync: sync.clone(),
                    },
                );
            }
        }
    }

    /// A shard of the room missed positions.
    pub(super) fn resync(&mut self, now: Instant, room_id: &RoomId, shard: usize) {
        let holds = self
            .rooms
            .get(room_id)
            .is_some_and(|r| r.notified.contains(&shard));
        if holds {
            self.publish_room_media(now, room_id, &[shard]);
        }
    }

    // ---- every shard of the room -------------------------------------------------

    /// The room's whole media state: policy, spam thresholds, every position.
    pub(super) fn sync_room(&mut self, now: Instant, room: &RoomId, sync: MediaSync) {
        let Some(view) = self.views.get_mut(room) else {
            return;
        };
        view.set_policy(sync.policy, &sync.positions);
        view.positions_seq = sync.seq;
        view.members_dirty = true;
        let rules = SpamRules::of(&sync.policy.spam_guard);
        let mut keys = Vec::with_capacity(view.local.len());
        for m in &view.local {
            if let Some(p) = self.participants.at_mut(m.key) {
                p.spam.set_rules(now, rules);
                // What it hears, and the distances it is told, follow the policy.
                p.speakers_dirty = true;
            }
            keys.push(m.key);
        }
        self.release_out_of_reach(room, &keys);
    }

    /// Positions from the home shard. A speaker out of a listener's reach loses its
    /// slot there (priority speakers and whispers excepted), and listeners for whom a
    /// speaking member came into or went out of the radius are owed `speakers`.
    ///
    /// Cost: O(positions + moved listeners × speaking), plus, for a batch moving a
    /// large share of the shard's listeners, one pass over their slots; for a small
    /// one, the listeners the index finds near each mover.
    pub(super) fn apply_positions(
        &mut self,
        room: &RoomId,
        positions: &[(ParticipantId, Point)],
        seq: u64,
    ) {
        let Some(view) = self.views.get_mut(room) else {
            return;
        };
        if seq <= view.positions_seq {
            return; // older than what this shard has
        }
        let gap = seq != view.positions_seq + 1;
        let result = Self::apply_to(view, &mut self.participants, positions, seq);
        if gap {
            // A batch went missing: ask for everything (this one is taken meanwhile).
            let home = room_home(room, self.shards);
            tracing::debug!(%room, seq, "positions missed: resync");
            self.send(
                home,
                ShardMessage::Resync {
                    room: room.clone(),
                    shard: self.id,
                },
            );
        }
        if let Some(result) = result {
            self.finish_positions(room, result);
        }
    }

    /// Places the batch in the view's space; returns the listeners whose slots to
    /// check and those owed `speakers`.
    fn apply_to(
        view: &mut RoomView,
        participants: &mut Participants,
        positions: &[(ParticipantId, Point)],
        seq: u64,
    ) -> Option<(Vec<Key>, Vec<Key>)> {
        view.positions_seq = seq;
        let speaking = view.speaking().to_vec();
        let local_count = view.local.len();
        let space = view.proximity.as_mut()?;
        let radius = space.radius();
        let inside = |a: Option<Point>, b: Option<Point>| {
            a.zip(b).is_some_and(|(a, b)| distance(a, b) <= radius)
        };
        let targeted = positions.len().saturating_mul(TARGETED_BELOW) < local_count;
        let speakers_before: Vec<Option<Point>> =
            speaking.iter().map(|s| space.position(*s)).collect();
        let mut check: Vec<Key> = Vec::new();
        let mut dirty: Vec<Key> = Vec::new();
        let mut listeners_moved = Vec::new();
        let mut speakers_moved = Vec::new();
        for &(id, at) in positions {
            let before = space.position(id);
            let local = participants.key(&id);
            space.place(id, at, local);
            if let Some(key) = local {
                listeners_moved.push((key, id, before, at));
                if targeted {
                    check.push(key);
                }
            }
            if targeted {
                // Listeners it may have left behind hold its slot within the old
                // reach of it.
                if let Some(before) = before {
                    space.near(before, |l, _| check.push(l.key));
                }
            }
            if speaking.binary_search(&id).is_ok() {
                speakers_moved.push((id, before, at));
            }
        }
        if !targeted {
            check.extend(view.local.iter().map(|m| m.key));
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
                    if l.id != id && inside(before, Some(l.at)) != inside(Some(at), Some(l.at)) {
                        dirty.push(l.key);
                    }
                });
            }
        }
        check.sort_unstable();
        check.dedup();
        if targeted && check.len() > local_count / 2 {
            // A crowd: one pass over everyone is no dearer.
            check.clear();
            check.extend(view.local.iter().map(|m| m.key));
        }
        Some((check, dirty))
    }

    fn finish_positions(&mut self, room: &RoomId, (check, dirty): (Vec<Key>, Vec<Key>)) {
        self.release_out_of_reach(room, &check);
        self.mark_speakers_dirty(room, &dirty);
    }

    /// Frees, at these listeners, the slots of speakers now out of their reach (a
    /// speaker that left the reach and comes back into the hysteresis band is a
    /// newcomer again). Priority speakers and whispers keep theirs.
    fn release_out_of_reach(&mut self, room: &RoomId, listeners: &[Key]) {
        let Some(view) = self.views.get(room) else {
            return;
        };
        let Some(space) = view.proximity.as_ref() else {
            return;
        };
        let mut freed = Vec::new();
        for &key in listeners {
            let Some(p) = self.participants.at_mut(key) else {
                continue;
            };
            if p.room != *room {
                continue;
            }
            let me = space.position(p.id);
            let gone: Vec<ParticipantId> = p
                .table
                .occupants()
                .filter(|o| {
                    let near = me
                        .zip(space.position(*o))
                        .is_some_and(|(a, b)| space.within_reach(distance(a, b)));
                    !near && !view.ignores_distance(*o)
                })
                .collect();
            for o in gone {
                if p.table.release(o).is_some() {
                    freed.push(key);
                }
            }
        }
        self.mark_speakers_dirty(room, &freed);
    }

    fn mark_speakers_dirty(&mut self, room: &RoomId, keys: &[Key]) {
        if keys.is_empty() {
            return;
        }
        for &key in keys {
            if let Some(p) = self.participants.at_mut(key) {
                p.speakers_dirty = true;
            }
        }
        if let Some(view) = self.views.get_mut(room) {
            view.members_dirty = true;
        }
    }
}
