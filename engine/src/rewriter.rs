//! Keeps each slot one continuous RTP stream while its source changes: the speaker of
//! an audio slot, or the publisher and simulcast layer of a video slot (issue 12:
//! [`SlotRewriter::with_clock`] at [`VIDEO_CLOCK`], keyed by its source).
//!
//! A slot has a fixed SSRC (Chorus's, in the answer). Sequence numbers
//! and timestamps are mapped from the current speaker's by a per-speaker offset:
//! - RFC 3550 §5.1: the sequence number increments by one per packet; a new speaker
//!   continues at the next number, so receivers see no loss and no restart;
//!   the speaker's own gaps (its losses) are preserved, so receivers can conceal them.
//! - The timestamp of a new speaker continues from the last one sent, advanced by the
//!   wall-clock time since, so jitter buffers see a plausible timeline.
//! - A late packet of a speaker from before it took the slot (reordered across the
//!   switch) would overlap numbers already sent and is dropped.

use std::time::Instant;

use chorus_protocol::signal::ParticipantId;

/// A stream's RTP clock: its rate, and the least a new source's timestamp advances by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Clock {
    pub rate: u32,
    pub min_step: u32,
}

/// Opus: 48 kHz (RFC 7587 §4.1), one 20 ms frame at least.
pub(crate) const OPUS_CLOCK: Clock = Clock {
    rate: 48_000,
    min_step: 960,
};

/// Video: 90 kHz (RFC 7741 §4.1, RFC 6184 §5.1), one frame at 30 fps at least.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const VIDEO_CLOCK: Clock = Clock {
    rate: 90_000,
    min_step: 3_000,
};

#[cfg(test)]
const MIN_TS_STEP: u32 = OPUS_CLOCK.min_step;

/// Where one packet goes out on the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rewritten {
    /// Extended sequence number (the SRTP rollover counter is its high bits).
    pub seq: u64,
    pub timestamp: u32,
    /// The first packet of a new speaker on this slot (marker bit).
    pub switched: bool,
}

/// One slot's rewriting; `K` names a source (a speaker; for video, a publisher's
/// layer).
#[derive(Debug, Clone)]
pub(crate) struct SlotRewriter<K = ParticipantId> {
    clock: Clock,
    speaker: Option<K>,
    seq_offset: i64,
    ts_offset: u32,
    last_ts: u32,
    /// Next extended sequence number to continue from on a switch.
    next_seq: u64,
    /// Output numbers below this belong to an earlier speaker.
    floor: u64,
    last_at: Option<Instant>,
    /// The current source's newest input sequence number.
    last_in: Option<u64>,
    /// Padding inserted in the current source's stream: only video slots pad (while
    /// probing), so an audio slot never allocates it.
    splits: Option<Box<Splits>>,
}

/// Padding inserted in a source's stream: each the newest input number before it and
/// the offset that mapped it, oldest first, so that a packet from before the padding
/// (a late repair) keeps its number. At most [`MAX_SPLITS`]; input at or below
/// `floor` is older than the oldest kept.
#[derive(Debug, Clone, Default)]
struct Splits {
    kept: Vec<(u64, i64)>,
    floor: Option<u64>,
}

/// Padding bursts remembered per source (a late packet older than this many bursts,
/// half a second of frames while probing, is dropped).
const MAX_SPLITS: usize = 16;

impl SlotRewriter {
    /// An audio slot starting at `initial_seq` (RFC 3550: random) and `initial_ts`.
    pub fn new(initial_seq: u16, initial_ts: u32) -> Self {
        SlotRewriter::with_clock(initial_seq, initial_ts, OPUS_CLOCK)
    }
}

impl<K: Copy + Eq> SlotRewriter<K> {
    /// A slot on `clock` starting at `initial_seq` and `initial_ts`.
    pub fn with_clock(initial_seq: u16, initial_ts: u32, clock: Clock) -> Self {
        SlotRewriter {
            clock,
            speaker: None,
            seq_offset: 0,
            ts_offset: 0,
            next_seq: initial_seq as u64,
            floor: 0,
            last_ts: initial_ts,
            last_at: None,
            last_in: None,
            splits: None,
        }
    }

    /// The slot's RTP timestamp at `now` (the last one sent, advanced by the time
    /// since), for a sender report; `None` if nothing was sent within `window`.
    pub fn timestamp_at(&self, now: Instant, window: std::time::Duration) -> Option<u32> {
        let at = self.last_at?;
        let elapsed = now.saturating_duration_since(at);
        if elapsed > window {
            return None;
        }
        let ticks = elapsed.as_micros() as u64 * u64::from(self.clock.rate) / 1_000_000;
        Some(self.last_ts.wrapping_add(ticks as u32))
    }

