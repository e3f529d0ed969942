//! The control protocol (the contract in `docs/control.md`): JSON-RPC 2.0 over the
//! node's local control socket, one JSON object per line.
//!
//! A backend (or `chorusctl`) sends a [`Request`]; [`Call::decode`] turns its method
//! and params into a typed [`Call`] or an [`RpcError`] with a stable code. Answers are
//! [`Response`]s. After `events.subscribe`, the node also writes [`Notification`]s
//! (`method: "event"`) carrying a [`NodeEvent`] on the same connection.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::signal::{DisplayName, ParticipantId, RoomId};

/// Longest request line the node reads; longer lines get `-32600` and the connection
/// is closed (the rest of the line cannot be told apart from the next request).
pub const MAX_LINE_BYTES: usize = 256 * 1024;
/// Longest room `metadata`, in bytes.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Longest `reason` (kick, delete), in bytes.
pub const MAX_REASON_BYTES: usize = 256;
/// Longest token `identity`, in bytes.
pub const MAX_IDENTITY_BYTES: usize = 256;
/// Longest token lifetime: 30 days.
pub const MAX_TTL_S: u64 = 30 * 24 * 3600;
/// Most participants a room may be configured for.
pub const MAX_ROOM_CAPACITY: usize = 10_000;
/// Most audio slots a room may be configured for.
pub const MAX_ROOM_AUDIO_SLOTS: u8 = 32;
/// Most video slots a room may give each client (0: no video).
pub const MAX_ROOM_VIDEO_SLOTS: u8 = 16;

/// Where the node listens and `chorusctl` connects when no path is given:
/// `$XDG_RUNTIME_DIR/chorus/control.sock`, else `/tmp/chorus/control.sock`.
/// (`CHORUS_CONTROL` overrides both; the callers read the environment.)
pub fn default_socket_path(xdg_runtime_dir: Option<std::path::PathBuf>) -> std::path::PathBuf {
    xdg_runtime_dir
        .filter(|d| d.is_absolute())
        .unwrap_or_else(|| std::path::PathBuf::from("/tmp"))
        .join("chorus")
        .join("control.sock")
}

// ---- envelope ----------------------------------------------------------------

/// A JSON-RPC 2.0 request or notification (no `id`) as read off the socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub jsonrpc: String,
    /// A string or number; absent for a notification (which gets no answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
}

impl Request {
    /// A request with a numeric id (what `chorusctl` sends).
    pub fn new(id: u64, method: &str, params: Value) -> Request {
        Request {
            jsonrpc: "2.0".into(),
            id: Some(Value::from(id)),
            method: method.into(),
            params: Some(params),
        }
    }

    /// Reads one line. On error, returns the id when one could be read (for the
    /// error answer) and the error.
    pub fn decode(line: &str) -> Result<Request, (Value, RpcError)> {
        if line.len() > MAX_LINE_BYTES {
            return Err((
                Value::Null,
                RpcError::new(
                    ErrorCode::InvalidRequest,
                    format!("request is longer than {MAX_LINE_BYTES} bytes"),
                ),
            ));
        }
        let value: Value = serde_json::from_str(line).map_err(|e| {
            (
                Value::Null,
                RpcError::new(ErrorCode::ParseError, format!("not JSON: {e}")),
            )
        })?;
        let id = value.get("id").cloned().unwrap_or(Value::Null);
        let invalid = |m: &str| (id.clone(), RpcError::new(ErrorCode::InvalidRequest, m));
        let Some(obj) = value.as_object() else {
            return Err(invalid(
                "a request is a JSON object (batches are not supported)",
            ));
        };
        if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(invalid("\"jsonrpc\" must be \"2.0\""));
        }
        match obj.get("id") {
            None | Some(Value::String(_)) | Some(Value::Number(_)) | Some(Value::Null) => {}
            Some(_) => return Err(invalid("\"id\" must be a string or a number")),
        }
        if !obj.get("method").is_some_and(Value::is_string) {
            return Err(invalid("\"method\" must be a string"));
        }
        match obj.get("params") {
            None | Some(Value::Object(_)) | Some(Value::Null) => {}
            Some(_) => return Err(invalid("\"params\" must be an object")),
        }
        serde_json::from_value(value)
            .map_err(|e| (id, RpcError::new(ErrorCode::InvalidRequest, e.to_string())))
    }
}

/// An answer to a request: `result` or `error`, never both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub jsonrpc: String,
    pub id: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

impl Response {
    pub fn ok(id: Value, result: Value) -> Response {
        Response {
            jsonrpc: "2.0".into(),
            id,
            result: Some(result),
            error: None,
        }
    }

    pub fn err(id: Value, error: RpcError) -> Response {
        Response {
            jsonrpc: "2.0".into(),
            id,
            result: None,
            error: Some(error),
        }
    }

    /// One line of JSON (no newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"encode failed"}}"#
                .to_owned()
        })
    }
}

/// An event pushed to a connection that called `events.subscribe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub jsonrpc: String,
    /// Always `"event"`.
    pub method: String,
    pub params: NodeEvent,
}

impl Notification {
    pub fn event(event: NodeEvent) -> Notification {
        Notification {
            jsonrpc: "2.0".into(),
            method: "event".into(),
            params: event,
        }
    }

    /// One line of JSON (no newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A JSON-RPC error object. `data.name` repeats the code as a stable string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} ({code})")]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> RpcError {
        RpcError {
            code: code.code(),
            message: message.into(),
            data: Some(serde_json::json!({ "name": code.name() })),
        }
    }

    /// The code as one of ours, if it is.
    pub fn kind(&self) -> Option<ErrorCode> {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|c| c.code() == self.code)
    }
}

