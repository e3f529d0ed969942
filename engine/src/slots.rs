//! Which speaker a subscriber hears on which of its fixed audio slots.
//!
//! Every subscriber has `audio_slots` receive transceivers, negotiated once. This table
//! maps speakers onto them:
//! - a speaker already in a slot keeps it (sticky), whether or not it talks;
//! - a new speaker takes the lowest free slot, so with at most `audio_slots + 1`
//!   participants everyone hears everyone and no slot ever changes hands;
//! - when all slots are taken, a speaker that is talking may take the slot of an
//!   occupant that is not (the quietest one), or of a talking occupant when it is at
//!   least [`LOUDER_BY`] louder (hysteresis); an occupant keeps its slot for at least
//!   [`MIN_HOLD`] so slots do not flap. A speaker keeps its slot while it talks unless
//!   a much louder one needs it.

use std::time::{Duration, Instant};

use chorus_protocol::signal::ParticipantId;

/// A newcomer must be this many times louder (linear, 2.0 ≈ +6 dB) than a talking
/// occupant to take its slot.
pub(crate) const LOUDER_BY: f32 = 2.0;
/// An occupant keeps its slot at least this long.
pub(crate) const MIN_HOLD: Duration = Duration::from_millis(1000);

/// What the table needs to know of a speaker to decide.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Loudness {
    pub speaking: bool,
    pub level: f32,
}

#[derive(Debug, Clone, Copy)]
struct Occupant {
    participant: ParticipantId,
    since: Instant,
}

/// The outcome of [`SlotTable::route`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Forward on this slot; the speaker was already there.
    Keep(usize),
    /// Forward on this slot; the speaker just took it (a new source on the slot).
    Took(usize),
    /// Not forwarded to this subscriber.
    NoSlot,
}

#[derive(Debug, Clone)]
pub(crate) struct SlotTable {
    slots: Vec<Option<Occupant>>,
    changed: bool,
}

impl SlotTable {
    pub fn new(count: usize) -> Self {
        SlotTable {
            slots: vec![None; count],
            changed: false,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Decides where a packet from `speaker` goes. `loudness` answers for any
    /// participant in the room.
    pub fn route(
        &mut self,
        speaker: ParticipantId,
        now: Instant,
        loudness: impl Fn(ParticipantId) -> Loudness,
    ) -> Route {
        if let Some(i) = self.slot_of(speaker) {
            return Route::Keep(i);
        }
        if let Some(i) = self.slots.iter().position(Option::is_none) {
            return self.take(i, speaker, now);
        }
        let me = loudness(speaker);
        if !me.speaking {
            return Route::NoSlot;
        }
        // Candidates: occupants past their minimum hold. Prefer the quietest of those
        // not talking; else the quietest talker if we are much louder.
        let mut silent: Option<(usize, f32)> = None;
        let mut talking: Option<(usize, f32)> = None;
        for (i, occ) in self.slots.iter().enumerate() {
            let Some(occ) = occ else { continue };
            if now.saturating_duration_since(occ.since) < MIN_HOLD {
                continue;
            }
            let l = loudness(occ.participant);
            let best = if l.speaking {
                &mut talking
            } else {
                &mut silent
            };
            if best.is_none_or(|(_, lvl)| l.level < lvl) {
                *best = Some((i, l.level));
            }
        }
        match (silent, talking) {
            (Some((i, _)), _) => self.take(i, speaker, now),
            (None, Some((i, lvl))) if me.level > lvl * LOUDER_BY => self.take(i, speaker, now),
            _ => Route::NoSlot,
        }
    }

    fn take(&mut self, slot: usize, speaker: ParticipantId, now: Instant) -> Route {
        self.slots[slot] = Some(Occupant {
            participant: speaker,
            since: now,
        });
        self.changed = true;
        Route::Took(slot)
    }

    /// Frees the slot of a participant that left. Returns the slot it held.
    pub fn release(&mut self, participant: ParticipantId) -> Option<usize> {
        let i = self.slot_of(participant)?;
        self.slots[i] = None;
        self.changed = true;
        Some(i)
    }

    pub fn slot_of(&self, participant: ParticipantId) -> Option<usize> {
        self.slots
            .iter()
            .position(|o| o.is_some_and(|o| o.participant == participant))
    }

    pub fn occupant(&self, slot: usize) -> Option<ParticipantId> {
        self.slots
            .get(slot)
            .copied()
            .flatten()
            .map(|o| o.participant)
    }

    /// Whether the map changed since the last [`SlotTable::take_changed`].
    pub fn is_changed(&self) -> bool {
        self.changed
    }

    /// True once since the last call if the map changed.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn p(n: u64) -> ParticipantId {
        ParticipantId(n)
    }

    #[test]
    fn free_slots_are_sticky_and_lowest_first() {
        let t = Instant::now();
        let mut s = SlotTable::new(2);
        let quiet = |_| Loudness::default();
        assert_eq!(s.route(p(1), t, quiet), Route::Took(0));
        assert_eq!(s.route(p(2), t, quiet), Route::Took(1));
        assert_eq!(s.route(p(1), t, quiet), Route::Keep(0));
        assert_eq!(
            s.route(p(3), t, quiet),
            Route::NoSlot,
            "a silent newcomer evicts no one"
        );
        assert!(s.take_changed());
        assert!(!s.take_changed());
        assert_eq!(s.release(p(1)), Some(0));
        assert_eq!(s.route(p(3), t, quiet), Route::Took(0));
    }

    #[test]
    fn a_talker_takes_the_slot_of_the_quietest_silent_occupant() {
        let t = Instant::now();
        let later = t + MIN_HOLD;
        let mut s = SlotTable::new(2);
        let mut l: HashMap<ParticipantId, Loudness> = HashMap::new();
        s.route(p(1), t, |_| Loudness::default());
        s.route(p(2), t, |_| Loudness::default());
        l.insert(
            p(1),
            Loudness {
                speaking: false,
                level: 0.001,
            },
        );
        l.insert(
            p(2),
            Loudness {
                speaking: false,
                level: 0.0001,
            },
        );
        l.insert(
            p(3),
            Loudness {
                speaking: true,
                level: 0.1,
            },
        );
        let get = |x| l.get(&x).copied().unwrap_or_default();
        assert_eq!(s.route(p(3), t, get), Route::NoSlot, "minimum hold");
        assert_eq!(s.route(p(3), later, get), Route::Took(1));
        assert_eq!(s.occupant(0), Some(p(1)));
    }

    #[test]
    fn talkers_keep_their_slots_unless_much_louder_one_comes() {
        let t0 = Instant::now();
        let t = t0 + MIN_HOLD;
        let mut s = SlotTable::new(2);
        let mut l: HashMap<ParticipantId, Loudness> = HashMap::new();
        s.route(p(1), t0, |_| Loudness::default());
        s.route(p(2), t0, |_| Loudness::default());
        l.insert(
            p(1),
            Loudness {
                speaking: true,
                level: 0.10,
            },
        );
        l.insert(
            p(2),
            Loudness {
                speaking: true,
                level: 0.05,
            },
        );
        l.insert(
            p(3),
            Loudness {
                speaking: true,
                level: 0.08,
            },
        );
        assert_eq!(
            s.route(p(3), t, |x| l[&x]),
            Route::NoSlot,
            "not louder by enough"
        );
        l.insert(
            p(3),
            Loudness {
                speaking: true,
                level: 0.2,
            },
        );
        assert_eq!(
            s.route(p(3), t, |x| l[&x]),
            Route::Took(1),
            "evicts the quietest talker"
        );
    }
}
