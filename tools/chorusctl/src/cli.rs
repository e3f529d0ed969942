//! The command line: what each command sends (method and params, as in
//! `chorus_protocol::control`) and how its result is shown.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chorus_protocol::control::{
    self, EventsSubscribe, NodeDrain, NodeStats, ParticipantDetails, ParticipantKick,
    ParticipantMute, ParticipantRef, ParticipantSetPermissions, ParticipantSetWhisper,
    PositionSource, Proximity, RoomCreate, RoomDelete, RoomInfo, RoomKind, RoomRef,
    RoomSetPositions, RoomUpdate, SpamAction, SpamGuard, TokenCreate, TokenCreated, EVENT_TYPES,
    MAX_IDENTITY_BYTES, MAX_ROOM_AUDIO_SLOTS, MAX_ROOM_CAPACITY, MAX_ROOM_VIDEO_SLOTS, MAX_TTL_S,
};
use chorus_protocol::signal::{DisplayName, ParticipantId, RoomId, Source};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{ArgGroup, Args, Parser, Subcommand};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::client::{self, Client};
use crate::format;

const KINDS: [RoomKind; 5] = [
    RoomKind::Guild,
    RoomKind::Party,
    RoomKind::Public,
    RoomKind::Private,
    RoomKind::Raid,
];

/// The command line over a Chorus node's control socket.
#[derive(Debug, Parser)]
#[command(name = "chorusctl", version, about, long_about = LONG_ABOUT)]
pub struct Cli {
    /// The node's control socket [default: $XDG_RUNTIME_DIR/chorus/control.sock, else
    /// /tmp/chorus/control.sock]
    #[arg(long, global = true, env = "CHORUS_CONTROL", value_name = "PATH", help_heading = GLOBAL)]
    pub socket: Option<PathBuf>,
    /// Print the JSON result instead of tables (events: each event's JSON on one line)
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
    /// Seconds to wait for the node's answer (0: forever)
    #[arg(
        long,
        global = true,
        value_name = "SECONDS",
        default_value_t = 30,
        help_heading = GLOBAL
    )]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: Command,
}

const GLOBAL: &str = "Global options";

const LONG_ABOUT: &str = "\
The command line over a Chorus node's control socket: JSON-RPC 2.0, one JSON object \
per line (docs/control.md). The node opens the socket when started with --control.

