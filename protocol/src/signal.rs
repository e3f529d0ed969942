//! The client signaling protocol, version 1 (the contract in `docs/protocol.md`).
//!
//! WebSocket text frames, one JSON object each, discriminated by a snake_case `type`.
//! [`ClientMessage`] is what a browser sends, [`ServerMessage`] what the node answers.
//! Decoding goes through [`ClientMessage::decode`], which turns every malformed frame
//! into a [`DecodeError`] with a message fit to show the client (`bad_request`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest text frame the node accepts from a client.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Longest room name, in bytes.
pub const MAX_ROOM_LEN: usize = 64;
/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// A participant, unique on this node for the life of the process.
///
/// On the wire it is a string `"p"` followed by lowercase hex (`"p1f"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub u64);

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{:x}", self.0)
    }
}

impl FromStr for ParticipantId {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s
            .strip_prefix('p')
            .ok_or("participant id must start with 'p'")?;
        if hex.is_empty() || hex.len() > 16 {
            return Err("participant id has a bad length");
        }
        u64::from_str_radix(hex, 16)
            .map(ParticipantId)
            .map_err(|_| "participant id is not hex")
    }
}

impl Serialize for ParticipantId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ParticipantId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A room name: 1 to [`MAX_ROOM_LEN`] bytes of `A-Z a-z 0-9 _ - . :`.
///
/// Shared, not copied: cloning one (every speaker packet handed between shards names
/// its room) costs a reference count, not an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(std::sync::Arc<str>);

