//! A room: who is in it, their CSRCs, and who is speaking.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use chorus_protocol::signal::{ParticipantId, RoomId};

use crate::level::SpeakerLevel;
use crate::slots::Loudness;

#[derive(Debug)]
pub(crate) struct Room {
    pub id: RoomId,
    pub audio_slots: u8,
    pub max_participants: usize,
    /// Members in join order.
    pub members: Vec<ParticipantId>,
    csrcs: HashSet<u32>,
    next_csrc: u32,
    levels: HashMap<ParticipantId, SpeakerLevel>,
    /// The speaking set last announced, sorted.
    active: Vec<ParticipantId>,
}

impl Room {
    pub fn new(id: RoomId, audio_slots: u8, max_participants: usize) -> Self {
        Room {
            id,
            audio_slots,
            max_participants,
            members: Vec::new(),
            csrcs: HashSet::new(),
            next_csrc: 1,
            levels: HashMap::new(),
            active: Vec::new(),
        }
    }

    pub fn is_full(&self) -> bool {
        self.members.len() >= self.max_participants
    }

    /// Adds a member and gives it a CSRC that is non-zero and unique in the room.
    pub fn add(&mut self, participant: ParticipantId) -> u32 {
        // At most `max_participants` are taken, far fewer than 2^32 - 1: this ends.
        while self.next_csrc == 0 || self.csrcs.contains(&self.next_csrc) {
            self.next_csrc = self.next_csrc.wrapping_add(1);
        }
        let csrc = self.next_csrc;
        self.next_csrc = self.next_csrc.wrapping_add(1);
        self.csrcs.insert(csrc);
        self.members.push(participant);
        self.levels.insert(participant, SpeakerLevel::default());
        csrc
    }

    pub fn remove(&mut self, participant: ParticipantId, csrc: u32) {
        self.members.retain(|m| *m != participant);
        self.csrcs.remove(&csrc);
        self.levels.remove(&participant);
    }

    pub fn on_audio(&mut self, speaker: ParticipantId, now: Instant, audio_level: Option<i8>) {
        if let Some(l) = self.levels.get_mut(&speaker) {
            l.on_packet(now, audio_level);
        }
    }

    /// Forgets a speaker's level (it was muted).
    pub fn silence(&mut self, speaker: ParticipantId) {
        if let Some(l) = self.levels.get_mut(&speaker) {
            l.reset();
        }
    }

    pub fn loudness(&self, participant: ParticipantId) -> Loudness {
        self.levels
            .get(&participant)
            .map(|l| Loudness {
                speaking: l.speaking(),
                level: l.level(),
            })
            .unwrap_or_default()
    }

    /// Ages every level; returns true when the speaking set changed since the last
    /// call that returned true.
    pub fn tick(&mut self, now: Instant) -> bool {
        for l in self.levels.values_mut() {
            l.tick(now);
        }
        let mut active: Vec<ParticipantId> = self
            .levels
            .iter()
            .filter(|(_, l)| l.speaking())
            .map(|(p, _)| *p)
            .collect();
        active.sort_unstable();
        if active == self.active {
            return false;
        }
        tracing::trace!(room = %self.id, speakers = ?active, "speaking set changed");
        self.active = active;
        true
    }

    /// The speaking set, loudest first, with smoothed linear levels.
    pub fn speakers(&self) -> Vec<(ParticipantId, f32)> {
        let mut v: Vec<(ParticipantId, f32)> = self
            .active
            .iter()
            .map(|p| (*p, self.loudness(*p).level))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrcs_are_unique_and_non_zero_and_reused_after_leave() {
        let mut r = Room::new(RoomId::new("r").expect("valid"), 8, 10);
        let a = r.add(ParticipantId(1));
        let b = r.add(ParticipantId(2));
        assert!(a != 0 && b != 0 && a != b);
        r.remove(ParticipantId(1), a);
        r.next_csrc = u32::MAX;
        let c = r.add(ParticipantId(3));
        assert_eq!(c, u32::MAX);
        let d = r.add(ParticipantId(4));
        assert!(
            d != 0 && d != b && d != c,
            "wraps past zero and skips taken CSRCs"
        );
    }
}