Exit status: 0 done, 1 the node answered with an error (or an unreadable answer), \
2 usage error, 3 the socket could not be connected to.";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, show, change and delete rooms
    #[command(subcommand)]
    Room(RoomCommand),
    /// Show, kick, mute and set the permissions of participants
    #[command(subcommand)]
    Participant(ParticipantCommand),
    /// Make join tokens
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print the node's events as they happen, until the node closes the connection
    /// (or Ctrl-C). Times are when received, in UTC
    Events {
        /// Only events of this type (repeat, or separate with commas)
        #[arg(long = "type", value_name = "TYPE", value_delimiter = ',',
              value_parser = PossibleValuesParser::new(EVENT_TYPES))]
        types: Vec<String>,
        /// Only this room's events
        #[arg(long, value_name = "ROOM", value_parser = room_id)]
        room: Option<RoomId>,
    },
    /// The node as a whole
    #[command(subcommand)]
    Node(NodeCommand),
    /// Call any method with PARAMS_JSON (an object) and print the result as JSON
    Call {
        /// The method, e.g. room.list
        method: String,
        /// The params, a JSON object (default {})
        #[arg(value_name = "PARAMS_JSON", value_parser = json_object)]
        params: Option<Value>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RoomCommand {
    /// Create a room; settings not given take its kind's defaults
    #[command(after_help = kind_defaults())]
    Create {
        /// The room's name (1 to 64 of A-Z a-z 0-9 _ - . :)
        #[arg(value_parser = room_id)]
        room: RoomId,
        /// What the room is for [default: public]
        #[arg(long, value_parser = kind_parser())]
        kind: Option<RoomKind>,
        /// In a cluster: members may join at any node, and the room spans them
        /// [default: true for raid rooms]
        #[arg(long)]
        span: Option<bool>,
        #[command(flatten)]
        settings: RoomSettings,
    },
    /// Show a room
    Get {
        /// The room's name (1 to 64 of A-Z a-z 0-9 _ - . :)
        #[arg(value_parser = room_id)]
        room: RoomId,
    },
    /// List the rooms
    List,
    /// Change a room's settings (audio slots apply to joins after the change)
    #[command(group(ArgGroup::new("changes").required(true).multiple(true)
        .args(["max_participants", "audio_slots", "video_slots", "empty_timeout", "metadata", "whisper",
               "spam_action", "spam_loud_dbov", "spam_loud_percent", "spam_loud_window",
               "spam_continuous", "proximity", "p2p_max", "p2p_downgrade"])))]
    Update {
        /// The room's name (1 to 64 of A-Z a-z 0-9 _ - . :)
        #[arg(value_parser = room_id)]
        room: RoomId,
        #[command(flatten)]
        settings: RoomSettings,
    },
    /// Set participants' positions in a proximity room (room.set_positions)
    Positions {
        /// The room's name (1 to 64 of A-Z a-z 0-9 _ - . :)
        #[arg(value_parser = room_id)]
        room: RoomId,
        /// ID=X,Y,Z (repeatable), e.g. p1f=10,0,-4.5
        #[arg(required = true, value_name = "ID=X,Y,Z", value_parser = position)]
        positions: Vec<(ParticipantId, [f64; 3])>,
    },
    /// Delete a room: its members get room_closed with the reason, and leave
    Delete {
        /// The room's name (1 to 64 of A-Z a-z 0-9 _ - . :)
        #[arg(value_parser = room_id)]
        room: RoomId,
        /// Told to the members [default: deleted]
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct RoomSettings {
    /// Most participants at once
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=MAX_ROOM_CAPACITY as u64))]
    max_participants: Option<u64>,
    /// Speakers forwarded at once
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u8).range(1..=i64::from(MAX_ROOM_AUDIO_SLOTS)))]
    audio_slots: Option<u8>,
    /// Video slots per client (0: no video)
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u8).range(0..=i64::from(MAX_ROOM_VIDEO_SLOTS)))]
    video_slots: Option<u8>,
    /// Seconds the room may stay empty before it is closed (0: never)
    #[arg(long, value_name = "SECONDS")]
    empty_timeout: Option<u64>,
    /// Free text for the backend, never sent to clients
    #[arg(long, value_name = "TEXT")]
    metadata: Option<String>,
    /// May clients whisper [default: true for guild, party and raid rooms]
    #[arg(long, value_name = "true|false")]
    whisper: Option<bool>,
    /// What the mic-spam guard does with a flagged speaker: report it (event), or
    /// report and server-mute it (mute) [default: event]
    #[arg(long, value_name = "event|mute", value_parser = ["event", "mute"])]
    spam_action: Option<String>,
    /// Spam guard: a speaker at or above this level (dBov) counts as pinned
    /// [default: -6]. Any --spam-* option sets the whole guard (others: defaults)
    #[arg(long, value_name = "DBOV", allow_negative_numbers = true,
          value_parser = clap::value_parser!(i8).range(-127..=0))]
    spam_loud_dbov: Option<i8>,
    /// Spam guard: share of the window pinned to flag a speaker [default: 80]
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=100))]
    spam_loud_percent: Option<u8>,
    /// Spam guard: the window for --spam-loud-percent, seconds [default: 4]
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(1..=60))]
    spam_loud_window: Option<u32>,
    /// Spam guard: sound without a pause for longer than this is flagged, seconds
    /// [default: 120]
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(1..=3600))]
    spam_continuous: Option<u32>,
    /// Proximity voice: listeners hear speakers within this many world units; "off"
    /// turns it off [default: off]
    #[arg(long, value_name = "RADIUS|off", value_parser = proximity_radius)]
    proximity: Option<ProximityArg>,
    /// Most members the room carries peer to peer, 0 to 4 (0: never) [default: 2 for
    /// private rooms, else 0]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=4))]
    p2p_max: Option<u8>,
    /// Seconds a room must stay within --p2p-max before it goes back to p2p [default: 10]
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(1..=3600))]
    p2p_downgrade: Option<u32>,
    /// Where a proximity room's positions come from [default: backend]
    #[arg(long, value_name = "backend|client", value_parser = ["backend", "client"],
          requires = "proximity")]
    positions: Option<String>,
}

impl RoomSettings {
    fn spam_guard(&self) -> Option<SpamGuard> {
        let given = self.spam_action.is_some()
            || self.spam_loud_dbov.is_some()
            || self.spam_loud_percent.is_some()
            || self.spam_loud_window.is_some()
            || self.spam_continuous.is_some();
        if !given {
            return None;
        }
        let d = SpamGuard::default();
        Some(SpamGuard {
            action: match self.spam_action.as_deref() {
                Some("mute") => SpamAction::Mute,
                _ => SpamAction::Event,
            },
            loud_dbov: self.spam_loud_dbov.unwrap_or(d.loud_dbov),
            loud_percent: self.spam_loud_percent.unwrap_or(d.loud_percent),
            loud_window_s: self.spam_loud_window.unwrap_or(d.loud_window_s),
            continuous_s: self.spam_continuous.unwrap_or(d.continuous_s),
        })
    }

    /// `Some(None)`: turn proximity off.
    fn proximity(&self) -> Option<Option<Proximity>> {
        let ProximityArg(radius) = self.proximity?;
        Some(radius.map(|radius| Proximity {
            radius,
            positions: match self.positions.as_deref() {
                Some("client") => PositionSource::Client,
                _ => PositionSource::Backend,
            },
        }))
    }
}

