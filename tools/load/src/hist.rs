//! A log-linear histogram of `u64` values (nanoseconds here) with < 0.8 % relative
//! error, fixed size (7,424 buckets, 58 KiB), O(1) record and cheap merge.
//!
//! Values below 128 get a bucket each; above, every power of two is split into 128
//! equal buckets (the HdrHistogram layout with 7 significant bits).

const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = (SUB as usize) * (64 - SUB_BITS as usize + 1);

#[derive(Debug, Clone)]
pub struct Hist {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS
    let shift = exp - SUB_BITS;
    let mantissa = (v >> shift) & (SUB - 1);
    (SUB as usize) * (shift as usize + 1) + mantissa as usize
}

/// The lowest value and the width of bucket `i`.
fn bucket(i: usize) -> (u64, u64) {
    let sub = SUB as usize;
    if i < sub {
        return (i as u64, 1);
    }
    let shift = (i / sub - 1) as u32;
    let mantissa = (i % sub) as u64;
    ((SUB + mantissa) << shift, 1u64 << shift)
}

impl Hist {
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn clear(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.total = 0;
        self.max = 0;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The exact largest value recorded (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1), nearest rank: the middle of the bucket
    /// holding the `ceil(q * count)`-th smallest value, never above the maximum; the
    /// exact maximum for the last rank. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        if rank >= self.total {
            return Some(self.max);
        }
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, width) = bucket(i);
                return Some((low + (width - 1) / 2).min(self.max));
            }
        }
        Some(self.max)
    }
}

/// Nearest-rank quantile of sorted values; `None` when empty.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).max(1);
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn buckets_tile_the_range() {
        let mut next = 0u64;
        for i in 0..BUCKETS {
            let (low, width) = bucket(i);
            assert_eq!(low, next, "bucket {i}");
            assert_eq!(index(low), i);
            assert_eq!(index(low + (width - 1)), i);
            next = low.wrapping_add(width);
        }
        assert_eq!(next, 0, "the last bucket ends at u64::MAX");
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_are_within_one_percent() {
        let mut h = Hist::default();
        for v in 1..=100_000u64 {
            h.record(v * 1_000); // 1 µs .. 100 ms
        }
        for (q, want) in [
            (0.5, 50_000_000.0),
            (0.95, 95_000_000.0),
            (0.99, 99_000_000.0),
        ] {
            let got = h.quantile(q).unwrap() as f64;
            assert!((got - want).abs() / want < 0.01, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(1.0), Some(100_000_000));
        assert_eq!(h.max(), 100_000_000);
        assert_eq!(h.count(), 100_000);
    }

    #[test]
    fn small_values_are_exact_and_merge_adds() {
        let mut a = Hist::default();
        let mut b = Hist::default();
        for v in [3, 3, 7] {
            a.record(v);
        }
        b.record(100);
        a.merge(&b);
        assert_eq!(a.count(), 4);
        assert_eq!(a.quantile(0.5), Some(3));
        assert_eq!(a.quantile(0.75), Some(7));
        assert_eq!(a.quantile(1.0), Some(100));
        a.clear();
        assert_eq!(a.quantile(0.5), None);
    }

    #[test]
    fn sorted_quantiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantile_sorted(&v, 0.5), Some(5.0));
        assert_eq!(quantile_sorted(&v, 0.99), Some(10.0));
        assert_eq!(quantile_sorted(&v, 0.0), Some(1.0));
        assert_eq!(quantile_sorted(&[], 0.5), None);
    }
}
