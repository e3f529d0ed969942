//! A room's roster, kept by its home shard: who is in it, what everyone sees of them,
//! their CSRCs, and which shard holds each one's media.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chorus_protocol::control::{Proximity, RoomKind, SpamGuard};
use chorus_protocol::signal::{ParticipantId, RoomId};

use rustc_hash::FxHashMap;

use crate::client_event::MemberInfo;
use crate::cluster::NodeIndex;
use crate::io::Permissions;
use crate::p2p::ModeState;
use crate::proximity::Point;
use crate::report::{MemberDetails, RoomSummary};

/// One member as the home shard knows it.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub info: MemberInfo,
    /// The shard holding the member's media.
    pub shard: usize,
    pub identity: Option<String>,
    pub permissions: Permissions,
    /// While it whispers: the only members its audio goes to.
    pub whisper_to: Option<Vec<ParticipantId>>,
    /// It can carry the call peer to peer (`join` with `p2p`).
    pub p2p: bool,
    /// Held by another node of the cluster (`shard` means nothing then): no media
    /// here, and nothing to tell its client.
    pub remote: bool,
}

impl Member {
    pub fn details(&self, room: &RoomId) -> MemberDetails {
        MemberDetails {
            participant_id: self.info.id,
            room: room.clone(),
            identity: self.identity.clone(),
            name: self.info.name.clone(),
            muted: self.info.muted,
            server_muted: self.info.server_muted,
            deafened: self.info.deafened,
            publish: self.permissions.publish,
            subscribe: self.permissions.subscribe,
            priority: self.permissions.priority,
            sources: self.permissions.sources.to_list(),
            camera: self.info.camera,
            screen: self.info.screen,
            whisper_to: self.whisper_to.clone(),
            p2p: self.p2p,
            csrc: self.info.csrc,
            shard: self.shard,
        }
    }
}

/// How a room is configured (by `room.create`, or the node's defaults for rooms
/// created by a join).
#[derive(Debug, Clone)]
pub(crate) struct RoomPolicy {
    pub kind: RoomKind,
    pub audio_slots: u8,
    /// Video slots per client (0: no video).
    pub video_slots: u8,
    pub max_participants: usize,
    /// Closed after being empty this long; `None`: never (auto-created rooms close
    /// as soon as they are empty).
    pub empty_timeout: Option<Duration>,
    pub metadata: String,
    pub auto_created: bool,
    /// Clients may `whisper`.
    pub whisper: bool,
    pub spam_guard: SpamGuard,
    pub proximity: Option<Proximity>,
    /// Most members carried peer to peer (0: never).
    pub p2p_max: u8,
    /// How long a room in mode `sfu` must meet the p2p conditions to go back.
    pub p2p_downgrade: Duration,
    /// In a cluster: another node is the room's home; this node runs it for members
    /// joining here ([`crate::io::Request::CreateReplica`]). It closes as soon as it
    /// has no member, and its creation and closing are the home's to report.
    pub replica: bool,
}

#[derive(Debug)]
pub(crate) struct Room {
    pub id: RoomId,
    pub policy: RoomPolicy,
    /// Since when the room has had no members (from creation until the first join).
    pub empty_since: Option<Instant>,
    /// Being closed: its last member leaving must not close it a second time.
    pub closing: bool,
    /// Members in join order.
    pub order: Vec<ParticipantId>,
    pub members: HashMap<ParticipantId, Member>,
    /// Shards last told they hold members ([`Room::shards`] at that time).
    pub notified: Vec<usize>,
    /// In a proximity room: every member's last known position.
    pub positions: FxHashMap<ParticipantId, Point>,
    /// Positions from clients since the last tick (the latest per member), sent to
    /// the room's shards as one batch.
    pub pending_positions: FxHashMap<ParticipantId, Point>,
    /// The number of the last positions batch sent to the room's shards.
    pub positions_seq: u64,
    /// Which tier carries its audio ([`crate::p2p`]).
    pub mode: ModeState,
    /// Its shards were last told its speakers go to other nodes too.
    pub relayed: bool,
    csrcs: HashSet<u32>,
    /// The node's block of CSRCs ([`crate::cluster::csrc_base`]).
    csrc_base: u32,
    next_csrc: u32,
}

impl Room {
    pub fn new(id: RoomId, policy: RoomPolicy, now: Instant, node: NodeIndex) -> Self {
        let mode = ModeState::new(&policy);
        Room {
            id,
            mode,
            policy,
            empty_since: Some(now),
            closing: false,
            relayed: false,
            order: Vec::new(),
            members: HashMap::new(),
            notified: Vec::new(),
            positions: FxHashMap::default(),
            pending_positions: FxHashMap::default(),
            positions_seq: 0,
            csrcs: HashSet::new(),
            csrc_base: crate::cluster::csrc_base(node),
            next_csrc: 1,
        }
    }

    pub fn is_full(&self) -> bool {
        self.order.len() >= self.policy.max_participants
    }

    /// Empty for longer than its empty timeout.
    pub fn expired(&self, now: Instant) -> bool {
        match (self.empty_since, self.policy.empty_timeout) {
            (Some(since), Some(t)) => now.saturating_duration_since(since) >= t,
            _ => false,
        }
    }

