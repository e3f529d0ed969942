//! A subscriber's video slot: what it asked for, which layer it forwards, the
//! rewriting that keeps it one continuous stream, and its stream's send state (SSRC,
//! counts for sender reports, the history NACKs are answered from). Chorus writes and
//! seals the stream itself (`egress.rs`).

use std::time::{Duration, Instant};

use chorus_protocol::signal::ParticipantId;

use super::history::SendHistory;
use super::layers::{layer_for, Decision, LayerSwitch};
use super::packet::{layer_name, VideoCodec, VideoPacket, MAX_LAYERS};
use super::vp8;
use crate::client_event::{VideoQuality, VideoSlotState, VideoSource};
use crate::egress::SlotMid;
use crate::rewriter::{Rewritten, SlotRewriter, VIDEO_CLOCK};

/// The least time between two keyframe requests a subscriber's PLI or FIR passes on
/// for one slot.
const RELAY_INTERVAL: Duration = Duration::from_millis(500);

/// What a subscriber asked a slot to forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Request {
    pub publisher: ParticipantId,
    pub source: VideoSource,
    pub quality: VideoQuality,
}

/// A source a slot forwards: a publisher's camera or screen, one layer of it.
pub(crate) type LayerKey = (ParticipantId, VideoSource, u8);

/// A slot that forwarded nothing for this long shows no layer (`video_slots` layer
/// null): its publisher stopped sending.
const IDLE: Duration = Duration::from_millis(1_500);

#[derive(Debug, Clone)]
pub(crate) struct VideoSlot {
    /// The slot's m-section, once an offer negotiated it.
    pub mid: Option<SlotMid>,
    /// The SSRC Chorus chose and wrote into the answer (0 until negotiated).
    pub ssrc: u32,
    /// RFC 3550 §6.4.1: packets and payload octets sent (wrapping).
    pub packets: u32,
    pub octets: u32,
    /// Write the MID extension until a receiver report names this SSRC.
    pub send_mid: bool,
    /// What it sent lately, for NACKs.
    pub history: SendHistory,
    pub request: Option<Request>,
    /// The source last asked for when nothing was requested (what `video_slots`
    /// shows for a free slot).
    pub last_source: VideoSource,
    pub last_quality: VideoQuality,
    switch: LayerSwitch<LayerKey>,
    /// Keyed by the layer and the SSRC it comes in on: a new SSRC is a new stream to
    /// continue from, even on the same layer.
    rewriter: SlotRewriter<(LayerKey, u32)>,
    vp8: vp8::Continuity,
    /// The highest layer the subscriber's bandwidth allows (`None`: no limit known).
    pub cap: Option<u8>,
    /// The publication's layer count and bitrates, from its last packet seen.
    pub layers: u8,
    pub bitrates: [u32; MAX_LAYERS],
    last_relay: Option<Instant>,
    /// The shard holding the forwarded publisher's media (where keyframe requests go).
    pub origin: usize,
    /// When the slot last forwarded a packet.
    last_sent: Option<Instant>,
}

/// What to do with one packet on a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotAction {
    /// Not for this slot, or not the layer it forwards.
    Skip,
    Send {
        out: Rewritten,
        vp8: Option<vp8::Rewrite>,
    },
}

impl VideoSlot {
    pub fn new(initial_seq: u16, initial_ts: u32) -> Self {
        VideoSlot {
            mid: None,
            ssrc: 0,
            packets: 0,
            octets: 0,
            send_mid: true,
            history: SendHistory::default(),
            request: None,
            last_source: VideoSource::Camera,
            last_quality: VideoQuality::High,
            switch: LayerSwitch::default(),
            rewriter: SlotRewriter::with_clock(initial_seq, initial_ts, VIDEO_CLOCK),
            vp8: vp8::Continuity::default(),
            cap: None,
            layers: 0,
            bitrates: [0; MAX_LAYERS],
            last_relay: None,
            origin: 0,
            last_sent: None,
        }
    }

