//! Which speaker a subscriber hears on which of its fixed audio slots.
//!
//! Every subscriber has `audio_slots` receive transceivers, negotiated once. This table
//! maps speakers onto them:
//! - a speaker already in a slot keeps it (sticky), whether or not it talks;
//! - a new speaker takes the lowest free slot, so with at most `audio_slots + 1`
//!   participants everyone hears everyone and no slot ever changes hands;
//! - when all slots are taken, a speaker that is talking takes the slot of an occupant
//!   that has been quiet for [`RELEASE_AFTER`] (the one quiet longest), longer than the
//!   pauses of ordinary speech; otherwise, the slot of the occupant that is quietest
//!   *while it speaks* ([`crate::level::SpeakerLevel::speech_level`], which pauses do
//!   not move) only if the newcomer, after [`MIN_SPEECH`] of speech, is at least
//!   [`LOUDER_BY`] louder that way. Never
//!   the momentary level: a holder in a pause is not quieter than anyone. An occupant
//!   keeps its slot for at least [`MIN_HOLD`]. So with more talkers than slots, the
//!   holders keep their slots while they keep talking, pauses and all.

use std::time::{Duration, Instant};

use chorus_protocol::signal::ParticipantId;

/// A newcomer must be this many times louder while speaking (linear, 2.0 ≈ +6 dB) than
/// an occupant still in conversation to take its slot.
pub(crate) const LOUDER_BY: f32 = 2.0;
/// An occupant quiet for this long (past the pauses of ordinary speech, 100–800 ms)
/// gives its slot to the next talker that needs one.
pub(crate) const RELEASE_AFTER: Duration = Duration::from_secs(2);
/// How much a newcomer must have said before its speech level is compared: one loud
/// syllable is not a louder speaker.
pub(crate) const MIN_SPEECH: Duration = Duration::from_secs(1);
/// An occupant keeps its slot at least this long.
pub(crate) const MIN_HOLD: Duration = Duration::from_millis(1000);

/// What the table needs to know of a speaker to decide.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Loudness {
    /// Has the `priority` grant.
    pub priority: bool,
    /// Talking now, or inside the hangover after talking.
    pub speaking: bool,
    /// How loud while speaking, linear ([`crate::level::SpeakerLevel::speech_level`]).
    pub speech_level: f32,
    /// How much speech `speech_level` is made of.
    pub speech_time: Duration,
    /// How long quiet ([`crate::level::SpeakerLevel::quiet_for`]).
    pub quiet_for: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Occupant {
    participant: ParticipantId,
    since: Instant,
}

/// The occupants a newcomer could displace: of those quiet past [`RELEASE_AFTER`], the
/// one quiet longest; of the others, the one quietest while speaking (and its speech
/// level).
#[derive(Debug, Default)]
struct Candidates {
    released: Option<(usize, Duration)>,
    talking: Option<(usize, f32)>,
}

impl Candidates {
    fn consider(&mut self, slot: usize, l: &Loudness) {
        if l.quiet_for >= RELEASE_AFTER {
            if self.released.is_none_or(|(_, q)| l.quiet_for > q) {
                self.released = Some((slot, l.quiet_for));
            }
        } else if self.talking.is_none_or(|(_, lvl)| l.speech_level < lvl) {
            self.talking = Some((slot, l.speech_level));
        }
    }

    /// The slot to take for a priority speaker: a released one, else a talker's.
    fn any(&self) -> Option<usize> {
        self.released
            .map(|(i, _)| i)
            .or(self.talking.map(|(i, _)| i))
    }
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

