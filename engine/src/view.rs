//! A room as one shard sees it for forwarding: its members whose media is here, the
//! other shards that have members (where this shard's speakers are handed), and the
//! speaker levels of everyone whose packets pass through this shard.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chorus_protocol::signal::ParticipantId;

use crate::client_event::VideoSource;
use crate::forwarder::SpeakerPacket;
use crate::level::SpeakerLevel;
use crate::mesh::MediaPolicy;
use crate::participants::Key;
use crate::proximity::{gain, Point, Space};
use crate::slots::Loudness;

/// Who started and who stopped speaking at one tick.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SpeakingChange {
    pub started: Vec<ParticipantId>,
    pub stopped: Vec<ParticipantId>,
}

/// A member whose media is on this shard, and where the shard keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Local {
    pub id: ParticipantId,
    pub key: Key,
}

/// What the shard knows of a speaker from its packets.
#[derive(Debug, Default)]
struct Heard {
    level: SpeakerLevel,
    /// The speaker's `priority` grant, as its latest packet carried it.
    priority: bool,
    /// Whom it whispers to, as its latest packet carried it.
    audience: Option<Arc<[ParticipantId]>>,
}

/// One entry of [`RoomView::speakers`].
#[derive(Debug, Clone)]
pub(crate) struct Speaking {
    pub id: ParticipantId,
    /// Smoothed linear level.
    pub level: f32,
    pub priority: bool,
    /// While it whispers: the only participants that may see it.
    pub audience: Option<Arc<[ParticipantId]>>,
}

#[derive(Debug, Default)]
pub(crate) struct RoomView {
    /// Members whose media is on this shard, in arrival order.
    pub local: Vec<Local>,
    /// Other shards holding members of the room.
    pub remote: Vec<usize>,
    levels: HashMap<ParticipantId, Heard>,
    /// The speaking set last announced, sorted.
    active: Vec<ParticipantId>,
    /// Some local member may be owed a `speakers` message (it joined, or its slots
    /// changed): the next tick looks at the members.
    pub members_dirty: bool,
    /// A speaker's `priority` grant or whisper audience changed: every local member is
    /// owed `speakers`.
    pub speakers_changed: bool,
    /// What forwarding follows, from the home shard (`None`: not told yet; then it
    /// forwards as in a plain room).
    pub policy: Option<MediaPolicy>,
    /// In a proximity room: where everyone is.
    pub proximity: Option<Space>,
    /// The number of the last positions applied (see [`crate::mesh::ShardMessage::Positions`]).
    pub positions_seq: u64,
    /// Video layers handed to this shard that lost a packet on the way (the driver's
    /// ring overflowed): their packets are dropped until their next keyframe, asked
    /// for when the gap was found and again every [`crate::video::layers::KEYFRAME_REQUEST_INTERVAL`].
    pub video_gaps: Vec<((ParticipantId, VideoSource, u8), Instant)>,
}

impl RoomView {
    /// Takes a policy and every member's position (a proximity room's whole state):
    /// the shard's listeners are indexed afresh.
    pub fn set_policy(&mut self, policy: MediaPolicy, positions: &[(ParticipantId, Point)]) {
        self.policy = Some(policy);
        self.proximity = policy.proximity.map(|r| {
            let mut space = Space::new(r);
            for &(id, at) in positions {
                space.place(id, at, None);
            }
            for m in &self.local {
                space.index(m.id, m.key);
            }
            space
        });
    }

    pub fn is_unused(&self) -> bool {
        self.local.is_empty() && self.remote.is_empty()
    }

    pub fn on_audio(&mut self, now: Instant, packet: &SpeakerPacket) {
        let heard = self.levels.entry(packet.speaker).or_default();
        heard.level.on_packet(now, packet.audio_level);
        if heard.priority != packet.priority || heard.audience != packet.audience {
            heard.priority = packet.priority;
            heard.audience.clone_from(&packet.audience);
            // Listeners learn it from the next `speakers` (they duck on priority; a
            // whisper shows to its audience only).
            self.speakers_changed = true;
        }
    }

    /// A speaker's own report of its level (p2p mode: no packet passes the node).
    pub fn on_report(&mut self, now: Instant, speaker: ParticipantId, level: f32) {
        self.levels
            .entry(speaker)
            .or_default()
            .level
            .on_report(now, level);
    }

    /// Forgets a speaker's level (it was muted).
    pub fn silence(&mut self, speaker: ParticipantId) {
        if let Some(h) = self.levels.get_mut(&speaker) {
            h.level.reset();
        }
    }