    /// Takes a new request. Another publication goes on being forwarded until the
    /// new one's keyframe (its first packet sets the target); `None` clears the slot
    /// at once.
    pub fn set_request(&mut self, request: Option<Request>) {
        if let Some(r) = request {
            self.last_source = r.source;
            self.last_quality = r.quality;
        }
        let other = self.request.map(|r| (r.publisher, r.source))
            != request.map(|r| (r.publisher, r.source));
        if other {
            self.layers = 0;
            self.cap = None;
        }
        if request.is_none() {
            self.switch.set_target(None);
            // Nothing to repair any more: the payloads go back to their owners.
            self.history.clear();
        }
        self.request = request;
    }

    /// Whether `packet` is of the publication this slot asked for, or of the one it
    /// still forwards until that one's keyframe.
    pub fn wants(&self, packet: &VideoPacket) -> bool {
        let requested = self
            .request
            .is_some_and(|r| r.publisher == packet.publisher && r.source == packet.source);
        requested
            || self
                .switch
                .current()
                .is_some_and(|(p, s, _)| p == packet.publisher && s == packet.source)
    }

    /// The layer the slot should forward for a packet's publication: the requested
    /// quality's layer, within the bandwidth cap, moved to the nearest layer the
    /// publisher still sends (down first).
    fn wanted_layer(&self, quality: VideoQuality, layers: u8, active: u8) -> u8 {
        let asked = layer_for(quality, usize::from(layers)).unwrap_or(0) as u8;
        let want = self.cap.map_or(asked, |c| c.min(asked));
        let sends = |l: u8| active & (1 << l) != 0;
        if active == 0 || sends(want) {
            return want;
        }
        (0..want)
            .rev()
            .chain(want + 1..layers)
            .find(|l| sends(*l))
            .unwrap_or(want)
    }

    /// One packet of the requested publication: whether and how it goes out on this
    /// slot, and the layer to ask a keyframe of (rate-limited), if the slot waits for
    /// one.
    pub fn on_packet(
        &mut self,
        packet: &VideoPacket,
        now: Instant,
    ) -> (SlotAction, Option<LayerKey>) {
        let Some(request) = self.request else {
            return (SlotAction::Skip, None);
        };
        if request.publisher == packet.publisher && request.source == packet.source {
            // The requested publication sets the target (packets of one still
            // forwarded until this one's keyframe only pass through).
            self.layers = packet.layers;
            self.bitrates = packet.bitrates;
            self.origin = packet.origin;
            let want = self.wanted_layer(request.quality, packet.layers, packet.active);
            let target = Some((packet.publisher, packet.source, want));
            if self.switch.target() != target {
                self.switch.set_target(target);
            }
        }
        let key = (packet.publisher, packet.source, packet.layer);
        let decision = self.switch.on_packet(key, packet.keyframe);
        let keyframe = self.switch.keyframe_request(now);
        let Decision::Forward { switched } = decision else {
            return (SlotAction::Skip, keyframe);
        };
        if switched {
            // A new source, even one with the key it had before: fresh offsets.
            self.rewriter.rebase();
        }
        let Some(out) =
            self.rewriter
                .rewrite((key, packet.ssrc), packet.seq, packet.timestamp, now)
        else {
            return (SlotAction::Skip, keyframe);
        };
        self.last_sent = Some(now);
        let vp8 = match (packet.codec, packet.vp8) {
            (VideoCodec::Vp8, Some(f)) => Some(self.vp8.next(&f.ours, switched)),
            _ => None,
        };
        (SlotAction::Send { out, vp8 }, keyframe)
    }

    /// The slot's stream starts anew on `ssrc` (a new mid, or the first offer):
    /// numbering from `initial_seq` and `initial_ts`, counts, MID and history afresh.
    pub fn restart_stream(&mut self, ssrc: u32, initial_seq: u16, initial_ts: u32) {
        self.ssrc = ssrc;
        self.rewriter = SlotRewriter::with_clock(initial_seq, initial_ts, VIDEO_CLOCK);
        self.packets = 0;
        self.octets = 0;
        self.send_mid = true;
        self.history.clear();
    }

