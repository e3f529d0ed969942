//! The control plane's requests, answered by the shard they concern: room
//! management at the room's home shard, participant management at the home shard of
//! the participant's room (which relays the media part), node-wide figures from every
//! shard.

use std::time::{Duration, Instant};

use chorus_protocol::control::{
    ParticipantKick, ParticipantMute, ParticipantRef, ParticipantSetPermissions, PositionSource,
    RoomCreate, RoomUpdate,
};
use chorus_protocol::signal::{ParticipantId, RoomId};

use super::Shard;
use crate::client_event::{ClientEvent, VideoSource};
use crate::io::{
    CloseReason, Command, Event, Permissions, Reply, Request, RequestError, RequestId, Sources,
};
use crate::mesh::{room_home, ShardMessage};
use crate::report::{MemberDetails, Notice, ShardCounters};
use crate::room::RoomPolicy;

impl Shard {
    /// A request from the control plane. Room and participant requests belong to the
    /// room's home shard ([`crate::mesh::room_home`]) and are passed on when they reach
    /// another; [`Request::ListRooms`] and [`Request::Stats`] are answered by every
    /// shard they are sent to. Each answer is an [`Event::Reply`].
    pub fn handle_request(&mut self, now: Instant, id: RequestId, request: Request) {
        if let Some(room) = request.room() {
            let home = room_home(room, self.shards);
            if home != self.id {
                self.send(home, ShardMessage::Request { id, request });
                return;
            }
        }
        let result = self.answer(now, request);
        self.events.push_back(Event::Reply {
            id,
            shard: self.id,
            result,
        });
        self.pump(now);
    }

    fn answer(&mut self, now: Instant, request: Request) -> Result<Reply, RequestError> {
        match request {
            Request::CreateRoom(c) => self.request_create(now, c, false),
            Request::CreateReplica(c) => self.request_create(now, c, true),
            Request::PromoteRoom(room) => {
                let r = self
                    .rooms
                    .get_mut(&room)
                    .ok_or_else(|| RequestError::RoomNotFound(room.clone()))?;
                if r.policy.replica {
                    r.policy.replica = false;
                    r.policy.auto_created = false;
                }
                self.room_info(&room).map(Reply::Room)
            }
            Request::GetRoom(room) => self.room_info(&room).map(Reply::Room),
            Request::ListRooms => {
                let mut rooms: Vec<_> = self.rooms.values().map(|r| r.info(self.id)).collect();
                rooms.sort_by(|a, b| a.room.cmp(&b.room));
                Ok(Reply::Rooms(rooms))
            }
            Request::UpdateRoom(u) => self.request_update(now, u),
            Request::DeleteRoom(d) => {
                let info = self.room_info(&d.room)?;
                let reason = d.reason.unwrap_or_else(|| "deleted".to_owned());
                self.close_room(now, &d.room, &reason);
                Ok(Reply::Room(info))
            }
            Request::ListParticipants(room) => {
                let r = self
                    .rooms
                    .get(&room)
                    .ok_or_else(|| RequestError::RoomNotFound(room.clone()))?;
                Ok(Reply::Participants(
                    r.order
                        .iter()
                        .filter_map(|p| r.members.get(p))
                        .map(|m| m.details(&room))
                        .collect(),
                ))
            }
            Request::GetParticipant(ParticipantRef {
                room,
                participant_id,
            }) => self.details(&room, participant_id).map(Reply::Participant),
            Request::Kick(k) => self.request_kick(now, k),
            Request::Mute(m) => self.request_mute(now, m),
            Request::SetPermissions(s) => self.request_permissions(now, s),
            Request::SetWhisper(s) => {
                self.details(&s.room, s.participant_id)?;
                self.set_whisper(now, s.participant_id, s.to)
                    .map_err(|e| RequestError::Invalid(e.to_string()))?;
                self.details(&s.room, s.participant_id)
                    .map(Reply::Participant)
            }
            Request::SetPositions(s) => self.request_positions(s),
            Request::Stats => Ok(Reply::Stats(ShardCounters {
                shard: self.id,
                participants: self.participants.len(),
                rooms: self.rooms.len(),
                counters: self
                    .stats
                    .counters()
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
            })),
        }
    }

