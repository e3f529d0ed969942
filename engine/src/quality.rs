//! A participant's connection quality, from str0m's periodic statistics (RTCP
//! receiver reports both ways, ICE consent round trips, byte counts), turned into the
//! control plane's `quality` event.

use std::time::{Duration, Instant};

use crate::report::Notice;
use chorus_protocol::signal::{ParticipantId, RoomId};
use str0m::stats::{MediaIngressStats, PeerStats};

/// Opus's RTP clock: RTCP jitter is in its units.
const OPUS_CLOCK_HZ: f32 = 48_000.0;

/// One period's figures, ready to report.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Figures {
    pub loss_in: Option<f32>,
    pub loss_out: Option<f32>,
    pub jitter_ms: Option<f32>,
    pub rtt_ms: Option<f32>,
    pub bitrate_in: u64,
    pub bitrate_out: u64,
}

impl Figures {
    pub fn event(self, room: RoomId, participant_id: ParticipantId) -> Notice {
        Notice::Quality {
            room,
            participant_id,
            loss_in: self.loss_in,
            loss_out: self.loss_out,
            jitter_ms: self.jitter_ms,
            rtt_ms: self.rtt_ms,
            bitrate_in: self.bitrate_in,
            bitrate_out: self.bitrate_out,
        }
    }
}

/// Collects one round of str0m stats events (peer first, then one per stream) into
/// [`Figures`].
#[derive(Debug)]
pub(crate) struct Quality {
    /// Byte totals and time at the previous peer stats.
    last: Option<(Instant, u64, u64)>,
    /// The round being collected.
    pending: Option<Figures>,
    /// Loss fractions the client reported on the slot streams this round (averaged).
    egress_loss: (f32, u32),
    /// The last complete round, not yet reported.
    ready: Option<Figures>,
    /// The last round trip measured from our sender reports.
    report_rtt: Option<Duration>,
}

impl Quality {
    /// Counting from `now` (the participant's join): the first round's bit rates
    /// cover the time since.
    pub fn new(now: Instant) -> Quality {
        Quality {
            last: Some((now, 0, 0)),
            pending: None,
            egress_loss: (0.0, 0),
            ready: None,
            report_rtt: None,
        }
    }

    /// str0m's peer figures; `sent_by_chorus`: bytes of the datagrams Chorus sent
    /// itself (the slot streams), which str0m does not count.
    pub fn on_peer(&mut self, s: &PeerStats, sent_by_chorus: u64) {
        let bytes_tx = s.peer_bytes_tx + sent_by_chorus;
        self.finish();
        let mut f = Figures {
            loss_in: s.ingress_loss_fraction,
            loss_out: s.egress_loss_fraction,
            rtt_ms: s
                .rtt
                .or_else(|| {
                    s.selected_candidate_pair
                        .as_ref()
                        .and_then(|p| p.current_round_trip_time)
                })
                .map(ms),
            ..Figures::default()
        };
        if let Some((at, rx, tx)) = self.last {
            let secs = s.timestamp.saturating_duration_since(at).as_secs_f64();
            if secs > 0.0 {
                let rate = |now: u64, before: u64| {
                    (now.saturating_sub(before) as f64 * 8.0 / secs).round() as u64
                };
                f.bitrate_in = rate(s.peer_bytes_rx, rx);
                f.bitrate_out = rate(bytes_tx, tx);
            }
        }
        self.last = Some((s.timestamp, s.peer_bytes_rx, bytes_tx));
        self.pending = Some(f);
    }

    /// The microphone's stream (the only one a client sends on).
    pub fn on_ingress(&mut self, s: &MediaIngressStats) {
        if let Some(f) = &mut self.pending {
            f.jitter_ms = Some(s.jitter as f32 / OPUS_CLOCK_HZ * 1000.0);
            if f.loss_in.is_none() {
                f.loss_in = s.loss;
            }
            if f.rtt_ms.is_none() {
                f.rtt_ms = s.rtt.map(ms);
            }
        }
    }

    /// What the client's receiver reports said about the slot streams Chorus sends
    /// itself (str0m does not see those streams).
    pub fn add_reports(&mut self, r: crate::egress::ReportFigures) {
        self.egress_loss.0 += r.loss_sum;
        self.egress_loss.1 += r.loss_count;
        if r.rtt.is_some() {
            self.report_rtt = r.rtt;
        }
    }

    /// The round's figures, once str0m has emitted all of it (call after a drain).
    pub fn take(&mut self) -> Option<Figures> {
        self.finish();
        self.ready.take()
    }

    fn finish(&mut self) {
        if let Some(mut f) = self.pending.take() {
            let (sum, n) = std::mem::take(&mut self.egress_loss);
            if f.loss_out.is_none() && n > 0 {
                f.loss_out = Some(sum / n as f32);
            }
            if f.rtt_ms.is_none() {
                f.rtt_ms = self.report_rtt.map(ms);
            }
            self.ready = Some(f);
        }
    }
}

fn ms(d: Duration) -> f32 {
    d.as_secs_f32() * 1000.0
}
