//! Proximity voice as one shard sees a room: where every member is, and a spatial
//! index of the shard's own listeners, so that a speaker's packet visits only the
//! listeners near it (a grid of cubes one reach wide: 27 cells per packet, never a
//! walk over the room).
//!
//! The rules, for a listener and an ordinary speaker (priority speakers and whispers
//! ignore distance):
//! - the speaker is audible within `radius`; one the listener already hears on a slot
//!   stays audible out to `radius × (1 + `[`EDGE_HYSTERESIS`]`)` (the *reach*), so a
//!   speaker standing on the edge does not flap;
//! - a participant without a position hears and is heard by no one;
//! - slots go to the loudest after distance: speech level × [`gain`], with
//!   `gain(d) = (1 − d / radius)²` (0 at and past the radius). Squared, so that a near
//!   whisper beats a far shout: at a tenth of the radius a voice keeps 81 % of its
//!   level, at nine tenths 1 %, 38 dB apart.

use std::collections::HashMap;
use std::sync::Arc;

use chorus_protocol::signal::ParticipantId;
use rustc_hash::FxHashMap;

use crate::participants::Key;

/// A place in the game's world, in its units.
pub type Point = [f64; 3];

/// Positions that changed (or, in a reset, all of them), shared between shards.
pub type Positions = Arc<[(ParticipantId, Point)]>;

/// The smallest radius a room takes (world units): much below it far-out coordinates
/// would share the grid's outermost cells.
pub use chorus_protocol::control::MIN_RADIUS;

/// How far past the radius (as a share of it) a speaker already heard stays heard.
pub const EDGE_HYSTERESIS: f64 = 0.1;

/// How loud a speaker `distance` away sounds, as a share of its level.
pub fn gain(distance: f64, radius: f64) -> f32 {
    let near = (1.0 - distance / radius).clamp(0.0, 1.0);
    (near * near) as f32
}

pub fn distance(a: Point, b: Point) -> f64 {
    let [dx, dy, dz] = [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
    (dx * dx + dy * dy + dz * dz).sqrt()
}

type Cell = [i64; 3];

/// A listener of this shard in the index.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Listener {
    pub id: ParticipantId,
    pub key: Key,
    pub at: Point,
}

#[derive(Debug)]
pub(crate) struct Space {
    radius: f64,
    /// `radius` plus the hysteresis: the edge of the grid's cells.
    reach: f64,
    /// Keyed by the node's own ids (never chosen by a client): a fast hash.
    positions: FxHashMap<ParticipantId, Point>,
    /// Keyed by positions, which clients may choose: the standard keyed hash.
    cells: HashMap<Cell, Vec<Listener>>,
    /// Where each indexed listener is in `cells`.
    indexed: FxHashMap<ParticipantId, (Cell, usize)>,
}

impl Space {
    pub fn new(radius: f64) -> Self {
        Space {
            radius,
            reach: radius * (1.0 + EDGE_HYSTERESIS),
            positions: FxHashMap::default(),
            cells: HashMap::new(),
            indexed: FxHashMap::default(),
        }
    }

    pub fn radius(&self) -> f64 {
        self.radius
    }

    pub fn position(&self, id: ParticipantId) -> Option<Point> {
        self.positions.get(&id).copied()
    }

    /// Whether a speaker `d` away is heard: within the radius, or within the reach
    /// for a speaker the listener already has on a slot.
    pub fn audible(&self, d: f64, on_a_slot: bool) -> bool {
        d <= self.radius || (on_a_slot && d <= self.reach)
    }

    /// Within the reach at all (a slot holder further away is out).
    pub fn within_reach(&self, d: f64) -> bool {
        d <= self.reach
    }

    fn cell(&self, p: Point) -> Cell {
        // `as` saturates: far-out coordinates share the outermost cells, which costs
        // only speed (distances are always checked).
        p.map(|c| (c / self.reach).floor() as i64)
    }

    /// A member moved (or got its first position). `local`: its key when this shard
    /// holds its media (it is indexed as a listener).
    pub fn place(&mut self, id: ParticipantId, at: Point, local: Option<Key>) {
        self.positions.insert(id, at);
        if let Some(key) = local {
            self.index_at(id, key, at);
        }
    }

    /// Indexes a listener of this shard at its position, if it has one.
    pub fn index(&mut self, id: ParticipantId, key: Key) {
        if let Some(at) = self.position(id) {
            self.index_at(id, key, at);
        }
    }

    fn index_at(&mut self, id: ParticipantId, key: Key, at: Point) {
        let cell = self.cell(at);
        if let Some(&(old, i)) = self.indexed.get(&id) {
            if old == cell {
                if let Some(l) = self.cells.get_mut(&cell).and_then(|c| c.get_mut(i)) {
                    l.at = at;
                    l.key = key;
                }
                return;
            }
        }
        self.unindex(id);
        let list = self.cells.entry(cell).or_default();
        list.push(Listener { id, key, at });
        self.indexed.insert(id, (cell, list.len() - 1));
    }