impl RoomId {
    /// Checks the name and wraps it.
    pub fn new(name: &str) -> Result<Self, &'static str> {
        if name.is_empty() {
            return Err("room must not be empty");
        }
        if name.len() > MAX_ROOM_LEN {
            return Err("room is longer than 64 bytes");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
        {
            return Err("room may only hold A-Z a-z 0-9 _ - . :");
        }
        Ok(RoomId(name.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for RoomId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RoomId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        RoomId::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A display name: 1 to [`MAX_NAME_CHARS`] characters, no control characters,
/// surrounding white space trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn new(name: &str) -> Result<Self, &'static str> {
        let name = name.trim();
        if name.is_empty() {
            return Err("name must not be empty");
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err("name is longer than 64 characters");
        }
        if name.chars().any(char::is_control) {
            return Err("name must not contain control characters");
        }
        Ok(DisplayName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for DisplayName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DisplayName::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A message from a client to the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// First message on a connection.
    Join {
        room: RoomId,
        name: DisplayName,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// The client can carry the call peer to peer (docs/protocol.md §9).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        p2p: bool,
    },
    /// An SDP offer for the client's one RTCPeerConnection.
    Offer {
        sdp: String,
        /// What each `sendonly` video m-section publishes, by mid: `"camera"` or
        /// `"screen"`.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        sources: BTreeMap<String, Source>,
    },
    /// A trickled ICE candidate (the node is ICE-lite: accepted, never needed).
    Candidate {
        candidate: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
    },
    /// Stop (true) or resume (false) forwarding this participant's audio.
    Mute { muted: bool },
    /// Stop (true) or resume (false) forwarding audio to this participant.
    Deafen { deafened: bool },
    /// Keepalive; answered with [`ServerMessage::Pong`] carrying the same id.
    Ping { id: u64 },
    /// Leave the room; the node closes the socket with code 1000.
    Leave,
    /// Send this participant's audio only to `to` (at most [`MAX_WHISPER_TARGETS`]
    /// other members of the room), or to everyone again (`null`). Allowed when the
    /// room's `whisper` policy is on.
    Whisper { to: Option<Vec<ParticipantId>> },
    /// Where this participant is, in world units, in a proximity room whose policy
    /// takes positions from clients. The latest one per 50 ms counts.
    Position { position: [f64; 3] },
    /// The client starts (`enabled`) or stops sending video from `source` (`"camera"`
    /// or `"screen"`) on the m-section its offer mapped to it.
    Video { source: Source, enabled: bool },
    /// Video slot `slot` forwards `participant_id`'s `source` at `quality` (`null`
    /// clears the slot). `source` defaults to `"camera"`, `quality` to `"high"`.
    Subscribe {
        slot: u32,
        participant_id: Option<ParticipantId>,
        #[serde(default = "camera")]
        source: Source,
        #[serde(default = "high")]
        quality: VideoQuality,
    },
    /// Instead of `join`, on a new socket: take over a session whose socket dropped,
    /// with the `resume_token` its `joined` carried.
    Resume {
        participant_id: ParticipantId,
        resume_token: String,
    },
    /// In a room in mode `p2p`: relay `data` (the client's SDP or ICE candidate for
    /// its peer connection to `to`, opaque to the node) to another p2p member.
    P2pSignal {
        to: ParticipantId,
        data: serde_json::Map<String, serde_json::Value>,
    },
    /// In mode `p2p`: the client's own microphone level (linear 0..1), so that the
    /// node's `speakers` still say who speaks.
    Speaking { level: f32 },
    /// In mode `p2p`: the client's peer connection to `peer` failed.
    P2pFailed { peer: ParticipantId },
}

/// Largest `data` of a `p2p_signal`, serialized, in bytes.
pub const MAX_P2P_SIGNAL_BYTES: usize = 16 * 1024;

/// Why a frame could not be decoded. Its `Display` is the message sent back with
/// the `bad_request` error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame is larger than {MAX_FRAME_BYTES} bytes")]
    TooLarge,
    #[error("frame is not JSON: {0}")]
    NotJson(String),
    #[error("frame is not a JSON object with a string \"type\"")]
    NoType,
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("bad {kind:?} message: {reason}")]
    BadField { kind: String, reason: String },
}

const CLIENT_TYPES: &[&str] = &[
    "join",
    "offer",
    "candidate",
    "mute",
    "deafen",
    "ping",
    "leave",
    "resume",
    "whisper",
    "position",
    "video",
    "subscribe",
    "p2p_signal",
    "speaking",
    "p2p_failed",
];

/// Most participants one `whisper` may name.
pub const MAX_WHISPER_TARGETS: usize = 32;

impl ClientMessage {
    /// Decodes one text frame, telling apart the ways it can be wrong.
    pub fn decode(frame: &str) -> Result<ClientMessage, DecodeError> {
        if frame.len() > MAX_FRAME_BYTES {
            return Err(DecodeError::TooLarge);
        }
        let value: serde_json::Value =
            serde_json::from_str(frame).map_err(|e| DecodeError::NotJson(e.to_string()))?;
        let kind = value
            .get("type")
            .and_then(|t| t.as_str())
            .ok_or(DecodeError::NoType)?
            .to_owned();
        if !CLIENT_TYPES.contains(&kind.as_str()) {
            return Err(DecodeError::UnknownType(kind));
        }
        serde_json::from_value(value).map_err(|e| DecodeError::BadField {
            kind,
            reason: e.to_string(),
        })
    }

    /// The snake_case `type` of this message.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMessage::Join { .. } => "join",
            ClientMessage::Offer { .. } => "offer",
            ClientMessage::Candidate { .. } => "candidate",
            ClientMessage::Mute { .. } => "mute",
            ClientMessage::Deafen { .. } => "deafen",
            ClientMessage::Ping { .. } => "ping",
            ClientMessage::Leave => "leave",
            ClientMessage::Resume { .. } => "resume",
            ClientMessage::Whisper { .. } => "whisper",
            ClientMessage::Position { .. } => "position",
            ClientMessage::Video { .. } => "video",
            ClientMessage::Subscribe { .. } => "subscribe",
            ClientMessage::P2pSignal { .. } => "p2p_signal",
            ClientMessage::Speaking { .. } => "speaking",
            ClientMessage::P2pFailed { .. } => "p2p_failed",
        }
    }
}

/// What a participant publishes from: the `sources` of a token's grants and of
/// `participant.set_permissions` (`"microphone"`, `"camera"`, `"screen"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Microphone,
    Camera,
    Screen,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Microphone, Source::Camera, Source::Screen];

    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Microphone => "microphone",
            Source::Camera => "camera",
            Source::Screen => "screen",
        }
    }
}

