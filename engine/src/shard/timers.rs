//! The shard's participant timers: a timing wheel on [`TIMER_GRID`].
//!
//! Every participant has at most one live entry (its `timer_at`); an entry made stale
//! by an earlier one is skipped when its turn comes (the caller compares). A binary
//! heap did this before: at idle each of a shard's thousands of participants is due
//! about once every 2 s, and every pop sifted through a heap far larger than the cache.
//! Here an entry is filed in the slot of its grid point, and a slot is taken whole
//! when its turn comes: one append to file, one sequential read to fire.
//!
//! An entry further away than one turn of the wheel ([`SLOTS`] × [`TIMER_GRID`]) waits
//! in its slot through the turns before its own; such a slot may wake the shard once
//! per turn for nothing, which is cheap.

use std::time::{Duration, Instant};

use chorus_protocol::signal::ParticipantId;

use super::TIMER_GRID;

/// Slots in the wheel: 256 × 20 ms = 5.12 s per turn (str0m's idle timers are 3–5 s).
const SLOTS: usize = 256;
const WORDS: usize = SLOTS / 64;

#[derive(Debug)]
pub(super) struct TimerWheel {
    /// Grid point 0 (the shard's start).
    origin: Instant,
    /// Each slot's entries: the grid point each is due at, and whose it is.
    slots: Box<[Vec<(u64, ParticipantId)>]>,
    /// Which slots hold entries (bit `i % 64` of word `i / 64`).
    occupied: [u64; WORDS],
    /// The first grid point not yet fired: every entry due before it has been taken.
    next: u64,
}

impl TimerWheel {
    pub fn new(origin: Instant) -> TimerWheel {
        TimerWheel {
            origin,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            occupied: [0; WORDS],
            next: 0,
        }
    }

    /// The first grid point at or after `at`.
    pub fn on_grid(&self, at: Instant) -> Instant {
        self.instant(self.point_at_or_after(at))
    }

    /// Files `pid` at `at`, a time from [`TimerWheel::on_grid`]. A time already
    /// past fires at the next grid point not yet fired (and is handed back as `at`).
    pub fn push(&mut self, at: Instant, pid: ParticipantId) {
        let point = self.point_at_or_after(at);
        let slot = (point.max(self.next) % SLOTS as u64) as usize;
        self.slots[slot].push((point, pid));
        self.occupied[slot / 64] |= 1 << (slot % 64);
    }

    /// When the next entry may be due: the grid point of the first occupied slot
    /// from the next one to fire (an entry a turn or more away may share it); `None`
    /// when no slot holds an entry.
    pub fn next_due(&self) -> Option<Instant> {
        let start = (self.next % SLOTS as u64) as usize;
        let distance = (0..=WORDS).find_map(|w| {
            // Word by word from `start`, the first word masked below it and
            // looked at again at the end (the turn's wrap).
            let slot = (start / 64 + w) % WORDS * 64;
            let mut bits = self.occupied[slot / 64];
            if w == 0 {
                bits &= u64::MAX << (start % 64);
            } else if w == WORDS {
                bits &= !(u64::MAX << (start % 64));
            }
            (bits != 0).then(|| {
                let found = slot + bits.trailing_zeros() as usize;
                (found + SLOTS - start) % SLOTS
            })
        })?;
        Some(self.instant(self.next + distance as u64))
    }

    /// Moves every entry due at or before `now` into `due` (as `(at, pid)`, in
    /// slot order), and marks the grid points up to `now` fired.
    pub fn take_due(&mut self, now: Instant, due: &mut Vec<(Instant, ParticipantId)>) {
        let Some(last) = self.point_at_or_before(now) else {
            return;
        };
        if last < self.next {
            return;
        }
        // More than a turn late: each slot once, whatever its entries' turn.
        let first = self.next.max((last + 1).saturating_sub(SLOTS as u64));
        for point in first..=last {
            let slot = (point % SLOTS as u64) as usize;
            if self.occupied[slot / 64] & (1 << (slot % 64)) == 0 {
                continue;
            }
            let origin = self.origin;
            let entries = &mut self.slots[slot];
            entries.retain(|&(at, pid)| {
                if at > last {
                    return true;
                }
                due.push((instant(origin, at), pid));
                false
            });
            if entries.is_empty() {
                self.occupied[slot / 64] &= !(1 << (slot % 64));
            }
        }
        self.next = last + 1;
    }