/// The stable error codes of the control protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// -32700: the line is not JSON.
    ParseError,
    /// -32600: JSON, but not a JSON-RPC 2.0 request.
    InvalidRequest,
    /// -32601: no such method.
    MethodNotFound,
    /// -32602: the params are missing, of the wrong type or out of range.
    InvalidParams,
    /// -32603: the node failed.
    Internal,
    /// -32001: no room by that name.
    RoomNotFound,
    /// -32002: `room.create` for a room that exists.
    RoomExists,
    /// -32003: no participant by that id in that room.
    ParticipantNotFound,
    /// -32004: the node is draining (no new rooms), or stopping.
    Unavailable,
    /// -32005: the engine did not answer in time or its queue is full; retry.
    Busy,
    /// -32006: the node is not configured for this (`token.create` without a secret).
    NotConfigured,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::ParseError,
        ErrorCode::InvalidRequest,
        ErrorCode::MethodNotFound,
        ErrorCode::InvalidParams,
        ErrorCode::Internal,
        ErrorCode::RoomNotFound,
        ErrorCode::RoomExists,
        ErrorCode::ParticipantNotFound,
        ErrorCode::Unavailable,
        ErrorCode::Busy,
        ErrorCode::NotConfigured,
    ];

    pub fn code(self) -> i64 {
        match self {
            ErrorCode::ParseError => -32700,
            ErrorCode::InvalidRequest => -32600,
            ErrorCode::MethodNotFound => -32601,
            ErrorCode::InvalidParams => -32602,
            ErrorCode::Internal => -32603,
            ErrorCode::RoomNotFound => -32001,
            ErrorCode::RoomExists => -32002,
            ErrorCode::ParticipantNotFound => -32003,
            ErrorCode::Unavailable => -32004,
            ErrorCode::Busy => -32005,
            ErrorCode::NotConfigured => -32006,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::ParseError => "parse_error",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::MethodNotFound => "method_not_found",
            ErrorCode::InvalidParams => "invalid_params",
            ErrorCode::Internal => "internal",
            ErrorCode::RoomNotFound => "room_not_found",
            ErrorCode::RoomExists => "room_exists",
            ErrorCode::ParticipantNotFound => "participant_not_found",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Busy => "busy",
            ErrorCode::NotConfigured => "not_configured",
        }
    }
}

// ---- methods -----------------------------------------------------------------

/// Every method, with its params checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    RoomCreate(RoomCreate),
    RoomGet(RoomRef),
    RoomList,
    RoomUpdate(RoomUpdate),
    RoomDelete(RoomDelete),
    ParticipantList(RoomRef),
    ParticipantGet(ParticipantRef),
    ParticipantKick(ParticipantKick),
    ParticipantMute(ParticipantMute),
    ParticipantSetPermissions(ParticipantSetPermissions),
    ParticipantSetWhisper(ParticipantSetWhisper),
    RoomSetPositions(RoomSetPositions),
    TokenCreate(TokenCreate),
    EventsSubscribe(EventsSubscribe),
    NodeStats,
    NodeDrain(NodeDrain),
    NodeList,
}

/// The method names, as on the wire.
pub const METHODS: &[&str] = &[
    "room.create",
    "room.get",
    "room.list",
    "room.update",
    "room.delete",
    "participant.list",
    "participant.get",
    "participant.kick",
    "participant.mute",
    "participant.set_permissions",
    "participant.set_whisper",
    "room.set_positions",
    "token.create",
    "events.subscribe",
    "node.stats",
    "node.drain",
    "node.list",
];

impl Call {
    /// Checks a method's params (absent params are an empty object).
    pub fn decode(method: &str, params: Option<Value>) -> Result<Call, RpcError> {
        let params = match params {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(p) => p,
        };
        fn p<T: serde::de::DeserializeOwned>(params: Value) -> Result<T, RpcError> {
            serde_json::from_value(params)
                .map_err(|e| RpcError::new(ErrorCode::InvalidParams, e.to_string()))
        }
        let call = match method {
            "room.create" => Call::RoomCreate(p(params)?),
            "room.get" => Call::RoomGet(p(params)?),
            "room.list" => {
                p::<Empty>(params)?;
                Call::RoomList
            }
            "room.update" => Call::RoomUpdate(p(params)?),
            "room.delete" => Call::RoomDelete(p(params)?),
            "participant.list" => Call::ParticipantList(p(params)?),
            "participant.get" => Call::ParticipantGet(p(params)?),
            "participant.kick" => Call::ParticipantKick(p(params)?),
            "participant.mute" => Call::ParticipantMute(p(params)?),
            "participant.set_permissions" => Call::ParticipantSetPermissions(p(params)?),
            "participant.set_whisper" => Call::ParticipantSetWhisper(p(params)?),
            "room.set_positions" => Call::RoomSetPositions(p(params)?),
            "token.create" => Call::TokenCreate(p(params)?),
            "events.subscribe" => Call::EventsSubscribe(p(params)?),
            "node.stats" => {
                p::<Empty>(params)?;
                Call::NodeStats
            }
            "node.drain" => Call::NodeDrain(p(params)?),
            "node.list" => {
                p::<Empty>(params)?;
                Call::NodeList
            }
            other => {
                return Err(RpcError::new(
                    ErrorCode::MethodNotFound,
                    format!("unknown method {other:?}"),
                ))
            }
        };
        call.validate()?;
        Ok(call)
    }

