//! Churn (`--churn-every`): participants leaving and rejoining and toggling mute during
//! the window, and the loss accounting that stays exact around it.
//!
//! Every participant *slot* (the global index `g`, which fixes its room and whether it
//! speaks) is held by a succession of *incarnations*, each a fresh WebSocket and a fresh
//! str0m client with an id of its own (the initial one has id `g`; rejoins get ids from
//! `participants` up). The id is the `sender` of the payload stamp, so a rejoined
//! speaker's packets are never confused with its predecessor's.
//!
//! # What a receiver is expected to get
//!
//! With churn, a receiver incarnation `r` is expected to receive the packets of a
//! speaker incarnation `s` of its room that were sent inside the window **and** while
//! both were in steady state **and** while `s` was unmuted, each boundary moved inwards
//! by the guard `G` (`--churn-guard`, 1 s):
//!
//! - `steady(x) = [connected(x) + G, left(x) − G)` (`left` = +∞ for one still there);
//! - `s`'s unmuted spans, each shrunk by `G` at every mute toggle that bounds it.
//!
//! Packets inside a guard are not counted either way: around a join, a leave or a
//! toggle the node may or may not forward them, and both are right. The speaker's
//! packets are located by their send times (each speaker incarnation keeps the send
//! time of every packet it sent in the window), so every expected packet is known by
//! its counter and loss stays exact. The same intersection with the *muted* spans
//! (shrunk by `G`) counts `forwarded_while_muted`: packets of a muted speaker that
//! reached a receiver, which should be 0.

use crate::accounting::{LossTotals, StreamStats};

/// SplitMix64: a small, good-enough generator for jitter and coin flips.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Half-open intervals `[a, b)` of ns since start, sorted and disjoint.
pub type Spans = Vec<(u64, u64)>;

/// The intersection of two span lists.
pub fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> Spans {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let lo = a[i].0.max(b[j].0);
        let hi = a[i].1.min(b[j].1);
        if lo < hi {
            out.push((lo, hi));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// `[connected + guard, left − guard)`, empty when it never connected or was too short.
pub fn steady(connected_ns: Option<u64>, left_ns: Option<u64>, guard: u64) -> Spans {
    let Some(c) = connected_ns else {
        return Vec::new();
    };
    let lo = c.saturating_add(guard);
    let hi = left_ns.map_or(u64::MAX, |l| l.saturating_sub(guard));
    if lo < hi {
        vec![(lo, hi)]
    } else {
        Vec::new()
    }
}

/// The (unmuted, muted) spans of a sender from its mute toggles `(ns, muted)` in time
/// order (it starts unmuted), each shrunk by `guard` at the toggles bounding it.
pub fn mute_spans(changes: &[(u64, bool)], guard: u64) -> (Spans, Spans) {
    let mut unmuted = Vec::new();
    let mut muted = Vec::new();
    let mut state = false;
    // The start of the current span; `None` = since the beginning (no toggle before).
    let mut since: Option<u64> = None;
    let mut close = |state: bool, since: Option<u64>, until: Option<u64>| {
        let lo = since.map_or(0, |t| t.saturating_add(guard));
        let hi = until.map_or(u64::MAX, |t| t.saturating_sub(guard));
        if lo < hi {
            if state {
                muted.push((lo, hi));
            } else {
                unmuted.push((lo, hi));
            }
        }
    };
    for &(t, m) in changes {
        if m == state {
            continue; // not a toggle
        }
        close(state, since, Some(t));
        state = m;
        since = Some(t);
    }
    close(state, since, None);
    (unmuted, muted)
}

/// The counter ranges (inclusive) of the packets whose send times fall in `spans`;
/// `send_ns[i]` is the send time of counter `first + i` (non-decreasing).
pub fn counter_ranges(first: u32, send_ns: &[u64], spans: &[(u64, u64)]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for &(lo, hi) in spans {
        let a = send_ns.partition_point(|&t| t < lo);
        let b = send_ns.partition_point(|&t| t < hi);
        if a < b {
            out.push((first + a as u32, first + (b - 1) as u32));
        }
    }
    out
}

/// One incarnation, as the churn accounting sees it.
pub struct Life<'a> {
    pub id: u32,
    pub slot: u32,
    pub connected_ns: Option<u64>,
    pub left_ns: Option<u64>,
    /// Counter of its first packet in the window, and the send time of each window
    /// packet from there (speakers only).
    pub window_first: Option<u32>,
    pub window_send_ns: &'a [u64],
    pub mute_changes: &'a [(u64, bool)],
    pub streams: &'a [(u32, StreamStats)],
}

/// Loss over the steady pairs of one room, and packets forwarded while muted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChurnLoss {
    pub totals: LossTotals,
    /// Packets of a muted speaker (sent inside a muted span, away from its toggles)
    /// that a steady receiver got.
    pub forwarded_while_muted: u64,
    /// Packets of muted speakers that steady receivers could have got (the base of
    /// `forwarded_while_muted`).
    pub muted_checked: u64,
}

