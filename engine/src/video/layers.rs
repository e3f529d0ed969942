//! Which simulcast layer a video slot forwards, and when it may switch.
//!
//! - [`layer_for`]: the quality a subscriber asks for names one of the publisher's
//!   layers, in `a=simulcast` order (low = first, high = last, medium = the middle one
//!   or the nearest below it; one layer serves all three).
//! - [`allocate`]: a subscriber's bandwidth estimate (what is left after its audio:
//!   voice is never dropped for video) shared among its video slots, each at most
//!   at the layer it asks for: in slot order, each slot gets its lowest layer if it
//!   still fits (a later, cheaper one may fit where an earlier did not), then slots
//!   move up one layer at a time, round robin.
//! - [`LayerSwitch`]: a slot changes source — a layer, keyed with its publisher so a
//!   change of publisher is one too — only on a keyframe of the new one, and forwards
//!   the old one until then; keyframe requests are rate-limited per slot, whatever
//!   the targets (a target flipping between two layers does not flood the publisher).
//!
//! H.264's "keyframe" ([`super::h264::starts_keyframe`]) includes a lone SPS, as
//! browsers send one right before each IDR; an encoder that repeats SPS before delta
//! frames would switch a slot early (a stricter check needs the IDR in the same
//! timestamp).

use std::time::{Duration, Instant};

/// What a subscriber asks of a video slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Quality {
    Low,
    Medium,
    High,
}

/// The layer (index in the publisher's `a=simulcast` order, lowest first) `quality`
/// names among `layers` layers; `None` without layers.
pub fn layer_for(quality: Quality, layers: usize) -> Option<usize> {
    let top = layers.checked_sub(1)?;
    Some(match quality {
        Quality::Low => 0,
        Quality::High => top,
        // The middle one, or the nearest below it (2 layers: the lower).
        Quality::Medium => top / 2,
    })
}

/// One video slot's demand: the layer it asks for and what each of the publisher's
/// layers sends now, in bits per second (lowest layer first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    pub wanted: usize,
    pub bitrates: Vec<u64>,
}

/// The layer each slot gets within `budget` bits per second (`None`: nothing fits,
/// not even its lowest layer), in the slots' order of importance (first first).
pub fn allocate(budget: u64, demands: &[Demand]) -> Vec<Option<usize>> {
    let mut left = budget;
    let mut chosen: Vec<Option<usize>> = demands
        .iter()
        .map(|d| {
            let lowest = *d.bitrates.first()?;
            (lowest <= left).then(|| {
                left -= lowest;
                0
            })
        })
        .collect();
    loop {
        let mut moved = false;
        for (d, c) in demands.iter().zip(chosen.iter_mut()) {
            let Some(layer) = *c else {
                continue;
            };
            let top = d.wanted.min(d.bitrates.len().saturating_sub(1));
            if layer >= top {
                continue;
            }
            let step = d.bitrates[layer + 1].saturating_sub(d.bitrates[layer]);
            if step <= left {
                left -= step;
                *c = Some(layer + 1);
                moved = true;
            }
        }
        if !moved {
            return chosen;
        }
    }
}

/// What to do with one packet of a publisher's layer on a video slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Forward it; `switched`: the first packet of a new layer (or publisher), which
    /// the slot's rewriters continue from.
    Forward { switched: bool },
    /// Not the layer the slot forwards.
    Drop,
}

/// The least time between two keyframe requests for one slot's target.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// A video slot's source: the one it forwards and the one it is to forward, switched
/// to on the target's next keyframe. `L` names a source: a layer index in tests, a
/// (publisher, layer) pair in a slot, so that a new publisher at the same layer index
/// waits for its keyframe too.
#[derive(Debug, Clone)]
pub struct LayerSwitch<L = usize> {
    current: Option<L>,
    target: Option<L>,
    last_request: Option<Instant>,
}

impl<L> Default for LayerSwitch<L> {
    fn default() -> Self {
        LayerSwitch {
            current: None,
            target: None,
            last_request: None,
        }
    }
}

impl<L: Copy + Eq> LayerSwitch<L> {
    /// The source being forwarded (`None` while waiting for a first keyframe).
    pub fn current(&self) -> Option<L> {
        self.current
    }

    /// The source it is to forward.
    pub fn target(&self) -> Option<L> {
        self.target
    }

    /// The source to forward from its next keyframe on (`None`: forward nothing, at
    /// once).
    pub fn set_target(&mut self, target: Option<L>) {
        if target.is_none() {
            self.current = None;
        }
        self.target = target;
    }

    /// A packet of `layer` arrives; `keyframe`: it starts a keyframe.
    pub fn on_packet(&mut self, layer: L, keyframe: bool) -> Decision {
        let Some(target) = self.target else {
            return Decision::Drop;
        };
        if layer == target && self.current != Some(target) && keyframe {
            self.current = Some(target);
            return Decision::Forward { switched: true };
        }
        if Some(layer) == self.current {
            Decision::Forward { switched: false }
        } else {
            Decision::Drop
        }
    }

