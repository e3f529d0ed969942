//! A subscriber's send-side bandwidth estimate: Google Congestion Control
//! (draft-ietf-rmcat-gcc-02) from transport-wide congestion control feedback, as
//! libwebrtc's goog_cc computes it.
//!
//! Chorus sends the video slot streams itself; each video packet carries a
//! transport-wide sequence number (the transport-cc header extension,
//! draft-holmer-rmcat-transport-wide-cc-extensions-01), recorded by
//! [`Estimator::on_sent`]; the subscriber's transport-cc feedback (RTCP RTPFB FMT 15)
//! comes back here ([`Estimator::on_feedback`]); the estimate fits the subscriber's
//! video layers (`shard/video.rs` `fit_to_estimate`). Each feedback message updates:
//! - the delay-based detector (draft §5.2–5.4): packets sent within 5 ms form a group;
//!   how much later a group arrived than it was sent after the one before goes through
//!   libwebrtc's trendline filter, and an adaptive threshold on its slope says
//!   overuse, underuse or normal;
//! - AIMD rate control (§5.5): overuse cuts the delay-based estimate to 0.85 × the
//!   acknowledged bitrate, normal raises it, underuse holds it;
//! - the loss-based estimate (§6): more than 10 % lost cuts it, less than 2 % raises it.
//!
//! The estimate is the lower of the two. Sans-IO and deterministic: time only comes in
//! as arguments. Nothing is allocated after [`Estimator::new`]: sent packets and the
//! acknowledged bytes live in fixed rings, looked up by index.

use std::fmt;
use std::time::{Duration, Instant};

/// How long after the sender last probed (and after the last cut) feedback may
/// still raise the estimate to what was received.
const PROBE_RESULT_WINDOW: Duration = Duration::from_secs(1);
/// Feedback older than this no longer measures what is sent.
const FEEDBACK_FRESH: Duration = Duration::from_secs(2);

/// Sent packets remembered, found by transport-wide sequence number modulo this (a
/// power of two dividing 65536, so the wrap keeps the index): a second of video at
/// several Mbit/s, ten times what feedback takes (16 KB per subscriber).
const HISTORY: usize = 1024;
/// Feedback on a packet sent longer ago than this is ignored: the entry is from an
/// earlier round of the 16-bit sequence numbers.
const MAX_FEEDBACK_AGE: Duration = Duration::from_secs(10);

/// Packets sent within this of a group's first belong to it (§5.2, libwebrtc
/// `kTimestampGroupLengthMs`).
const GROUP_SPAN: Duration = Duration::from_millis(5);
/// A delay variation beyond this (µs) is a clock jump, not queueing: skipped
/// (libwebrtc `kArrivalTimeOffsetThreshold`).
const MAX_DELAY_VARIATION_US: i64 = 3_000_000;
/// Trendline filter (libwebrtc `TrendlineEstimator`): smoothing of the accumulated
/// delay, samples in the regression, gain on its slope, and the most deltas counted.
const TREND_SMOOTHING: f64 = 0.9;
const TREND_WINDOW: usize = 20;
const TREND_GAIN: f64 = 4.0;
const TREND_MAX_DELTAS: u32 = 60;
/// Adaptive threshold (§5.4, ms): its start, how fast it follows the trend up and
/// down (per ms), its bounds, how far beyond it a trend leaves it alone (a spike), and
/// the longest step.
const THRESHOLD_START: f64 = 12.5;
const THRESHOLD_K_UP: f64 = 0.0087;
const THRESHOLD_K_DOWN: f64 = 0.039;
const THRESHOLD_MIN: f64 = 6.0;
const THRESHOLD_MAX: f64 = 600.0;
const THRESHOLD_MAX_OFFSET: f64 = 15.0;
const THRESHOLD_MAX_STEP_MS: f64 = 100.0;
/// The trend must stay above the threshold this long (ms of send time) for overuse.
const OVERUSE_TIME_MS: f64 = 10.0;

/// AIMD (§5.5, libwebrtc `AimdRateControl`): overuse sets the delay-based estimate to
/// this × the acknowledged bitrate.
const DECREASE_FACTOR: f64 = 0.85;
/// Multiplicative increase a second while the link's capacity is unknown, and its
/// least step (bit/s).
const INCREASE_PER_SECOND: f64 = 1.08;
const MIN_INCREASE: f64 = 1_000.0;
/// Round trip assumed (not measured); with the detector's ~100 ms it makes the
/// response time: near the link's capacity the estimate grows about a packet per
/// response time, and cuts are at least that far apart (a cut shows no sooner).
const ASSUMED_RTT: Duration = Duration::from_millis(100);
const RESPONSE_TIME: Duration = ASSUMED_RTT.saturating_add(Duration::from_millis(100));
/// The additive increase counts in libwebrtc's packets (1200 bytes) of 30 fps frames,
/// at least `MIN_ADDITIVE_INCREASE` bit/s a second.
const PACKET_BITS: f64 = 1_200.0 * 8.0;
const FRAME_RATE: f64 = 30.0;
const MIN_ADDITIVE_INCREASE: f64 = 4_000.0;
/// The estimate grows no higher than this × the acknowledged bitrate + `HEADROOM_BPS`
/// (after the first overuse; before, `start` is allowed too).
const HEADROOM_FACTOR: f64 = 1.5;
const HEADROOM_BPS: f64 = 10_000.0;
/// Link capacity (the acknowledged bitrate at overuse, averaged, libwebrtc
/// `LinkCapacityEstimator`): smoothing, bounds of the normalized variance (kbit/s),
/// and how many deviations around it count as near it.
const CAPACITY_SMOOTHING: f64 = 0.05;
const CAPACITY_VARIANCE_MIN: f64 = 0.4;
const CAPACITY_VARIANCE_MAX: f64 = 2.5;
const CAPACITY_DEVIATIONS: f64 = 3.0;