fn camera() -> Source {
    Source::Camera
}

fn high() -> VideoQuality {
    VideoQuality::High
}

/// A video quality a subscriber asks for, and a simulcast layer as forwarded: the
/// publisher's layers in `a=simulcast` order are low (first), medium, high (last).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoQuality {
    Low,
    Medium,
    High,
}

/// One entry of [`ServerMessage::VideoSlots`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoSlotInfo {
    pub slot: u8,
    /// Whose video the slot is for; `None`: the slot is free.
    pub participant_id: Option<ParticipantId>,
    pub source: Source,
    /// What the client asked for.
    pub quality: VideoQuality,
    /// The layer forwarded now (`None`: nothing, e.g. waiting for a keyframe or for
    /// the publisher to send).
    pub layer: Option<VideoQuality>,
}

/// What everyone in a room sees of one participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub participant_id: ParticipantId,
    pub name: DisplayName,
    pub muted: bool,
    /// Muted by the room's backend (control plane): the client cannot lift it.
    #[serde(default)]
    pub server_muted: bool,
    pub deafened: bool,
    /// Non-zero and unique in the room: the CSRC on every packet this participant speaks.
    pub csrc: u32,
    /// It sends camera video.
    #[serde(default)]
    pub camera: bool,
    /// It shares its screen.
    #[serde(default)]
    pub screen: bool,
}

/// One entry of [`ServerMessage::Speakers`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeakerInfo {
    pub participant_id: ParticipantId,
    /// Linear 0..1 (10^(-dBov/20)), as Chromium's `audioLevel`.
    pub level: f32,
    /// The subscriber's slot carrying this speaker, or `None` when it is in none.
    pub slot: Option<u8>,
    /// A priority speaker (grant `priority`): clients may duck the others.
    #[serde(default)]
    pub priority: bool,
    /// This speaker whispers to this client (its audio goes only to the participants
    /// it named). Others do not see a whispering speaker in `speakers` at all.
    #[serde(default)]
    pub whisper: bool,
    /// In a proximity room: how far this speaker is from this client, in world units
    /// (`None` when either has no position, and outside proximity rooms).
    #[serde(default)]
    pub distance: Option<f32>,
}

/// An `RTCIceServer` as the browser API takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Stable error codes of [`ServerMessage::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame was malformed; the socket stays open.
    BadRequest,
    /// A message other than `join` came first.
    NotJoined,
    /// Missing or invalid token; the socket closes.
    Unauthorized,
    /// The room is at capacity; the socket closes.
    RoomFull,
    /// The room does not exist and this node does not create rooms on join.
    RoomNotFound,
    /// Too many messages (that one was dropped: resend later), or too many
    /// connections from one address (the socket closes).
    RateLimited,
    /// The node failed; the socket closes.
    Internal,
    /// The node takes no new joins (it is draining); join another node.
    Unavailable,
    /// Not allowed (unmuting while muted by the server); the socket stays open.
    Forbidden,
    /// No session to resume (unknown, expired, or a wrong token); the socket stays
    /// open for a fresh `join`.
    ResumeFailed,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::RoomNotFound => "room_not_found",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::ResumeFailed => "resume_failed",
        }
    }
}