    fn validate(&self) -> Result<(), RpcError> {
        let bad = |m: String| Err(RpcError::new(ErrorCode::InvalidParams, m));
        let capacity = |n: Option<usize>| match n {
            Some(n) if n == 0 || n > MAX_ROOM_CAPACITY => {
                bad(format!("max_participants must be 1..={MAX_ROOM_CAPACITY}"))
            }
            _ => Ok(()),
        };
        let slots = |n: Option<u8>| match n {
            Some(n) if n == 0 || n > MAX_ROOM_AUDIO_SLOTS => {
                bad(format!("audio_slots must be 1..={MAX_ROOM_AUDIO_SLOTS}"))
            }
            _ => Ok(()),
        };
        let video = |n: Option<u8>| match n {
            Some(n) if n > MAX_ROOM_VIDEO_SLOTS => {
                bad(format!("video_slots must be 0..={MAX_ROOM_VIDEO_SLOTS}"))
            }
            _ => Ok(()),
        };
        let p2p = |max: Option<u8>, delay: Option<u32>| match (max, delay) {
            (Some(n), _) if n > MAX_P2P_MEMBERS => {
                bad(format!("p2p_max must be 0..={MAX_P2P_MEMBERS}"))
            }
            (_, Some(s)) if s == 0 || s > MAX_P2P_DOWNGRADE_S => {
                bad(format!("p2p_downgrade_s must be 1..={MAX_P2P_DOWNGRADE_S}"))
            }
            _ => Ok(()),
        };
        let metadata = |m: &Option<String>| match m {
            Some(m) if m.len() > MAX_METADATA_BYTES => bad(format!(
                "metadata is longer than {MAX_METADATA_BYTES} bytes"
            )),
            _ => Ok(()),
        };
        let reason = |r: &Option<String>| match r {
            Some(r) if r.len() > MAX_REASON_BYTES => {
                bad(format!("reason is longer than {MAX_REASON_BYTES} bytes"))
            }
            Some(r) if r.chars().any(char::is_control) => {
                bad("reason must not contain control characters".into())
            }
            _ => Ok(()),
        };
        match self {
            Call::RoomCreate(c) => {
                capacity(c.max_participants)?;
                slots(c.audio_slots)?;
                video(c.video_slots)?;
                p2p(c.p2p_max, c.p2p_downgrade_s)?;
                metadata(&c.metadata)?;
                c.proximity.as_ref().map_or(Ok(()), Proximity::check)?;
                c.spam_guard.as_ref().map_or(Ok(()), SpamGuard::check)
            }
            Call::RoomUpdate(u) => {
                capacity(u.max_participants)?;
                slots(u.audio_slots)?;
                video(u.video_slots)?;
                p2p(u.p2p_max, u.p2p_downgrade_s)?;
                metadata(&u.metadata)?;
                u.proximity
                    .as_ref()
                    .and_then(Option::as_ref)
                    .map_or(Ok(()), Proximity::check)?;
                u.spam_guard.as_ref().map_or(Ok(()), SpamGuard::check)
            }
            Call::RoomSetPositions(s) => {
                if s.positions.len() > MAX_ROOM_CAPACITY {
                    return bad(format!(
                        "at most {MAX_ROOM_CAPACITY} positions in one batch"
                    ));
                }
                match s.positions.iter().find(|(_, p)| !is_position(p)) {
                    Some((id, _)) => bad(format!(
                        "the position of {id} must be 3 finite numbers of at most {MAX_COORDINATE:e}"
                    )),
                    None => Ok(()),
                }
            }
            Call::RoomDelete(d) => reason(&d.reason),
            Call::ParticipantKick(k) => reason(&k.reason),
            Call::TokenCreate(t) => {
                if t.identity.is_empty() || t.identity.len() > MAX_IDENTITY_BYTES {
                    return bad(format!("identity must be 1..={MAX_IDENTITY_BYTES} bytes"));
                }
                if t.ttl_s == 0 || t.ttl_s > MAX_TTL_S {
                    return bad(format!("ttl_s must be 1..={MAX_TTL_S}"));
                }
                Ok(())
            }
            Call::EventsSubscribe(s) => {
                for t in s.types.iter().flatten() {
                    if !EVENT_TYPES.contains(&t.as_str()) {
                        return bad(format!("unknown event type {t:?}"));
                    }
                }
                Ok(())
            }
            Call::NodeDrain(d) => match d.deadline_s {
                Some(s) if s > 24 * 3600 => bad("deadline_s must be at most 86400".into()),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// The method name of this call.
    pub fn method(&self) -> &'static str {
        match self {
            Call::RoomCreate(_) => "room.create",
            Call::RoomGet(_) => "room.get",
            Call::RoomList => "room.list",
            Call::RoomUpdate(_) => "room.update",
            Call::RoomDelete(_) => "room.delete",
            Call::ParticipantList(_) => "participant.list",
            Call::ParticipantGet(_) => "participant.get",
            Call::ParticipantKick(_) => "participant.kick",
            Call::ParticipantMute(_) => "participant.mute",
            Call::ParticipantSetPermissions(_) => "participant.set_permissions",
            Call::ParticipantSetWhisper(_) => "participant.set_whisper",
            Call::RoomSetPositions(_) => "room.set_positions",
            Call::TokenCreate(_) => "token.create",
            Call::EventsSubscribe(_) => "events.subscribe",
            Call::NodeStats => "node.stats",
            Call::NodeDrain(_) => "node.drain",
            Call::NodeList => "node.list",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// What a room is for; each kind has its own defaults ([`RoomKind::defaults`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomKind {
    /// A guild's standing voice channel.
    Guild,
    /// A small group playing together.
    Party,
    /// Anyone may be sent a token for it.
    #[default]
    Public,
    /// Invitation only, kept small.
    Private,
    /// A large raid or event channel: many listeners, a few speakers at a time.
    Raid,
}

/// What the mic-spam guard does with a speaker it flags (room policy `spam_guard`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpamAction {
    /// Emit `spam_detected` only.
    #[default]
    Event,
    /// Emit `spam_detected` and server-mute the speaker until the backend lifts it.
    Mute,
}

/// Room policy `spam_guard`: what is done with a flagged speaker, and when a speaker
/// is flagged. Absent thresholds take their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpamGuard {
    #[serde(default)]
    pub action: SpamAction,
    /// "loud": a speaker at or above this level (dBov, -127..=0; default -6) ...
    #[serde(default = "SpamGuard::default_loud_dbov")]
    pub loud_dbov: i8,
    /// ... for at least this share (percent, 1..=100; default 80) ...
    #[serde(default = "SpamGuard::default_loud_percent")]
    pub loud_percent: u8,
    /// ... of this window (seconds, 1..=60; default 4).
    #[serde(default = "SpamGuard::default_loud_window_s")]
    pub loud_window_s: u32,
    /// "continuous": sound without a pause for longer than this (seconds, 1..=3600;
    /// default 120).
    #[serde(default = "SpamGuard::default_continuous_s")]
    pub continuous_s: u32,
}

impl Default for SpamGuard {
    fn default() -> Self {
        SpamGuard {
            action: SpamAction::Event,
            loud_dbov: Self::default_loud_dbov(),
            loud_percent: Self::default_loud_percent(),
            loud_window_s: Self::default_loud_window_s(),
            continuous_s: Self::default_continuous_s(),
        }
    }
}

impl SpamGuard {
    fn default_loud_dbov() -> i8 {
        -6
    }
    fn default_loud_percent() -> u8 {
        80
    }
    fn default_loud_window_s() -> u32 {
        4
    }
    fn default_continuous_s() -> u32 {
        120
    }

    fn check(&self) -> Result<(), RpcError> {
        let bad = |m: &str| Err(RpcError::new(ErrorCode::InvalidParams, m));
        if self.loud_dbov > 0 || self.loud_dbov < -127 {
            return bad("spam_guard.loud_dbov must be -127..=0");
        }
        if !(1..=100).contains(&self.loud_percent) {
            return bad("spam_guard.loud_percent must be 1..=100");
        }
        if !(1..=60).contains(&self.loud_window_s) {
            return bad("spam_guard.loud_window_s must be 1..=60");
        }
        if !(1..=3600).contains(&self.continuous_s) {
            return bad("spam_guard.continuous_s must be 1..=3600");
        }
        Ok(())
    }
}

/// Where a proximity room's positions come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionSource {
    /// The game's backend, with `room.set_positions` (it is authoritative).
    #[default]
    Backend,
    /// The clients, with `{"type":"position"}` (the backend may still set them).
    Client,
}

/// Largest coordinate (absolute) and radius a proximity room takes, in world units.
pub const MAX_COORDINATE: f64 = 1e9;
/// Smallest radius a proximity room takes, in world units.
pub const MIN_RADIUS: f64 = 1e-3;

/// Room policy `proximity`: a listener hears a speaker only within `radius` world
/// units of it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proximity {
    pub radius: f64,
    #[serde(default)]
    pub positions: PositionSource,
}

