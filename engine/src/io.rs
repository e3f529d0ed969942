//! What goes into a shard besides datagrams and time, and what comes out.

use std::net::SocketAddr;

use crate::client_event::{VideoQuality, VideoSource};
use crate::report::{MemberDetails, Notice, PositionsApplied, RoomSummary, ShardCounters};
use chorus_protocol::control::{
    ParticipantKick, ParticipantMute, ParticipantRef, ParticipantSetPermissions,
    ParticipantSetWhisper, RoomCreate, RoomDelete, RoomSetPositions, RoomUpdate,
};
use chorus_protocol::signal::{DisplayName, ParticipantId, RoomId};

/// What a participant may do in its room (from its join token's grants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permissions {
    /// Its audio is forwarded. Without it, its packets are dropped (and counted).
    pub publish: bool,
    /// Audio is forwarded to it. Without it, it receives nothing.
    pub subscribe: bool,
    /// A priority speaker: while speaking it takes a slot at every listener, ahead of
    /// loudest-N, and no other speaker takes its slot while it is in conversation.
    pub priority: bool,
    /// What it may publish from, with `publish` (the grants' `sources`).
    pub sources: Sources,
}

impl Permissions {
    /// Publish (from every source) and subscribe, no priority (`--dev` joins without
    /// a token).
    pub const ALL: Permissions = Permissions {
        publish: true,
        subscribe: true,
        priority: false,
        sources: Sources::ALL,
    };

    /// Whether its microphone's audio is forwarded.
    pub fn publishes_microphone(&self) -> bool {
        self.publish && self.sources.microphone
    }
}

/// The sources a participant may publish from: its microphone now; camera and screen
/// for video (issue 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sources {
    pub microphone: bool,
    pub camera: bool,
    pub screen: bool,
}

impl Sources {
    /// All three: what grants without `sources` allow.
    pub const ALL: Sources = Sources {
        microphone: true,
        camera: true,
        screen: true,
    };

    /// The sources named in `list` (a token's or a control call's `sources`).
    pub fn from_list(list: &[chorus_protocol::signal::Source]) -> Sources {
        use chorus_protocol::signal::Source;
        Sources {
            microphone: list.contains(&Source::Microphone),
            camera: list.contains(&Source::Camera),
            screen: list.contains(&Source::Screen),
        }
    }

    /// As a list, in the order microphone, camera, screen.
    pub fn to_list(self) -> Vec<chorus_protocol::signal::Source> {
        use chorus_protocol::signal::Source;
        [
            (self.microphone, Source::Microphone),
            (self.camera, Source::Camera),
            (self.screen, Source::Screen),
        ]
        .into_iter()
        .filter_map(|(on, s)| on.then_some(s))
        .collect()
    }
}

/// An instruction about one participant, from its signaling connection.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Command {
    /// A client asks to join. The id is allocated by the caller and names the client
    /// in every later command and event.
    Join {
        participant: ParticipantId,
        room: RoomId,
        name: DisplayName,
        /// Who the join token says it is (`sub`); `None` without a token.
        identity: Option<String>,
        permissions: Permissions,
        /// It can carry the call peer to peer ([`crate::p2p`]).
        p2p: bool,
    },
    /// The client's SDP offer; answered with `answer` or `error`.
    Offer {
        participant: ParticipantId,
        sdp: String,
        /// What each `sendonly` video m-section publishes, by mid (the offer's
        /// `sources`).
        sources: Vec<(String, VideoSource)>,
    },
    /// The client starts or stops sending video from `source` (its `video` message:
    /// to the home shard, which checks the grant and tells the room).
    SetVideo {
        participant: ParticipantId,
        source: VideoSource,
        enabled: bool,
    },
    /// Video slot `slot` of the participant forwards `publisher`'s `source` at
    /// `quality` (`None` clears it): to the home shard, which checks the publisher
    /// is in the room, then to the participant's media.
    Subscribe {
        participant: ParticipantId,
        slot: u32,
        publisher: Option<ParticipantId>,
        source: VideoSource,
        quality: VideoQuality,
    },
    /// A trickled candidate. The node is ICE-lite and needs none; it is checked and
    /// otherwise ignored.
    Candidate {
        participant: ParticipantId,
        candidate: String,
    },
    SetMuted {
        participant: ParticipantId,
        muted: bool,
    },
    SetDeafened {
        participant: ParticipantId,
        deafened: bool,
    },
    /// The client left, or its signaling connection is gone.
    Leave { participant: ParticipantId },
    /// From the home shard to the media: the backend's mute.
    SetServerMuted {
        participant: ParticipantId,
        muted: bool,
    },
    /// From the home shard to the media: what the participant may do now.
    SetPermissions {
        participant: ParticipantId,
        permissions: Permissions,
    },
    /// The client's `whisper` (to its home shard, which checks it), then from the home
    /// shard to the media: its audio goes only to `to`, or to everyone (`None`).
    SetWhisper {
        participant: ParticipantId,
        to: Option<Vec<ParticipantId>>,
    },
    /// The client's `position` in a proximity room whose positions come from
    /// clients (to its home shard, which checks it and batches it with the room's).
    SetPosition {
        participant: ParticipantId,
        position: [f64; 3],
    },
    /// In a room in p2p mode: `data` (JSON text, opaque) for member `to`'s client.
    P2pSignal {
        participant: ParticipantId,
        to: ParticipantId,
        data: String,
    },
    /// In a room in p2p mode: the client's own microphone level, linear 0..1.
    Speaking {
        participant: ParticipantId,
        level: f32,
    },
    /// The client's peer connection to `peer` failed: the room leaves p2p for good.
    P2pFailed {
        participant: ParticipantId,
        peer: ParticipantId,
    },
    /// From the speaker's media shard to its home: the mic-spam guard flagged it
    /// (`reason` `"loud"` or `"continuous"`, `level` linear 0..1).
    SpamDetected {
        participant: ParticipantId,
        reason: String,
        level: f32,
    },
}

