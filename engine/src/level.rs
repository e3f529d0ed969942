//! Voice activity from RFC 6464 audio levels: a smoothed linear level per speaker and
//! a speaking flag with hysteresis and hangover, so indicators and slot decisions do
//! not flicker on every 20 ms packet; and, for slot decisions, how loud a speaker is
//! *while it speaks* (pauses leave it alone) and how long it has been quiet.

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
/// Time constant of the speech level: the linear level of the packets that carry
/// speech (packets at or above -56 dBov), averaged over about this much speech
/// (an exponential average corrected for its start, so a newcomer's is its own level
/// from its first words). Pauses do not move it.
const SPEECH_LEVEL_TIME: Duration = Duration::from_secs(2);
/// The time one speech packet counts for (Opus in WebRTC: 20 ms frames).
const PACKET_TIME: Duration = Duration::from_millis(20);
/// Weight of one speech packet in the speech level.
const SPEECH_ALPHA: f32 = PACKET_TIME.as_secs_f32() / SPEECH_LEVEL_TIME.as_secs_f32();

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
    /// The speech level's exponential average and the weight it has gathered
    /// (`1 - (1 - SPEECH_ALPHA)^packets`): their quotient is the level.
    speech_average: f32,
    speech_weight: f32,
    /// Packets that carried speech (saturating).
    speech_packets: u32,
    /// The level came from the speaker's own report, not from packets: it holds for
    /// [`crate::p2p::REPORT_STALE`].
    reported: bool,
}

impl SpeakerLevel {
    /// Feeds one packet's level, in -dBov (str0m hands it as a negative `i8`).
    pub fn on_packet(&mut self, now: Instant, audio_level: Option<i8>) {
        self.last_packet = Some(now);
        self.reported = false;
        let Some(level) = audio_level else {
            return;
        };
        let dbov = level.unsigned_abs().min(127);
        let linear = dbov_to_linear(dbov);
        self.smoothed = self.smoothed * (1.0 - ALPHA) + linear * ALPHA;
        self.hear(now, linear, 1);
    }

    /// Feeds the speaker's own report of its level (linear 0..1, smoothed by the
    /// client, sent every 200 ms while it makes sound): it stands for the packets the
    /// node does not see in p2p mode, and holds until the next report or
    /// [`crate::p2p::REPORT_STALE`].
    pub fn on_report(&mut self, now: Instant, linear: f32) {
        let linear = if linear.is_finite() {
            linear.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.last_packet = Some(now);
        self.reported = true;
        self.smoothed = linear;
        // A report stands for about ten packets' worth of speech.
        self.hear(now, linear, 10);
    }

    /// After `smoothed` took in a level (`linear`, standing for `packets` packets):
    /// loudness, the speech level and the speaking flag follow.
    fn hear(&mut self, now: Instant, linear: f32, packets: u32) {
        if self.smoothed >= STOP_LEVEL {
            self.last_loud = Some(now);
        }
        // The speech level reads packets that carry sound themselves, not the smoothed
        // tail of a word.
        if linear >= STOP_LEVEL {
            for _ in 0..packets {
                self.speech_average += (linear - self.speech_average) * SPEECH_ALPHA;
                self.speech_weight += (1.0 - self.speech_weight) * SPEECH_ALPHA;
            }
            self.speech_packets = self.speech_packets.saturating_add(packets);
        }
        if !self.speaking && self.smoothed >= START_LEVEL {
            self.speaking = true;
        }
    }

    /// Ages the state; returns true when the speaking flag changed.
    pub fn tick(&mut self, now: Instant) -> bool {
        let stale_after = if self.reported {
            crate::p2p::REPORT_STALE
        } else {
            STALE
        };
        let stale = self
            .last_packet
            .is_none_or(|t| now.saturating_duration_since(t) >= stale_after);
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

    /// How loud the speaker is while it speaks: the linear level averaged over its
    /// last seconds of speech ([`SPEECH_LEVEL_TIME`]), pauses left out. 0..1.
    pub fn speech_level(&self) -> f32 {
        if self.speech_weight > 0.0 {
            self.speech_average / self.speech_weight
        } else {
            0.0
        }
    }

    /// How much speech the speech level is made of.
    pub fn speech_time(&self) -> Duration {
        PACKET_TIME.saturating_mul(self.speech_packets)
    }

    /// How long the speaker has been quiet at `now` (`Duration::MAX`: never heard).
    pub fn quiet_for(&self, now: Instant) -> Duration {
        self.last_loud
            .map_or(Duration::MAX, |t| now.saturating_duration_since(t))
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
    fn speech_level_is_the_level_while_speaking_and_pauses_leave_it_alone() {
        let t0 = Instant::now();
        let mut l = SpeakerLevel::default();
        feed(&mut l, t0, 0, 200, 20);
        // Its own level from the first words (no ramp from zero).
        assert!(
            (l.speech_level() - 0.1).abs() < 0.01,
            "{}",
            l.speech_level()
        );
        assert_eq!(l.speech_time(), Duration::from_millis(200));
        let before = l.speech_level();
        feed(&mut l, t0, 200, 1200, 127);
        assert_eq!(l.speech_level(), before, "a pause does not move it");
        assert!(l.quiet_for(t0 + Duration::from_millis(1200)) >= Duration::from_millis(700));
        feed(&mut l, t0, 1200, 5200, 8);
        assert!(l.speech_level() > 0.3, "louder speech raises it");
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