    /// The source to ask a keyframe of now, if the slot waits for one and its last
    /// request (for any target) is at least [`KEYFRAME_REQUEST_INTERVAL`] old.
    pub fn keyframe_request(&mut self, now: Instant) -> Option<L> {
        let target = self.target?;
        if self.current == Some(target) {
            return None;
        }
        let due = self
            .last_request
            .is_none_or(|at| now.saturating_duration_since(at) >= KEYFRAME_REQUEST_INTERVAL);
        if !due {
            return None;
        }
        self.last_request = Some(now);
        Some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualities_name_layers_in_simulcast_order() {
        use Quality::*;
        assert_eq!(layer_for(Low, 3), Some(0));
        assert_eq!(layer_for(Medium, 3), Some(1));
        assert_eq!(layer_for(High, 3), Some(2));
        assert_eq!(
            layer_for(Medium, 2),
            Some(0),
            "the nearest below the middle"
        );
        assert_eq!(layer_for(Medium, 4), Some(1));
        for q in [Low, Medium, High] {
            assert_eq!(layer_for(q, 1), Some(0), "one layer serves all three");
            assert_eq!(layer_for(q, 0), None);
        }
    }

    fn demand(wanted: usize) -> Demand {
        // A camera's three layers: 150, 500 and 1,500 kbit/s.
        Demand {
            wanted,
            bitrates: vec![150_000, 500_000, 1_500_000],
        }
    }

    #[test]
    fn bandwidth_goes_to_every_slot_first_then_upward() {
        let two = [demand(2), demand(2)];
        assert_eq!(allocate(10_000_000, &two), vec![Some(2), Some(2)]);
        // 2 Mbit/s: both start low (300 k), both go medium (1 M), then the first high.
        assert_eq!(allocate(2_000_000, &two), vec![Some(2), Some(1)]);
        assert_eq!(allocate(1_100_000, &two), vec![Some(1), Some(1)]);
        // Not enough for both lowest layers: the first slot only.
        assert_eq!(allocate(200_000, &two), vec![Some(0), None]);
        assert_eq!(allocate(0, &two), vec![None, None]);
        // Never above what is asked.
        assert_eq!(
            allocate(10_000_000, &[demand(0), demand(1)]),
            vec![Some(0), Some(1)]
        );
        // A publisher with one layer, or none measured yet.
        let one = Demand {
            wanted: 2,
            bitrates: vec![300_000],
        };
        let none = Demand {
            wanted: 2,
            bitrates: vec![],
        };
        assert_eq!(allocate(1_000_000, &[one, none]), vec![Some(0), None]);
    }

    #[test]
    fn switches_only_on_a_keyframe_of_the_target() {
        let mut s = LayerSwitch::default();
        assert_eq!(s.on_packet(0, true), Decision::Drop, "no target: nothing");
        s.set_target(Some(2));
        assert_eq!(
            s.on_packet(2, false),
            Decision::Drop,
            "waits for a keyframe"
        );
        assert_eq!(
            s.on_packet(0, true),
            Decision::Drop,
            "another layer's keyframe"
        );
        assert_eq!(s.on_packet(2, true), Decision::Forward { switched: true });
        assert_eq!(s.on_packet(2, false), Decision::Forward { switched: false });
        assert_eq!(s.current(), Some(2));
        // Down to layer 0: layer 2 goes on until layer 0's keyframe.
        s.set_target(Some(0));
        assert_eq!(s.on_packet(0, false), Decision::Drop);
        assert_eq!(s.on_packet(2, false), Decision::Forward { switched: false });
        assert_eq!(s.on_packet(0, true), Decision::Forward { switched: true });
        assert_eq!(
            s.on_packet(2, true),
            Decision::Drop,
            "the old layer stops at once"
        );
        // Cleared: nothing, at once.
        s.set_target(None);
        assert_eq!(s.on_packet(0, false), Decision::Drop);
        assert_eq!(s.current(), None);
    }

    #[test]
    fn keyframe_requests_are_rate_limited_while_waiting() {
        let t = Instant::now();
        let mut s = LayerSwitch::default();
        assert_eq!(s.keyframe_request(t), None, "no target");
        s.set_target(Some(1));
        assert_eq!(s.keyframe_request(t), Some(1));
        assert_eq!(s.keyframe_request(t + Duration::from_millis(100)), None);
        assert_eq!(s.keyframe_request(t + KEYFRAME_REQUEST_INTERVAL), Some(1));
        // A new target waits out the interval too: flipping targets floods nobody.
        s.set_target(Some(2));
        assert_eq!(s.keyframe_request(t + KEYFRAME_REQUEST_INTERVAL), None);
        s.set_target(Some(1));
        assert_eq!(s.keyframe_request(t + KEYFRAME_REQUEST_INTERVAL), None);
        s.set_target(Some(2));
        assert_eq!(
            s.keyframe_request(t + 2 * KEYFRAME_REQUEST_INTERVAL),
            Some(2)
        );
        // None once it is forwarded.
        s.on_packet(2, true);
        assert_eq!(s.keyframe_request(t + Duration::from_secs(5)), None);
    }

    #[test]
    fn a_new_publisher_at_the_same_layer_waits_for_its_keyframe() {
        let mut s: LayerSwitch<(u64, usize)> = LayerSwitch::default();
        s.set_target(Some((1, 2)));
        assert_eq!(
            s.on_packet((1, 2), true),
            Decision::Forward { switched: true }
        );
        s.set_target(Some((7, 2)));
        assert_eq!(s.on_packet((7, 2), false), Decision::Drop);
        assert_eq!(
            s.on_packet((1, 2), false),
            Decision::Forward { switched: false }
        );
        assert_eq!(
            s.on_packet((7, 2), true),
            Decision::Forward { switched: true }
        );
    }
}