impl Command {
    /// The participant the command is about (its id names its home shard).
    pub fn participant(&self) -> ParticipantId {
        match self {
            Command::Join { participant, .. }
            | Command::Offer { participant, .. }
            | Command::SetVideo { participant, .. }
            | Command::Subscribe { participant, .. }
            | Command::Candidate { participant, .. }
            | Command::SetMuted { participant, .. }
            | Command::SetDeafened { participant, .. }
            | Command::SetServerMuted { participant, .. }
            | Command::SetPermissions { participant, .. }
            | Command::SetWhisper { participant, .. }
            | Command::SpamDetected { participant, .. }
            | Command::SetPosition { participant, .. }
            | Command::P2pSignal { participant, .. }
            | Command::Speaking { participant, .. }
            | Command::P2pFailed { participant, .. }
            | Command::Leave { participant } => *participant,
        }
    }
}

/// Why the engine let go of a participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// It asked to leave.
    Left,
    /// Its media went silent for longer than the disconnect timeout.
    Timeout,
    /// Its join was refused; an `error` message was sent first.
    Rejected,
    /// Its room was closed (deleted, or the node is draining); `room_closed` was
    /// sent first.
    RoomClosed,
    /// The backend removed it; `kicked` was sent first.
    Kicked,
}

impl CloseReason {
    /// As the `participant_left` event names it.
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseReason::Left => "left",
            CloseReason::Timeout => "timeout",
            CloseReason::Rejected => "rejected",
            CloseReason::RoomClosed => "room_closed",
            CloseReason::Kicked => "kicked",
        }
    }
}

/// Names a control request so its reply can be matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64);

/// A question or instruction from the control plane, about a room or the node.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Request {
    CreateRoom(RoomCreate),
    /// In a cluster: run a room another node is home of (with its policy), for
    /// members joining here; see `replica` in the room's policy.
    CreateReplica(RoomCreate),
    /// In a cluster: this node became the room's home; a replica of it here is the
    /// room now.
    PromoteRoom(RoomId),
    GetRoom(RoomId),
    /// Every shard answers with the rooms homed on it.
    ListRooms,
    UpdateRoom(RoomUpdate),
    DeleteRoom(RoomDelete),
    ListParticipants(RoomId),
    GetParticipant(ParticipantRef),
    Kick(ParticipantKick),
    Mute(ParticipantMute),
    SetPermissions(ParticipantSetPermissions),
    SetWhisper(ParticipantSetWhisper),
    /// Positions in a proximity room.
    SetPositions(RoomSetPositions),
    /// Every shard answers with its figures.
    Stats,
}