/// Accounts one room: `speakers` and `receivers` are its incarnations (a speaker is
/// also a receiver of the other speakers); `window` is `[start, end)`.
pub fn room_loss(
    speakers: &[&Life<'_>],
    receivers: &[&Life<'_>],
    window: (u64, u64),
    guard: u64,
) -> ChurnLoss {
    let mut out = ChurnLoss::default();
    let window = [window];
    let senders: Vec<_> = speakers
        .iter()
        .map(|s| {
            let st = intersect(&steady(s.connected_ns, s.left_ns, guard), &window);
            let (unmuted, muted) = mute_spans(s.mute_changes, guard);
            (s, intersect(&st, &unmuted), intersect(&st, &muted))
        })
        .collect();
    for r in receivers {
        let st_r = steady(r.connected_ns, r.left_ns, guard);
        if st_r.is_empty() {
            continue;
        }
        for (s, audible, silent) in &senders {
            if s.slot == r.slot {
                continue;
            }
            let Some(first) = s.window_first else {
                continue;
            };
            let stream = r
                .streams
                .iter()
                .find(|(from, _)| *from == s.id)
                .map(|(_, st)| st);
            let expected = counter_ranges(first, s.window_send_ns, &intersect(&st_r, audible));
            out.totals.add_ranges(&expected, stream);
            for (a, b) in counter_ranges(first, s.window_send_ns, &intersect(&st_r, silent)) {
                out.muted_checked += u64::from(b - a) + 1;
                if let Some(st) = stream {
                    out.forwarded_while_muted += st.received_in(a, b);
                }
            }
        }
    }
    out
}

/// Whether a receiver joining at `join_ns` and connecting at `connected_ns` had a
/// speaker to hear from the join until `guard` after it connected (then its join time
/// to first audio means something).
pub fn join_eligible(r: &Life<'_>, join_ns: u64, speakers: &[&Life<'_>], guard: u64) -> bool {
    let Some(c) = r.connected_ns else {
        return false;
    };
    let need = (join_ns, c.max(join_ns).saturating_add(guard));
    speakers.iter().filter(|s| s.slot != r.slot).any(|s| {
        // Connected (not steady: a speaker sends from its connection on) and unmuted.
        let Some(sc) = s.connected_ns else {
            return false;
        };
        let live = [(sc, s.left_ns.unwrap_or(u64::MAX))];
        let (unmuted, _) = mute_spans(s.mute_changes, 0);
        intersect(&live, &unmuted)
            .iter()
            .any(|&(lo, hi)| lo <= need.0 && need.1 <= hi)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn rng_is_uniform_enough() {
        let mut r = Rng::new(7);
        let n = 10_000;
        let mean = (0..n).map(|_| r.unit()).sum::<f64>() / f64::from(n);
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        assert!((0..1000).map(|_| r.unit()).all(|u| (0.0..1.0).contains(&u)));
    }

    #[test]
    fn spans_intersect() {
        let a = [(0, 10), (20, 30)];
        let b = [(5, 25), (28, 40)];
        assert_eq!(intersect(&a, &b), vec![(5, 10), (20, 25), (28, 30)]);
        assert_eq!(intersect(&a, &[]), vec![]);
        assert_eq!(
            steady(Some(10 * S), Some(20 * S), S),
            vec![(11 * S, 19 * S)]
        );
        assert_eq!(steady(Some(10 * S), Some(11 * S), S), vec![]);
        assert_eq!(steady(None, None, S), vec![]);
        assert_eq!(steady(Some(0), None, S), vec![(S, u64::MAX)]);
    }

    #[test]
    fn mute_toggles_split_and_shrink() {
        assert_eq!(mute_spans(&[], S), (vec![(0, u64::MAX)], vec![]));
        let (u, m) = mute_spans(&[(10 * S, true), (20 * S, false), (21 * S, true)], S);
        assert_eq!(u, vec![(0, 9 * S)]); // 20..21 s is inside the guards
        assert_eq!(m, vec![(11 * S, 19 * S), (22 * S, u64::MAX)]);
        // A repeated state is not a toggle.
        let (u, _) = mute_spans(&[(10 * S, false)], S);
        assert_eq!(u, vec![(0, u64::MAX)]);
    }

    #[test]
    fn counters_by_send_time() {
        let send = [100, 120, 140, 160, 180];
        assert_eq!(counter_ranges(7, &send, &[(110, 161)]), vec![(8, 10)]);
        assert_eq!(
            counter_ranges(7, &send, &[(0, 101), (180, 200)]),
            vec![(7, 7), (11, 11)]
        );
        assert_eq!(counter_ranges(7, &send, &[(101, 119)]), vec![]);
    }

    fn stream(seqs: impl IntoIterator<Item = u32>) -> StreamStats {
        let mut s = StreamStats::default();
        for q in seqs {
            s.record(q);
        }
        s
    }

    #[test]
    fn a_room_with_a_leave_and_a_mute() {
        // Window 0..100 s; a packet a second. Speaker 0 mutes at 40 s and unmutes at
        // 60 s; receiver 1 leaves at 80 s, its replacement 9 connects at 81 s.
        let send: Vec<u64> = (0..100).map(|i| i * S).collect();
        let mute = [(40 * S, true), (60 * S, false)];
        let speaker = Life {
            id: 0,
            slot: 0,
            connected_ns: Some(0),
            left_ns: None,
            window_first: Some(0),
            window_send_ns: &send,
            mute_changes: &mute,
            streams: &[],
        };
        // Got everything it was sent, minus packet 20, plus 50 while muted.
        let got1 = [(
            0,
            stream((0..=39).filter(|&q| q != 20).chain([50]).chain(60..80)),
        )];
        let r1 = Life {
            id: 1,
            slot: 1,
            connected_ns: Some(0),
            left_ns: Some(80 * S),
            window_first: None,
            window_send_ns: &[],
            mute_changes: &[],
            streams: &got1,
        };
        let got9 = [(0, stream(82..100))];
        let r9 = Life {
            id: 9,
            slot: 1,
            connected_ns: Some(81 * S),
            left_ns: None,
            window_first: None,
            window_send_ns: &[],
            mute_changes: &[],
            streams: &got9,
        };
        let l = room_loss(&[&speaker], &[&speaker, &r1, &r9], (0, 100 * S), S);
        // r1: 1..=38 (39 is within the mute guard) and 61..=78: 38 + 18, lost 1.
        // r9: 82..=99: 18.
        assert_eq!(l.totals.expected, 56 + 18);
        assert_eq!(l.totals.lost(), 1);
        // Muted spans 42..58 s for r1: 41..=58 checked, 50 leaked.
        assert_eq!((l.muted_checked, l.forwarded_while_muted), (18, 1));
        // r9 joined at 80 s while speaker 0 was unmuted and connected at 81 s.
        assert!(join_eligible(&r9, 80 * S, &[&speaker], S));
        // r1 "joined" at 39.5 s: the speaker muted before r1 could hear it.
        let early = Life {
            connected_ns: Some(39 * S + S / 2),
            ..r1
        };
        assert!(!join_eligible(&early, 39 * S, &[&speaker], S));
    }
}