/// Loss-based (§6): the loss fraction is taken over at least `LOSS_INTERVAL` of
/// feedback and `LOSS_MIN_PACKETS` reported packets; above `LOSS_HIGH` the estimate
/// × (1 − 0.5 × loss), below `LOSS_LOW` × `LOSS_INCREASE`, between held. (Over
/// 200 ms, 5 % random loss sometimes measures above 10 % and walks the estimate down
/// a little; a second reacted too late to a full queue, voice with it.)
const LOSS_INTERVAL: Duration = Duration::from_millis(200);
const LOSS_MIN_PACKETS: u32 = 20;
const LOSS_HIGH: f64 = 0.10;
const LOSS_LOW: f64 = 0.02;
const LOSS_INCREASE: f64 = 1.05;

/// Acknowledged bitrate: bytes reported received by receive time (the receiver's
/// clock: what the link delivered, whatever the feedback's timing), in buckets of
/// `ACK_BUCKET_US`, the last `ACK_BUCKETS` (500 ms); measured once it spans
/// `ACK_MIN_SPAN_US`. A receive time more than `ACK_RESTART_US` back, or ahead of the
/// window, restarts it (a clock jump or a pause).
const ACK_BUCKET_US: i64 = 20_000;
const ACK_BUCKETS: usize = 25;
const ACK_MIN_SPAN_US: i64 = 100_000;
const ACK_RESTART_US: i64 = 2_000_000;

/// What feedback said of a sent packet so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Status {
    #[default]
    Unreported,
    Lost,
    Received,
}

#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    seq: u16,
    /// When it was sent, µs after the estimator's first packet, plus one (0: never).
    at_us: u64,
    size: u32,
    status: Status,
}

/// What the delay-based detector concludes (§5.4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Usage {
    #[default]
    Normal,
    Over,
    Under,
}

/// AIMD's state (§5.5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum RateState {
    #[default]
    Hold,
    Increase,
    Decrease,
}

/// Packets sent within `GROUP_SPAN` of the first; `arrival_us`: when the last arrived.
#[derive(Debug, Clone, Copy)]
struct Group {
    first_sent: Instant,
    last_sent: Instant,
    arrival_us: i64,
}

/// Arrival groups, trendline filter and overuse detector.
#[derive(Debug, Default)]
struct DelayDetector {
    building: Option<Group>,
    previous: Option<Group>,
    deltas: u32,
    first_arrival_us: Option<i64>,
    accumulated_ms: f64,
    smoothed_ms: f64,
    /// (arrival ms since the first, smoothed delay ms): a ring of the last samples.
    samples: [(f64, f64); TREND_WINDOW],
    sample_count: usize,
    previous_trend: f64,
    threshold_ms: f64,
    threshold_updated_ms: Option<f64>,
    over_ms: Option<f64>,
    over_count: u32,
    usage: Usage,
}

impl DelayDetector {
    /// A packet first reported received: extends the group being built, or completes
    /// it and starts the next.
    fn on_packet(&mut self, sent: Instant, arrival_us: i64) {
        match self.building.as_mut() {
            // Reordered: sent before the group being built.
            Some(group) if sent < group.first_sent => return,
            Some(group) if sent.saturating_duration_since(group.first_sent) <= GROUP_SPAN => {
                group.last_sent = group.last_sent.max(sent);
                group.arrival_us = group.arrival_us.max(arrival_us);
                return;
            }
            Some(group) => {
                let complete = *group;
                if let Some(previous) = self.previous.replace(complete) {
                    self.compare(previous, complete);
                }
            }
            None => {}
        }
        self.building = Some(Group {
            first_sent: sent,
            last_sent: sent,
            arrival_us,
        });
    }

    /// The delay variation between two groups (§5.3) into the trendline filter
    /// (libwebrtc `TrendlineEstimator::UpdateTrendline`): the accumulated delay,
    /// smoothed; the trend is its slope over the last samples.
    fn compare(&mut self, previous: Group, group: Group) {
        let send_delta = group
            .last_sent
            .saturating_duration_since(previous.last_sent);
        let send_delta_us = i64::try_from(send_delta.as_micros()).unwrap_or(i64::MAX);
        let arrival_delta_us = group.arrival_us.saturating_sub(previous.arrival_us);
        let variation_us = arrival_delta_us.saturating_sub(send_delta_us);
        if arrival_delta_us < 0 || variation_us.saturating_abs() > MAX_DELAY_VARIATION_US {
            return; // Reordered, or the receiver's clock jumped.
        }
        self.deltas = self.deltas.saturating_add(1);
        self.accumulated_ms += variation_us as f64 / 1000.0;
        self.smoothed_ms =
            TREND_SMOOTHING * self.smoothed_ms + (1.0 - TREND_SMOOTHING) * self.accumulated_ms;
        let first = *self.first_arrival_us.get_or_insert(group.arrival_us);
        let arrival_ms = group.arrival_us.saturating_sub(first) as f64 / 1000.0;
        self.samples[self.sample_count % TREND_WINDOW] = (arrival_ms, self.smoothed_ms);
        self.sample_count = self.sample_count.saturating_add(1);
        let mut trend = self.previous_trend;
        if self.sample_count >= TREND_WINDOW {
            trend = slope(&self.samples).unwrap_or(trend);
        }
        self.detect(trend, send_delta_us as f64 / 1000.0, arrival_ms);
    }

