//! Per-stream accounting: which of a sender's packets a receiver got, how often, and
//! in what order.

/// A set of `u32` sequence counters stored as a bitmap that grows either way.
///
/// A stream's counters are dense (a sender numbers its packets 0, 1, 2, …), so a bit
/// per packet is the cheapest exact record: 60 s of 20 ms packets is 375 bytes.
#[derive(Debug, Clone, Default)]
pub struct SeqSet {
    /// The counter of bit 0 of `words[0]`; a multiple of 64.
    base: u32,
    words: Vec<u64>,
}

impl SeqSet {
    /// Adds `seq`; `false` if it was already present.
    pub fn insert(&mut self, seq: u32) -> bool {
        let aligned = seq & !63;
        if self.words.is_empty() {
            self.base = aligned;
        } else if aligned < self.base {
            let extra = ((self.base - aligned) / 64) as usize;
            self.words.splice(0..0, std::iter::repeat_n(0, extra));
            self.base = aligned;
        }
        let offset = seq - self.base;
        let word = (offset / 64) as usize;
        let bit = 1u64 << (offset % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        if self.words[word] & bit != 0 {
            return false;
        }
        self.words[word] |= bit;
        true
    }

    /// Whether `seq` is present.
    pub fn contains(&self, seq: u32) -> bool {
        if seq < self.base {
            return false;
        }
        let offset = seq - self.base;
        self.words
            .get((offset / 64) as usize)
            .is_some_and(|w| w & (1u64 << (offset % 64)) != 0)
    }

    /// Number of distinct counters present.
    #[cfg(test)]
    fn len(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

/// What one received packet was, relative to what the stream saw before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// A counter not seen before, above every earlier one.
    InOrder,
    /// A counter not seen before, below the highest already seen (it came late).
    Reordered,
    /// A counter already seen.
    Duplicate,
}

/// One (receiver, sender) stream: the packets the receiver got from that sender.
#[derive(Debug, Clone, Default)]
pub struct StreamStats {
    seen: SeqSet,
    highest: Option<u32>,
    /// Packets received that were duplicates of earlier ones.
    pub duplicates: u64,
    /// Packets received below the highest counter already seen (not duplicates).
    pub reordered: u64,
}

impl StreamStats {
    /// Records the arrival of the sender's packet `seq`.
    pub fn record(&mut self, seq: u32) -> Arrival {
        if !self.seen.insert(seq) {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        match self.highest {
            Some(h) if seq < h => {
                self.reordered += 1;
                Arrival::Reordered
            }
            _ => {
                self.highest = Some(seq);
                Arrival::InOrder
            }
        }
    }

    /// Packets missing from the counter range `first..=last` the sender sent.
    pub fn lost_in(&self, first: u32, last: u32) -> u64 {
        (first..=last).filter(|&s| !self.seen.contains(s)).count() as u64
    }

    /// Distinct packets received of the counter range `first..=last`.
    pub fn received_in(&self, first: u32, last: u32) -> u64 {
        u64::from(last - first) + 1 - self.lost_in(first, last)
    }
}

/// Totals over many streams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LossTotals {
    /// Packets that should have arrived.
    pub expected: u64,
    /// Of those, distinct packets that did.
    pub received: u64,
    pub duplicates: u64,
    pub reordered: u64,
}

impl LossTotals {
    /// Adds one stream whose sender sent the counters `range` (inclusive; `None` when it
    /// sent nothing in the window).
    pub fn add(&mut self, range: Option<(u32, u32)>, stream: Option<&StreamStats>) {
        let Some((first, last)) = range else {
            return;
        };
        let expected = u64::from(last - first) + 1;
        self.expected += expected;
        if let Some(s) = stream {
            self.received += expected - s.lost_in(first, last);
            self.duplicates += s.duplicates;
            self.reordered += s.reordered;
        }
    }

    /// Adds one stream of which only the counter `ranges` (inclusive) were expected
    /// (churn: the spans where sender and receiver were both there); its duplicates
    /// and reorderings count once, whatever the ranges.
    pub fn add_ranges(&mut self, ranges: &[(u32, u32)], stream: Option<&StreamStats>) {
        for &(first, last) in ranges {
            let expected = u64::from(last - first) + 1;
            self.expected += expected;
            if let Some(s) = stream {
                self.received += s.received_in(first, last);
            }
        }
        if let (Some(s), false) = (stream, ranges.is_empty()) {
            self.duplicates += s.duplicates;
            self.reordered += s.reordered;
        }
    }

    /// Packets expected but never received.
    pub fn lost(&self) -> u64 {
        self.expected - self.received
    }

    /// `lost / expected`, 0 when nothing was expected.
    pub fn loss(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.lost() as f64 / self.expected as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_set_grows_both_ways() {
        let mut s = SeqSet::default();
        assert_eq!(s.len(), 0);
        assert!(s.insert(1000));
        assert!(!s.insert(1000));
        assert!(s.insert(5));
        assert!(s.insert(70_000));
        assert!(s.contains(5) && s.contains(1000) && s.contains(70_000));
        assert!(!s.contains(6) && !s.contains(0) && !s.contains(u32::MAX));
        assert!(s.insert(u32::MAX));
        assert!(s.insert(0));
        assert_eq!(s.len(), 5);
    }

    #[test]
    fn classifies_arrivals() {
        let mut st = StreamStats::default();
        assert_eq!(st.record(10), Arrival::InOrder);
        assert_eq!(st.record(12), Arrival::InOrder);
        assert_eq!(st.record(11), Arrival::Reordered);
        assert_eq!(st.record(12), Arrival::Duplicate);
        assert_eq!(st.record(11), Arrival::Duplicate);
        assert_eq!(st.record(13), Arrival::InOrder);
        assert_eq!((st.seen.len(), st.duplicates, st.reordered), (4, 2, 1));
    }

    #[test]
    fn loss_counts_gaps_and_the_tail() {
        let mut st = StreamStats::default();
        for seq in [100, 101, 103, 104, 104, 106] {
            st.record(seq);
        }
        // Sent 100..=108: 102, 105, 107 and 108 never came.
        assert_eq!(st.lost_in(100, 108), 4);
        let mut t = LossTotals::default();
        t.add(Some((100, 108)), Some(&st));
        assert_eq!(t.expected, 9);
        assert_eq!(t.received, 5);
        assert_eq!(t.lost(), 4);
        assert_eq!(t.duplicates, 1);
        assert!((t.loss() - 4.0 / 9.0).abs() < 1e-12);
    }

    #[test]
    fn a_silent_stream_is_all_lost_and_an_idle_sender_expects_nothing() {
        let mut t = LossTotals::default();
        t.add(Some((0, 49)), None);
        t.add(None, None);
        assert_eq!((t.expected, t.received, t.lost()), (50, 0, 50));
        assert_eq!(LossTotals::default().loss(), 0.0);
    }
}