/// A message from the node to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Joined {
        participant_id: ParticipantId,
        csrc: u32,
        room: RoomId,
        audio_slots: u8,
        /// Receive-only video m-sections (the video slots) its offer should hold: 0 =
        /// no video in this room.
        #[serde(default)]
        video_slots: u8,
        /// The others in the room, not the joiner.
        participants: Vec<ParticipantInfo>,
        ice_servers: Vec<IceServer>,
        /// Proves the session is this client's when it `resume`s on a new socket.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_token: Option<String>,
        /// Which tier carries the room's audio now: `"p2p"` or `"sfu"`.
        #[serde(default)]
        mode: RoomMode,
        /// In a cluster: the signaling URLs of the other live nodes, where a client
        /// whose node is gone joins again (absent on a node alone).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        alternates: Vec<String>,
    },
    /// The answer to an accepted `resume`: the room as it is now.
    Resumed {
        participant_id: ParticipantId,
        room: RoomId,
        /// The others in the room, in join order.
        participants: Vec<ParticipantInfo>,
        /// The ICE servers as `joined` gives them, with fresh TURN credentials (a
        /// long call outlives the ones `joined` had).
        #[serde(default)]
        ice_servers: Vec<IceServer>,
        /// Which tier carries the room's audio now (it may have changed meanwhile).
        #[serde(default)]
        mode: RoomMode,
    },
    Answer {
        sdp: String,
        /// The slots' mids, in slot order.
        slots: Vec<String>,
        /// The video slots' mids, in slot order.
        #[serde(default)]
        video_slots: Vec<String>,
    },
    /// This client's whole video slot map: after each `subscribe`, and whenever an
    /// assignment or a forwarded layer changes.
    VideoSlots {
        slots: Vec<VideoSlotInfo>,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantUpdated {
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        participant_id: ParticipantId,
    },
    Speakers {
        speakers: Vec<SpeakerInfo>,
    },
    Pong {
        id: u64,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    RoomClosed {
        reason: String,
    },
    /// The backend removed this participant; the socket closes (1000) after it.
    Kicked {
        reason: String,
    },
    /// The answer to a `join` at a node of a cluster that does not take it: join
    /// again at `url` (the room's home node). The socket closes (1000) after it.
    Redirect {
        url: String,
    },
    /// The room's audio moved to the other tier: everyone in it is told.
    Mode {
        mode: RoomMode,
        reason: ModeReason,
    },
    /// Another p2p member's `p2p_signal` for this client.
    P2pSignal {
        from: ParticipantId,
        data: serde_json::Map<String, serde_json::Value>,
    },
    /// The backend changed what this participant may do.
    Permissions {
        publish: bool,
        subscribe: bool,
        #[serde(default)]
        priority: bool,
        /// What it may publish from (with `publish`): all three unless the grants
        /// name fewer.
        #[serde(default = "all_sources")]
        sources: Vec<Source>,
    },
}

/// Which tier carries a room's audio.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomMode {
    /// Each member sends to each other directly; the node only signals.
    P2p,
    /// Through the node, as in v1.
    #[default]
    Sfu,
}

impl RoomMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RoomMode::P2p => "p2p",
            RoomMode::Sfu => "sfu",
        }
    }
}

/// Why a room's mode changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeReason {
    /// More members than the room's `p2p_max`.
    Capacity,
    /// A member joined without `p2p: true`.
    NotP2p,
    /// A member is muted by the server (a direct path cannot enforce it).
    ServerMuted,
    /// A member lacks the `publish` or `subscribe` grant (idem).
    Grants,
    /// A member publishes camera or screen (video goes through the node).
    Video,
    /// A member whispers (the client's `whisper` or the backend's
    /// `participant.set_whisper`): the node keeps its audio from the others.
    Whisper,
    /// A member's peer connection failed: the room stays `sfu` for the rest of its life.
    P2pFailed,
    /// The backend changed the room's policy (`p2p_max`, `proximity`).
    Policy,
    /// Back to `p2p`: the room stayed within its `p2p_max` for `p2p_downgrade_s`.
    WithinLimit,
}

impl ModeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ModeReason::Capacity => "capacity",
            ModeReason::NotP2p => "not_p2p",
            ModeReason::ServerMuted => "server_muted",
            ModeReason::Grants => "grants",
            ModeReason::Video => "video",
            ModeReason::Whisper => "whisper",
            ModeReason::P2pFailed => "p2p_failed",
            ModeReason::Policy => "policy",
            ModeReason::WithinLimit => "within_limit",
        }
    }
}

fn all_sources() -> Vec<Source> {
    Source::ALL.to_vec()
}