    /// Takes the next sequence number for a packet Chorus inserts (video padding, sent
    /// after a frame's last packet), and its timestamp (the last one sent): the
    /// current source's packets continue after it, and a late one from before it (a
    /// repair) keeps the number it would have had. `None` before the slot sent
    /// anything.
    pub fn pad(&mut self) -> Option<Rewritten> {
        self.last_at?;
        let last_in = self.last_in?;
        let seq = self.next_seq;
        self.next_seq += 1;
        // Allocated at a slot's first padding (not per packet); kept after.
        let splits = self.splits.get_or_insert_with(Box::default);
        match splits.kept.last_mut() {
            // Padding right after padding: one split.
            Some((split, _)) if *split == last_in => {}
            _ => {
                if splits.kept.len() == MAX_SPLITS {
                    let (oldest, _) = splits.kept.remove(0);
                    splits.floor = Some(oldest);
                }
                splits.kept.push((last_in, self.seq_offset));
            }
        }
        self.seq_offset += 1;
        Some(Rewritten {
            seq,
            timestamp: self.last_ts,
            switched: false,
        })
    }

    /// The next packet starts a new source even if it has the same key (a video slot
    /// that switched back to a layer it forwarded before: its old offsets are stale).
    pub fn rebase(&mut self) {
        self.speaker = None;
    }