    /// How many slots carry a speaker now.
    pub fn occupied(&self) -> usize {
        self.occupants().count()
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
        // A priority speaker is heard at once: it takes the slot of an ordinary
        // occupant, minimum hold or not. Among priority speakers the usual rules hold.
        if me.priority {
            let mut ordinary = Candidates::default();
            for (i, occ) in self.slots.iter().enumerate() {
                let Some(occ) = occ else { continue };
                let l = loudness(occ.participant);
                if !l.priority {
                    ordinary.consider(i, &l);
                }
            }
            if let Some(i) = ordinary.any() {
                return self.take(i, speaker, now);
            }
        }
        // Occupants past their minimum hold; a priority speaker in conversation is out
        // of an ordinary speaker's reach.
        let mut candidates = Candidates::default();
        for (i, occ) in self.slots.iter().enumerate() {
            let Some(occ) = occ else { continue };
            if now.saturating_duration_since(occ.since) < MIN_HOLD {
                continue;
            }
            let l = loudness(occ.participant);
            if l.priority && !me.priority && l.quiet_for < RELEASE_AFTER {
                continue;
            }
            candidates.consider(i, &l);
        }
        match (candidates.released, candidates.talking) {
            (Some((i, _)), _) => self.take(i, speaker, now),
            (None, Some((i, lvl)))
                if me.speech_time >= MIN_SPEECH && me.speech_level > lvl * LOUDER_BY =>
            {
                self.take(i, speaker, now)
            }
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

    /// The speakers on the slots.
    pub fn occupants(&self) -> impl Iterator<Item = ParticipantId> + '_ {
        self.slots.iter().flatten().map(|o| o.participant)
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
    use crate::level::SpeakerLevel;

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

    /// A speaker in conversation, this loud while speaking.
    fn talking(speech_level: f32) -> Loudness {
        Loudness {
            priority: false,
            speaking: true,
            speech_level,
            speech_time: MIN_SPEECH,
            quiet_for: Duration::ZERO,
        }
    }

    /// A speaker quiet for `ms`.
    fn quiet(speech_level: f32, ms: u64) -> Loudness {
        Loudness {
            priority: false,
            speaking: false,
            speech_level,
            speech_time: MIN_SPEECH,
            quiet_for: Duration::from_millis(ms),
        }
    }

    #[test]
    fn a_talker_takes_the_slot_of_the_occupant_quiet_longest() {
        let t = Instant::now();
        let later = t + MIN_HOLD;
        let mut s = SlotTable::new(2);
        s.route(p(1), t, |_| Loudness::default());
        s.route(p(2), t, |_| Loudness::default());
        let l: HashMap<ParticipantId, Loudness> = HashMap::from([
            (p(1), quiet(0.1, 2500)),
            (p(2), quiet(0.1, 9000)),
            (p(3), talking(0.05)),
        ]);
        let get = |x| l.get(&x).copied().unwrap_or_default();
        assert_eq!(s.route(p(3), t, get), Route::NoSlot, "minimum hold");
        assert_eq!(s.route(p(3), later, get), Route::Took(1));
        assert_eq!(s.occupant(0), Some(p(1)));
    }

    #[test]
    fn a_pause_does_not_cost_a_slot() {
        let t = Instant::now() + MIN_HOLD;
        let mut s = SlotTable::new(1);
        s.route(p(1), t - MIN_HOLD, |_| Loudness::default());
        // Past its hangover, in a long breath: still in conversation.
        let mut l = HashMap::from([(p(1), quiet(0.1, 900)), (p(2), talking(0.15))]);
        assert_eq!(s.route(p(2), t, |x| l[&x]), Route::NoSlot);
        l.insert(p(1), quiet(0.1, RELEASE_AFTER.as_millis() as u64));
        assert_eq!(s.route(p(2), t, |x| l[&x]), Route::Took(0));
    }

    #[test]
    fn talkers_keep_their_slots_unless_a_much_louder_one_comes() {
        let t0 = Instant::now();
        let t = t0 + MIN_HOLD;
        let mut s = SlotTable::new(2);
        s.route(p(1), t0, |_| Loudness::default());
        s.route(p(2), t0, |_| Loudness::default());
        let mut l = HashMap::from([
            (p(1), talking(0.10)),
            (p(2), talking(0.05)),
            (p(3), talking(0.08)),
        ]);
        assert_eq!(
            s.route(p(3), t, |x| l[&x]),
            Route::NoSlot,
            "not louder by enough"
        );
        l.insert(p(3), talking(0.2));
        assert_eq!(
            s.route(p(3), t, |x| l[&x]),
            Route::Took(1),
            "displaces the quietest talker"
        );
    }

    #[test]
    fn a_priority_speaker_takes_a_slot_at_once_and_keeps_it() {
        let t = Instant::now();
        let mut s = SlotTable::new(2);
        s.route(p(1), t, |_| Loudness::default());
        s.route(p(2), t, |_| Loudness::default());
        let lead = |l: Loudness| Loudness {
            priority: true,
            ..l
        };
        let mut l = HashMap::from([
            (p(1), talking(0.1)),
            (p(2), talking(0.2)),
            (p(3), lead(talking(0.01))),
        ]);
        // At once (within the holders' minimum hold), though the quietest of all: the
        // slot of the quietest talker.
        assert_eq!(s.route(p(3), t, |x| l[&x]), Route::Took(0));
        // A much louder ordinary speaker does not take it while the leader is in
        // conversation, pausing included (nor p2's: not twice as loud as p2).
        let later = t + MIN_HOLD * 3;
        l.insert(p(1), talking(0.9));
        l.insert(p(2), talking(0.5));
        l.insert(p(3), lead(quiet(0.01, 1500)));
        assert_eq!(s.route(p(1), later, |x| l[&x]), Route::NoSlot);
        // A leader quiet for RELEASE_AFTER gives it up like anyone.
        l.insert(p(3), lead(quiet(0.01, 2500)));
        assert_eq!(s.route(p(1), later, |x| l[&x]), Route::Took(0));
    }

    #[test]
    fn priority_speakers_compete_by_the_usual_rules() {
        let t = Instant::now();
        let mut s = SlotTable::new(1);
        let lead = |l: Loudness| Loudness {
            priority: true,
            ..l
        };
        let l = HashMap::from([(p(1), lead(talking(0.1))), (p(2), lead(talking(0.15)))]);
        s.route(p(1), t, |x| l[&x]);
        assert_eq!(s.route(p(2), t + MIN_HOLD, |x| l[&x]), Route::NoSlot);
    }

    /// A talker for [`talk`]: talk spurts at about `dbov` with pauses between them.
    struct Talker {
        id: ParticipantId,
        level: SpeakerLevel,
        dbov: i8,
        /// When the current spurt or pause ends, and whether it is a spurt.
        until: Instant,
        spurt: bool,
        /// Stops talking (background noise only) from then on.
        stops: Option<Instant>,
    }

    /// xorshift64: a deterministic stream of numbers for the talkers' scripts.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    fn between(state: &mut u64, lo: u64, hi: u64) -> u64 {
        lo + next(state) % (hi - lo + 1)
    }

    /// Runs `talkers` against one subscriber's `table` for `seconds`, every talker
    /// sending a packet every 20 ms as browsers do (Opus without DTX): speech spurts of
    /// 0.4–2.5 s at the talker's level ±6 dB per packet (syllables), separated by the
    /// pauses of ordinary speech (100–300 ms, one in five a breath of 400–800 ms), with
    /// background noise at -80 dBov in the pauses. Returns, per 20 ms step, the slot map.
    fn talk(
        table: &mut SlotTable,
        talkers: &mut [Talker],
        start: Instant,
        seconds: u64,
        seed: u64,
    ) -> Vec<Vec<Option<ParticipantId>>> {
        let mut rng = seed;
        let mut maps = Vec::new();
        for step in 0..seconds * 50 {
            let now = start + Duration::from_millis(20 * step);
            for t in talkers.iter_mut() {
                if now >= t.until {
                    t.spurt = !t.spurt;
                    let ms = if t.spurt {
                        between(&mut rng, 400, 2500)
                    } else if between(&mut rng, 0, 4) == 0 {
                        between(&mut rng, 400, 800)
                    } else {
                        between(&mut rng, 100, 300)
                    };
                    t.until = now + Duration::from_millis(ms);
                }
                let stopped = t.stops.is_some_and(|at| now >= at);
                let dbov = if t.spurt && !stopped {
                    (t.dbov as u64 + between(&mut rng, 0, 12)).saturating_sub(6) as i8
                } else {
                    80
                };
                t.level.on_packet(now, Some(-dbov));
                t.level.tick(now);
            }
            let view: HashMap<ParticipantId, Loudness> = talkers
                .iter()
                .map(|t| {
                    let l = Loudness {
                        priority: false,
                        speaking: t.level.speaking(),
                        speech_level: t.level.speech_level(),
                        speech_time: t.level.speech_time(),
                        quiet_for: t.level.quiet_for(now),
                    };
                    (t.id, l)
                })
                .collect();
            for t in talkers.iter() {
                table.route(t.id, now, |x| view[&x]);
            }
            maps.push((0..table.len()).map(|i| table.occupant(i)).collect());
        }
        maps
    }

    fn talkers(levels: &[i8], start: Instant) -> Vec<Talker> {
        levels
            .iter()
            .enumerate()
            .map(|(i, &dbov)| Talker {
                id: p(i as u64 + 1),
                level: SpeakerLevel::default(),
                dbov,
                until: start,
                spurt: false,
                stops: None,
            })
            .collect()
    }

    /// The defect this table once had: 4 equally loud talkers, 2 slots, and the slots
    /// changed hands on almost every pause. With ordinary pauses, the 2 holders keep
    /// their slots as long as they keep talking.
    #[test]
    fn equally_loud_talkers_with_pauses_keep_their_slots() {
        for seed in [1, 7, 42, 1234, 99_999] {
            let start = Instant::now();
            let mut table = SlotTable::new(2);
            let mut people = talkers(&[20, 20, 20, 20], start);
            let maps = talk(&mut table, &mut people, start, 60, seed);
            let first = &maps[0];
            assert!(
                first.iter().all(Option::is_some),
                "both slots taken at once"
            );
            let changes = maps.windows(2).filter(|w| w[0] != w[1]).count();
            assert_eq!(
                changes, 0,
                "seed {seed}: the slot map changed {changes} times in 60 s"
            );
        }
    }

    /// A holder that stops talking gives its slot to a waiting talker after a couple
    /// of seconds, not at its first pause.
    #[test]
    fn a_holder_that_stops_talking_makes_room() {
        for seed in [3, 11, 2024] {
            let start = Instant::now();
            let mut table = SlotTable::new(2);
            let mut people = talkers(&[20, 20, 20], start);
            let stops = start + Duration::from_secs(10);
            let maps = talk(&mut table, &mut people, start, 9, seed);
            let holders = maps[maps.len() - 1].clone();
            assert_eq!(holders, vec![Some(p(1)), Some(p(2))]);
            // p1 stops at 10 s; p3 keeps talking.
            people[0].stops = Some(stops);
            let maps = talk(
                &mut table,
                &mut people,
                start + Duration::from_secs(9),
                8,
                seed,
            );
            let taken = maps
                .iter()
                .position(|m| m[0] == Some(p(3)))
                .expect("p3 takes p1's slot");
            let after_stop = Duration::from_millis(20 * taken as u64) - Duration::from_secs(1);
            assert!(
                after_stop >= Duration::from_millis(1500) && after_stop <= Duration::from_secs(3),
                "seed {seed}: the slot changed {after_stop:?} after the holder stopped"
            );
            assert!(maps.iter().all(|m| m[1] == Some(p(2))), "p2 keeps its slot");
        }
    }

    /// A talker much louder (+12 dB) than the holders gets a slot within a couple of
    /// seconds of starting to talk.
    #[test]
    fn a_much_louder_talker_gets_a_slot() {
        let start = Instant::now();
        let mut table = SlotTable::new(2);
        let mut people = talkers(&[26, 26], start);
        talk(&mut table, &mut people, start, 10, 5);
        people.extend(talkers(&[14], start).into_iter().map(|mut t| {
            t.id = p(3);
            t
        }));
        let maps = talk(
            &mut table,
            &mut people,
            start + Duration::from_secs(10),
            10,
            5,
        );
        let taken = maps
            .iter()
            .position(|m| m.contains(&Some(p(3))))
            .expect("the louder talker gets a slot");
        assert!(taken * 20 <= 4000, "after {} ms", taken * 20);
    }
}