    /// The overuse detector (§5.4, libwebrtc `TrendlineEstimator::Detect`).
    fn detect(&mut self, trend: f64, send_delta_ms: f64, now_ms: f64) {
        if self.deltas < 2 {
            return;
        }
        let modified = f64::from(self.deltas.min(TREND_MAX_DELTAS)) * trend * TREND_GAIN;
        if modified > self.threshold_ms {
            let over_ms = self
                .over_ms
                .map_or(send_delta_ms / 2.0, |o| o + send_delta_ms);
            self.over_ms = Some(over_ms);
            self.over_count = self.over_count.saturating_add(1);
            if over_ms > OVERUSE_TIME_MS && self.over_count > 1 && trend >= self.previous_trend {
                (self.over_ms, self.over_count) = (Some(0.0), 0);
                self.usage = Usage::Over;
            }
        } else {
            (self.over_ms, self.over_count) = (None, 0);
            let under = modified < -self.threshold_ms;
            self.usage = if under { Usage::Under } else { Usage::Normal };
        }
        self.previous_trend = trend;
        // The threshold follows the trend, except one far beyond it (§5.4).
        let last_ms = self.threshold_updated_ms.replace(now_ms).unwrap_or(now_ms);
        if modified.abs() > self.threshold_ms + THRESHOLD_MAX_OFFSET {
            return;
        }
        let below = modified.abs() < self.threshold_ms;
        let k = if below {
            THRESHOLD_K_DOWN
        } else {
            THRESHOLD_K_UP
        };
        let step_ms = (now_ms - last_ms).clamp(0.0, THRESHOLD_MAX_STEP_MS);
        self.threshold_ms += k * (modified.abs() - self.threshold_ms) * step_ms;
        self.threshold_ms = self.threshold_ms.clamp(THRESHOLD_MIN, THRESHOLD_MAX);
    }
}

/// Least-squares slope of the samples (libwebrtc `LinearFitSlope`).
fn slope(samples: &[(f64, f64)]) -> Option<f64> {
    let n = samples.len() as f64;
    let mean_x = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let mean_y = samples.iter().map(|s| s.1).sum::<f64>() / n;
    let (mut numerator, mut denominator) = (0.0, 0.0);
    for (x, y) in samples {
        numerator += (x - mean_x) * (y - mean_y);
        denominator += (x - mean_x) * (x - mean_x);
    }
    let slope = numerator / denominator;
    (denominator != 0.0 && slope.is_finite()).then_some(slope)
}

/// Bytes reported received, in buckets of receive time.
#[derive(Debug, Default)]
struct Acknowledged {
    bytes: [u64; ACK_BUCKETS],
    newest_bucket: Option<i64>,
    first_us: i64,
    newest_us: i64,
    measured: Option<u64>,
}

impl Acknowledged {
    fn add(&mut self, arrival_us: i64, size: u32) {
        let (bucket, window) = (arrival_us.div_euclid(ACK_BUCKET_US), ACK_BUCKETS as i64);
        let Some(newest) = self
            .newest_bucket
            .filter(|_| arrival_us >= self.newest_us.saturating_sub(ACK_RESTART_US))
            .filter(|newest| bucket < newest.saturating_add(window))
        else {
            // The measurement starts at this packet's arrival: its bytes came before.
            (self.bytes, self.newest_bucket) = ([0; ACK_BUCKETS], Some(bucket));
            (self.first_us, self.newest_us) = (arrival_us, arrival_us);
            return;
        };
        if bucket <= newest.saturating_sub(window) {
            return; // Older than the window.
        }
        for b in newest.saturating_add(1)..=bucket {
            self.bytes[b.rem_euclid(window) as usize] = 0;
        }
        self.newest_bucket = Some(newest.max(bucket));
        self.newest_us = self.newest_us.max(arrival_us);
        let bytes = &mut self.bytes[bucket.rem_euclid(window) as usize];
        *bytes = bytes.saturating_add(u64::from(size));
    }

    /// The bitrate over the window, once it spans long enough.
    fn measure(&mut self) {
        let Some(newest) = self.newest_bucket else {
            return;
        };
        let window_start_us = newest
            .saturating_sub(ACK_BUCKETS as i64 - 1)
            .saturating_mul(ACK_BUCKET_US)
            .max(self.first_us);
        let span_us = self.newest_us.saturating_sub(window_start_us);
        if span_us >= ACK_MIN_SPAN_US {
            let bytes: u128 = self.bytes.iter().map(|b| u128::from(*b)).sum();
            let bps = bytes * 8_000_000 / u128::from(span_us.unsigned_abs());
            self.measured = Some(u64::try_from(bps).unwrap_or(u64::MAX));
        }
    }
}

/// A subscriber's bandwidth estimate from its transport-cc feedback.
pub(crate) struct Estimator {
    sent: Vec<Sent>,
    /// The first packet's send time: `Sent::at_us` counts from it.
    epoch: Option<Instant>,
    detector: DelayDetector,
    acknowledged: Acknowledged,
    start: f64,
    min: f64,
    max: f64,
    /// The delay-based (AIMD) estimate, bit/s.
    delay_based: f64,
    state: RateState,
    last_change: Option<Instant>,
    last_decrease: Option<Instant>,
    /// The link's capacity (kbit/s), once overuse measured it, and its variance.
    capacity_kbps: Option<f64>,
    capacity_variance: f64,
    /// The loss-based estimate (§6: never above the delay-based one), bit/s, and the
    /// packets reported and lost since it last changed.
    loss_based: f64,
    loss_reported: u32,
    loss_lost: u32,
    loss_updated: Option<Instant>,
    /// When the sender last said it was probing ([`Estimator::probing`]).
    probe_seen: Option<Instant>,
    /// When the loss-based estimate was last cut, and feedback last came.
    last_loss_cut: Option<Instant>,
    last_feedback: Option<Instant>,
}