    /// Takes a listener out of the index (its media left this shard).
    pub fn unindex(&mut self, id: ParticipantId) {
        let Some((cell, i)) = self.indexed.remove(&id) else {
            return;
        };
        let Some(list) = self.cells.get_mut(&cell) else {
            return;
        };
        if i < list.len() {
            list.swap_remove(i);
            if let Some(moved) = list.get(i) {
                self.indexed.insert(moved.id, (cell, i));
            }
        }
        if list.is_empty() {
            self.cells.remove(&cell);
        }
    }

    /// Forgets a member (it left the room).
    pub fn forget(&mut self, id: ParticipantId) {
        self.unindex(id);
        self.positions.remove(&id);
    }

    /// Every indexed listener within the reach of `at`, with its distance.
    pub fn near(&self, at: Point, mut visit: impl FnMut(&Listener, f64)) {
        let [x, y, z] = self.cell(at);
        for dx in -1..=1i64 {
            for dy in -1..=1i64 {
                for dz in -1..=1i64 {
                    let cell = [x.wrapping_add(dx), y.wrapping_add(dy), z.wrapping_add(dz)];
                    let Some(list) = self.cells.get(&cell) else {
                        continue;
                    };
                    for l in list {
                        let d = distance(at, l.at);
                        if d <= self.reach {
                            visit(l, d);
                        }
                    }
                }
            }
        }
    }

    /// How many listeners are indexed (for tests).
    #[cfg(test)]
    pub fn indexed(&self) -> usize {
        self.indexed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Key {
        Key::for_test(i)
    }

    #[test]
    fn the_index_finds_exactly_the_listeners_within_reach() {
        let mut s = Space::new(10.0);
        // A lattice of listeners every 4 units, 20 × 20 × 3.
        let mut n = 0;
        for x in 0..20 {
            for y in 0..20 {
                for z in 0..3 {
                    let id = ParticipantId(n);
                    s.place(
                        id,
                        [x as f64 * 4.0, y as f64 * 4.0, z as f64 * 4.0],
                        Some(key(n as u32)),
                    );
                    n += 1;
                }
            }
        }
        for at in [
            [0.0, 0.0, 0.0],
            [37.5, 41.0, 3.0],
            [-5.0, 80.0, 9.0],
            [200.0, 0.0, 0.0],
        ] {
            let mut found = Vec::new();
            s.near(at, |l, d| {
                assert!((distance(at, l.at) - d).abs() < 1e-9);
                found.push(l.id);
            });
            found.sort_unstable();
            let mut expected: Vec<ParticipantId> = (0..n)
                .map(ParticipantId)
                .filter(|id| distance(at, s.position(*id).unwrap_or_default()) <= 11.0)
                .collect();
            expected.sort_unstable();
            assert_eq!(found, expected, "around {at:?}");
        }
    }

    #[test]
    fn moving_and_leaving_keep_the_index_right() {
        let mut s = Space::new(5.0);
        for i in 0..10 {
            s.place(ParticipantId(i), [0.0, 0.0, i as f64], Some(key(i as u32)));
        }
        s.place(ParticipantId(3), [100.0, 0.0, 0.0], Some(key(3)));
        s.forget(ParticipantId(0));
        s.unindex(ParticipantId(5));
        let mut found = Vec::new();
        s.near([0.0, 0.0, 2.0], |l, _| found.push(l.id.0));
        found.sort_unstable();
        assert_eq!(found, vec![1, 2, 4, 6, 7]);
        let mut far = Vec::new();
        s.near([101.0, 0.0, 0.0], |l, _| far.push(l.id.0));
        assert_eq!(far, vec![3]);
        assert_eq!(s.indexed(), 8);
    }

    #[test]
    fn hysteresis_and_gain() {
        let s = Space::new(10.0);
        assert!(s.audible(10.0, false));
        assert!(!s.audible(10.5, false), "a newcomer needs the radius");
        assert!(
            s.audible(10.5, true),
            "a slot holder keeps it a little further"
        );
        assert!(!s.audible(11.5, true));
        assert_eq!(gain(0.0, 10.0), 1.0);
        assert_eq!(gain(10.0, 10.0), 0.0);
        assert_eq!(gain(12.0, 10.0), 0.0);
        // A whisper (-40 dBov) at 1 unit beats a shout (-6 dBov) at 9.
        let whisper = 0.01 * gain(1.0, 10.0);
        let shout = 0.5 * gain(9.0, 10.0);
        assert!(whisper > shout, "{whisper} vs {shout}");
    }

    #[test]
    fn far_out_coordinates_do_not_break_the_grid() {
        let mut s = Space::new(1e-6);
        s.place(ParticipantId(1), [1e9, -1e9, 0.0], Some(key(1)));
        s.place(ParticipantId(2), [1e9, -1e9, 0.0], Some(key(2)));
        let mut found = 0;
        s.near([1e9, -1e9, 0.0], |_, _| found += 1);
        assert_eq!(found, 2);
    }
}
