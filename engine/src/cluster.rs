//! What a node's shards know of the other nodes of a cluster.
//!
//! A room may span nodes. Each node holding members runs the room as it does alone
//! (its home shard keeps the roster, its shards forward), and its roster also lists
//! the members other nodes hold: *remote* members. They come in as [`RosterChange`]s
//! ([`crate::ShardMessage::Remote`]); a node reports its own members' changes the same
//! way ([`crate::Event::Roster`]), for the cluster layer to send to the other nodes of
//! the room. A local speaker's packets in such a room also leave the shard as relay
//! output ([`crate::Shard::poll_relay`]), to be sent once to each other node of the
//! room, whose shards forward them as they forward a speaker handed by a local shard.
//!
//! Participant ids and CSRCs are unique across the cluster: both carry the node's
//! number ([`ShardConfig::node`](crate::ShardConfig::node), 0 for a node alone).

use chorus_protocol::signal::{ParticipantId, RoomId};

use crate::client_event::VideoSource;
use crate::forwarder::SpeakerPacket;
use crate::video::packet::VideoPacket;

use crate::client_event::MemberInfo;
use crate::io::Permissions;

/// A node's number in its cluster (1..=[`MAX_NODES`]); 0: a node alone.
pub type NodeIndex = u16;

/// The most nodes a cluster may have (the number is 8 bits of ids and CSRCs).
pub const MAX_NODES: NodeIndex = 255;

/// Where the node number sits in a participant id: above the serial (36 bits) and the
/// home shard (8 bits), so ids stay below 2^52 and exact as JSON numbers.
const NODE_SHIFT: u32 = 44;

/// The node a participant id was issued by (0 on a node alone).
pub fn node_of(participant: ParticipantId) -> NodeIndex {
    ((participant.0 >> NODE_SHIFT) & 0xff) as NodeIndex
}

/// A participant id issued by node `node`, with serial `serial` and home shard `home`.
pub fn participant_id_on(node: NodeIndex, serial: u64, home: usize) -> ParticipantId {
    let base = crate::mesh::participant_id(serial & ((1 << 36) - 1), home);
    ParticipantId(base.0 | (u64::from(node & 0xff) << NODE_SHIFT))
}

/// The first CSRC of a node's block: its number in the top byte (the low 24 bits
/// number the room's members joined there).
pub fn csrc_base(node: NodeIndex) -> u32 {
    u32::from(node & 0xff) << 24
}

/// What a shard puts out for other nodes of a room that spans nodes
/// ([`crate::Shard::poll_relay`]).
#[derive(Debug, Clone)]
pub enum RelayOut {
    /// A local speaker's packet: once to each other node with listeners.
    Audio(RoomId, SpeakerPacket),
    /// A local publisher's video packet: likewise, while the link has room for it
    /// beside the voice.
    Video(RoomId, VideoPacket),
    /// A local subscriber's slot waits for a keyframe of a publisher another node
    /// holds: to that node.
    Keyframe {
        publisher: ParticipantId,
        source: VideoSource,
        layer: u8,
    },
}

/// `origin` of a video packet from another node: keyframe requests for its
/// publisher go out as [`RelayOut::Keyframe`].
pub const REMOTE_ORIGIN: usize = usize::MAX;

/// A member as another node needs it: what its room sees of it and what policy needs.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteMember {
    pub info: MemberInfo,
    pub identity: Option<String>,
    pub permissions: Permissions,
    /// While it whispers: the only members its audio goes to.
    pub whisper_to: Option<Vec<ParticipantId>>,
}

/// A change of a room's roster, between nodes.
#[derive(Debug, Clone, PartialEq)]
pub enum RosterChange {
    /// A member joined, or changed (the whole member).
    Upsert(RemoteMember),
    /// A member left.
    Left(ParticipantId),
    /// Members of a proximity room moved (from their clients or the backend, at
    /// whichever node took them).
    Moved(Vec<(ParticipantId, crate::proximity::Point)>),
    /// Out only: the room closed on this node (deleted, emptied, drained), with this
    /// reason. If this node was its home, the other nodes close it too.
    Closed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_the_node() {
        let p = participant_id_on(7, 12345, 3);
        assert_eq!(node_of(p), 7);
        assert_eq!(crate::mesh::home_of(p, 4), 3);
        assert!(p.0 < 1 << 52, "exact as a JSON number");
        assert_eq!(node_of(crate::mesh::participant_id(99, 1)), 0);
        assert_eq!(csrc_base(2), 0x0200_0000);
    }
}