impl Estimator {
    /// Sent packets it remembers: feedback on more at once cannot be about packets
    /// it knows.
    pub const REMEMBERED: usize = HISTORY;

    /// `start`: the first estimate in bit/s (Chorus passes 800_000); `min`/`max` clamp
    /// it (e.g. 100_000 and 20_000_000).
    pub fn new(start: u64, min: u64, max: u64) -> Estimator {
        let (min, max) = (min as f64, (max as f64).max(min as f64));
        let start = (start as f64).clamp(min, max);
        Estimator {
            sent: vec![Sent::default(); HISTORY],
            epoch: None,
            detector: DelayDetector {
                threshold_ms: THRESHOLD_START,
                ..DelayDetector::default()
            },
            acknowledged: Acknowledged::default(),
            start,
            min,
            max,
            delay_based: start,
            state: RateState::Hold,
            last_change: None,
            last_decrease: None,
            capacity_kbps: None,
            capacity_variance: CAPACITY_VARIANCE_MIN,
            loss_based: start,
            loss_reported: 0,
            loss_lost: 0,
            loss_updated: None,
            probe_seen: None,
            last_loss_cut: None,
            last_feedback: None,
        }
    }

    /// A packet went out with transport-wide sequence number `seq` (the 16-bit value
    /// written on the wire, counted up from 0 per subscriber, wrapping), `size` bytes
    /// on the wire (whole datagram), at `now`.
    pub fn on_sent(&mut self, seq: u16, size: usize, now: Instant) {
        let epoch = *self.epoch.get_or_insert(now);
        let at_us = now.saturating_duration_since(epoch).as_micros() as u64 + 1;
        self.sent[usize::from(seq) % HISTORY] = Sent {
            seq,
            at_us,
            size: u32::try_from(size).unwrap_or(u32::MAX),
            status: Status::Unreported,
        };
    }

    /// One transport-cc feedback message: `reference_us` is `Twcc::reference_time_us()`
    /// (the receiver's clock, µs, in 64 ms ticks), and `statuses` its packet statuses
    /// in order: (transport seq, Some(receive delta in µs since the previous received
    /// packet, the first relative to the reference time) or None = not received).
    /// `now` is when the feedback arrived. Each packet counts once, however often
    /// reported; one reported lost then received counts as received (its loss is
    /// taken back from the loss interval under way, if it is still under way).
    pub fn on_feedback(
        &mut self,
        reference_us: i64,
        statuses: impl Iterator<Item = (u16, Option<i64>)>,
        now: Instant,
    ) {
        let mut arrival_us = reference_us;
        for (seq, delta) in statuses {
            arrival_us = arrival_us.saturating_add(delta.unwrap_or(0));
            let entry = &mut self.sent[usize::from(seq) % HISTORY];
            let sent_at = self
                .epoch
                .filter(|_| entry.at_us > 0 && entry.seq == seq)
                .map(|e| e + Duration::from_micros(entry.at_us - 1));
            let Some(sent_at) =
                sent_at.filter(|at| now.saturating_duration_since(*at) <= MAX_FEEDBACK_AGE)
            else {
                continue; // Never sent, or too long ago.
            };
            match (entry.status, delta) {
                (Status::Unreported, None) => {
                    entry.status = Status::Lost;
                    self.loss_reported = self.loss_reported.saturating_add(1);
                    self.loss_lost = self.loss_lost.saturating_add(1);
                }
                (Status::Unreported, Some(_)) => {
                    self.loss_reported = self.loss_reported.saturating_add(1);
                    entry.status = Status::Received;
                    self.acknowledged.add(arrival_us, entry.size);
                    self.detector.on_packet(sent_at, arrival_us);
                }
                // Reported lost, then received: a resend for a NACK (it repeats the
                // packet's transport-wide number: `egress.rs`), or feedback out of
                // order. Its bytes arrived; its loss stays counted (a repaired loss
                // is a loss of the link), and its old send time says nothing of the
                // queue now.
                (Status::Lost, Some(_)) => {
                    entry.status = Status::Received;
                    self.acknowledged.add(arrival_us, entry.size);
                }
                (Status::Lost | Status::Received, None) | (Status::Received, Some(_)) => {}
            }
        }
        self.acknowledged.measure();
        self.last_feedback = Some(now);
        self.update_delay_based(now);
        self.update_loss_based(now);
    }

    /// Whether feedback measures what is sent: a rate acknowledged, and feedback
    /// within [`FEEDBACK_FRESH`] (padding without it would probe blind).
    pub fn measuring(&self, now: Instant) -> bool {
        self.acknowledged.measured.is_some()
            && self
                .last_feedback
                .is_some_and(|t| now.saturating_duration_since(t) < FEEDBACK_FRESH)
    }

    /// The sender is probing (padding above the estimate) at `now`: what feedback
    /// shows received until [`PROBE_RESULT_WINDOW`] later may raise the estimate.
    pub fn probing(&mut self, now: Instant) {
        self.probe_seen = Some(now);
    }

