//! What goes into a shard besides datagrams and time, and what comes out.

use std::net::SocketAddr;

use chorus_protocol::signal::{DisplayName, ParticipantId, RoomId, ServerMessage};

/// What a participant may do in its room (from its join token's grants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permissions {
    /// Its audio is forwarded. Without it, its packets are dropped (and counted).
    pub publish: bool,
    /// Audio is forwarded to it. Without it, it receives nothing.
    pub subscribe: bool,
}

impl Permissions {
    /// Publish and subscribe (`--dev` joins without a token).
    pub const ALL: Permissions = Permissions {
        publish: true,
        subscribe: true,
    };
}

/// An instruction from signaling (or, later, the control plane).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Command {
    /// A client asks to join. The id is allocated by the caller and names the client
    /// in every later command and event.
    Join {
        participant: ParticipantId,
        room: RoomId,
        name: DisplayName,
        permissions: Permissions,
    },
    /// The client's SDP offer; answered with `answer` or `error`.
    Offer {
        participant: ParticipantId,
        sdp: String,
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
}

impl Command {
    /// The participant the command is about (its id names its home shard).
    pub fn participant(&self) -> ParticipantId {
        match self {
            Command::Join { participant, .. }
            | Command::Offer { participant, .. }
            | Command::Candidate { participant, .. }
            | Command::SetMuted { participant, .. }
            | Command::SetDeafened { participant, .. }
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
    /// Its room was closed (the node is draining); `room_closed` was sent first.
    RoomClosed,
}

/// Something the caller must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Send this message to this client's signaling connection.
    Signal {
        to: ParticipantId,
        message: ServerMessage,
    },
    /// The participant is no longer in the engine: close its signaling connection.
    Closed {
        participant: ParticipantId,
        reason: CloseReason,
    },
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}