    /// A sequence number and timestamp for a padding packet after the last one sent
    /// ([`SlotRewriter::pad`]).
    pub fn pad(&mut self) -> Option<Rewritten> {
        self.rewriter.pad()
    }

    /// The stream's RTP timestamp at `now`, for a sender report (`None` if it sent
    /// nothing within `window`).
    pub fn timestamp_at(&self, now: Instant, window: Duration) -> Option<u32> {
        self.rewriter.timestamp_at(now, window)
    }

    /// A subscriber's PLI or FIR on this slot: the layer to ask a keyframe of, at
    /// most every [`RELAY_INTERVAL`].
    pub fn relay_keyframe_request(&mut self, now: Instant) -> Option<LayerKey> {
        let current = self.switch.current()?;
        let due = self
            .last_relay
            .is_none_or(|t| now.saturating_duration_since(t) >= RELAY_INTERVAL);
        due.then(|| {
            self.last_relay = Some(now);
            current
        })
    }

    /// Whether the slot forwarded nothing for a while although it has a source: its
    /// publisher stopped. The slot then shows no layer, and switches anew (on a
    /// keyframe, asked for) when packets come back. Returns whether that changed it.
    pub fn idle_check(&mut self, now: Instant) -> bool {
        let idle = self.switch.current().is_some()
            && self
                .last_sent
                .is_none_or(|t| now.saturating_duration_since(t) >= IDLE);
        if idle {
            let target = self.switch.target();
            self.switch.set_target(None);
            self.switch.set_target(target);
            self.history.clear();
        }
        idle
    }

    /// The publisher left: the slot is free.
    pub fn clear_if(&mut self, publisher: ParticipantId) -> bool {
        if self.request.is_some_and(|r| r.publisher == publisher) {
            self.set_request(None);
            return true;
        }
        false
    }

    /// What a slot whose state was never needed shows: free, at the defaults of
    /// [`VideoSlot::new`].
    pub fn free_state(index: usize) -> VideoSlotState {
        VideoSlotState {
            slot: index as u8,
            publisher: None,
            source: VideoSource::Camera,
            quality: VideoQuality::High,
            layer: None,
        }
    }