    /// The current estimate, bit/s.
    pub fn estimate(&self) -> u64 {
        self.loss_based
            .min(self.delay_based)
            .clamp(self.min, self.max) as u64
    }

    /// What the receiver acknowledged receiving lately, bit/s (None until measured).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn acknowledged(&self) -> Option<u64> {
        self.acknowledged.measured
    }

    /// Whether the delay-based detector currently sees overuse (for tests and tracing).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn overusing(&self) -> bool {
        self.detector.usage == Usage::Over
    }

    /// AIMD (§5.5, libwebrtc `AimdRateControl::ChangeBitrate`).
    fn update_delay_based(&mut self, now: Instant) {
        let acked = self.acknowledged.measured.map(|a| a as f64);
        let recently = |t: Option<Instant>| {
            t.is_some_and(|t| now.saturating_duration_since(t) < RESPONSE_TIME)
        };
        match self.detector.usage {
            Usage::Normal if self.state == RateState::Hold => {
                (self.state, self.last_change) = (RateState::Increase, Some(now));
            }
            Usage::Over if !recently(self.last_decrease) => self.state = RateState::Decrease,
            Usage::Under => self.state = RateState::Hold,
            Usage::Normal | Usage::Over => {}
        }
        match self.state {
            RateState::Hold => {}
            RateState::Increase => {
                if acked.is_some_and(|a| a / 1000.0 > self.capacity_bound(1.0)) {
                    self.capacity_kbps = None; // Well beyond it: the link changed.
                }
                let limit = acked.map(|a| match self.last_decrease {
                    Some(_) => HEADROOM_FACTOR * a + HEADROOM_BPS,
                    None => (HEADROOM_FACTOR * a + HEADROOM_BPS).max(self.start),
                });
                if limit.is_none_or(|limit| self.delay_based < limit) {
                    let since = self.last_change.map(|t| now.saturating_duration_since(t));
                    let seconds = since.map_or(0.0, |d| d.as_secs_f64().min(1.0));
                    let increase = match self.capacity_kbps {
                        Some(_) => self.additive_increase() * seconds,
                        None => (self.delay_based * (INCREASE_PER_SECOND.powf(seconds) - 1.0))
                            .max(MIN_INCREASE),
                    };
                    let increased = self.delay_based + increase;
                    self.delay_based = limit.map_or(increased, |l| increased.min(l));
                }
                self.last_change = Some(now);
            }
            RateState::Decrease => {
                let mut decreased = acked.map_or(self.delay_based / 2.0, |a| DECREASE_FACTOR * a);
                if let Some(capacity) = self.capacity_kbps.filter(|_| decreased > self.delay_based)
                {
                    decreased = DECREASE_FACTOR * capacity * 1000.0;
                }
                self.delay_based = self.delay_based.min(decreased);
                if let Some(acked) = acked {
                    if acked / 1000.0 < self.capacity_bound(-1.0) {
                        self.capacity_kbps = None;
                    }
                    self.update_capacity(acked / 1000.0);
                }
                self.state = RateState::Hold;
                (self.last_change, self.last_decrease) = (Some(now), Some(now));
            }
        }
        // What the receiver got during a probe (the sender's padding above the
        // estimate) without delay building up is there to be had: it raises the
        // estimate at once, as libwebrtc's probe results do, instead of at 8 % a
        // second. Only then: outside probes, a burst through a queue can measure above
        // the link for a moment. Not right after a cut, and at most twice the estimate.
        let probed = self
            .probe_seen
            .is_some_and(|t| now.saturating_duration_since(t) < PROBE_RESULT_WINDOW);
        let settled = [self.last_decrease, self.last_loss_cut]
            .iter()
            .flatten()
            .all(|t| now.saturating_duration_since(*t) >= PROBE_RESULT_WINDOW);
        if let Some(acked) =
            acked.filter(|_| probed && settled && self.detector.usage == Usage::Normal)
        {
            if acked > self.delay_based && self.state != RateState::Decrease {
                let raised = acked.min(2.0 * self.delay_based);
                self.delay_based = raised;
                self.loss_based = self.loss_based.max(raised);
            }
        }
        self.delay_based = self.delay_based.clamp(self.min, self.max);
    }

    /// The link's capacity plus (`sign` 1) or minus (-1) its deviations, kbit/s; with
    /// no capacity known, no bound (infinite above, 0 below).
    fn capacity_bound(&self, sign: f64) -> f64 {
        let Some(capacity) = self.capacity_kbps else {
            return sign * f64::INFINITY;
        };
        capacity + sign * CAPACITY_DEVIATIONS * (self.capacity_variance * capacity).sqrt()
    }

    /// libwebrtc `LinkCapacityEstimator::Update`, with the acknowledged bitrate at overuse.
    fn update_capacity(&mut self, sample_kbps: f64) {
        let capacity = self.capacity_kbps.map_or(sample_kbps, |c| {
            (1.0 - CAPACITY_SMOOTHING) * c + CAPACITY_SMOOTHING * sample_kbps
        });
        let error = capacity - sample_kbps;
        self.capacity_variance = ((1.0 - CAPACITY_SMOOTHING) * self.capacity_variance
            + CAPACITY_SMOOTHING * error * error / capacity.max(1.0))
        .clamp(CAPACITY_VARIANCE_MIN, CAPACITY_VARIANCE_MAX);
        self.capacity_kbps = Some(capacity);
    }

    /// Near the link's capacity, bit/s a second: about a packet (of a frame at the
    /// estimate) per response time.
    fn additive_increase(&self) -> f64 {
        let frame_bits = self.delay_based / FRAME_RATE;
        let packet_bits = frame_bits / (frame_bits / PACKET_BITS).ceil().max(1.0);
        (packet_bits / RESPONSE_TIME.as_secs_f64()).max(MIN_ADDITIVE_INCREASE)
    }

    /// §6, once per `LOSS_INTERVAL` with enough packets reported. The loss-based
    /// estimate stays at most the delay-based one, so what it cuts is the estimate.
    fn update_loss_based(&mut self, now: Instant) {
        let due =
            (self.loss_updated).is_none_or(|t| now.saturating_duration_since(t) >= LOSS_INTERVAL);
        if due && self.loss_reported >= LOSS_MIN_PACKETS {
            let loss = f64::from(self.loss_lost) / f64::from(self.loss_reported);
            if loss > LOSS_HIGH {
                self.loss_based *= 1.0 - 0.5 * loss;
                self.last_loss_cut = Some(now);
            } else if loss < LOSS_LOW {
                self.loss_based *= LOSS_INCREASE;
            }
            (self.loss_reported, self.loss_lost, self.loss_updated) = (0, 0, Some(now));
        }
        self.loss_based = self
            .loss_based
            .min(self.delay_based)
            .clamp(self.min, self.max);
    }
}