impl Proximity {
    fn check(&self) -> Result<(), RpcError> {
        if self.radius.is_finite() && (MIN_RADIUS..=MAX_COORDINATE).contains(&self.radius) {
            Ok(())
        } else {
            Err(RpcError::new(
                ErrorCode::InvalidParams,
                format!(
                    "proximity.radius must be a number from {MIN_RADIUS} to {MAX_COORDINATE:e}"
                ),
            ))
        }
    }
}

/// A position as the wire carries it: finite, each coordinate within
/// [`MAX_COORDINATE`].
pub fn is_position(p: &[f64; 3]) -> bool {
    p.iter().all(|c| c.is_finite() && c.abs() <= MAX_COORDINATE)
}

/// `null` given (`Some(None)`) apart from absent (`None`), for settings that can be
/// turned off.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// The settings a room kind starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomDefaults {
    pub max_participants: usize,
    pub audio_slots: u8,
    /// Video slots per client (0: no video).
    pub video_slots: u8,
    /// 0: never closed for being empty.
    pub empty_timeout_s: u64,
    /// Clients may `whisper`.
    pub whisper: bool,
    /// Most members a room carries peer to peer (0: never).
    pub p2p_max: u8,
}

/// Most members a room may carry peer to peer (a full mesh).
pub const MAX_P2P_MEMBERS: u8 = 4;
/// How long a room in mode `sfu` must stay within `p2p_max` before it goes back to
/// `p2p`, unless the room says otherwise.
pub const DEFAULT_P2P_DOWNGRADE_S: u32 = 10;
/// The longest `p2p_downgrade_s`.
pub const MAX_P2P_DOWNGRADE_S: u32 = 3600;

impl RoomKind {
    pub fn defaults(self) -> RoomDefaults {
        let (max_participants, audio_slots, video_slots, empty_timeout_s, whisper) = match self {
            RoomKind::Party => (8, 7, 4, 60, true),
            RoomKind::Private => (25, 8, 4, 300, false),
            RoomKind::Guild => (100, 8, 4, 300, true),
            RoomKind::Public => (200, 8, 0, 300, false),
            RoomKind::Raid => (1000, 6, 0, 300, true),
        };
        RoomDefaults {
            max_participants,
            audio_slots,
            video_slots,
            empty_timeout_s,
            whisper,
            // Private calls are small: two people talk directly.
            p2p_max: if self == RoomKind::Private { 2 } else { 0 },
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RoomKind::Guild => "guild",
            RoomKind::Party => "party",
            RoomKind::Public => "public",
            RoomKind::Private => "private",
            RoomKind::Raid => "raid",
        }
    }
}

/// `room.create`. Absent settings take the kind's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomCreate {
    pub room: RoomId,
    #[serde(default)]
    pub kind: Option<RoomKind>,
    #[serde(default)]
    pub max_participants: Option<usize>,
    #[serde(default)]
    pub audio_slots: Option<u8>,
    /// Video slots per client, 0 to [`MAX_ROOM_VIDEO_SLOTS`] (0: no video).
    #[serde(default)]
    pub video_slots: Option<u8>,
    /// Seconds the room may stay empty before it is closed; 0: never.
    #[serde(default)]
    pub empty_timeout_s: Option<u64>,
    /// Free text for the backend (at most [`MAX_METADATA_BYTES`]); never sent to clients.
    #[serde(default)]
    pub metadata: Option<String>,
    /// Clients may `whisper` (default: true for guild, party and raid rooms).
    #[serde(default)]
    pub whisper: Option<bool>,
    /// The mic-spam guard's action and thresholds (default `{"action":"event"}`).
    #[serde(default)]
    pub spam_guard: Option<SpamGuard>,
    /// Proximity voice (default `null`: off).
    #[serde(default)]
    pub proximity: Option<Proximity>,
    /// Most members the room carries peer to peer, 0 to [`MAX_P2P_MEMBERS`] (default
    /// 0, `private` rooms 2).
    #[serde(default)]
    pub p2p_max: Option<u8>,
    /// Seconds a room in mode `sfu` must stay within `p2p_max` before it goes back to
    /// `p2p` (1 to [`MAX_P2P_DOWNGRADE_S`], default [`DEFAULT_P2P_DOWNGRADE_S`]).
    #[serde(default)]
    pub p2p_downgrade_s: Option<u32>,
    /// In a cluster: the room may spread its members over several nodes (a join at
    /// another node joins there instead of being redirected to the room's home).
    /// Default: true for `raid` rooms, false otherwise. A node alone ignores it.
    #[serde(default)]
    pub span: Option<bool>,
}

