//! When a subscriber's video slots may be padded above its bandwidth estimate: probes
//! for the bandwidth a higher layer needs.
//!
//! While a slot forwards less than it asked for, the shard pads the subscriber's
//! video slots (`shard/video.rs` `fit_to_estimate`) up to what the next layer would
//! take. Within the estimate that only keeps the estimate honest (it may not grow
//! past 1.5 × what is received); above it, it is a probe: if the receiver gets the
//! padding without delay building up, the estimate jumps to what was received
//! (`estimator.rs`), and the slot moves up at the next allocation. A probe lasts one
//! allocation interval; one that found no more bandwidth waits twice as long before
//! the next (up to [`MAX_INTERVAL`]), one that did lets the next one come soon, as
//! libwebrtc probes again after a success and backs off on a narrow link.

use std::time::{Duration, Instant};

/// The wait after a probe that found bandwidth, and the longest after a string of
/// probes that found none.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
const MAX_INTERVAL: Duration = Duration::from_secs(4);
/// No probe for this long after the estimate fell (the link just proved narrow).
const AFTER_A_CUT: Duration = Duration::from_secs(4);
/// A probe is judged once it had this long to show in the estimate (the estimator
/// measures what is received over 500 ms).
const PROBE_LENGTH: Duration = Duration::from_millis(600);
/// How far above the estimate a probe pads, in percent: boldly while probes find
/// bandwidth, cautiously after one that did not or after a cut (a probe that
/// overfills a narrow link's queue costs voice too).
const BOLD: u64 = 200;
const CAUTIOUS: u64 = 130;
/// What a probe must add to the estimate to count as found (1/16: 6.25 %).
const FOUND_SHARE: u64 = 16;
/// An estimate this much (1/20: 5 %) below the last one seen is a cut.
const CUT_SHARE: u64 = 20;

/// One subscriber's probing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probing {
    /// The current probe: when it started, and the estimate then.
    current: Option<(Instant, u64)>,
    /// No probe before this.
    next_at: Option<Instant>,
    interval: Duration,
    /// The next probe's height over the estimate, percent.
    factor: u64,
    /// The estimate at the last call.
    last_estimate: u64,
}

impl Default for Probing {
    fn default() -> Self {
        Probing {
            current: None,
            next_at: None,
            interval: MIN_INTERVAL,
            factor: BOLD,
            last_estimate: 0,
        }
    }
}

impl Probing {
    /// How far to pad (bit/s of video, padding included) towards `want` given the
    /// estimate: within it, or above it while a probe runs.
    pub fn pad_to(&mut self, want: u64, estimate: u64, now: Instant) -> u64 {
        let cut = estimate < self.last_estimate - self.last_estimate / CUT_SHARE;
        self.last_estimate = estimate;
        if cut {
            self.current = None;
            self.factor = CAUTIOUS;
            self.next_at = Some(
                self.next_at
                    .map_or(now, |t| t.max(now))
                    .max(now + AFTER_A_CUT),
            );
        }
        if let Some((started, from)) = self.current {
            if now.saturating_duration_since(started) < PROBE_LENGTH {
                return want.min(estimate.max(from) * self.factor / 100);
            }
            self.current = None;
            (self.interval, self.factor) = if estimate >= from + from / FOUND_SHARE {
                (MIN_INTERVAL, BOLD)
            } else {
                ((self.interval * 2).min(MAX_INTERVAL), CAUTIOUS)
            };
            self.next_at = Some(now + self.interval);
        }
        if want > estimate && self.next_at.is_none_or(|t| now >= t) {
            self.current = Some((now, estimate));
            return want.min(estimate * self.factor / 100);
        }
        want.min(estimate)
    }

    /// Nothing to probe for (no slot waits for a higher layer).
    pub fn idle(&mut self) {
        self.current = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_come_soon_after_a_success_and_back_off_after_failures_and_cuts() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut p = Probing::default();
        // Wanting less than the estimate: padded to it, no probe.
        assert_eq!(p.pad_to(500, 1_000, at(0)), 500);
        // Wanting more: a probe at once, up to twice the estimate.
        assert_eq!(p.pad_to(3_000, 1_000, at(0)), 2_000);
        assert_eq!(p.pad_to(1_500, 1_000, at(200)), 1_500, "still probing");
        // It found bandwidth: within the estimate now, the next probe 1 s later.
        assert_eq!(p.pad_to(3_000, 1_500, at(600)), 1_500);
        assert_eq!(p.pad_to(3_000, 1_500, at(1_000)), 1_500);
        assert_eq!(p.pad_to(3_000, 1_500, at(1_600)), 3_000, "probing again");
        // It found nothing: cautious probes 2 s, then 4 s later.
        assert_eq!(p.pad_to(3_000, 1_500, at(2_200)), 1_500);
        assert_eq!(p.pad_to(3_000, 1_500, at(4_000)), 1_500);
        assert_eq!(p.pad_to(3_000, 1_500, at(4_200)), 1_950);
        assert_eq!(p.pad_to(3_000, 1_500, at(4_800)), 1_500);
        assert_eq!(p.pad_to(3_000, 1_500, at(8_000)), 1_500);
        assert_eq!(p.pad_to(3_000, 1_500, at(8_900)), 1_950);
        // At most 4 s apart however many failed.
        assert_eq!(p.pad_to(3_000, 1_500, at(9_500)), 1_500);
        assert_eq!(p.pad_to(3_000, 1_500, at(13_500)), 1_950);
        // A cut ends a probe and holds the next one off for 4 s.
        assert_eq!(p.pad_to(3_000, 1_000, at(13_600)), 1_000);
        assert_eq!(p.pad_to(3_000, 1_000, at(17_000)), 1_000);
        assert_eq!(p.pad_to(3_000, 1_000, at(17_700)), 1_300);
    }
}
