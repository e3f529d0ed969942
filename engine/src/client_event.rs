//! What the engine tells one participant's client, in the engine's own terms.
//!
//! A shard emits [`crate::Event::ToClient`] with a [`ClientEvent`]; signaling maps
//! each to protocol v1's wire message (`chorus_signaling::wire`) and adds what only
//! it knows (a resume token, ICE servers with credentials). The engine never builds a
//! wire message, so a new protocol version, or new messages for video, change the
//! mapping and not the engine.

use chorus_protocol::signal::{DisplayName, ParticipantId, RoomId};

use crate::io::Permissions;
use crate::p2p::{ModeReason, RoomMode};

/// Something one client is to be told.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// The participant is in the room (the answer to its join).
    Joined(Joined),
    /// The answer to its offer: the SDP, the audio slots' mids and the video slots'
    /// mids, in slot order.
    Answer {
        sdp: String,
        slots: Vec<String>,
        video_slots: Vec<String>,
    },
    /// Its whole video slot map (after a `subscribe`, and when an assignment or a
    /// forwarded layer changes).
    VideoSlots(Vec<VideoSlotState>),
    /// Another member joined the room.
    MemberJoined(MemberInfo),
    /// A member's state changed (itself included): mute, deafen, server mute.
    MemberUpdated(MemberInfo),
    /// A member left.
    MemberLeft(ParticipantId),
    /// Who is speaking, loudest first, as this client receives them.
    Speakers(Vec<Speaker>),
    /// A request of the client's was refused.
    Refused { why: Refusal, message: String },
    /// The room was closed (deleted, or the node drains).
    RoomClosed { reason: String },
    /// The backend removed the participant.
    Kicked { reason: String },
    /// What the participant may do changed.
    Permissions(Permissions),
    /// The room's audio moved to the other tier.
    Mode { mode: RoomMode, reason: ModeReason },
    /// Another member's `p2p_signal` (JSON text, relayed as it came).
    P2pSignal { from: ParticipantId, data: String },
}

/// The answer to a join.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    pub participant: ParticipantId,
    /// The CSRC its audio carries on the slots of the others.
    pub csrc: u32,
    pub room: RoomId,
    /// Receive-only audio m-sections its offer should hold.
    pub audio_slots: u8,
    /// Receive-only video m-sections (0: no video in the room).
    pub video_slots: u8,
    /// The other members, in join order.
    pub members: Vec<MemberInfo>,
    /// Which tier carries the room's audio.
    pub mode: RoomMode,
}

/// A member as the other members see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: ParticipantId,
    pub name: DisplayName,
    pub muted: bool,
    /// Muted by the control plane (the member cannot lift it).
    pub server_muted: bool,
    pub deafened: bool,
    /// The CSRC its audio carries on the slots.
    pub csrc: u32,
    /// It sends camera video, and screen share.
    pub camera: bool,
    pub screen: bool,
}

/// Where a participant's video comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VideoSource {
    Camera,
    Screen,
}

impl VideoSource {
    /// Both, in the order a participant's state lists them.
    pub const ALL: [VideoSource; 2] = [VideoSource::Camera, VideoSource::Screen];

    /// Its index in per-source arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

pub use crate::video::layers::Quality as VideoQuality;

/// One video slot as its client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoSlotState {
    pub slot: u8,
    /// Whose video it is for (`None`: free).
    pub publisher: Option<ParticipantId>,
    pub source: VideoSource,
    /// What the client asked for.
    pub quality: VideoQuality,
    /// The layer forwarded now, named as a quality (`None`: nothing forwarded).
    pub layer: Option<VideoQuality>,
}

/// One entry of a client's speaker list.
#[derive(Debug, Clone, PartialEq)]
pub struct Speaker {
    pub id: ParticipantId,
    /// Speech level, 0 (silence) to 1, rounded to 3 decimals.
    pub level: f32,
    /// The slot this client hears it on, if any.
    pub slot: Option<u8>,
    /// A priority speaker (heard by everyone, others ducked).
    pub priority: bool,
    /// It whispers to this client.
    pub whisper: bool,
    /// Its distance in a proximity room (rounded to 2 decimals), while within reach.
    pub distance: Option<f32>,
}

/// Why a client's request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed, or not possible in this state.
    BadRequest,
    /// Not allowed for this participant or in this room.
    Forbidden,
    /// The room to join does not exist.
    RoomNotFound,
    /// The room to join is at capacity.
    RoomFull,
    /// The node failed (e.g. could not set up media).
    Internal,
}