/// `--proximity`: a radius, or `None` for "off".
#[derive(Debug, Clone, Copy)]
struct ProximityArg(Option<f64>);

fn proximity_radius(s: &str) -> Result<ProximityArg, String> {
    if s == "off" {
        return Ok(ProximityArg(None));
    }
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= control::MAX_COORDINATE => {
            Ok(ProximityArg(Some(r)))
        }
        _ => Err(format!(
            "expected a radius in (0, {:e}] or \"off\"",
            control::MAX_COORDINATE
        )),
    }
}

fn position(s: &str) -> Result<(ParticipantId, [f64; 3]), String> {
    let (id, at) = s
        .split_once('=')
        .ok_or_else(|| format!("expected ID=X,Y,Z, got {s:?}"))?;
    let id = id
        .parse::<ParticipantId>()
        .map_err(|e| format!("{id:?}: {e}"))?;
    let coords: Vec<f64> = at
        .split(',')
        .map(|c| c.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{at:?}: {e}"))?;
    let at: [f64; 3] = coords
        .try_into()
        .map_err(|_| format!("{at:?}: expected 3 coordinates"))?;
    if !control::is_position(&at) {
        return Err(format!(
            "{s:?}: coordinates must be finite and at most {:e}",
            control::MAX_COORDINATE
        ));
    }
    Ok((id, at))
}

#[derive(Debug, Subcommand)]
pub enum ParticipantCommand {
    /// List a room's participants
    List {
        /// The room's name (1 to 64 of A-Z a-z 0-9 _ - . :)
        #[arg(value_parser = room_id)]
        room: RoomId,
    },
    /// Show a participant
    Get(Target),
    /// Send a participant's audio only to these participants (no --to: to everyone again)
    Whisper {
        #[command(flatten)]
        target: Target,
        /// A participant to whisper to (repeatable)
        #[arg(long, value_name = "ID")]
        to: Vec<ParticipantId>,
    },
    /// Disconnect a participant (its client is told the reason)
    Kick {
        #[command(flatten)]
        target: Target,
        /// Told to the client [default: kicked]
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Server-mute a participant (its client cannot lift it)
    Mute(Target),
    /// Lift a server mute
    Unmute(Target),
    /// Allow or forbid publishing and subscribing, make it a priority speaker or not;
    /// those not given stay as they are
    #[command(group(ArgGroup::new("grants").required(true).multiple(true)
        .args(["publish", "subscribe", "priority", "sources"])))]
    Permissions {
        #[command(flatten)]
        target: Target,
        /// May it send audio
        #[arg(long, value_name = "true|false")]
        publish: Option<bool>,
        /// May it receive audio
        #[arg(long, value_name = "true|false")]
        subscribe: Option<bool>,
        /// Is it a priority speaker (heard by everyone while speaking)
        #[arg(long, value_name = "true|false")]
        priority: Option<bool>,
        /// What it may publish from: microphone, camera, screen (comma-separated;
        /// `none` for none)
        #[arg(long, value_name = "LIST", value_parser = sources)]
        sources: Option<Sources>,
    },
}

#[derive(Debug, Args)]
pub struct Target {
    /// The room's name
    #[arg(value_parser = room_id)]
    room: RoomId,
    /// As the node names it, e.g. p1f
    participant_id: ParticipantId,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a join token for a room (needs the node's token secret); prints the token
    Create {
        /// The room's name (1 to 64 of A-Z a-z 0-9 _ - . :)
        #[arg(value_parser = room_id)]
        room: RoomId,
        /// Who it is for (the token's sub)
        #[arg(value_parser = identity)]
        identity: String,
        /// The display name it joins with
        #[arg(long, value_parser = display_name)]
        name: Option<DisplayName>,
        /// Seconds it is valid for
        #[arg(long, value_name = "SECONDS", default_value_t = 3600,
              value_parser = clap::value_parser!(u64).range(1..=MAX_TTL_S))]
        ttl: u64,
        /// May it send audio [default: true]
        #[arg(long, value_name = "true|false")]
        publish: Option<bool>,
        /// May it receive audio [default: true]
        #[arg(long, value_name = "true|false")]
        subscribe: Option<bool>,
        /// Grant admin
        #[arg(long)]
        admin: bool,
        /// Grant priority: heard by everyone while speaking, ahead of loudest-N
        #[arg(long)]
        priority: bool,
        /// What it may publish from: microphone, camera, screen (comma-separated;
        /// `none` for none) [default: all three]
        #[arg(long, value_name = "LIST", value_parser = sources)]
        sources: Option<Sources>,
    },
}

/// A `--sources` list (its own type: clap reads a `Vec` as a repeated flag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources(pub Vec<Source>);