impl RoomCreate {
    /// Whether the room may span nodes (`span`, else the kind's default).
    pub fn spans(&self) -> bool {
        self.span
            .unwrap_or(self.kind.unwrap_or_default() == RoomKind::Raid)
    }

    /// A `room.create` of `room` with no setting given (the kind's defaults).
    pub fn new(room: RoomId) -> Self {
        RoomCreate {
            room,
            kind: None,
            max_participants: None,
            audio_slots: None,
            video_slots: None,
            empty_timeout_s: None,
            metadata: None,
            whisper: None,
            spam_guard: None,
            proximity: None,
            p2p_max: None,
            p2p_downgrade_s: None,
            span: None,
        }
    }
}

/// `room.get`, `participant.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomRef {
    pub room: RoomId,
}

/// `room.update`: only the settings given change. `audio_slots` applies to joins
/// after the update (a joined client negotiated its slots).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomUpdate {
    pub room: RoomId,
    #[serde(default)]
    pub max_participants: Option<usize>,
    #[serde(default)]
    pub audio_slots: Option<u8>,
    /// Like `audio_slots`, for joins after the update.
    #[serde(default)]
    pub video_slots: Option<u8>,
    #[serde(default)]
    pub empty_timeout_s: Option<u64>,
    #[serde(default)]
    pub metadata: Option<String>,
    /// Whether clients may `whisper` from now on (a whisper in progress goes on).
    #[serde(default)]
    pub whisper: Option<bool>,
    /// The mic-spam guard from now on.
    #[serde(default)]
    pub spam_guard: Option<SpamGuard>,
    /// Proximity from now on: absent leaves it, `null` turns it off.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub proximity: Option<Option<Proximity>>,
    /// Most members carried peer to peer from now on (a lower value may move the room
    /// to `sfu` at once).
    #[serde(default)]
    pub p2p_max: Option<u8>,
    #[serde(default)]
    pub p2p_downgrade_s: Option<u32>,
}

impl RoomUpdate {
    /// A `room.update` of `room` that changes nothing yet.
    pub fn new(room: RoomId) -> Self {
        RoomUpdate {
            room,
            max_participants: None,
            audio_slots: None,
            video_slots: None,
            empty_timeout_s: None,
            metadata: None,
            whisper: None,
            spam_guard: None,
            proximity: None,
            p2p_max: None,
            p2p_downgrade_s: None,
        }
    }
}

/// `room.set_positions`: where participants of a proximity room are, in world units.
/// Participants not in the room are reported back, not refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomSetPositions {
    pub room: RoomId,
    pub positions: std::collections::BTreeMap<ParticipantId, [f64; 3]>,
}

/// The result of `room.set_positions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositionsSet {
    pub room: RoomId,
    /// Positions taken.
    pub updated: usize,
    /// Ids that are not members of the room (ignored).
    pub unknown: Vec<ParticipantId>,
}

/// `room.delete`: members get `room_closed {reason}` (default `"deleted"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomDelete {
    pub room: RoomId,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `participant.get`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantRef {
    pub room: RoomId,
    pub participant_id: ParticipantId,
}

/// `participant.kick`: the client gets `kicked {reason}` (default `"kicked"`) and
/// its connection closes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantKick {
    pub room: RoomId,
    pub participant_id: ParticipantId,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `participant.mute`: the server mute, which the client cannot lift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantMute {
    pub room: RoomId,
    pub participant_id: ParticipantId,
    pub muted: bool,
}

fn all_sources() -> Vec<crate::signal::Source> {
    crate::signal::Source::ALL.to_vec()
}

/// `participant.set_permissions`: absent ones stay as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantSetPermissions {
    pub room: RoomId,
    pub participant_id: ParticipantId,
    #[serde(default)]
    pub publish: Option<bool>,
    #[serde(default)]
    pub subscribe: Option<bool>,
    /// A priority speaker ([`ParticipantDetails::priority`]).
    #[serde(default)]
    pub priority: Option<bool>,
    /// What it may publish from ([`ParticipantDetails::sources`]).
    #[serde(default)]
    pub sources: Option<Vec<crate::signal::Source>>,
}

/// `participant.set_whisper`: the participant's audio goes only to `to` (other members
/// of the room, at most [`crate::signal::MAX_WHISPER_TARGETS`]), or to everyone again
/// (`null`). The backend may set it whatever the room's `whisper` policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantSetWhisper {
    pub room: RoomId,
    pub participant_id: ParticipantId,
    pub to: Option<Vec<ParticipantId>>,
}

/// `token.create`: a join token (HS256 JWT) signed with the node's secret. Grants
/// default to publish and subscribe, not admin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    pub room: RoomId,
    pub identity: String,
    #[serde(default)]
    pub name: Option<DisplayName>,
    pub ttl_s: u64,
    #[serde(default)]
    pub publish: Option<bool>,
    #[serde(default)]
    pub subscribe: Option<bool>,
    #[serde(default)]
    pub admin: Option<bool>,
    /// Grant `priority` (default false).
    #[serde(default)]
    pub priority: Option<bool>,
    /// Grant `sources` (default: absent, all three).
    #[serde(default)]
    pub sources: Option<Vec<crate::signal::Source>>,
}

/// `events.subscribe`: all events, or only these `types`, or only this `room`'s.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSubscribe {
    #[serde(default)]
    pub types: Option<Vec<String>>,
    #[serde(default)]
    pub room: Option<RoomId>,
}

/// `node.drain`: refuse new joins, close the rooms left at the deadline (default: the
/// node's `--drain-timeout`), then exit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDrain {
    #[serde(default)]
    pub deadline_s: Option<u64>,
}

// ---- results -----------------------------------------------------------------