impl ServerMessage {
    /// Shorthand for an `error` message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
        }
    }

    /// The JSON text of this message.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: every field is a string, number,
        // bool or a sequence of them, and every map key is a string.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"encode failed"}"#.to_owned()
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn decodes_every_client_message() {
        let cases = [
            r#"{"type":"join","room":"r1","name":"Alice"}"#,
            r#"{"type":"join","room":"r1","name":"Alice","token":"t"}"#,
            r#"{"type":"offer","sdp":"v=0"}"#,
            r#"{"type":"candidate","candidate":"candidate:1 1 udp 1 1.2.3.4 5 typ host","sdp_mid":"0"}"#,
            r#"{"type":"mute","muted":true}"#,
            r#"{"type":"deafen","deafened":false}"#,
            r#"{"type":"ping","id":7}"#,
            r#"{"type":"leave"}"#,
            r#"{"type":"resume","participant_id":"p1f","resume_token":"x"}"#,
        ];
        for c in cases {
            let m = ClientMessage::decode(c).unwrap();
            let back = serde_json::to_string(&m).unwrap();
            assert_eq!(ClientMessage::decode(&back).unwrap(), m, "{c}");
        }
    }

    #[test]
    fn tells_apart_the_ways_a_frame_is_wrong() {
        assert!(matches!(
            ClientMessage::decode("not json"),
            Err(DecodeError::NotJson(_))
        ));
        assert_eq!(ClientMessage::decode("[1]"), Err(DecodeError::NoType));
        assert_eq!(
            ClientMessage::decode(r#"{"type":"nope"}"#),
            Err(DecodeError::UnknownType("nope".into()))
        );
        assert!(matches!(
            ClientMessage::decode(r#"{"type":"mute","muted":"yes"}"#),
            Err(DecodeError::BadField { .. })
        ));
        assert!(matches!(
            ClientMessage::decode(r#"{"type":"join","room":"bad room!","name":"a"}"#),
            Err(DecodeError::BadField { .. })
        ));
        assert!(matches!(
            ClientMessage::decode(r#"{"type":"join","room":"r","name":"  "}"#),
            Err(DecodeError::BadField { .. })
        ));
        let huge = format!(
            r#"{{"type":"offer","sdp":"{}"}}"#,
            "a".repeat(MAX_FRAME_BYTES)
        );
        assert_eq!(ClientMessage::decode(&huge), Err(DecodeError::TooLarge));
    }

    #[test]
    fn server_messages_have_the_documented_shape() {
        let p = ParticipantInfo {
            participant_id: ParticipantId(0x1f),
            name: DisplayName::new("Alice").unwrap(),
            muted: false,
            server_muted: true,
            deafened: true,
            csrc: 9,
            camera: true,
            screen: false,
        };
        let v: serde_json::Value =
            serde_json::from_str(&ServerMessage::ParticipantUpdated { participant: p }.to_json())
                .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"participant_updated","participant":{
                "participant_id":"p1f","name":"Alice","muted":false,"server_muted":true,
                "deafened":true,"csrc":9,"camera":true,"screen":false}})
        );
        let v: serde_json::Value = serde_json::from_str(
            &ServerMessage::Speakers {
                speakers: vec![SpeakerInfo {
                    participant_id: ParticipantId(1),
                    level: 0.5,
                    slot: None,
                    priority: true,
                    whisper: false,
                    distance: Some(2.5),
                }],
            }
            .to_json(),
        )
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"speakers","speakers":[{"participant_id":"p1","level":0.5,"slot":null,"priority":true,"whisper":false,"distance":2.5}]})
        );
        assert_eq!(
            ServerMessage::error(ErrorCode::RoomFull, "full").to_json(),
            r#"{"type":"error","code":"room_full","message":"full"}"#
        );
    }

    #[test]
    fn participant_ids_round_trip() {
        for n in [0, 1, 0xdead_beef, u64::MAX] {
            let id = ParticipantId(n);
            assert_eq!(id.to_string().parse::<ParticipantId>().unwrap(), id);
        }
        assert!("x1".parse::<ParticipantId>().is_err());
        assert!("p".parse::<ParticipantId>().is_err());
        assert!("p12345678901234567".parse::<ParticipantId>().is_err());
    }
}
