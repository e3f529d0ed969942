//! A participant's published video, on the shard holding its media: the `sendonly`
//! video m-sections of its offer (camera, screen), their simulcast layers, and what
//! each layer sends.

use std::time::{Duration, Instant};

use str0m::media::{Mid, Rid};

use super::packet::MAX_LAYERS;
use crate::client_event::VideoSource;

/// A layer not heard from for this long counts as stopped (a browser stops its top
/// layers when its uplink or CPU is short): slots move off it.
const ACTIVE_WINDOW: Duration = Duration::from_millis(1_500);
/// Bitrates are measured over windows this long.
const RATE_WINDOW: Duration = Duration::from_millis(500);
/// The least time between two keyframe requests to one layer (slots on every shard
/// may ask for it at once).
const KEYFRAME_INTERVAL: Duration = Duration::from_millis(250);

/// One video m-section a participant publishes on.
#[derive(Debug, Clone)]
pub(crate) struct Publication {
    pub source: VideoSource,
    pub mid: Mid,
    /// Its simulcast rids in `a=simulcast` order, lowest first (empty: one layer).
    pub rids: Vec<Rid>,
    layers: [LayerStats; MAX_LAYERS],
    /// Its first packet: until [`ACTIVE_WINDOW`] after it, a layer not heard yet
    /// counts as sending (layers start within a few frames of each other).
    first: Option<Instant>,
}

#[derive(Debug, Clone, Copy, Default)]
struct LayerStats {
    /// Bytes in the current window, and when it began.
    bytes: u64,
    window: Option<Instant>,
    bitrate: u32,
    last: Option<Instant>,
    last_keyframe_request: Option<Instant>,
}

impl Publication {
    pub fn new(source: VideoSource, mid: Mid, rids: Vec<Rid>) -> Self {
        Publication {
            source,
            mid,
            rids,
            layers: [LayerStats::default(); MAX_LAYERS],
            first: None,
        }
    }

    /// How many layers it has (at most [`MAX_LAYERS`]).
    pub fn layer_count(&self) -> u8 {
        self.rids.len().clamp(1, MAX_LAYERS) as u8
    }

    /// The layer of a packet with `rid` (str0m's receive stream knows it): its index
    /// in `a=simulcast` order; without simulcast, the one layer.
    pub fn layer_of(&self, rid: Option<Rid>) -> Option<u8> {
        match rid {
            None if self.rids.is_empty() => Some(0),
            None => None,
            Some(rid) => self
                .rids
                .iter()
                .position(|r| *r == rid)
                .filter(|i| *i < MAX_LAYERS)
                .map(|i| i as u8),
        }
    }

    /// The rid of `layer`, as str0m names its receive stream.
    pub fn rid_of(&self, layer: u8) -> Option<Rid> {
        self.rids.get(usize::from(layer)).copied()
    }

    /// Counts a packet of `layer`.
    pub fn on_packet(&mut self, layer: u8, bytes: usize, now: Instant) {
        let Some(l) = self.layers.get_mut(usize::from(layer)) else {
            return;
        };
        self.first.get_or_insert(now);
        l.last = Some(now);
        let start = *l.window.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        l.bytes += bytes as u64;
        if elapsed >= RATE_WINDOW {
            let micros = elapsed.as_micros().max(1) as u64;
            l.bitrate = (l.bytes * 8 * 1_000_000 / micros).min(u64::from(u32::MAX)) as u32;
            l.bytes = 0;
            l.window = Some(now);
        }
    }

    /// Which layers sent within the last [`ACTIVE_WINDOW`] (bit `i`: layer `i`; a
    /// layer not heard yet counts while the publication is younger than that), and
    /// what each sends.
    pub fn activity(&self, now: Instant) -> (u8, [u32; MAX_LAYERS]) {
        let mut active = 0u8;
        let mut rates = [0u32; MAX_LAYERS];
        let young = self
            .first
            .is_some_and(|t| now.saturating_duration_since(t) < ACTIVE_WINDOW);
        for (i, l) in self
            .layers
            .iter()
            .enumerate()
            .take(usize::from(self.layer_count()))
        {
            let recent = match l.last {
                Some(t) => now.saturating_duration_since(t) < ACTIVE_WINDOW,
                None => young,
            };
            if recent {
                active |= 1 << i;
                rates[i] = l.bitrate;
            }
        }
        (active, rates)
    }

    /// Whether a keyframe of `layer` may be asked for now (and, if so, notes it).
    pub fn may_request_keyframe(&mut self, layer: u8, now: Instant) -> bool {
        let Some(l) = self.layers.get_mut(usize::from(layer)) else {
            return false;
        };
        let due = l
            .last_keyframe_request
            .is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_INTERVAL);
        if due {
            l.last_keyframe_request = Some(now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_follow_the_simulcast_order() {
        let p = Publication::new(
            VideoSource::Camera,
            Mid::from("v"),
            vec![Rid::from("q"), Rid::from("h"), Rid::from("f")],
        );
        assert_eq!(p.layer_count(), 3);
        assert_eq!(p.layer_of(Some(Rid::from("f"))), Some(2));
        assert_eq!(p.layer_of(Some(Rid::from("x"))), None);
        assert_eq!(p.layer_of(None), None);
        let one = Publication::new(VideoSource::Screen, Mid::from("s"), vec![]);
        assert_eq!((one.layer_count(), one.layer_of(None)), (1, Some(0)));
    }

    #[test]
    fn bitrates_and_activity_are_measured_per_layer() {
        let t0 = Instant::now();
        let mut p = Publication::new(VideoSource::Camera, Mid::from("v"), vec![]);
        for i in 0..=50u64 {
            p.on_packet(0, 1000, t0 + Duration::from_millis(i * 10));
        }
        let (active, rates) = p.activity(t0 + Duration::from_millis(500));
        assert_eq!(active, 1);
        // 51 packets of 8000 bits over 500 ms.
        assert_eq!(rates[0], 816_000);
        let (active, _) = p.activity(t0 + Duration::from_secs(3));
        assert_eq!(active, 0);
        // Layers not heard yet count while the publication is young.
        let mut three = Publication::new(
            VideoSource::Camera,
            Mid::from("v"),
            vec![Rid::from("a"), Rid::from("b"), Rid::from("c")],
        );
        three.on_packet(0, 100, t0);
        assert_eq!(three.activity(t0 + Duration::from_millis(100)).0, 0b111);
        three.on_packet(0, 100, t0 + Duration::from_secs(2));
        assert_eq!(three.activity(t0 + Duration::from_secs(2)).0, 0b001);
        assert!(p.may_request_keyframe(0, t0));
        assert!(!p.may_request_keyframe(0, t0 + Duration::from_millis(100)));
        assert!(p.may_request_keyframe(0, t0 + Duration::from_millis(300)));
    }
}
