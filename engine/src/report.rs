//! What the engine tells the backend, in the engine's own terms: the payloads of its
//! control-plane replies ([`crate::Reply`]) and what happens in its rooms
//! ([`Notice`], carried by [`crate::Event::Notify`]).
//!
//! Signaling maps them to the control socket's JSON-RPC (`chorus_signaling::wire`);
//! the engine never builds a control-plane wire message. Room policies (kind, spam
//! guard, proximity) are the vocabulary the backend sets them in, shared with
//! `chorus_protocol::control`.

use std::collections::BTreeMap;

use chorus_protocol::control::{Proximity, RoomKind, SpamGuard};
use chorus_protocol::signal::{DisplayName, ParticipantId, RoomId};

use crate::client_event::VideoSource;

/// Something that happened, for the backend's event stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    RoomCreated {
        room: RoomId,
        kind: RoomKind,
        /// Created by a join (`--dev`, `--auto-create-rooms`), not by the backend.
        auto_created: bool,
    },
    RoomClosed {
        room: RoomId,
        reason: String,
    },
    ParticipantJoined {
        room: RoomId,
        participant: MemberDetails,
    },
    ParticipantLeft {
        room: RoomId,
        participant_id: ParticipantId,
        reason: String,
    },
    ParticipantUpdated {
        room: RoomId,
        participant: MemberDetails,
    },
    SpeakingStarted {
        room: RoomId,
        participant_id: ParticipantId,
    },
    SpeakingStopped {
        room: RoomId,
        participant_id: ParticipantId,
    },
    /// A participant's link, every quality interval.
    Quality {
        room: RoomId,
        participant_id: ParticipantId,
        loss_in: Option<f32>,
        loss_out: Option<f32>,
        jitter_ms: Option<f32>,
        rtt_ms: Option<f32>,
        bitrate_in: u64,
        bitrate_out: u64,
    },
    /// A participant started sending video from a source.
    TrackPublished {
        room: RoomId,
        participant_id: ParticipantId,
        source: VideoSource,
    },
    /// It stopped (or left while sending).
    TrackUnpublished {
        room: RoomId,
        participant_id: ParticipantId,
        source: VideoSource,
    },
    /// The mic-spam guard caught a participant.
    SpamDetected {
        room: RoomId,
        participant_id: ParticipantId,
        reason: String,
        level: f32,
    },
    /// The room's audio moved to the other tier.
    ModeChanged {
        room: RoomId,
        mode: crate::p2p::RoomMode,
        reason: crate::p2p::ModeReason,
    },
}

/// A room as the backend sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomSummary {
    pub room: RoomId,
    pub kind: RoomKind,
    pub max_participants: usize,
    pub audio_slots: u8,
    pub video_slots: u8,
    pub empty_timeout_s: u64,
    pub metadata: String,
    pub whisper: bool,
    pub spam_guard: SpamGuard,
    pub proximity: Option<Proximity>,
    pub p2p_max: u8,
    pub p2p_downgrade_s: u32,
    pub mode: crate::p2p::RoomMode,
    pub participants: usize,
    pub auto_created: bool,
    /// The shard holding its roster.
    pub home_shard: usize,
}

/// A member as the backend sees it (more than its peers do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDetails {
    pub participant_id: ParticipantId,
    pub room: RoomId,
    /// The token's `identity`, if any.
    pub identity: Option<String>,
    pub name: DisplayName,
    pub muted: bool,
    pub server_muted: bool,
    pub deafened: bool,
    pub publish: bool,
    pub subscribe: bool,
    pub priority: bool,
    /// While it whispers: to whom.
    pub whisper_to: Option<Vec<ParticipantId>>,
    /// It joined able to carry the call peer to peer.
    pub p2p: bool,
    /// What it may publish from, with `publish`.
    pub sources: Vec<chorus_protocol::signal::Source>,
    /// It sends camera video, and screen share.
    pub camera: bool,
    pub screen: bool,
    pub csrc: u32,
    /// The shard holding its media.
    pub shard: usize,
}

/// One shard's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardCounters {
    pub shard: usize,
    pub participants: usize,
    pub rooms: usize,
    pub counters: BTreeMap<String, u64>,
}

/// What a batch of positions did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionsApplied {
    pub room: RoomId,
    /// Positions taken.
    pub updated: usize,
    /// Ids in the batch that are not members.
    pub unknown: Vec<ParticipantId>,
}
