//! A room's roster, kept by its home shard: who is in it, what everyone sees of them,
//! their CSRCs, and which shard holds each one's media.

use std::collections::{HashMap, HashSet};

use chorus_protocol::signal::{ParticipantId, ParticipantInfo, RoomId};

/// One member as the home shard knows it.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub info: ParticipantInfo,
    /// The shard holding the member's media.
    pub shard: usize,
}

#[derive(Debug)]
pub(crate) struct Room {
    pub id: RoomId,
    pub audio_slots: u8,
    pub max_participants: usize,
    /// Members in join order.
    pub order: Vec<ParticipantId>,
    pub members: HashMap<ParticipantId, Member>,
    /// Shards last told they hold members ([`Room::shards`] at that time).
    pub notified: Vec<usize>,
    csrcs: HashSet<u32>,
    next_csrc: u32,
}

impl Room {
    pub fn new(id: RoomId, audio_slots: u8, max_participants: usize) -> Self {
        Room {
            id,
            audio_slots,
            max_participants,
            order: Vec::new(),
            members: HashMap::new(),
            notified: Vec::new(),
            csrcs: HashSet::new(),
            next_csrc: 1,
        }
    }

    pub fn is_full(&self) -> bool {
        self.order.len() >= self.max_participants
    }

    /// A CSRC that is non-zero and unique in the room.
    pub fn allocate_csrc(&mut self) -> u32 {
        // At most `max_participants` are taken, far fewer than 2^32 - 1: this ends.
        while self.next_csrc == 0 || self.csrcs.contains(&self.next_csrc) {
            self.next_csrc = self.next_csrc.wrapping_add(1);
        }
        let csrc = self.next_csrc;
        self.next_csrc = self.next_csrc.wrapping_add(1);
        self.csrcs.insert(csrc);
        csrc
    }

    pub fn add(&mut self, info: ParticipantInfo, shard: usize) {
        self.order.push(info.participant_id);
        self.members
            .insert(info.participant_id, Member { info, shard });
    }

    pub fn remove(&mut self, participant: ParticipantId) -> Option<Member> {
        let m = self.members.remove(&participant)?;
        self.order.retain(|p| *p != participant);
        self.csrcs.remove(&m.info.csrc);
        Some(m)
    }

    /// The shards holding members' media, sorted.
    pub fn shards(&self) -> Vec<usize> {
        let mut s: Vec<usize> = self.members.values().map(|m| m.shard).collect();
        s.sort_unstable();
        s.dedup();
        s
    }

    /// Everyone's info in join order.
    pub fn infos(&self) -> impl Iterator<Item = &ParticipantInfo> {
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

    fn info(id: u64, csrc: u32) -> ParticipantInfo {
        ParticipantInfo {
            participant_id: ParticipantId(id),
            name: DisplayName::new("x").expect("valid"),
            muted: false,
            deafened: false,
            csrc,
        }
    }

    #[test]
    fn csrcs_are_unique_and_non_zero_and_reused_after_leave() {
        let mut r = Room::new(RoomId::new("r").expect("valid"), 8, 10);
        let a = r.allocate_csrc();
        r.add(info(1, a), 0);
        let b = r.allocate_csrc();
        r.add(info(2, b), 1);
        assert!(a != 0 && b != 0 && a != b);
        assert_eq!(r.shards(), vec![0, 1]);
        r.remove(ParticipantId(1));
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
}
