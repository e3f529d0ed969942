//! The mic-spam guard: from the RFC 6464 levels every packet already carries, flags a
//! speaker pinned near full scale (a soundboard or a tone held against the microphone)
//! or transmitting without a pause for too long. Kept per speaker where its media is,
//! fed once per packet on the publisher side; time is passed in.

use std::time::{Duration, Instant};

use crate::level::{dbov_to_linear, START_LEVEL};

use chorus_protocol::control::SpamGuard;

/// The shortest silence that counts as a pause in transmitting.
const PAUSE: Duration = Duration::from_millis(300);
/// The window is kept in this many buckets.
const BUCKETS: usize = 16;

/// When a speaker is flagged: room policy `spam_guard`'s thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SpamRules {
    /// A packet this loud or louder (-dBov; 6 is -6 dBov) counts as pinned ...
    pub loud_dbov: u8,
    /// ... and this share of the window's packets pinned flags the speaker.
    pub loud_share: f32,
    pub loud_window: Duration,
    /// Transmitting sound without a pause for longer than this is flagged.
    pub continuous: Duration,
}

impl SpamRules {
    pub fn of(guard: &SpamGuard) -> SpamRules {
        SpamRules {
            loud_dbov: guard.loud_dbov.unsigned_abs().min(127),
            loud_share: f32::from(guard.loud_percent.clamp(1, 100)) / 100.0,
            loud_window: Duration::from_secs(u64::from(guard.loud_window_s.max(1))),
            continuous: Duration::from_secs(u64::from(guard.continuous_s.max(1))),
        }
    }

    fn bucket(&self) -> Duration {
        self.loud_window / BUCKETS as u32
    }

    /// A window needs packets for half its length (20 ms frames) to be judged.
    fn min_packets(&self) -> u32 {
        (self.loud_window.as_millis() / 40).max(1) as u32
    }
}

impl Default for SpamRules {
    fn default() -> Self {
        SpamRules::of(&SpamGuard::default())
    }
}

/// Why a speaker was flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpamReason {
    Loud,
    Continuous,
}

impl SpamReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SpamReason::Loud => "loud",
            SpamReason::Continuous => "continuous",
        }
    }
}

/// A flag raised for one speaker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SpamFlag {
    pub reason: SpamReason,
    /// Mean linear level (0..1) of the packets in the window.
    pub level: f32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which bucket-long interval (a sixteenth of the window) since the watch
    /// started this bucket holds.
    index: u64,
    packets: u32,
    loud: u32,
    level_sum: f32,
}

/// One speaker's watch. Raises each flag once per episode: `loud` again only after
/// the window has fallen below half the share, `continuous` after a pause.
#[derive(Debug, Clone)]
pub(crate) struct SpamWatch {
    rules: SpamRules,
    start: Instant,
    buckets: [Bucket; BUCKETS],
    loud_flagged: bool,
    /// Since when sound has gone on without a pause.
    transmitting_since: Option<Instant>,
    last_sound: Option<Instant>,
    continuous_flagged: bool,
}

impl SpamWatch {
    pub fn new(now: Instant, rules: SpamRules) -> Self {
        SpamWatch {
            rules,
            start: now,
            buckets: [Bucket::default(); BUCKETS],
            loud_flagged: false,
            transmitting_since: None,
            last_sound: None,
            continuous_flagged: false,
        }
    }

    /// The room's thresholds changed: the window starts over.
    pub fn set_rules(&mut self, now: Instant, rules: SpamRules) {
        if rules != self.rules {
            *self = SpamWatch::new(now, rules);
        }
    }