/// A room as `room.*` return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub room: RoomId,
    pub kind: RoomKind,
    pub max_participants: usize,
    pub audio_slots: u8,
    /// Video slots per client (0: no video).
    #[serde(default)]
    pub video_slots: u8,
    pub empty_timeout_s: u64,
    pub metadata: String,
    /// Clients may `whisper`.
    #[serde(default)]
    pub whisper: bool,
    /// What the mic-spam guard does with a flagged speaker, and when it flags one.
    #[serde(default)]
    pub spam_guard: SpamGuard,
    /// Proximity voice; `null`: off.
    #[serde(default)]
    pub proximity: Option<Proximity>,
    /// Most members carried peer to peer (0: never).
    #[serde(default)]
    pub p2p_max: u8,
    /// Seconds within `p2p_max` before a room in mode `sfu` goes back to `p2p`.
    #[serde(default = "default_p2p_downgrade_s")]
    pub p2p_downgrade_s: u32,
    /// Which tier carries the room's audio now.
    #[serde(default)]
    pub mode: crate::signal::RoomMode,
    pub participants: usize,
    /// Created by a join (`--dev`, `--auto-create-rooms`), not by `room.create`.
    pub auto_created: bool,
    /// The shard keeping the roster.
    pub home_shard: usize,
    /// In a cluster: the number of the node keeping the room (`node.list`'s `index`;
    /// absent on a node alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_node: Option<u16>,
}

/// A participant as `participant.*` and events return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantDetails {
    pub participant_id: ParticipantId,
    pub room: RoomId,
    /// The token's `sub`; absent for `--dev` joins without a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    pub name: DisplayName,
    /// Muted by the client itself.
    pub muted: bool,
    /// Muted by `participant.mute`.
    pub server_muted: bool,
    pub deafened: bool,
    pub publish: bool,
    pub subscribe: bool,
    /// A priority speaker: while speaking it takes a slot at every listener ahead of
    /// loudest-N. Absent from nodes older than the grant: false.
    #[serde(default)]
    pub priority: bool,
    /// Whom its audio goes to while it whispers; `None`: everyone.
    #[serde(default)]
    pub whisper_to: Option<Vec<ParticipantId>>,
    /// What it may publish from, with `publish` (`microphone`, `camera`, `screen`).
    #[serde(default = "all_sources")]
    pub sources: Vec<crate::signal::Source>,
    /// It sends camera video.
    #[serde(default)]
    pub camera: bool,
    /// It shares its screen.
    #[serde(default)]
    pub screen: bool,
    /// It joined able to carry the call peer to peer (`join` with `p2p`).
    #[serde(default)]
    pub p2p: bool,
    pub csrc: u32,
    /// The shard holding its media.
    pub shard: usize,
}

/// `token.create`'s result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenCreated {
    pub token: String,
    /// Unix seconds.
    pub expires_at: u64,
    /// The node's STUN and TURN servers, TURN with credentials for the token's identity
    /// (its clients get their own in `joined`); empty when the node has none.
    #[serde(default)]
    pub ice_servers: Vec<crate::signal::IceServer>,
}

/// One shard's part of `node.stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardReport {
    pub shard: usize,
    /// Participants whose media is on this shard.
    pub participants: usize,
    /// Rooms whose roster this shard keeps.
    pub rooms: usize,
    /// Counters by name (packets, bytes, drops by reason), since start.
    pub counters: BTreeMap<String, u64>,
}

/// `node.stats`'s result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    pub rooms: usize,
    pub participants: usize,
    pub draining: bool,
    pub uptime_s: u64,
    /// Sums of the shards' counters.
    pub totals: BTreeMap<String, u64>,
    /// The driver's own drops (hand-off ring, control queue, socket send).
    pub driver: BTreeMap<String, u64>,
    pub shards: Vec<ShardReport>,
}

/// One entry of `node.list`'s result: a live node of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its number in the cluster (1–255; in participant ids and CSRCs).
    pub index: u16,
    /// Its id in the directory (random, per run).
    pub id: String,
    /// The signaling URL clients are sent to.
    pub url: String,
    /// Its relay address (between nodes only).
    pub relay: String,
    pub participants: u64,
    /// Share of its cores in use, 0 to 1.
    pub cpu: f32,
    pub draining: bool,
    /// The node that answered.
    #[serde(rename = "self")]
    pub this: bool,
}

// ---- events ------------------------------------------------------------------

/// Every event type, as `events.subscribe {types}` names them.
pub const EVENT_TYPES: &[&str] = &[
    "room_created",
    "room_closed",
    "participant_joined",
    "participant_left",
    "participant_updated",
    "speaking_started",
    "speaking_stopped",
    "quality",
    "spam_detected",
    "track_published",
    "track_unpublished",
    "mode_changed",
    "events_lost",
];

fn default_p2p_downgrade_s() -> u32 {
    DEFAULT_P2P_DOWNGRADE_S
}

/// What happened on the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeEvent {
    RoomCreated {
        room: RoomId,
        kind: RoomKind,
        auto_created: bool,
    },
    /// `reason`: `"deleted"` (or `room.delete`'s reason), `"empty_timeout"`,
    /// `"empty"` (an auto-created room's last member left), `"node_draining"`.
    RoomClosed { room: RoomId, reason: String },
    ParticipantJoined {
        room: RoomId,
        participant: ParticipantDetails,
    },
    /// `reason`: `"left"`, `"timeout"`, `"kicked"`, `"room_closed"`, `"failed"`.
    ParticipantLeft {
        room: RoomId,
        participant_id: ParticipantId,
        reason: String,
    },
    /// Mute, server mute, deafen or permissions changed.
    ParticipantUpdated {
        room: RoomId,
        participant: ParticipantDetails,
    },
    SpeakingStarted {
        room: RoomId,
        participant_id: ParticipantId,
    },
    SpeakingStopped {
        room: RoomId,
        participant_id: ParticipantId,
    },
    /// Every few seconds per connected participant, from RTCP and the node's counts.
    Quality {
        room: RoomId,
        participant_id: ParticipantId,
        /// Fraction (0..1) of the participant's packets lost on the way in.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        loss_in: Option<f32>,
        /// Fraction (0..1) lost on the way to it, from its receiver reports.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        loss_out: Option<f32>,
        /// Interarrival jitter of its microphone stream, in milliseconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        jitter_ms: Option<f32>,
        /// Round-trip time, in milliseconds (RTCP, else ICE consent checks).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rtt_ms: Option<f32>,
        /// Bits per second received from it, and sent to it, over the last period.
        bitrate_in: u64,
        bitrate_out: u64,
    },
    /// The mic-spam guard flagged a speaker: `reason` `"loud"` (pinned near full scale,
    /// ≥ -6 dBov for ≥ 80 % of 4 s) or `"continuous"` (sound without a pause for over
    /// 120 s); `level` the mean linear level (0..1) of its last 4 s. Once per episode.
    SpamDetected {
        room: RoomId,
        participant_id: ParticipantId,
        reason: String,
        level: f32,
    },
    /// A participant started sending video from `source` (`"camera"`, `"screen"`).
    TrackPublished {
        room: RoomId,
        participant_id: ParticipantId,
        source: crate::signal::Source,
    },
    /// It stopped (or left while sending).
    TrackUnpublished {
        room: RoomId,
        participant_id: ParticipantId,
        source: crate::signal::Source,
    },
    /// The room's audio moved to the other tier (`mode` `"p2p"` or `"sfu"`).
    ModeChanged {
        room: RoomId,
        mode: crate::signal::RoomMode,
        reason: crate::signal::ModeReason,
    },
    /// This subscriber fell behind and `count` events were dropped for it.
    EventsLost { count: u64 },
}