    /// Forgets a speaker entirely (it left).
    pub fn forget(&mut self, speaker: ParticipantId) {
        self.levels.remove(&speaker);
        self.video_gaps.retain(|((p, _, _), _)| *p != speaker);
        self.remove_local(speaker);
        if let Some(space) = &mut self.proximity {
            space.forget(speaker);
        }
    }

    pub fn add_local(&mut self, id: ParticipantId, key: Key) {
        self.remove_local(id);
        self.local.push(Local { id, key });
        self.members_dirty = true;
        if let Some(space) = &mut self.proximity {
            space.index(id, key);
        }
    }

    pub fn remove_local(&mut self, id: ParticipantId) {
        self.local.retain(|m| m.id != id);
        if let Some(space) = &mut self.proximity {
            space.unindex(id);
        }
    }

    /// Whether a speaker's latest packet made it first wherever it is heard (a
    /// priority speaker, or one whispering): it ignores distance.
    pub fn ignores_distance(&self, speaker: ParticipantId) -> bool {
        self.levels
            .get(&speaker)
            .is_some_and(|h| h.priority || h.audience.is_some())
    }

    /// The members speaking now, sorted.
    pub fn speaking(&self) -> &[ParticipantId] {
        &self.active
    }

    /// Where a member is, in a proximity room.
    pub fn position(&self, id: ParticipantId) -> Option<Point> {
        self.proximity.as_ref()?.position(id)
    }

    /// [`RoomView::loudness`] as a listener at `listener` hears it: in a proximity
    /// room an ordinary speaker's speech level is scaled by its distance's
    /// [`gain`], and one out of reach (or without a position, or heard by a listener
    /// without one) counts as gone quiet long ago, so its slot is free to take.
    pub fn loudness_at(
        &self,
        participant: ParticipantId,
        listener: Option<Point>,
        now: Instant,
    ) -> Loudness {
        let l = self.loudness(participant, now);
        let Some(space) = &self.proximity else {
            return l;
        };
        if l.priority {
            return l;
        }
        let d = listener
            .zip(space.position(participant))
            .map(|(a, b)| crate::proximity::distance(a, b));
        match d {
            Some(d) if space.within_reach(d) => Loudness {
                speech_level: l.speech_level * gain(d, space.radius()),
                ..l
            },
            _ => Loudness {
                speaking: false,
                speech_level: 0.0,
                quiet_for: std::time::Duration::MAX,
                ..l
            },
        }
    }

    pub fn is_local(&self, id: ParticipantId) -> bool {
        self.local.iter().any(|m| m.id == id)
    }

    pub fn loudness(&self, participant: ParticipantId, now: Instant) -> Loudness {
        self.levels
            .get(&participant)
            .map(
                |Heard {
                     level: l,
                     priority,
                     audience,
                 }| Loudness {
                    // A whisper reaches only its audience, and there it comes first.
                    priority: *priority || audience.is_some(),
                    speaking: l.speaking(),
                    speech_level: l.speech_level(),
                    speech_time: l.speech_time(),
                    quiet_for: l.quiet_for(now),
                },
            )
            .unwrap_or_default()
    }

    /// Ages every level; when the speaking set changed since the last change,
    /// returns who started and who stopped speaking.
    pub fn tick(&mut self, now: Instant) -> Option<SpeakingChange> {
        for h in self.levels.values_mut() {
            h.level.tick(now);
        }
        let mut active: Vec<ParticipantId> = self
            .levels
            .iter()
            .filter(|(_, h)| h.level.speaking())
            .map(|(p, _)| *p)
            .collect();
        active.sort_unstable();
        if active == self.active {
            return None;
        }
        let change = SpeakingChange {
            started: active
                .iter()
                .filter(|p| self.active.binary_search(p).is_err())
                .copied()
                .collect(),
            stopped: self
                .active
                .iter()
                .filter(|p| active.binary_search(p).is_err())
                .copied()
                .collect(),
        };
        self.active = active;
        Some(change)
    }

    /// The speaking set, loudest first.
    pub fn speakers(&self) -> Vec<Speaking> {
        let mut v: Vec<Speaking> = self
            .active
            .iter()
            .map(|p| {
                let heard = self.levels.get(p);
                Speaking {
                    id: *p,
                    level: heard.map_or(0.0, |h| h.level.level()),
                    priority: heard.is_some_and(|h| h.priority),
                    audience: heard.and_then(|h| h.audience.clone()),
                }
            })
            .collect();
        v.sort_by(|a, b| b.level.total_cmp(&a.level));
        v
    }
}