/// `microphone,camera` or `none`: each source once, in the order given.
fn sources(s: &str) -> Result<Sources, String> {
    if s == "none" {
        return Ok(Sources(Vec::new()));
    }
    let mut list = Vec::new();
    for name in s.split(',').map(str::trim) {
        let source = match name {
            "microphone" => Source::Microphone,
            "camera" => Source::Camera,
            "screen" => Source::Screen,
            other => {
                return Err(format!(
                    "{other:?}: expected microphone, camera, screen (comma-separated) or none"
                ))
            }
        };
        if !list.contains(&source) {
            list.push(source);
        }
    }
    Ok(Sources(list))
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Counters: the node's totals and each shard's
    Stats,
    /// The nodes of the cluster (empty for a node alone)
    List,
    /// Refuse new joins, close the rooms left at the deadline, then exit
    Drain {
        /// Seconds until the rooms left are closed [default: the node's --drain-timeout]
        #[arg(long, value_name = "SECONDS",
              value_parser = clap::value_parser!(u64).range(0..=86_400))]
        deadline: Option<u64>,
    },
}

fn room_id(s: &str) -> Result<RoomId, String> {
    RoomId::new(s).map_err(str::to_owned)
}

fn display_name(s: &str) -> Result<DisplayName, String> {
    DisplayName::new(s).map_err(str::to_owned)
}

fn identity(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > MAX_IDENTITY_BYTES {
        return Err(format!("identity must be 1..={MAX_IDENTITY_BYTES} bytes"));
    }
    Ok(s.to_owned())
}