impl NodeEvent {
    /// The `type` of this event.
    pub fn kind(&self) -> &'static str {
        match self {
            NodeEvent::RoomCreated { .. } => "room_created",
            NodeEvent::RoomClosed { .. } => "room_closed",
            NodeEvent::ParticipantJoined { .. } => "participant_joined",
            NodeEvent::ParticipantLeft { .. } => "participant_left",
            NodeEvent::ParticipantUpdated { .. } => "participant_updated",
            NodeEvent::SpeakingStarted { .. } => "speaking_started",
            NodeEvent::SpeakingStopped { .. } => "speaking_stopped",
            NodeEvent::Quality { .. } => "quality",
            NodeEvent::SpamDetected { .. } => "spam_detected",
            NodeEvent::TrackPublished { .. } => "track_published",
            NodeEvent::TrackUnpublished { .. } => "track_unpublished",
            NodeEvent::ModeChanged { .. } => "mode_changed",
            NodeEvent::EventsLost { .. } => "events_lost",
        }
    }

    /// The room it is about, if any.
    pub fn room(&self) -> Option<&RoomId> {
        match self {
            NodeEvent::RoomCreated { room, .. }
            | NodeEvent::RoomClosed { room, .. }
            | NodeEvent::ParticipantJoined { room, .. }
            | NodeEvent::ParticipantLeft { room, .. }
            | NodeEvent::ParticipantUpdated { room, .. }
            | NodeEvent::SpeakingStarted { room, .. }
            | NodeEvent::SpeakingStopped { room, .. }
            | NodeEvent::Quality { room, .. }
            | NodeEvent::SpamDetected { room, .. }
            | NodeEvent::TrackPublished { room, .. }
            | NodeEvent::TrackUnpublished { room, .. }
            | NodeEvent::ModeChanged { room, .. } => Some(room),
            NodeEvent::EventsLost { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn call(line: &str) -> Result<Call, RpcError> {
        let r = Request::decode(line).map_err(|(_, e)| e)?;
        Call::decode(&r.method, r.params)
    }

    #[test]
    fn decodes_every_method() {
        let lines = [
            r#"{"jsonrpc":"2.0","id":1,"method":"room.create","params":{"room":"g1","kind":"raid","metadata":"{}"}}"#,
            r#"{"jsonrpc":"2.0","id":"a","method":"room.get","params":{"room":"g1"}}"#,
            r#"{"jsonrpc":"2.0","id":2,"method":"room.list"}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"room.update","params":{"room":"g1","max_participants":5}}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"room.delete","params":{"room":"g1","reason":"over"}}"#,
            r#"{"jsonrpc":"2.0","id":5,"method":"participant.list","params":{"room":"g1"}}"#,
            r#"{"jsonrpc":"2.0","id":6,"method":"participant.get","params":{"room":"g1","participant_id":"p1f"}}"#,
            r#"{"jsonrpc":"2.0","id":7,"method":"participant.kick","params":{"room":"g1","participant_id":"p1f","reason":"spam"}}"#,
            r#"{"jsonrpc":"2.0","id":8,"method":"participant.mute","params":{"room":"g1","participant_id":"p1f","muted":true}}"#,
            r#"{"jsonrpc":"2.0","id":9,"method":"participant.set_permissions","params":{"room":"g1","participant_id":"p1f","publish":false,"subscribe":true}}"#,
            r#"{"jsonrpc":"2.0","id":9,"method":"participant.set_whisper","params":{"room":"g1","participant_id":"p1f","to":["p20"]}}"#,
            r#"{"jsonrpc":"2.0","id":9,"method":"room.set_positions","params":{"room":"g1","positions":{"p1f":[1,2.5,-3],"p20":[0,0,0]}}}"#,
            r#"{"jsonrpc":"2.0","id":10,"method":"token.create","params":{"room":"g1","identity":"u1","name":"Ann","ttl_s":60,"admin":true}}"#,
            r#"{"jsonrpc":"2.0","id":11,"method":"events.subscribe","params":{"types":["quality"]}}"#,
            r#"{"jsonrpc":"2.0","id":12,"method":"node.stats","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":13,"method":"node.drain","params":{"deadline_s":5}}"#,
            r#"{"jsonrpc":"2.0","id":14,"method":"node.list"}"#,
        ];
        let mut seen = Vec::new();
        for l in lines {
            let c = call(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            seen.push(c.method());
        }
        assert_eq!(seen, METHODS);
    }

    #[test]
    fn proximity_and_positions_are_checked() {
        let create = |p: &str| {
            call(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"room.create","params":{{"room":"w","proximity":{p}}}}}"#
            ))
        };
        match create(r#"{"radius":30}"#).unwrap() {
            Call::RoomCreate(c) => assert_eq!(
                c.proximity,
                Some(Proximity {
                    radius: 30.0,
                    positions: PositionSource::Backend
                })
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(create("null").unwrap(), Call::RoomCreate(c) if c.proximity.is_none()));
        for bad in [
            r#"{"radius":0}"#,
            r#"{"radius":-1}"#,
            r#"{"radius":1e10}"#,
            r#"{"radius":5,"positions":"gps"}"#,
            r#"{"radius":5,"height":2}"#,
            r#"{}"#,
        ] {
            assert_eq!(create(bad).unwrap_err().code, -32602, "{bad}");
        }
        let update = |p: &str| {
            call(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"room.update","params":{{"room":"w"{p}}}}}"#
            ))
        };
        let proximity = |c: Call| match c {
            Call::RoomUpdate(u) => u.proximity,
            other => panic!("{other:?}"),
        };
        assert_eq!(proximity(update("").unwrap()), None, "absent: unchanged");
        assert_eq!(
            proximity(update(r#","proximity":null"#).unwrap()),
            Some(None),
            "null: off"
        );
        assert_eq!(
            proximity(update(r#","proximity":{"radius":2,"positions":"client"}"#).unwrap()),
            Some(Some(Proximity {
                radius: 2.0,
                positions: PositionSource::Client
            }))
        );
        let positions = |p: &str| {
            call(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"room.set_positions","params":{{"room":"w","positions":{p}}}}}"#
            ))
        };
        for bad in [
            r#"{"p1":[1,2]}"#,
            r#"{"p1":[1,2,3,4]}"#,
            r#"{"p1":[1,2,2e9]}"#,
            r#"{"p1":["1",2,3]}"#,
            r#"{"bob":[1,2,3]}"#,
            r#"[[1,2,3]]"#,
        ] {
            assert_eq!(positions(bad).unwrap_err().code, -32602, "{bad}");
        }
        let guard = |g: &str| {
            call(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"room.create","params":{{"room":"w","spam_guard":{g}}}}}"#
            ))
        };
        match guard(r#"{"action":"mute","continuous_s":30}"#).unwrap() {
            Call::RoomCreate(c) => assert_eq!(
                c.spam_guard,
                Some(SpamGuard {
                    action: SpamAction::Mute,
                    continuous_s: 30,
                    ..SpamGuard::default()
                })
            ),
            other => panic!("{other:?}"),
        }
        for bad in [
            r#"{"loud_dbov":3}"#,
            r#"{"loud_percent":0}"#,
            r#"{"loud_window_s":61}"#,
            r#"{"continuous_s":0}"#,
        ] {
            assert_eq!(guard(bad).unwrap_err().code, -32602, "{bad}");
        }
    }

    #[test]
    fn errors_have_stable_codes() {
        let code = |l: &str| call(l).unwrap_err().code;
        assert_eq!(code("nope"), -32700);
        assert_eq!(code("[1,2]"), -32600);
        assert_eq!(
            code(r#"{"jsonrpc":"1.0","id":1,"method":"room.list"}"#),
            -32600
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":{},"method":"room.list"}"#),
            -32600
        );
        assert_eq!(code(r#"{"jsonrpc":"2.0","id":1,"method":7}"#), -32600);
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"room.list","params":[1]}"#),
            -32600
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"room.nuke"}"#),
            -32601
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"room.get","params":{}}"#),
            -32602
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"room.get","params":{"room":"bad room"}}"#),
            -32602
        );
        assert_eq!(
            code(
                r#"{"jsonrpc":"2.0","id":1,"method":"room.create","params":{"room":"r","audio_slots":0}}"#
            ),
            -32602
        );
        assert_eq!(
            code(
                r#"{"jsonrpc":"2.0","id":1,"method":"room.create","params":{"room":"r","kind":"arena"}}"#
            ),
            -32602
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"room.get","params":{"room":"r","extra":1}}"#),
            -32602
        );
        assert_eq!(
            code(
                r#"{"jsonrpc":"2.0","id":1,"method":"token.create","params":{"room":"r","identity":"u","ttl_s":0}}"#
            ),
            -32602
        );
        assert_eq!(
            code(
                r#"{"jsonrpc":"2.0","id":1,"method":"events.subscribe","params":{"types":["x"]}}"#
            ),
            -32602
        );
        let e = call(r#"{"jsonrpc":"2.0","id":1,"method":"room.nuke"}"#).unwrap_err();
        assert_eq!(e.kind(), Some(ErrorCode::MethodNotFound));
        assert_eq!(e.data.unwrap()["name"], "method_not_found");
    }

    #[test]
    fn keeps_the_id_for_the_error_answer() {
        let (id, e) = Request::decode(r#"{"jsonrpc":"2.0","id":"x7","method":5}"#).unwrap_err();
        assert_eq!(id, Value::from("x7"));
        assert_eq!(e.code, -32600);
    }

    #[test]
    fn events_have_the_documented_shape() {
        let e = NodeEvent::SpeakingStarted {
            room: RoomId::new("g").unwrap(),
            participant_id: ParticipantId(0x1f),
        };
        let line = Notification::event(e.clone()).to_line();
        assert_eq!(
            line,
            r#"{"jsonrpc":"2.0","method":"event","params":{"type":"speaking_started","room":"g","participant_id":"p1f"}}"#
        );
        let back: Notification = serde_json::from_str(&line).unwrap();
        assert_eq!(back.params, e);
        for t in EVENT_TYPES {
            assert!(!t.is_empty());
        }
    }

    #[test]
    fn kinds_have_sane_defaults() {
        for k in [
            RoomKind::Guild,
            RoomKind::Party,
            RoomKind::Public,
            RoomKind::Private,
            RoomKind::Raid,
        ] {
            let d = k.defaults();
            assert!(d.max_participants > 1 && d.max_participants <= MAX_ROOM_CAPACITY);
            assert!(d.audio_slots >= 1 && d.audio_slots <= MAX_ROOM_AUDIO_SLOTS);
        }
        assert!(
            RoomKind::Party.defaults().max_participants
                < RoomKind::Raid.defaults().max_participants
        );
    }
}