    /// Maps one packet of `speaker` (extended input `seq`, input `timestamp`).
    /// `None`: drop it (it is older than the switch to this speaker).
    pub fn rewrite(
        &mut self,
        speaker: K,
        seq: u64,
        timestamp: u32,
        now: Instant,
    ) -> Option<Rewritten> {
        let switched = self.speaker != Some(speaker);
        if switched {
            self.speaker = Some(speaker);
            self.floor = self.next_seq;
            self.seq_offset = self.next_seq as i64 - seq as i64;
            if let Some(splits) = &mut self.splits {
                splits.kept.clear();
                splits.floor = None;
            }
            self.last_in = None;
            let step = match self.last_at {
                Some(at) => {
                    let elapsed = now.saturating_duration_since(at).as_micros() as u64;
                    let ticks = elapsed.saturating_mul(u64::from(self.clock.rate)) / 1_000_000;
                    (ticks.min(u32::MAX as u64) as u32).max(self.clock.min_step)
                }
                None => 0,
            };
            let target = self.last_ts.wrapping_add(step);
            self.ts_offset = target.wrapping_sub(timestamp);
        }
        let mut offset = self.seq_offset;
        if let Some(splits) = &self.splits {
            if splits.floor.is_some_and(|f| seq <= f) {
                return None;
            }
            if let Some((_, o)) = splits.kept.iter().find(|(split, _)| seq <= *split) {
                offset = *o;
            }
        }
        let out = seq as i64 + offset;
        if out < 0 || (out as u64) < self.floor {
            return None;
        }
        if self.last_in.is_none_or(|l| seq > l) {
            self.last_in = Some(seq);
        }
        let out = out as u64;
        let ts = timestamp.wrapping_add(self.ts_offset);
        if out >= self.next_seq {
            self.next_seq = out + 1;
            self.last_ts = ts;
            self.last_at = Some(now);
        }
        Some(Rewritten {
            seq: out,
            timestamp: ts,
            switched,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;

    #[test]
    fn one_speaker_keeps_its_spacing_and_gaps() {
        let t = Instant::now();
        let mut r = SlotRewriter::new(1000, 5000);
        let a = ParticipantId(1);
        let p1 = r.rewrite(a, 70_000, 10_000, t).unwrap();
        assert_eq!((p1.seq, p1.timestamp, p1.switched), (1000, 5000, true));
        let p2 = r.rewrite(a, 70_001, 10_960, t).unwrap();
        assert_eq!((p2.seq, p2.timestamp, p2.switched), (1001, 5960, false));
        let p4 = r.rewrite(a, 70_003, 12_880, t).unwrap();
        assert_eq!(p4.seq, 1003, "a loss stays visible");
        let p3 = r.rewrite(a, 70_002, 11_920, t).unwrap();
        assert_eq!(p3.seq, 1002, "reordering is preserved");
    }

    #[test]
    fn padding_takes_the_next_number_and_the_source_continues_after_it() {
        let t = Instant::now();
        let mut r: SlotRewriter<u8> = SlotRewriter::with_clock(100, 0, VIDEO_CLOCK);
        assert!(r.pad().is_none(), "nothing sent yet");
        // 500 and 502 (a frame's end) arrive, 501 is lost on the way in.
        let a = r.rewrite(1, 500, 9_000, t).unwrap();
        let c = r.rewrite(1, 502, 9_000, t).unwrap();
        assert_eq!(c.seq, a.seq + 2);
        let pad = r.pad().unwrap();
        assert_eq!((pad.seq, pad.timestamp), (c.seq + 1, c.timestamp));
        let d = r.rewrite(1, 503, 12_000, t).unwrap();
        assert_eq!((d.seq, d.timestamp), (c.seq + 2, c.timestamp + 3_000));
        // 501's repair comes late: it keeps its number, the gap it left.
        assert_eq!(r.rewrite(1, 501, 9_000, t).unwrap().seq, a.seq + 1);
        // Padding after padding shifts once more; the packets between keep theirs.
        let pad2 = r.pad().unwrap();
        let pad3 = r.pad().unwrap();
        assert_eq!((pad2.seq, pad3.seq), (d.seq + 1, d.seq + 2));
        assert_eq!(r.rewrite(1, 504, 15_000, t).unwrap().seq, d.seq + 3);
        assert_eq!(r.rewrite(1, 503, 12_000, t).unwrap().seq, d.seq);
        assert_eq!(r.rewrite(1, 501, 9_000, t).unwrap().seq, a.seq + 1);
        // Only the last few bursts are remembered: older late packets are dropped.
        for i in 0..MAX_SPLITS as u64 {
            r.rewrite(1, 505 + i, 18_000, t).unwrap();
            r.pad().unwrap();
        }
        assert!(r.rewrite(1, 501, 9_000, t).is_none());
    }

    #[test]
    fn a_new_speaker_continues_the_stream() {
        let t = Instant::now();
        let mut r = SlotRewriter::new(65_534, u32::MAX - 100);
        let (a, b) = (ParticipantId(1), ParticipantId(2));
        r.rewrite(a, 5, 0, t).unwrap();
        r.rewrite(a, 6, 960, t).unwrap();
        let later = t + Duration::from_millis(100);
        let b1 = r.rewrite(b, 40_000, 777, later).unwrap();
        assert_eq!(b1.seq, 65_536, "continues past the 16-bit wrap (extended)");
        assert!(b1.switched);
        assert_eq!(
            b1.timestamp,
            (u32::MAX - 100).wrapping_add(960).wrapping_add(4800)
        );
        // A late packet of b from before the switch would collide: dropped.
        assert_eq!(r.rewrite(b, 39_999, 0, later), None);
        // A late packet of a, after b took the slot, is a switch back — callers only
        // route the slot's current occupant here, so this is the next source.
        let b2 = r.rewrite(b, 40_001, 1737, later).unwrap();
        assert_eq!((b2.seq, b2.switched), (65_537, false));
    }

    #[test]
    fn the_report_timestamp_follows_the_clock() {
        let t = Instant::now();
        let mut r = SlotRewriter::new(0, 1000);
        let window = Duration::from_secs(2);
        assert_eq!(r.timestamp_at(t, window), None, "nothing sent yet");
        r.rewrite(ParticipantId(1), 0, 0, t).unwrap();
        assert_eq!(r.timestamp_at(t, window), Some(1000));
        let later = t + Duration::from_millis(500);
        assert_eq!(r.timestamp_at(later, window), Some(1000 + 24_000));
        assert_eq!(r.timestamp_at(t + Duration::from_secs(3), window), None);
    }

    #[test]
    fn a_video_slot_continues_across_layer_switches() {
        // Sources: (publisher, layer). A switch from layer 2 to layer 0 of the same
        // publisher 40 ms later continues the sequence and advances 3,600 ticks.
        let t = Instant::now();
        let mut r: SlotRewriter<(u64, u8)> = SlotRewriter::with_clock(100, 0, VIDEO_CLOCK);
        r.rewrite((1, 2), 9_000, 90_000, t).unwrap();
        r.rewrite((1, 2), 9_001, 90_000, t).unwrap();
        let low = r
            .rewrite((1, 0), 500, 12_345, t + Duration::from_millis(40))
            .unwrap();
        assert_eq!((low.seq, low.switched), (102, true));
        assert_eq!(low.timestamp, 3_600);
        // A quick switch still advances one frame at 30 fps.
        let back = r
            .rewrite((1, 2), 9_010, 91_000, t + Duration::from_millis(40))
            .unwrap();
        assert_eq!(back.timestamp, 3_600 + VIDEO_CLOCK.min_step);
    }

    #[test]
    fn quick_switches_advance_time_by_at_least_a_frame() {
        let t = Instant::now();
        let mut r = SlotRewriter::new(0, 0);
        r.rewrite(ParticipantId(1), 0, 0, t).unwrap();
        let b = r.rewrite(ParticipantId(2), 0, 123, t).unwrap();
        assert_eq!(b.timestamp, MIN_TS_STEP);
    }
}