    pub fn info(&self, home_shard: usize) -> RoomSummary {
        RoomSummary {
            room: self.id.clone(),
            kind: self.policy.kind,
            max_participants: self.policy.max_participants,
            audio_slots: self.policy.audio_slots,
            video_slots: self.policy.video_slots,
            empty_timeout_s: self.policy.empty_timeout.map_or(0, |d| d.as_secs()),
            metadata: self.policy.metadata.clone(),
            whisper: self.policy.whisper,
            spam_guard: self.policy.spam_guard,
            proximity: self.policy.proximity,
            p2p_max: self.policy.p2p_max,
            p2p_downgrade_s: self.policy.p2p_downgrade.as_secs() as u32,
            mode: self.mode.mode,
            participants: self.order.len(),
            auto_created: self.policy.auto_created,
            home_shard,
        }
    }

    /// A CSRC that is non-zero and unique in the room.
    pub fn allocate_csrc(&mut self) -> u32 {
        // At most `max_participants` are taken, far fewer than 2^32 - 1: this ends.
        // Within the node's block: the low 24 bits, never 0.
        const LOW: u32 = 0x00ff_ffff;
        while self.next_csrc & LOW == 0 || self.csrcs.contains(&(self.csrc_base | self.next_csrc)) {
            self.next_csrc = self.next_csrc.wrapping_add(1) & LOW;
        }
        let csrc = self.csrc_base | self.next_csrc;
        self.next_csrc = self.next_csrc.wrapping_add(1) & LOW;
        self.csrcs.insert(csrc);
        csrc
    }

    pub fn add(&mut self, member: Member) {
        self.order.push(member.info.id);
        self.members.insert(member.info.id, member);
        self.empty_since = None;
    }

    pub fn remove(&mut self, participant: ParticipantId, now: Instant) -> Option<Member> {
        let m = self.members.remove(&participant)?;
        self.order.retain(|p| *p != participant);
        self.positions.remove(&participant);
        self.pending_positions.remove(&participant);
        self.csrcs.remove(&m.info.csrc);
        if self.order.is_empty() {
            self.empty_since = Some(now);
        }
        Some(m)
    }

    /// The shards holding members' media, sorted.
    pub fn shards(&self) -> Vec<usize> {
        let mut s: Vec<usize> = self
            .members
            .values()
            .filter(|m| !m.remote)
            .map(|m| m.shard)
            .collect();
        s.sort_unstable();
        s.dedup();
        s
    }

    /// Some member is held by another node.
    pub fn spans_nodes(&self) -> bool {
        self.members.values().any(|m| m.remote)
    }

    /// Members held by this node.
    pub fn local_members(&self) -> impl Iterator<Item = &Member> {
        self.order
            .iter()
            .filter_map(|p| self.members.get(p))
            .filter(|m| !m.remote)
    }

    /// Everyone's info in join order.
    pub fn infos(&self) -> impl Iterator<Item = &MemberInfo> {
        self.order
            .iter()
            .filter_map(|p| self.members.get(p))
            .map(|m| &m.info)
    }
}

#[cfg(test)]
mod tests {
    use chorus_protocol::signal::DisplayName;

    use super::*;

    fn member(id: u64, csrc: u32, shard: usize) -> Member {
        Member {
            info: MemberInfo {
                camera: false,
                screen: false,
                id: ParticipantId(id),
                name: DisplayName::new("x").expect("valid"),
                muted: false,
                server_muted: false,
                deafened: false,
                csrc,
            },
            shard,
            identity: None,
            permissions: Permissions::ALL,
            whisper_to: None,
            p2p: false,
            remote: false,
        }
    }

    fn policy(empty_timeout: Option<Duration>) -> RoomPolicy {
        RoomPolicy {
            kind: RoomKind::Public,
            audio_slots: 8,
            video_slots: 0,
            max_participants: 10,
            empty_timeout,
            metadata: String::new(),
            auto_created: false,
            whisper: false,
            spam_guard: SpamGuard::default(),
            proximity: None,
            p2p_max: 0,
            p2p_downgrade: Duration::from_secs(10),
            replica: false,
        }
    }

    #[test]
    fn csrcs_are_unique_and_non_zero_and_reused_after_leave() {
        let now = Instant::now();
        let mut r = Room::new(RoomId::new("r").expect("valid"), policy(None), now, 0);
        let a = r.allocate_csrc();
        r.add(member(1, a, 0));
        let b = r.allocate_csrc();
        r.add(member(2, b, 1));
        assert!(a != 0 && b != 0 && a != b);
        assert_eq!(r.shards(), vec![0, 1]);
        r.remove(ParticipantId(1), now);
        assert_eq!(r.shards(), vec![1]);
        r.next_csrc = u32::MAX;
        let c = r.allocate_csrc();
        assert_eq!(c, u32::MAX);
        let d = r.allocate_csrc();
        assert!(
            d != 0 && d != b && d != c,
            "wraps past zero and skips taken CSRCs"
        );
    }

    #[test]
    fn expires_only_after_being_empty_for_the_timeout() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut r = Room::new(
            RoomId::new("r").expect("valid"),
            policy(Some(10 * s)),
            t0,
            0,
        );
        assert!(!r.expired(t0 + 9 * s));
        assert!(r.expired(t0 + 10 * s), "empty since creation");
        r.add(member(1, 1, 0));
        assert!(!r.expired(t0 + 100 * s), "never while someone is in");
        r.remove(ParticipantId(1), t0 + 100 * s);
        assert!(!r.expired(t0 + 109 * s));
        assert!(r.expired(t0 + 110 * s));
        let never = Room::new(RoomId::new("n").expect("valid"), policy(None), t0, 0);
        assert!(!never.expired(t0 + 1000 * s));
    }
}