fn json_object(s: &str) -> Result<Value, String> {
    match serde_json::from_str(s) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err("params must be a JSON object, e.g. '{\"room\":\"g1\"}'".to_owned()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

fn kind_parser() -> impl TypedValueParser<Value = RoomKind> {
    PossibleValuesParser::new(KINDS.map(RoomKind::as_str)).map(|s| {
        KINDS
            .into_iter()
            .find(|k| k.as_str() == s)
            .unwrap_or_default()
    })
}

fn kind_defaults() -> String {
    let mut s = String::from(
        "Kinds and their defaults (max participants, audio slots, video slots, empty timeout):\n",
    );
    for k in KINDS {
        let d = k.defaults();
        s.push_str(&format!(
            "  {:<8} {:>5}  {:>2}  {:>2}  {}\n",
            k.as_str(),
            d.max_participants,
            d.audio_slots,
            d.video_slots,
            format::empty_timeout(d.empty_timeout_s)
        ));
    }
    s
}

/// A params object from one of the protocol's param types, absent fields left out.
fn params<T: Serialize>(p: &T) -> Value {
    match serde_json::to_value(p) {
        Ok(Value::Object(mut o)) => {
            o.retain(|_, v| !v.is_null());
            Value::Object(o)
        }
        // The param types are structs of plain fields: they always serialize to objects.
        _ => Value::Object(Default::default()),
    }
}

impl Command {
    /// The method and params this command sends.
    pub fn request(&self) -> (String, Value) {
        let (method, params) = match self {
            Command::Room(c) => match c {
                RoomCommand::Create {
                    room,
                    kind,
                    span,
                    settings: s,
                } => (
                    "room.create",
                    params(&RoomCreate {
                        room: room.clone(),
                        kind: *kind,
                        max_participants: s.max_participants.map(|n| n as usize),
                        audio_slots: s.audio_slots,
                        video_slots: s.video_slots,
                        empty_timeout_s: s.empty_timeout,
                        metadata: s.metadata.clone(),
                        whisper: s.whisper,
                        spam_guard: s.spam_guard(),
                        proximity: s.proximity().flatten(),
                        p2p_max: s.p2p_max,
                        p2p_downgrade_s: s.p2p_downgrade,
                        span: *span,
                    }),
                ),
                RoomCommand::Get { room } => ("room.get", params(&RoomRef { room: room.clone() })),
                RoomCommand::List => ("room.list", Value::Object(Default::default())),
                RoomCommand::Update { room, settings: s } => {
                    let mut p = params(&RoomUpdate {
                        room: room.clone(),
                        max_participants: s.max_participants.map(|n| n as usize),
                        audio_slots: s.audio_slots,
                        video_slots: s.video_slots,
                        empty_timeout_s: s.empty_timeout,
                        metadata: s.metadata.clone(),
                        whisper: s.whisper,
                        spam_guard: s.spam_guard(),
                        proximity: s.proximity(),
                        p2p_max: s.p2p_max,
                        p2p_downgrade_s: s.p2p_downgrade,
                    });
                    // `params` leaves nulls out; this one means "off".
                    if let (Some(None), Value::Object(o)) = (s.proximity(), &mut p) {
                        o.insert("proximity".into(), Value::Null);
                    }
                    ("room.update", p)
                }
                RoomCommand::Positions { room, positions } => (
                    "room.set_positions",
                    params(&RoomSetPositions {
                        room: room.clone(),
                        positions: positions.iter().copied().collect(),
                    }),
                ),
                RoomCommand::Delete { room, reason } => (
                    "room.delete",
                    params(&RoomDelete {
                        room: room.clone(),
                        reason: reason.clone(),
                    }),
                ),
            },
            Command::Participant(c) => match c {
                ParticipantCommand::List { room } => {
                    ("participant.list", params(&RoomRef { room: room.clone() }))
                }
                ParticipantCommand::Get(t) => ("participant.get", params(&t.reference())),
                ParticipantCommand::Kick { target: t, reason } => (
                    "participant.kick",
                    params(&ParticipantKick {
                        room: t.room.clone(),
                        participant_id: t.participant_id,
                        reason: reason.clone(),
                    }),
                ),
                ParticipantCommand::Whisper { target: t, to } => (
                    "participant.set_whisper",
                    params(&ParticipantSetWhisper {
                        room: t.room.clone(),
                        participant_id: t.participant_id,
                        to: (!to.is_empty()).then(|| to.clone()),
                    }),
                ),
                ParticipantCommand::Mute(t) => ("participant.mute", params(&t.mute(true))),
                ParticipantCommand::Unmute(t) => ("participant.mute", params(&t.mute(false))),
                ParticipantCommand::Permissions {
                    target: t,
                    publish,
                    subscribe,
                    priority,
                    sources,
                } => (
                    "participant.set_permissions",
                    params(&ParticipantSetPermissions {
                        room: t.room.clone(),
                        participant_id: t.participant_id,
                        publish: *publish,
                        subscribe: *subscribe,
                        priority: *priority,
                        sources: sources.as_ref().map(|s| s.0.clone()),
                    }),
                ),
            },
            Command::Token(TokenCommand::Create {
                room,
                identity,
                name,
                ttl,
                publish,
                subscribe,
                admin,
                priority,
                sources,
            }) => (
                "token.create",
                params(&TokenCreate {
                    room: room.clone(),
                    identity: identity.clone(),
                    name: name.clone(),
                    ttl_s: *ttl,
                    publish: *publish,
                    subscribe: *subscribe,
                    admin: admin.then_some(true),
                    priority: priority.then_some(true),
                    sources: sources.as_ref().map(|s| s.0.clone()),
                }),
            ),
            Command::Events { types, room } => (
                "events.subscribe",
                params(&EventsSubscribe {
                    types: (!types.is_empty()).then(|| types.clone()),
                    room: room.clone(),
                }),
            ),
            Command::Node(NodeCommand::Stats) => ("node.stats", Value::Object(Default::default())),
            Command::Node(NodeCommand::List) => ("node.list", Value::Object(Default::default())),
            Command::Node(NodeCommand::Drain { deadline }) => (
                "node.drain",
                params(&NodeDrain {
                    deadline_s: *deadline,
                }),
            ),
            Command::Call { method, params } => {
                return (
                    method.clone(),
                    params
                        .clone()
                        .unwrap_or_else(|| Value::Object(Default::default())),
                )
            }
        };
        (method.to_owned(), params)
    }

    /// What to say when a command that changes something returns nothing to show.
    fn done(&self) -> String {
        match self {
            Command::Room(RoomCommand::Create { room, .. }) => format!("room {room} created"),
            Command::Room(RoomCommand::Update { room, .. }) => format!("room {room} updated"),
            Command::Room(RoomCommand::Delete { room, .. }) => format!("room {room} deleted"),
            Command::Participant(ParticipantCommand::Kick { target: t, .. }) => {
                format!("participant {} kicked from {}", t.participant_id, t.room)
            }
            Command::Participant(ParticipantCommand::Mute(t)) => {
                format!(
                    "participant {} in {} server-muted",
                    t.participant_id, t.room
                )
            }
            Command::Participant(ParticipantCommand::Unmute(t)) => format!(
                "participant {} in {} no longer server-muted",
                t.participant_id, t.room
            ),
            Command::Participant(ParticipantCommand::Permissions { target: t, .. }) => {
                format!(
                    "participant {} in {}: permissions set",
                    t.participant_id, t.room
                )
            }
            Command::Node(NodeCommand::Drain { .. }) => "node draining".to_owned(),
            _ => "ok".to_owned(),
        }
    }
}

impl Target {
    fn reference(&self) -> ParticipantRef {
        ParticipantRef {
            room: self.room.clone(),
            participant_id: self.participant_id,
        }
    }

    fn mute(&self, muted: bool) -> ParticipantMute {
        ParticipantMute {
            room: self.room.clone(),
            participant_id: self.participant_id,
            muted,
        }
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Node(#[from] client::Error),
    /// Writing the output failed (a closed pipe is not reported).
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
}

impl Cli {
    /// The socket: `--socket`, else `$CHORUS_CONTROL`, else the protocol's default.
    pub fn socket_path(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(|| {
            control::default_socket_path(std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from))
        })
    }

    /// Runs the command: connects, calls, prints to `out` (and notes to `err`).
    pub fn run(&self, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), Failure> {
        let timeout = (self.timeout > 0).then(|| Duration::from_secs(self.timeout));
        let path = self.socket_path();
        let mut client = Client::connect(&path, timeout)?;
        let (method, params) = self.command.request();
        let result = client.request(&method, params)?;

        if let Command::Events { .. } = self.command {
            if !self.json && io::stderr().is_terminal() {
                writeln!(
                    err,
                    "chorusctl: watching {} (Ctrl-C to stop)",
                    path.display()
                )?;
            }
            for event in client.notifications() {
                let event = event?;
                if self.json {
                    writeln!(out, "{event}")?;
                } else {
                    writeln!(out, "{}", format::event_line(&event, now_unix_s()))?;
                }
                out.flush()?;
            }
            return Ok(());
        }

        if self.json || matches!(self.command, Command::Call { .. }) {
            let pretty =
                serde_json::to_string_pretty(&result).unwrap_or_else(|_| result.to_string());
            writeln!(out, "{pretty}")?;
            return Ok(());
        }

        let text =
            match &self.command {
                Command::Room(RoomCommand::List) => {
                    format::rooms(&list::<RoomInfo>(&method, result, "rooms")?)
                }
                Command::Participant(ParticipantCommand::List { .. }) => format::participants(
                    &list::<ParticipantDetails>(&method, result, "participants")?,
                ),
                Command::Node(NodeCommand::Stats) => {
                    format::node_stats(&decode::<NodeStats>(&method, result)?)
                }
                Command::Token(_) => {
                    let t = decode::<TokenCreated>(&method, result)?;
                    writeln!(err, "{}", format::token_expiry(&t, now_unix_s()))?;
                    write!(err, "{}", format::ice_servers(&t))?;
                    format!("{}\n", t.token)
                }
                Command::Node(NodeCommand::Drain { .. }) => format::drain(&result),
                other => format::single(&result, &other.done()),
            };
        out.write_all(text.as_bytes())?;
        out.flush()?;
        Ok(())
    }
}

fn now_unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn decode<T: DeserializeOwned>(method: &str, result: Value) -> Result<T, client::Error> {
    serde_json::from_value(result)
        .map_err(|e| client::Error::BadAnswer(format!("unexpected {method} result: {e}")))
}

/// A list result: the array itself, or an object holding it under `key`.
fn list<T: DeserializeOwned>(
    method: &str,
    result: Value,
    key: &str,
) -> Result<Vec<T>, client::Error> {
    let items = match result {
        Value::Object(mut o) if o.get(key).is_some_and(Value::is_array) => {
            o.remove(key).unwrap_or_default()
        }
        other => other,
    };
    decode(method, items)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::test_server::{serve, Reply};
    use chorus_protocol::control::{Call, METHODS};
    use serde_json::json;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("chorusctl").chain(args.iter().copied())).unwrap()
    }

    fn sent(args: &[&str]) -> (String, Value) {
        parse(args).command.request()
    }

    #[test]
    fn every_command_sends_params_the_node_accepts() {
        let commands: &[&[&str]] = &[
            &[
                "room",
                "create",
                "g1",
                "--kind",
                "raid",
                "--max-participants",
                "500",
                "--audio-slots",
                "6",
                "--empty-timeout",
                "0",
                "--metadata",
                "{\"x\":1}",
                "--span",
                "false",
            ],
            &["room", "get", "g1"],
            &["room", "list"],
            &["room", "update", "g1", "--audio-slots", "4"],
            &[
                "room",
                "update",
                "g1",
                "--spam-action",
                "mute",
                "--whisper",
                "false",
            ],
            &["room", "delete", "g1", "--reason", "over"],
            &["participant", "list", "g1"],
            &["participant", "get", "g1", "p1f"],
            &["participant", "kick", "g1", "p1f", "--reason", "spam"],
            &["participant", "mute", "g1", "p1f"],
            &["participant", "unmute", "g1", "p1f"],
            &[
                "participant",
                "permissions",
                "g1",
                "p1f",
                "--publish",
                "false",
            ],
            &["participant", "whisper", "g1", "p1f", "--to", "p20"],
            &["room", "positions", "g1", "p1f=1,2,3", "p20=-4.5,0,1e3"],
            &[
                "token", "create", "g1", "user-1", "--name", "Ann", "--admin",
            ],
            &[
                "events",
                "--type",
                "quality,speaking_started",
                "--room",
                "g1",
            ],
            &["node", "stats"],
            &["node", "drain", "--deadline", "30"],
            &["node", "list"],
        ];
        let mut methods = Vec::new();
        for args in commands {
            let (method, params) = sent(args);
            Call::decode(&method, Some(params.clone()))
                .unwrap_or_else(|e| panic!("{args:?}: {method} {params}: {e}"));
            methods.push(method);
        }
        methods.dedup();
        assert_eq!(methods, METHODS);
    }

    #[test]
    fn sources_lists() {
        let (_, p) = sent(&[
            "participant",
            "permissions",
            "g1",
            "p1f",
            "--sources",
            "camera,screen",
        ]);
        assert_eq!(p["sources"], json!(["camera", "screen"]));
        let (_, p) = sent(&["token", "create", "g1", "u", "--sources", "none"]);
        assert_eq!(p["sources"], json!([]));
        let (_, p) = sent(&["token", "create", "g1", "u"]);
        assert!(p.get("sources").is_none_or(Value::is_null), "{p}");
        let bad = Cli::try_parse_from([
            "chorusctl",
            "token",
            "create",
            "g1",
            "u",
            "--sources",
            "mic",
        ]);
        assert!(bad.is_err(), "a clear error for an unknown source");
    }

    #[test]
    fn proximity_and_spam_thresholds() {
        assert_eq!(
            sent(&[
                "room",
                "create",
                "w",
                "--proximity",
                "30",
                "--positions",
                "client"
            ])
            .1,
            json!({"room": "w", "proximity": {"radius": 30.0, "positions": "client"}})
        );
        assert_eq!(
            sent(&["room", "update", "w", "--proximity", "off"]).1,
            json!({"room": "w", "proximity": null})
        );
        assert_eq!(
            sent(&[
                "room",
                "update",
                "w",
                "--spam-continuous",
                "30",
                "--spam-loud-dbov",
                "-10"
            ])
            .1,
            json!({"room": "w", "spam_guard": {"action": "event", "loud_dbov": -10,
                "loud_percent": 80, "loud_window_s": 4, "continuous_s": 30}})
        );
        assert_eq!(
            sent(&["room", "positions", "w", "p1=1,2,3"]).1,
            json!({"room": "w", "positions": {"p1": [1.0, 2.0, 3.0]}})
        );
        for bad in [
            &["room", "create", "w", "--proximity", "0"][..],
            &["room", "create", "w", "--proximity", "nan"],
            &["room", "create", "w", "--positions", "client"],
            &["room", "positions", "w", "p1=1,2"],
            &["room", "positions", "w", "bob=1,2,3"],
            &["room", "positions", "w", "p1=1,2,inf"],
            &["room", "positions", "w"],
        ] {
            assert!(
                Cli::try_parse_from(std::iter::once("chorusctl").chain(bad.iter().copied()))
                    .is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn absent_options_are_left_out() {
        assert_eq!(
            sent(&["room", "create", "g1"]),
            ("room.create".into(), json!({"room": "g1"}))
        );
        assert_eq!(
            sent(&[
                "room",
                "create",
                "g1",
                "--kind",
                "party",
                "--empty-timeout",
                "60"
            ]),
            (
                "room.create".into(),
                json!({"room": "g1", "kind": "party", "empty_timeout_s": 60})
            )
        );
        assert_eq!(
            sent(&["participant", "mute", "g1", "p1f"]).1,
            json!({"room": "g1", "participant_id": "p1f", "muted": true})
        );
        assert_eq!(
            sent(&["participant", "unmute", "g1", "p1f"]).1,
            json!({"room": "g1", "participant_id": "p1f", "muted": false})
        );
        assert_eq!(
            sent(&[
                "participant",
                "permissions",
                "g1",
                "p1f",
                "--subscribe",
                "true"
            ]),
            (
                "participant.set_permissions".into(),
                json!({"room": "g1", "participant_id": "p1f", "subscribe": true})
            )
        );
        assert_eq!(
            sent(&["token", "create", "g1", "u1"]),
            (
                "token.create".into(),
                json!({"room": "g1", "identity": "u1", "ttl_s": 3600})
            )
        );
        assert_eq!(
            sent(&[
                "token",
                "create",
                "g1",
                "u1",
                "--ttl",
                "60",
                "--publish",
                "false"
            ])
            .1,
            json!({"room": "g1", "identity": "u1", "ttl_s": 60, "publish": false})
        );
        assert_eq!(sent(&["events"]), ("events.subscribe".into(), json!({})));
        assert_eq!(
            sent(&["events", "--type", "quality", "--type", "room_closed"]).1,
            json!({"types": ["quality", "room_closed"]})
        );
        assert_eq!(sent(&["node", "drain"]), ("node.drain".into(), json!({})));
        assert_eq!(
            sent(&["call", "room.list"]),
            ("room.list".into(), json!({}))
        );
        assert_eq!(
            sent(&["call", "room.nuke", r#"{"really":true}"#]),
            ("room.nuke".into(), json!({"really": true}))
        );
    }

    #[test]
    fn usage_errors_are_caught_before_connecting() {
        for args in [
            &["room", "get", "bad room"][..],
            &["room", "create", "g1", "--kind", "arena"],
            &["room", "create", "g1", "--audio-slots", "0"],
            &["room", "create", "g1", "--max-participants", "10001"],
            &["room", "update", "g1"],
            &["participant", "get", "g1", "nope"],
            &["participant", "permissions", "g1", "p1"],
            &[
                "participant",
                "permissions",
                "g1",
                "p1",
                "--publish",
                "maybe",
            ],
            &["token", "create", "g1", ""],
            &["token", "create", "g1", "u1", "--ttl", "0"],
            &["events", "--type", "everything"],
            &["node", "drain", "--deadline", "86401"],
            &["call", "room.get", "[1]"],
            &["call", "room.get", "{"],
        ] {
            let e = Cli::try_parse_from(std::iter::once("chorusctl").chain(args.iter().copied()))
                .unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn global_options_go_anywhere() {
        let cli = parse(&["room", "list", "--json", "--socket", "/x.sock"]);
        assert!(cli.json);
        assert_eq!(cli.socket_path(), PathBuf::from("/x.sock"));
    }

    #[test]
    fn the_help_lists_the_kinds_defaults() {
        assert!(
            kind_defaults().contains("party        8   7   4  60s"),
            "{}",
            kind_defaults()
        );
    }

    fn run(
        args: &[&str],
        replies: Vec<Reply>,
    ) -> (Result<(), Failure>, String, String, Vec<Value>) {
        let server = serve(replies);
        let mut full = vec!["--socket", server.path.to_str().unwrap()];
        full.extend_from_slice(args);
        let cli = parse(&full);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let result = cli.run(&mut out, &mut err);
        drop(cli);
        let requests = server.requests();
        (
            result,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
            requests,
        )
    }

    fn ok(result: Value) -> Reply {
        Reply::Lines(vec![
            json!({"jsonrpc": "2.0", "id": 1, "result": result}).to_string()
        ])
    }

    #[test]
    fn room_list_accepts_an_array_or_an_object() {
        let room = json!({"room": "g1", "kind": "party", "max_participants": 8, "audio_slots": 7,
            "empty_timeout_s": 60, "metadata": "", "participants": 2, "auto_created": false,
            "home_shard": 0});
        for result in [json!([room]), json!({"rooms": [room]})] {
            let (r, out, _, requests) = run(&["room", "list"], vec![ok(result)]);
            r.unwrap();
            assert!(out.contains("\ng1    party"), "{out}");
            assert_eq!(requests[0]["method"], "room.list");
        }
        let (r, _, _, _) = run(&["room", "list"], vec![ok(json!({"rooms": [{"room": 1}]}))]);
        let e = r.unwrap_err();
        assert!(
            e.to_string()
                .starts_with("bad answer from the node: unexpected room.list result"),
            "{e}"
        );
    }

    #[test]
    fn token_create_prints_the_bare_token() {
        let (r, out, err, _) = run(
            &["token", "create", "g1", "u1"],
            vec![ok(
                json!({"token": "eyJ.x.y", "expires_at": 4_000_000_000u64}),
            )],
        );
        r.unwrap();
        assert_eq!(out, "eyJ.x.y\n");
        assert!(
            err.starts_with("expires 2096-10-02 07:06:40 UTC (in "),
            "{err}"
        );
    }

    #[test]
    fn actions_without_a_result_say_what_was_done() {
        let (r, out, _, requests) = run(&["participant", "kick", "g1", "p1f"], vec![ok(json!({}))]);
        r.unwrap();
        assert_eq!(out, "participant p1f kicked from g1\n");
        assert_eq!(
            requests[0]["params"],
            json!({"room": "g1", "participant_id": "p1f"})
        );
    }

    #[test]
    fn json_prints_the_result_and_events_print_params_lines() {
        let (r, out, _, _) = run(
            &["--json", "node", "drain"],
            vec![ok(json!({"draining": true}))],
        );
        r.unwrap();
        assert_eq!(out, "{\n  \"draining\": true\n}\n");

        let events = Reply::lines(&[
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
            r#"{"jsonrpc":"2.0","method":"event","params":{"type":"speaking_started","room":"g1","participant_id":"p1f"}}"#,
            r#"{"jsonrpc":"2.0","method":"event","params":{"type":"room_closed","room":"g1","reason":"deleted"}}"#,
        ]);
        let (r, out, _, requests) = run(&["--json", "events", "--room", "g1"], vec![events]);
        r.unwrap();
        assert_eq!(
            out,
            "{\"participant_id\":\"p1f\",\"room\":\"g1\",\"type\":\"speaking_started\"}\n\
             {\"reason\":\"deleted\",\"room\":\"g1\",\"type\":\"room_closed\"}\n"
        );
        assert_eq!(requests[0]["params"], json!({"room": "g1"}));
    }

    #[test]
    fn events_in_human_form() {
        let events = Reply::lines(&[
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
            r#"{"jsonrpc":"2.0","method":"event","params":{"type":"speaking_started","room":"g1","participant_id":"p1f"}}"#,
        ]);
        let (r, out, _, _) = run(&["events"], vec![events]);
        r.unwrap();
        assert!(out.ends_with(" speaking_started    g1 p1f\n"), "{out}");
    }
}
