//! How shards of one node talk to each other, and who is home for what.
//!
//! A room's *control* (roster, CSRCs, capacity, the join/leave/mute/deafen
//! announcements) lives on its home shard, [`room_home`]. A participant's *media* (its
//! `Rtc`, slot table and rewriters) lives on whichever shard the kernel delivers its
//! UDP traffic to (`SO_REUSEPORT` hashing); a shard that receives a STUN request for a
//! participant it does not hold claims it from the home shard, and the participant's
//! media moves there. A speaker's packet is handed once to every *other* shard that
//! has members in the room ([`ShardMessage::Media`]); each shard forwards to its own
//! subscribers.
//!
//! The home shard of a participant is written into its id ([`participant_id`]), so any
//! shard and the signaling layer can route by id alone.

use std::net::SocketAddr;

use chorus_protocol::control::SpamGuard;
use chorus_protocol::signal::{ParticipantId, RoomId};

use crate::client_event::VideoSource;
use crate::forwarder::SpeakerPacket;
use crate::io::{CloseReason, Command, Request, RequestId};
use crate::participant::Participant;
use crate::proximity::Positions;
use crate::video::packet::VideoPacket;

/// Most shards a node may run (the home shard is one byte of a participant id).
pub const MAX_SHARDS: usize = 256;

/// The shard that holds a room's roster: a stable hash (FNV-1a) of its name.
pub fn room_home(room: &RoomId, shards: usize) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for b in room.as_str().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h as usize % shards.clamp(1, MAX_SHARDS)
}

/// A participant id whose home shard is `home` (the low byte).
pub fn participant_id(serial: u64, home: usize) -> ParticipantId {
    ParticipantId((serial << 8) | (home % MAX_SHARDS) as u64)
}

/// The participant an ICE ufrag of ours names (`c<hex id>z<random>`; at an ICE restart
/// too, where the node replaces the credentials str0m picked), if it names one.
pub(crate) fn ufrag_participant(ufrag: &str) -> Option<ParticipantId> {
    let hex = ufrag.strip_prefix('c')?.split('z').next()?;
    u64::from_str_radix(hex, 16).ok().map(ParticipantId)
}

/// The home shard written into a participant id.
pub fn home_of(participant: ParticipantId, shards: usize) -> usize {
    (participant.0 & 0xff) as usize % shards.clamp(1, MAX_SHARDS)
}

/// What forwarding in a room follows, from its policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MediaPolicy {
    /// The proximity radius; `None`: not a proximity room.
    pub proximity: Option<f64>,
    pub spam_guard: SpamGuard,
    /// Its local speakers' packets go to other nodes of the cluster too.
    pub relay: bool,
}

/// A room's whole media state, as its home shard sends it.
#[derive(Debug, Clone)]
pub struct MediaSync {
    pub policy: MediaPolicy,
    /// Every member's position (proximity rooms).
    pub positions: Positions,
    /// The number of the last [`ShardMessage::Positions`] it includes.
    pub seq: u64,
}

/// A message from one shard to another.
pub enum ShardMessage {
    /// A speaker's packet for this shard's subscribers in `room`. May be dropped
    /// under overload (oldest first); everything else is never dropped.
    Media { room: RoomId, packet: SpeakerPacket },
    /// A publisher's video packet for this shard's video slots in `room` (a ring of
    /// its own: may be dropped under overload, never instead of voice).
    Video { room: RoomId, packet: VideoPacket },
    /// From a driver whose video ring to this shard overflowed: a packet of
    /// `publisher`'s `source` `layer` was lost on the way. The layer's packets are
    /// dropped here until its next keyframe, which is asked for.
    VideoGap {
        room: RoomId,
        publisher: ParticipantId,
        source: VideoSource,
        layer: u8,
        /// The shard holding the publisher's media.
        origin: usize,
    },
    /// To the shard holding `publisher`'s media: a slot waits for a keyframe of its
    /// `source`'s `layer`, or a subscriber asked for one.
    Keyframe {
        publisher: ParticipantId,
        source: VideoSource,
        layer: u8,
    },
    /// To the home shard: `participant`'s traffic arrives at shard `at`.
    Claim {
        participant: ParticipantId,
        at: usize,
        source: SocketAddr,
        datagram: Vec<u8>,
    },
    /// To the shard holding the media: hand it over to shard `to`.
    Release {
        participant: ParticipantId,
        to: usize,
        source: SocketAddr,
        datagram: Vec<u8>,
    },
    /// The participant's media, moving to the receiving shard, with the datagram
    /// that made it move, and its room's policy as the releasing shard knew it (for a
    /// shard new to the room, until the home shard's [`ShardMessage::RoomMedia`]).
    Adopt {
        participant: Box<Participant>,
        policy: Option<MediaPolicy>,
        source: SocketAddr,
        datagram: Vec<u8>,
    },
    /// To the home shard: the participant's media now lives on shard `shard`.
    Moved {
        participant: ParticipantId,
        shard: usize,
    },
    /// From the home shard: the shards holding members of `room` (this one included
    /// or not).
    RoomShards { room: RoomId, shards: Vec<usize> },
    /// From the home shard to a shard as it starts holding members of the room, to
    /// every shard of the room when the policy changes, and to a shard that asked
    /// ([`ShardMessage::Resync`]): everything forwarding in the room follows.
    RoomMedia { room: RoomId, sync: MediaSync },
    /// From the home shard to every shard of the room: positions that changed in a
    /// proximity room, numbered: a shard that sees a gap (a message dropped under
    /// overload) asks for a [`ShardMessage::RoomMedia`].
    Positions {
        room: RoomId,
        positions: Positions,
        seq: u64,
    },
    /// From the home shard to every shard of a room in p2p mode: a member's own
    /// speaking report (linear level 0..1).
    Speaking {
        room: RoomId,
        speaker: ParticipantId,
        level: f32,
    },
    /// To the home shard: shard `shard` missed positions of `room`.
    Resync { room: RoomId, shard: usize },
    /// A datagram from an ICE-TCP connection bound to `participant`, passed to the
    /// shard holding its media (through its home shard, which knows where that is).
    Tcp {
        participant: ParticipantId,
        source: SocketAddr,
        datagram: Vec<u8>,
        hops: u8,
    },
    /// From the home shard to the media shard: the media part of a command.
    ForMedia(Command),
    /// The media part of a command, chasing a participant whose media moved: to its
    /// home shard (which knows where it went) and on to the holder.
    Redirect { command: Command, hops: u8 },
    /// From the home shard to every shard of the room: a member left (free its slots).
    Left {
        room: RoomId,
        participant: ParticipantId,
    },
    /// A control request that reached a shard other than its room's home.
    Request { id: RequestId, request: Request },
    /// To the home shard of a room that spans nodes: a member another node holds
    /// joined, changed or left.
    Remote {
        room: RoomId,
        change: crate::cluster::RosterChange,
    },
    /// To every shard: node `node` of the cluster is gone, and so are its members.
    NodeLost { node: crate::cluster::NodeIndex },
    /// To the home shard: the media side gave up on the participant.
    Gone {
        participant: ParticipantId,
        reason: CloseReason,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homes_are_stable_and_in_range() {
        let r = RoomId::new("guild-42").expect("valid");
        assert_eq!(room_home(&r, 1), 0);
        let h = room_home(&r, 4);
        assert!(h < 4);
        assert_eq!(room_home(&r, 4), h, "stable");
        let p = participant_id(12345, h);
        assert_eq!(home_of(p, 4), h);
        assert_eq!(p.0 >> 8, 12345);
    }
}