    fn instant(&self, point: u64) -> Instant {
        instant(self.origin, point)
    }

    /// The grid point at or after `at` (the origin for anything before it).
    fn point_at_or_after(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(since.div_ceil(TIMER_GRID.as_nanos())).unwrap_or(u64::MAX / 2)
    }

    /// The last grid point at or before `at`, if `at` is not before the origin.
    fn point_at_or_before(&self, at: Instant) -> Option<u64> {
        let since = at.checked_duration_since(self.origin)?.as_nanos();
        u64::try_from(since / TIMER_GRID.as_nanos()).ok()
    }
}

fn instant(origin: Instant, point: u64) -> Instant {
    let nanos = u64::try_from(TIMER_GRID.as_nanos())
        .unwrap_or(u64::MAX)
        .saturating_mul(point);
    origin
        .checked_add(Duration::from_nanos(nanos))
        .unwrap_or(origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn fires_in_grid_order_at_or_after_the_time_asked() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        assert_eq!(w.next_due(), None);
        w.push(w.on_grid(t0 + ms(45)), ParticipantId(1));
        w.push(w.on_grid(t0 + ms(5)), ParticipantId(2));
        w.push(w.on_grid(t0 + ms(40)), ParticipantId(3));
        assert_eq!(w.on_grid(t0 + ms(45)), t0 + ms(60));
        assert_eq!(w.next_due(), Some(t0 + ms(20)));
        let mut due = Vec::new();
        w.take_due(t0 + ms(19), &mut due);
        assert!(due.is_empty());
        w.take_due(t0 + ms(59), &mut due);
        assert_eq!(
            due,
            vec![
                (t0 + ms(20), ParticipantId(2)),
                (t0 + ms(40), ParticipantId(3))
            ]
        );
        assert_eq!(w.next_due(), Some(t0 + ms(60)));
        due.clear();
        w.take_due(t0 + ms(60), &mut due);
        assert_eq!(due, vec![(t0 + ms(60), ParticipantId(1))]);
        assert_eq!(w.next_due(), None);
    }

    #[test]
    fn an_entry_turns_away_waits_for_its_own_turn() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let far = w.on_grid(t0 + ms(20 * SLOTS as u64 * 2 + 100));
        w.push(far, ParticipantId(7));
        let mut due = Vec::new();
        let mut now = t0;
        // Step through the turns before it: it may wake the shard, never fire.
        while let Some(at) = w.next_due().filter(|&at| at < far) {
            assert!(at >= now);
            now = at;
            w.take_due(now, &mut due);
            assert!(due.is_empty(), "fired early at {:?}", now - t0);
        }
        assert_eq!(w.next_due(), Some(far));
        w.take_due(far, &mut due);
        assert_eq!(due, vec![(far, ParticipantId(7))]);
    }

    #[test]
    fn past_times_fire_next_and_a_late_call_takes_everything_due() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let mut due = Vec::new();
        w.take_due(t0 + ms(100), &mut due);
        // In the past: filed at the next grid point not yet fired.
        w.push(t0 + ms(40), ParticipantId(1));
        assert_eq!(w.next_due(), Some(t0 + ms(120)));
        // ... and comes back with the time it was filed for (its owner's `timer_at`).
        w.take_due(t0 + ms(120), &mut due);
        assert_eq!(due, vec![(t0 + ms(40), ParticipantId(1))]);
        due.clear();
        w.push(t0 + ms(60), ParticipantId(1));
        // Entries over more than a turn, then one call long after all of them.
        for i in 0..(2 * SLOTS as u64) {
            w.push(w.on_grid(t0 + ms(130 + 20 * i)), ParticipantId(100 + i));
        }
        w.take_due(t0 + ms(130 + 20 * 4 * SLOTS as u64), &mut due);
        assert_eq!(due.len(), 1 + 2 * SLOTS);
        assert_eq!(w.next_due(), None);
        // Wrap of the occupied bits: one entry just behind the next slot to fire.
        let at = w.on_grid(t0 + ms(130 + 20 * 5 * SLOTS as u64 - 20));
        w.push(at, ParticipantId(9));
        assert_eq!(w.next_due(), Some(at));
    }
}
