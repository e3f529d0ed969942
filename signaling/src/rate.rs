//! A token bucket: how the node limits joins per address and messages per socket.

use std::time::{Duration, Instant};

/// A token bucket: `rate` messages per second, bursts of `2 * rate` unless said.
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    pub(crate) fn new(rate: u32, now: Instant) -> Self {
        Self::with_burst(rate, rate.max(1).saturating_mul(2), now)
    }

    /// `rate` per second, bursts of `burst` (at least 1).
    pub(crate) fn with_burst(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            rate: f64::from(rate.max(1)),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Whether the bucket would be full at `now` (nothing to remember).
    pub(crate) fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.burst
    }

    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now
            .saturating_duration_since(self.last)
            .min(Duration::from_secs(10));
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_allows_bursts_then_refills() {
        let t = Instant::now();
        let mut l = RateLimiter::new(10, t);
        assert_eq!((0..30).filter(|_| l.allow(t)).count(), 20);
        assert!(!l.allow(t));
        assert!(l.allow(t + Duration::from_millis(100)));
    }
}