impl fmt::Debug for Estimator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Estimator")
            .field("delay_based", &self.delay_based)
            .field("loss_based", &self.loss_based)
            .field("acknowledged", &self.acknowledged.measured)
            .field("usage", &self.detector.usage)
            .field("threshold_ms", &self.detector.threshold_ms)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::VecDeque;

    use super::*;

    const START: u64 = 800_000;
    const MIN: u64 = 100_000;
    const MAX: u64 = 20_000_000;
    const PACKET: usize = 1_200;
    const PACKET_BITS_US: u64 = PACKET as u64 * 8 * 1_000_000;
    /// The receiver reports this often; media and feedback each take `ONE_WAY_US`.
    const FEEDBACK_INTERVAL_US: u64 = 50_000;
    const ONE_WAY_US: u64 = 20_000;
    /// The receiver's clock, far from the sender's.
    const RECEIVER_CLOCK_US: i64 = 123_456_789_000;

    /// A transport-cc message's statuses: (seq, receive delta µs, or None if lost); or
    /// before [`feedback`], (seq, receive time µs).
    type Statuses = Vec<(u16, Option<i64>)>;

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// A transport-cc message for (seq, receive time µs or None): a reference time in
    /// 64 ms ticks and deltas in 250 µs steps.
    fn feedback(packets: &[(u16, Option<i64>)]) -> (i64, Statuses) {
        let first = packets.iter().find_map(|p| p.1).unwrap_or(0);
        let mut previous = first.div_euclid(64_000) * 64_000;
        let reference = previous;
        let statuses = packets.iter().map(|&(seq, arrival)| {
            let quantized = arrival.map(|a| a.div_euclid(250) * 250);
            let delta = quantized.map(|q| q - std::mem::replace(&mut previous, q));
            (seq, delta)
        });
        (reference, statuses.collect())
    }

    /// A sender pacing 1200-byte packets at min(estimate, cap) through a link (random
    /// loss, then a queue draining at `capacity_bps` if any, then `ONE_WAY_US`) to a
    /// receiver reporting every `FEEDBACK_INTERVAL_US`.
    struct Sim {
        estimator: Estimator,
        t0: Instant,
        now_us: u64,
        next_send_us: u64,
        seq: u16,
        capacity_bps: Option<u64>,
        loss_percent: u64,
        rng: u64,
        link_free_us: u64,
        /// Sent, not reported yet: (seq, arrival µs or None if lost).
        in_flight: VecDeque<(u16, Option<u64>)>,
        /// Feedback on its way: (arrives at µs, reference, statuses).
        feedback: VecDeque<(u64, i64, Statuses)>,
        overuse_seen: bool,
        lowest: u64,
        /// Probes: for `.1` ms of every `.0` ms the sender sends at twice the estimate.
        probe: Option<(u64, u64)>,
        /// The queue's tail drop: a packet that would wait longer than this is lost
        /// (`tc tbf … latency`); `None`: the queue never drops.
        queue_limit_us: Option<u64>,
    }

    impl Sim {
        fn new(capacity_bps: Option<u64>, loss_percent: u64) -> Sim {
            Sim {
                estimator: Estimator::new(START, MIN, MAX),
                t0: Instant::now(),
                now_us: 0,
                next_send_us: 0,
                seq: 65_000, // Wraps within the first seconds.
                capacity_bps,
                loss_percent,
                rng: 0x2545_f491_4f6c_dd1d,
                link_free_us: 0,
                in_flight: VecDeque::new(),
                feedback: VecDeque::new(),
                overuse_seen: false,
                lowest: u64::MAX,
                probe: None,
                queue_limit_us: None,
            }
        }

        /// What the sender sends at now: the estimate (twice it while probing), at
        /// most `cap`.
        fn send_rate(&self, cap: u64) -> u64 {
            let estimate = self.estimator.estimate();
            let probing = self
                .probe
                .is_some_and(|(every, len)| (self.now_us / 1_000) % every < len);
            (if probing { 2 * estimate } else { estimate }).min(cap)
        }

        /// Runs `ms` of simulated time, 1 ms a step.
        fn run(&mut self, ms: u64, cap: u64) {
            (0..ms).for_each(|_| self.step(cap));
        }

        fn step(&mut self, cap: u64) {
            let now = self.t0 + Duration::from_micros(self.now_us);
            if self
                .probe
                .is_some_and(|(every, len)| (self.now_us / 1_000) % every < len)
            {
                self.estimator.probing(now);
            }
            while self.feedback.front().is_some_and(|f| f.0 <= self.now_us) {
                let (_, reference, statuses) = self.feedback.pop_front().unwrap();
                self.estimator
                    .on_feedback(reference, statuses.into_iter(), now);
                self.overuse_seen |= self.estimator.overusing();
                self.lowest = self.lowest.min(self.estimator.estimate());
            }
            while self.next_send_us <= self.now_us {
                let sent_us = self.next_send_us;
                self.next_send_us += PACKET_BITS_US / self.send_rate(cap);
                let sent_at = self.t0 + Duration::from_micros(sent_us);
                self.estimator.on_sent(self.seq, PACKET, sent_at);
                let arrival = match self.capacity_bps {
                    _ if xorshift(&mut self.rng) % 100 < self.loss_percent => None,
                    Some(_)
                        if self
                            .queue_limit_us
                            .is_some_and(|l| self.link_free_us > sent_us + l) =>
                    {
                        None
                    }
                    Some(capacity) => {
                        let start = sent_us.max(self.link_free_us);
                        self.link_free_us = start + PACKET_BITS_US / capacity;
                        Some(self.link_free_us + ONE_WAY_US)
                    }
                    None => Some(sent_us + ONE_WAY_US),
                };
                self.in_flight.push_back((self.seq, arrival));
                self.seq = self.seq.wrapping_add(1);
            }
            if self.now_us % FEEDBACK_INTERVAL_US == 0 {
                let mut packets = Vec::new();
                while let Some(&(seq, arrival)) = self.in_flight.front() {
                    if arrival.is_some_and(|a| a > self.now_us) {
                        break;
                    }
                    self.in_flight.pop_front();
                    packets.push((seq, arrival.map(|a| RECEIVER_CLOCK_US + a as i64)));
                }
                if packets.iter().any(|p| p.1.is_some()) {
                    let (reference, statuses) = feedback(&packets);
                    let arrives_us = self.now_us + ONE_WAY_US;
                    self.feedback.push_back((arrives_us, reference, statuses));
                }
            }
            self.now_us += 1_000;
        }
    }

    /// The browser test's squeeze (video.test.mjs): a link that carried 1.5 Mbit/s of
    /// video drops to 400 kbit/s behind a queue that tail-drops past 200 ms (`tc tbf
    /// … latency 200ms`). The estimate is under 500 kbit/s within a second, whatever
    /// the phase of the packets and probes.
    #[test]
    fn a_sudden_cap_behind_a_tail_drop_queue_cuts_within_a_second() {
        for seed in 1..=12u64 {
            let mut sim = Sim::new(Some(5_000_000), 0);
            sim.rng ^= seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            sim.queue_limit_us = Some(200_000);
            sim.probe = Some((2_000, 500));
            sim.run(15_000 + seed * 37, 1_500_000);
            assert!(sim.estimator.estimate() > 1_500_000, "{:?}", sim.estimator);
            sim.capacity_bps = Some(400_000);
            let cut_ms = (0..1_000).find(|_| {
                sim.step(1_500_000);
                sim.estimator.estimate() < 500_000
            });
            assert!(cut_ms.is_some(), "seed {seed}: {:?}", sim.estimator);
        }
    }

    #[test]
    fn steady_rate_under_capacity_is_not_overuse() {
        let mut sim = Sim::new(Some(2_000_000), 0);
        sim.run(10_000, 1_500_000);
        let estimate = sim.estimator.estimate();
        assert!(estimate >= 1_000_000, "{estimate} {:?}", sim.estimator);
        assert!(!sim.overuse_seen, "{:?}", sim.estimator);
        let acked = sim.estimator.acknowledged().unwrap();
        assert!((1_400_000..1_600_000).contains(&acked), "{acked}");
    }

    #[test]
    fn overuse_on_a_slow_link_cuts_to_it() {
        let mut sim = Sim::new(Some(500_000), 0);
        sim.run(5_000, u64::MAX);
        assert!(sim.overuse_seen);
        let estimate = sim.estimator.estimate();
        assert!(estimate <= 600_000, "{estimate} {:?}", sim.estimator);
        sim.run(10_000, u64::MAX);
        assert!(sim.lowest >= 250_000, "{} {:?}", sim.lowest, sim.estimator);
        let estimate = sim.estimator.estimate();
        assert!((250_000..=600_000).contains(&estimate), "{estimate}");
    }

    /// At 8 % a second from about 0.5 Mbit/s (after the additive increase near the old
    /// capacity: ~2 s), 1.5 Mbit/s takes ~16 s.
    #[test]
    fn a_lifted_link_grows_the_estimate_again() {
        let mut sim = Sim::new(Some(500_000), 0);
        sim.run(5_000, u64::MAX);
        assert!(sim.estimator.estimate() <= 600_000);
        sim.capacity_bps = Some(5_000_000);
        let grown_ms = (0..18_000).find(|_| {
            sim.step(u64::MAX);
            sim.estimator.estimate() > 1_500_000
        });
        assert!(grown_ms.is_some(), "{:?}", sim.estimator);
    }

    #[test]
    fn probes_find_a_lifted_link_in_seconds_and_do_not_outgrow_a_narrow_one() {
        // Probes of 500 ms at twice the estimate every 2 s (what Chorus's padding
        // does while a slot waits for a higher layer).
        let mut sim = Sim::new(Some(500_000), 0);
        sim.probe = Some((2_000, 500));
        sim.run(10_000, u64::MAX);
        let narrow = sim.estimator.estimate();
        assert!(
            (250_000..=650_000).contains(&narrow),
            "{narrow} {:?}",
            sim.estimator
        );
        sim.capacity_bps = Some(5_000_000);
        let grown_ms = (0..8_000).find(|_| {
            sim.step(u64::MAX);
            sim.estimator.estimate() > 1_500_000
        });
        assert!(grown_ms.is_some(), "{:?}", sim.estimator);
    }

    #[test]
    fn heavy_random_loss_cuts_light_loss_does_not() {
        let mut heavy = Sim::new(None, 20);
        heavy.run(10_000, u64::MAX);
        let estimate = heavy.estimator.estimate();
        assert!(estimate < START / 2, "{estimate} {:?}", heavy.estimator);
        assert!(!heavy.overuse_seen);

        let mut light = Sim::new(None, 1);
        light.run(10_000, u64::MAX);
        assert!(
            light.lowest >= START,
            "{} {:?}",
            light.lowest,
            light.estimator
        );
        assert!(light.estimator.estimate() > START, "{:?}", light.estimator);
    }

    /// 200 packets 4 ms apart (2.4 Mbit/s) from seq 65436, through the wrap; their
    /// receive times in messages of 20.
    fn wrapping_packets(estimator: &mut Estimator, t0: Instant) -> Vec<Statuses> {
        let mut messages = vec![Vec::new(); 10];
        for i in 0..200u16 {
            let seq = 65_436u16.wrapping_add(i);
            estimator.on_sent(seq, PACKET, t0 + Duration::from_millis(4 * u64::from(i)));
            let arrival = RECEIVER_CLOCK_US + 20_000 + 4_000 * i64::from(i);
            messages[usize::from(i / 20)].push((seq, Some(arrival)));
        }
        messages
    }

    #[test]
    fn duplicate_reordered_feedback_and_wrap_count_once() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_millis(900);
        let mut once = Estimator::new(START, MIN, MAX);
        for message in wrapping_packets(&mut once, t0) {
            let (reference, statuses) = feedback(&message);
            once.on_feedback(reference, statuses.into_iter(), now);
        }
        let acked = once.acknowledged().unwrap();
        assert!((2_300_000..2_500_000).contains(&acked), "{acked}");

        // Each message first with every tenth packet missing (10 %: not a loss that
        // cuts), then whole; pairs of messages swapped; everything twice.
        let mut repeated = Estimator::new(START, MIN, MAX);
        let messages = wrapping_packets(&mut repeated, t0);
        for pair in messages.chunks(2) {
            for message in pair.iter().rev() {
                let mut holes = message.clone();
                holes.iter_mut().step_by(10).for_each(|p| p.1 = None);
                for packets in [&holes, message, &holes, message] {
                    let (reference, statuses) = feedback(packets);
                    repeated.on_feedback(reference, statuses.into_iter(), now);
                }
            }
        }
        assert_eq!(repeated.acknowledged(), Some(acked));
        // A packet reported lost and then received stays a loss (a NACK resend
        // repeats its transport-wide number), here 10 %: not enough to cut.
        assert!(repeated.estimate() >= START, "{repeated:?}");
    }

    #[test]
    fn garbage_feedback_keeps_the_estimate_in_bounds() {
        let t0 = Instant::now();
        let mut never_sent = Estimator::new(START, MIN, MAX);
        never_sent.on_feedback(0, (0..100u16).map(|s| (s, Some(1_000))), t0);
        assert_eq!(never_sent.acknowledged(), None);
        assert_eq!(never_sent.estimate(), START);

        let mut estimator = Estimator::new(START, MIN, MAX);
        let (mut rng, mut now) = (0x9e37_79b9_7f4a_7c15u64, t0);
        let extremes = [
            i64::MIN,
            i64::MAX,
            -1,
            0,
            1,
            -8_192_000,
            8_191_750,
            i64::MIN / 2,
        ];
        let extreme = |rng: &mut u64| extremes[(xorshift(rng) % 8) as usize];
        for round in 0..20_000 {
            now += Duration::from_micros(xorshift(&mut rng) % 20_000);
            let seq = (xorshift(&mut rng) % 600) as u16;
            let size = (xorshift(&mut rng) % 70_000) as usize;
            estimator.on_sent(seq.wrapping_sub(300), size, now);
            if round % 7 != 0 {
                continue;
            }
            let reference = match xorshift(&mut rng) % 3 {
                0 => extreme(&mut rng),
                _ => (xorshift(&mut rng) % 1_000_000_000) as i64,
            };
            let base = (xorshift(&mut rng) % 600) as u16;
            let statuses: Vec<_> = (0..xorshift(&mut rng) % 40)
                .map(|i| {
                    let delta = match xorshift(&mut rng) % 4 {
                        0 => None,
                        1 => Some(extreme(&mut rng)),
                        _ => Some((xorshift(&mut rng) % 100_000) as i64 - 50_000),
                    };
                    (base.wrapping_sub(300).wrapping_add(i as u16), delta)
                })
                .collect();
            estimator.on_feedback(reference, statuses.into_iter(), now);
            assert!((MIN..=MAX).contains(&estimator.estimate()), "{estimator:?}");
        }
    }
}
