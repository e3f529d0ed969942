//! Voice activity from RFC 6464 audio levels: a smoothed linear level per speaker and
//! a speaking flag with hysteresis and hangover, so indicators and slot decisions do
//! not flicker on every 20 ms packet.

use std::time::{Duration, Instant};

/// Weight of a new packet in the exponential moving average (per packet, ~20 ms).
const ALPHA: f32 = 0.3;
/// Smoothed level at or above which a silent speaker starts speaking (-50 dBov).
pub(crate) const START_LEVEL: f32 = 0.003_162;
/// Smoothed level below which a speaker counts as quiet (-56 dBov).
const STOP_LEVEL: f32 = 0.001_585;
/// How long a speaker must stay quiet before it stops speaking.
const HANGOVER: Duration = Duration::from_millis(500);
/// No packet for this long means no sound (DTX, mute at the source, packet loss).
const STALE: Duration = Duration::from_millis(300);

/// RFC 6464 §3: the level is -dBov, 0 (loudest) to 127 (silence); linear = 10^(-dBov/20).
pub fn dbov_to_linear(dbov: u8) -> f32 {
    if dbov >= 127 {
        return 0.0;
    }
    10f32.powf(-(dbov as f32) / 20.0)
}

/// One speaker's level state.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpeakerLevel {
    smoothed: f32,
    speaking: bool,
    last_loud: Option<Instant>,
    last_packet: Option<Instant>,
}

impl SpeakerLevel {
    /// Feeds one packet's level, in -dBov (str0m hands it as a negative `i8`).
    pub fn on_packet(&mut self, now: Instant, audio_level: Option<i8>) {
        self.last_packet = Some(now);
        let Some(level) = audio_level else {
            return;
        };
        let dbov = level.unsigned_abs().min(127);
        let linear = dbov_to_linear(dbov);
        self.smoothed = self.smoothed * (1.0 - ALPHA) + linear * ALPHA;
        if self.smoothed >= STOP_LEVEL {
            self.last_loud = Some(now);
        }
        if !self.speaking && self.smoothed >= START_LEVEL {
            self.speaking = true;
        }
    }

    /// Ages the state; returns true when the speaking flag changed.
    pub fn tick(&mut self, now: Instant) -> bool {
        let stale = self
            .last_packet
            .is_none_or(|t| now.saturating_duration_since(t) >= STALE);
        if stale {
            self.smoothed = 0.0;
        }
        if self.speaking {
            let quiet_for = self
                .last_loud
                .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
            if stale || quiet_for >= HANGOVER {
                self.speaking = false;
                return true;
            }
        } else if !stale && self.smoothed >= START_LEVEL {
            self.speaking = true;
            return true;
        }
        false
    }

    pub fn speaking(&self) -> bool {
        self.speaking
    }

    /// Smoothed linear level, 0..1.
    pub fn level(&self) -> f32 {
        self.smoothed
    }

    /// Forgets everything (used on mute: a muted participant is not speaking).
    pub fn reset(&mut self) {
        *self = SpeakerLevel::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(l: &mut SpeakerLevel, start: Instant, from_ms: u64, to_ms: u64, dbov: i8) {
        for ms in (from_ms..to_ms).step_by(20) {
            let now = start + Duration::from_millis(ms);
            l.on_packet(now, Some(-dbov));
            l.tick(now);
        }
    }

    #[test]
    fn linear_matches_rfc6464() {
        assert_eq!(dbov_to_linear(0), 1.0);
        assert!((dbov_to_linear(20) - 0.1).abs() < 1e-6);
        assert_eq!(dbov_to_linear(127), 0.0);
    }

    #[test]
    fn starts_quickly_and_stops_after_hangover() {
        let t0 = Instant::now();
        let mut l = SpeakerLevel::default();
        feed(&mut l, t0, 0, 100, 20);
        assert!(l.speaking());
        // Silence: the flag holds through the hangover, then drops.
        feed(&mut l, t0, 100, 400, 127);
        assert!(l.speaking(), "hangover keeps the flag through short pauses");
        feed(&mut l, t0, 400, 1200, 127);
        assert!(!l.speaking());
    }

    #[test]
    fn background_noise_is_not_speech() {
        let t0 = Instant::now();
        let mut l = SpeakerLevel::default();
        feed(&mut l, t0, 0, 2000, 70);
        assert!(!l.speaking());
    }

    #[test]
    fn stops_when_packets_stop() {
        let t0 = Instant::now();
        let mut l = SpeakerLevel::default();
        feed(&mut l, t0, 0, 200, 10);
        assert!(l.speaking());
        assert!(l.tick(t0 + Duration::from_millis(600)));
        assert!(!l.speaking());
        assert_eq!(l.level(), 0.0);
    }
}