    fn room_info(&self, room: &RoomId) -> Result<crate::report::RoomSummary, RequestError> {
        self.rooms
            .get(room)
            .map(|r| r.info(self.id))
            .ok_or_else(|| RequestError::RoomNotFound(room.clone()))
    }

    fn details(
        &self,
        room: &RoomId,
        participant: ParticipantId,
    ) -> Result<MemberDetails, RequestError> {
        let r = self
            .rooms
            .get(room)
            .ok_or_else(|| RequestError::RoomNotFound(room.clone()))?;
        r.members
            .get(&participant)
            .map(|m| m.details(room))
            .ok_or_else(|| RequestError::ParticipantNotFound {
                room: room.clone(),
                participant,
            })
    }

    fn request_create(
        &mut self,
        now: Instant,
        c: RoomCreate,
        replica: bool,
    ) -> Result<Reply, RequestError> {
        if self.rooms.contains_key(&c.room) {
            return Err(RequestError::RoomExists(c.room));
        }
        if c.proximity
            .is_some_and(|p| !super::proximity::valid_radius(p.radius))
        {
            return Err(RequestError::Invalid(bad_radius()));
        }
        let kind = c.kind.unwrap_or_default();
        let d = kind.defaults();
        let policy = RoomPolicy {
            kind,
            audio_slots: c.audio_slots.unwrap_or(d.audio_slots),
            video_slots: c.video_slots.unwrap_or(d.video_slots),
            max_participants: c.max_participants.unwrap_or(d.max_participants),
            empty_timeout: timeout(c.empty_timeout_s.unwrap_or(d.empty_timeout_s)),
            metadata: c.metadata.unwrap_or_default(),
            // A replica lives as long as someone is in it, like a room made by a join.
            auto_created: replica,
            whisper: c.whisper.unwrap_or(d.whisper),
            spam_guard: c.spam_guard.unwrap_or_default(),
            proximity: c.proximity,
            p2p_max: c.p2p_max.unwrap_or(d.p2p_max),
            p2p_downgrade: crate::p2p::downgrade_delay(c.p2p_downgrade_s),
            replica,
        };
        self.create_room(now, c.room.clone(), policy);
        self.room_info(&c.room).map(Reply::Room)
    }

    fn request_update(&mut self, now: Instant, u: RoomUpdate) -> Result<Reply, RequestError> {
        if u.proximity
            .flatten()
            .is_some_and(|p| !super::proximity::valid_radius(p.radius))
        {
            return Err(RequestError::Invalid(bad_radius()));
        }
        let r = self
            .rooms
            .get_mut(&u.room)
            .ok_or_else(|| RequestError::RoomNotFound(u.room.clone()))?;
        if let Some(n) = u.max_participants {
            r.policy.max_participants = n;
        }
        if let Some(n) = u.audio_slots {
            r.policy.audio_slots = n;
        }
        if let Some(n) = u.video_slots {
            r.policy.video_slots = n;
        }
        if let Some(s) = u.empty_timeout_s {
            r.policy.empty_timeout = timeout(s);
            // A room made by a join becomes a managed room once given a timeout.
            r.policy.auto_created &= r.policy.empty_timeout.is_none();
        }
        if let Some(m) = u.metadata {
            r.policy.metadata = m;
        }
        if let Some(w) = u.whisper {
            r.policy.whisper = w;
        }
        let media = u.spam_guard.is_some() || u.proximity.is_some();
        if let Some(g) = u.spam_guard {
            r.policy.spam_guard = g;
        }
        if let Some(p) = u.proximity {
            if p.is_none() {
                r.positions.clear();
            }
            // Clients' positions not sent yet count only where clients still may.
            if p.is_none_or(|p| p.positions != PositionSource::Client) {
                r.pending_positions.clear();
            }
            r.policy.proximity = p;
        }
        if let Some(n) = u.p2p_max {
            r.policy.p2p_max = n;
        }
        if let Some(s) = u.p2p_downgrade_s {
            r.policy.p2p_downgrade = crate::p2p::downgrade_delay(Some(s));
        }
        if media {
            // Forwarding on every shard of the room follows the new policy.
            let shards = r.notified.clone();
            self.publish_room_media(now, &u.room, &shards);
        }
        tracing::info!(room = %u.room, "room updated");
        // A lower `p2p_max` or proximity may end p2p mode (or allow it, later).
        self.reconsider_mode(now, &u.room, None);
        self.room_info(&u.room).map(Reply::Room)
    }