    /// Feeds one packet's level (-dBov as str0m gives it, `None` without the
    /// extension); returns a flag when one is raised.
    pub fn on_packet(&mut self, now: Instant, audio_level: Option<i8>) -> Option<SpamFlag> {
        let dbov = audio_level?.unsigned_abs().min(127);
        let rules = self.rules;
        let index = (now.saturating_duration_since(self.start).as_millis()
            / rules.bucket().as_millis().max(1)) as u64;
        let slot = &mut self.buckets[(index % BUCKETS as u64) as usize];
        if slot.index != index {
            *slot = Bucket {
                index,
                ..Bucket::default()
            };
        }
        slot.packets += 1;
        slot.loud += u32::from(dbov <= rules.loud_dbov);
        let linear = dbov_to_linear(dbov);
        slot.level_sum += linear;

        // Pinned near full scale over the window.
        let oldest = index.saturating_sub(BUCKETS as u64 - 1);
        let (packets, loud, level_sum) = self
            .buckets
            .iter()
            .filter(|b| b.index >= oldest && b.index <= index && b.packets > 0)
            .fold((0u32, 0u32, 0f32), |(p, l, s), b| {
                (p + b.packets, l + b.loud, s + b.level_sum)
            });
        let share = if packets > 0 {
            loud as f32 / packets as f32
        } else {
            0.0
        };
        let level = if packets > 0 {
            level_sum / packets as f32
        } else {
            0.0
        };
        let mut flag = None;
        if packets >= rules.min_packets() && share >= rules.loud_share && !self.loud_flagged {
            self.loud_flagged = true;
            flag = Some(SpamFlag {
                reason: SpamReason::Loud,
                level,
            });
        } else if self.loud_flagged && share < rules.loud_share / 2.0 {
            self.loud_flagged = false;
        }

        // Transmitting without a pause.
        if self
            .last_sound
            .is_some_and(|t| now.saturating_duration_since(t) >= PAUSE)
        {
            self.transmitting_since = None;
            self.continuous_flagged = false;
        }
        // Sound as loud as speech starts (-50 dBov) counts as transmitting; a pause is
        // PAUSE without it.
        if linear >= START_LEVEL {
            self.last_sound = Some(now);
            let since = *self.transmitting_since.get_or_insert(now);
            if !self.continuous_flagged
                && now.saturating_duration_since(since) > rules.continuous
                && flag.is_none()
            {
                self.continuous_flagged = true;
                flag = Some(SpamFlag {
                    reason: SpamReason::Continuous,
                    level,
                });
            }
        }
        flag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `ms` of 20 ms packets from `at`; `level(t_ms)` gives each one's -dBov.
    /// Returns the flags raised, with the time (ms from `start`) they came at.
    fn feed(
        w: &mut SpamWatch,
        start: Instant,
        from_ms: u64,
        to_ms: u64,
        level: impl Fn(u64) -> u8,
    ) -> Vec<(u64, SpamReason)> {
        let mut flags = Vec::new();
        for t in (from_ms..to_ms).step_by(20) {
            if let Some(f) = w.on_packet(start + Duration::from_millis(t), Some(-(level(t) as i8)))
            {
                flags.push((t, f.reason));
            }
        }
        flags
    }

    /// Speech: syllables of 150–250 ms at -14 to -30 dBov, pauses between words and
    /// a breath every few seconds; peaks reach -3 dBov now and then.
    fn speech(t: u64) -> u8 {
        let in_sentence = t % 7000;
        if in_sentence > 5200 {
            return 80; // a breath between sentences
        }
        let syllable = t % 230;
        if syllable > 170 {
            return 70; // the gap between syllables
        }
        match (t / 230) % 9 {
            0 => 3,
            1 | 5 => 14,
            2 | 6 | 8 => 20,
            _ => 30,
        }
    }

    #[test]
    fn a_full_scale_tone_is_flagged_loud_once() {
        let start = Instant::now();
        let mut w = SpamWatch::new(start, SpamRules::default());
        let flags = feed(&mut w, start, 0, 20_000, |_| 1);
        assert_eq!(flags.len(), 1, "{flags:?}");
        let (at, reason) = flags[0];
        assert_eq!(reason, SpamReason::Loud);
        assert!((1900..=4000).contains(&at), "flagged after {at} ms");
    }

    #[test]
    fn loud_is_flagged_again_only_after_it_stopped() {
        let start = Instant::now();
        let mut w = SpamWatch::new(start, SpamRules::default());
        assert_eq!(feed(&mut w, start, 0, 6000, |_| 1).len(), 1);
        assert!(feed(&mut w, start, 6000, 12_000, |_| 40).is_empty());
        let again = feed(&mut w, start, 12_000, 18_000, |_| 1);
        assert_eq!(again.len(), 1, "a second episode: {again:?}");
    }

    #[test]
    fn normal_speech_is_never_flagged() {
        let start = Instant::now();
        let mut w = SpamWatch::new(start, SpamRules::default());
        let flags = feed(&mut w, start, 0, 600_000, speech);
        assert!(flags.is_empty(), "{flags:?}");
    }

    #[test]
    fn sound_without_a_pause_is_flagged_after_the_limit() {
        let start = Instant::now();
        let mut w = SpamWatch::new(start, SpamRules::default());
        // Music at -20 dBov, never a 300 ms pause.
        let flags = feed(&mut w, start, 0, 180_000, |t| {
            if t % 1000 < 200 {
                60
            } else {
                20
            }
        });
        assert_eq!(flags.len(), 1, "{flags:?}");
        let (at, reason) = flags[0];
        assert_eq!(reason, SpamReason::Continuous);
        assert!((120_000..=121_000).contains(&at), "flagged at {at} ms");
    }

    #[test]
    fn the_room_sets_the_thresholds() {
        let start = Instant::now();
        let guard = SpamGuard {
            loud_dbov: -20,
            loud_percent: 50,
            loud_window_s: 2,
            continuous_s: 10,
            ..SpamGuard::default()
        };
        let mut w = SpamWatch::new(start, SpamRules::of(&guard));
        // -14 dBov 60 % of the time: loud by these rules, not by the defaults.
        let level = |t: u64| if t % 1000 < 600 { 14 } else { 40 };
        let flags = feed(&mut w, start, 0, 5000, level);
        assert_eq!(flags.len(), 1, "{flags:?}");
        assert_eq!(flags[0].1, SpamReason::Loud);
        assert!(flags[0].0 <= 2000, "flagged after {} ms", flags[0].0);
        let mut plain = SpamWatch::new(start, SpamRules::default());
        assert!(feed(&mut plain, start, 0, 5000, level).is_empty());
        // Sound without a pause: flagged after 10 s, not 120.
        let mut w = SpamWatch::new(start, SpamRules::of(&guard));
        let flags = feed(&mut w, start, 0, 20_000, |_| 30);
        assert_eq!(flags.len(), 1, "{flags:?}");
        assert_eq!(flags[0].1, SpamReason::Continuous);
        assert!((10_000..=10_100).contains(&flags[0].0), "{}", flags[0].0);
    }

    #[test]
    fn packets_without_a_level_change_nothing() {
        let start = Instant::now();
        let mut w = SpamWatch::new(start, SpamRules::default());
        for t in (0..10_000).step_by(20) {
            assert!(w
                .on_packet(start + Duration::from_millis(t), None)
                .is_none());
        }
    }
}