    /// The slot as its client is told.
    pub fn state(&self, index: usize) -> VideoSlotState {
        // What is forwarded for the request (not what still passes until its keyframe).
        let layer = self
            .switch
            .current()
            .filter(|(p, s, _)| {
                self.request
                    .is_some_and(|r| r.publisher == *p && r.source == *s)
            })
            .map(|(_, _, l)| layer_name(l, self.layers.max(l + 1)));
        VideoSlotState {
            slot: index as u8,
            publisher: self.request.map(|r| r.publisher),
            source: self.request.map_or(self.last_source, |r| r.source),
            quality: self.request.map_or(self.last_quality, |r| r.quality),
            layer,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_slot_never_needed_shows_what_a_new_one_shows() {
        for i in 0..4 {
            assert_eq!(VideoSlot::new(7, 9).state(i), VideoSlot::free_state(i));
        }
    }

    fn packet(publisher: u64, layer: u8, seq: u64, keyframe: bool, now: Instant) -> VideoPacket {
        VideoPacket {
            publisher: ParticipantId(publisher),
            source: VideoSource::Camera,
            profile: None,
            origin: 0,
            layer,
            layers: 3,
            active: 0b111,
            bitrates: [150_000, 500_000, 1_500_000, 0],
            codec: VideoCodec::H264,
            ssrc: u32::from(layer),
            seq,
            timestamp: seq as u32 * 3000,
            marker: false,
            keyframe,
            vp8: None,
            payload: Arc::from(&[0u8][..]),
            received: now,
        }
    }

    fn request(publisher: u64, quality: VideoQuality) -> Option<Request> {
        Some(Request {
            publisher: ParticipantId(publisher),
            source: VideoSource::Camera,
            quality,
        })
    }

    #[test]
    fn a_slot_starts_on_a_keyframe_of_its_layer_and_asks_for_one() {
        let now = Instant::now();
        let mut slot = VideoSlot::new(100, 0);
        slot.set_request(request(1, VideoQuality::Medium));
        // Layer 1 is wanted: a delta frame is held back, and a keyframe asked for.
        let (action, key) = slot.on_packet(&packet(1, 1, 10, false, now), now);
        assert_eq!(action, SlotAction::Skip);
        assert_eq!(key, Some((ParticipantId(1), VideoSource::Camera, 1)));
        // Another layer's keyframe does not start it.
        let (action, _) = slot.on_packet(&packet(1, 2, 50, true, now), now);
        assert_eq!(action, SlotAction::Skip);
        let (action, key) = slot.on_packet(&packet(1, 1, 11, true, now), now);
        let SlotAction::Send { out, .. } = action else {
            panic!("not sent: {action:?}");
        };
        assert_eq!((out.seq, out.switched, key), (100, true, None));
        assert_eq!(slot.state(0).layer, Some(VideoQuality::Medium));
        let (action, _) = slot.on_packet(&packet(1, 1, 12, false, now), now);
        assert!(matches!(action, SlotAction::Send { out, .. } if out.seq == 101));
    }

    #[test]
    fn a_quality_change_forwards_the_old_layer_until_the_new_keyframe() {
        let now = Instant::now();
        let mut slot = VideoSlot::new(0, 0);
        slot.set_request(request(1, VideoQuality::Low));
        slot.on_packet(&packet(1, 0, 1, true, now), now);
        slot.set_request(request(1, VideoQuality::High));
        let (action, key) = slot.on_packet(&packet(1, 0, 2, false, now), now);
        assert!(matches!(action, SlotAction::Send { .. }));
        assert_eq!(key, Some((ParticipantId(1), VideoSource::Camera, 2)));
        let (action, _) = slot.on_packet(&packet(1, 2, 900, true, now), now);
        assert!(matches!(action, SlotAction::Send { out, .. } if out.seq == 2 && out.switched));
        // The old layer stops at once.
        let (action, _) = slot.on_packet(&packet(1, 0, 3, false, now), now);
        assert_eq!(action, SlotAction::Skip);
        assert_eq!(slot.state(0).layer, Some(VideoQuality::High));
    }

    #[test]
    fn the_cap_and_stopped_layers_move_the_target_down() {
        let now = Instant::now();
        let mut slot = VideoSlot::new(0, 0);
        slot.set_request(request(1, VideoQuality::High));
        slot.cap = Some(0);
        let (_, key) = slot.on_packet(&packet(1, 2, 1, false, now), now);
        assert_eq!(key, Some((ParticipantId(1), VideoSource::Camera, 0)));
        slot.cap = None;
        let mut p = packet(1, 1, 2, true, now);
        p.active = 0b011;
        let (action, _) = slot.on_packet(&p, now);
        assert!(
            matches!(action, SlotAction::Send { .. }),
            "layer 2 stopped: 1 serves"
        );
    }

    #[test]
    fn a_free_slot_forwards_nothing_and_says_so() {
        let now = Instant::now();
        let mut slot = VideoSlot::new(0, 0);
        slot.set_request(request(1, VideoQuality::Low));
        slot.on_packet(&packet(1, 0, 1, true, now), now);
        assert!(slot.clear_if(ParticipantId(1)));
        let state = slot.state(3);
        assert_eq!((state.slot, state.publisher, state.layer), (3, None, None));
        assert_eq!(state.quality, VideoQuality::Low);
        assert!(!slot.wants(&packet(1, 0, 2, true, now)));
    }
}