impl Request {
    /// The room it is about (its home shard answers); `None`: every shard answers.
    pub fn room(&self) -> Option<&RoomId> {
        match self {
            Request::CreateRoom(c) | Request::CreateReplica(c) => Some(&c.room),
            Request::GetRoom(r) | Request::ListParticipants(r) | Request::PromoteRoom(r) => Some(r),
            Request::UpdateRoom(u) => Some(&u.room),
            Request::DeleteRoom(d) => Some(&d.room),
            Request::GetParticipant(p) => Some(&p.room),
            Request::Kick(k) => Some(&k.room),
            Request::Mute(m) => Some(&m.room),
            Request::SetPermissions(s) => Some(&s.room),
            Request::SetWhisper(s) => Some(&s.room),
            Request::SetPositions(s) => Some(&s.room),
            Request::ListRooms | Request::Stats => None,
        }
    }
}

/// A shard's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Room(RoomSummary),
    Rooms(Vec<RoomSummary>),
    Participant(MemberDetails),
    Participants(Vec<MemberDetails>),
    Positions(PositionsApplied),
    Stats(ShardCounters),
}

/// Why a [`Request`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("room {0} does not exist")]
    RoomNotFound(RoomId),
    #[error("room {0} exists already")]
    RoomExists(RoomId),
    #[error("participant {participant} is not in room {room}")]
    ParticipantNotFound {
        room: RoomId,
        participant: ParticipantId,
    },
    /// Params that are well-formed but cannot apply (e.g. whispering to oneself).
    #[error("{0}")]
    Invalid(String),
}

/// Something the caller must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Tell this participant's client something (signaling maps it to the wire).
    ToClient {
        to: ParticipantId,
        event: crate::ClientEvent,
    },
    /// The participant is no longer in the engine: close its signaling connection.
    Closed {
        participant: ParticipantId,
        reason: CloseReason,
    },
    /// The answer to a [`Request`] (one per answering shard).
    Reply {
        id: RequestId,
        shard: usize,
        result: Result<Reply, RequestError>,
    },
    /// Something the control plane's event stream reports.
    Notify(Notice),
    /// In a cluster ([`crate::ShardConfig::node`] set): a member held by this node
    /// joined, changed or left; the other nodes of the room are to be told.
    Roster {
        room: chorus_protocol::signal::RoomId,
        change: crate::cluster::RosterChange,
    },
}

/// The transport a datagram travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// The node's UDP port.
    #[default]
    Udp,
    /// An ICE-TCP connection (RFC 6544, framed per RFC 4571).
    Tcp,
}

/// A datagram that arrived: what [`crate::Shard::handle_batch`] takes. The local
/// address it was sent to is the node's advertised address of the source's IP family
/// ([`crate::ShardConfig::local_for`]): the shard derives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub proto: Protocol,
    pub source: SocketAddr,
    pub contents: &'a [u8],
}

/// A datagram to send.
///
/// `contents` usually comes from the shard's buffer pool: hand it back with
/// [`crate::Shard::recycle`] once sent, so the next datagram reuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub proto: Protocol,
    /// The local address to send from (the one the peer knows us by).
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

impl Protocol {
    /// As str0m names it.
    pub(crate) fn str0m(self) -> str0m::net::Protocol {
        match self {
            Protocol::Udp => str0m::net::Protocol::Udp,
            Protocol::Tcp => str0m::net::Protocol::Tcp,
        }
    }

    /// From str0m (which also knows TLS transports the node does not offer).
    pub(crate) fn from_str0m(p: str0m::net::Protocol) -> Option<Protocol> {
        match p {
            str0m::net::Protocol::Udp => Some(Protocol::Udp),
            str0m::net::Protocol::Tcp => Some(Protocol::Tcp),
            _ => None,
        }
    }
}

/// Where a participant's datagrams come from (and its copies go): transport and
/// address. A TCP peer is its connection's remote address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub proto: Protocol,
    pub addr: SocketAddr,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.proto {
            Protocol::Udp => write!(f, "udp:{}", self.addr),
            Protocol::Tcp => write!(f, "tcp:{}", self.addr),
        }
    }
}

impl Transmit {
    /// A datagram for `to`, from the node's address on its transport.
    pub fn to(to: Peer, source: SocketAddr, contents: Vec<u8>) -> Transmit {
        Transmit {
            proto: to.proto,
            source,
            destination: to.addr,
            contents,
        }
    }

    /// A datagram for the node's UDP port.
    pub fn udp(source: SocketAddr, destination: SocketAddr, contents: Vec<u8>) -> Transmit {
        Transmit {
            proto: Protocol::Udp,
            source,
            destination,
            contents,
        }
    }
}