    fn request_kick(&mut self, now: Instant, k: ParticipantKick) -> Result<Reply, RequestError> {
        let details = self.details(&k.room, k.participant_id)?;
        let reason = k.reason.unwrap_or_else(|| "kicked".to_owned());
        tracing::info!(room = %k.room, participant = %k.participant_id, %reason, "kicked");
        self.signal(k.participant_id, ClientEvent::Kicked { reason });
        self.leave_room(now, k.participant_id, CloseReason::Kicked);
        Ok(Reply::Participant(details))
    }

    fn request_mute(&mut self, now: Instant, m: ParticipantMute) -> Result<Reply, RequestError> {
        self.details(&m.room, m.participant_id)?;
        self.server_mute(now, m.participant_id, m.muted);
        self.details(&m.room, m.participant_id)
            .map(Reply::Participant)
    }

    fn request_permissions(
        &mut self,
        now: Instant,
        s: ParticipantSetPermissions,
    ) -> Result<Reply, RequestError> {
        let before = self.details(&s.room, s.participant_id)?;
        let permissions = Permissions {
            publish: s.publish.unwrap_or(before.publish),
            subscribe: s.subscribe.unwrap_or(before.subscribe),
            priority: s.priority.unwrap_or(before.priority),
            sources: match &s.sources {
                Some(list) => Sources::from_list(list),
                None => Sources::from_list(&before.sources),
            },
        };
        let participant = s.participant_id;
        // A source no longer granted no longer counts as sent (its packets are dropped
        // from now on): the room and the backend are told.
        let camera = before.camera && permissions.publish && permissions.sources.camera;
        let screen = before.screen && permissions.publish && permissions.sources.screen;
        self.update(
            now,
            participant,
            |member| {
                member.permissions = permissions;
                member.info.camera = camera;
                member.info.screen = screen;
            },
            Command::SetPermissions {
                participant,
                permissions,
            },
        );
        for (was, is, source) in [
            (before.camera, camera, VideoSource::Camera),
            (before.screen, screen, VideoSource::Screen),
        ] {
            if was && !is {
                self.notify(Notice::TrackUnpublished {
                    room: s.room.clone(),
                    participant_id: participant,
                    source,
                });
            }
        }
        self.signal(participant, ClientEvent::Permissions(permissions));
        self.details(&s.room, participant).map(Reply::Participant)
    }

    /// Home side of the tick: rooms empty for longer than their timeout close.
    pub(super) fn close_expired_rooms(&mut self, now: Instant) {
        let expired: Vec<RoomId> = self
            .rooms
            .values()
            .filter(|r| r.expired(now))
            .map(|r| r.id.clone())
            .collect();
        for room in expired {
            self.close_room(now, &room, "empty_timeout");
        }
    }
}

fn bad_radius() -> String {
    format!(
        "proximity.radius must be a number from {} to {:e}",
        chorus_protocol::control::MIN_RADIUS,
        chorus_protocol::control::MAX_COORDINATE
    )
}

/// `empty_timeout_s` as the room keeps it: 0 is never.
fn timeout(seconds: u64) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(seconds))
}
