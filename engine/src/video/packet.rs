//! One video packet of a publisher, as every subscriber's slot needs it: the unit the
//! publisher's shard hands to the room's other shards, like `SpeakerPacket` for
//! audio. Read once where it arrives (codec, keyframe, VP8 descriptor); the payload is
//! shared (`Arc<[u8]>`) by every copy.

use std::sync::Arc;
use std::time::Instant;

use chorus_protocol::signal::ParticipantId;

use super::vp8;
use crate::client_event::{VideoQuality, VideoSource};

/// Most simulcast layers a publication forwards (browsers send at most 3); the rids
/// past it are ignored.
pub const MAX_LAYERS: usize = 4;

/// The codecs a video slot forwards (VP9 and AV1 SVC are not supported yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    H264,
}

/// The VP8 payload descriptor of a packet, read once where it arrives: it drives the
/// slot's continuity, and each copy's descriptor is patched at its offsets.
#[derive(Debug, Clone, Copy)]
pub struct Vp8Fields {
    pub ours: vp8::Descriptor,
}

#[derive(Debug, Clone)]
pub struct VideoPacket {
    pub publisher: ParticipantId,
    pub source: VideoSource,
    /// H.264: the profile-level-id of the publisher's payload type, so that each
    /// subscriber gets it in a payload type of the same profile where it has one.
    pub profile: Option<u32>,
    /// The shard holding the publisher's media (where keyframe requests go).
    pub origin: usize,
    /// Its simulcast layer: an index in `a=simulcast` order, lowest first.
    pub layer: u8,
    /// The publication's layer count, and which layers it sent lately (bit `i`:
    /// layer `i`; a browser stops sending the top layers when its uplink or CPU is
    /// short).
    pub layers: u8,
    pub active: u8,
    /// What each layer sends, in bits per second (0: unknown, or not sending).
    pub bitrates: [u32; MAX_LAYERS],
    pub codec: VideoCodec,
    /// The SSRC the layer's stream came in on (a publisher that restarts a layer on
    /// a new SSRC restarts its numbering too), and its extended sequence number.
    pub ssrc: u32,
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    /// The packet starts a keyframe: a slot may switch to this layer here.
    pub keyframe: bool,
    pub vp8: Option<Vp8Fields>,
    pub payload: Arc<[u8]>,
    pub received: Instant,
}

/// A layer as a client is told: the top layer is `high`, the first `low`, any other
/// `medium` (one layer alone is `high`).
pub(crate) fn layer_name(layer: u8, layers: u8) -> VideoQuality {
    if layer + 1 >= layers {
        VideoQuality::High
    } else if layer == 0 {
        VideoQuality::Low
    } else {
        VideoQuality::Medium
    }
}

/// Reads what forwarding needs from a payload of `codec`: whether it starts a
/// keyframe, and VP8's descriptor.
pub fn inspect(codec: VideoCodec, payload: &[u8]) -> (bool, Option<Vp8Fields>) {
    match codec {
        VideoCodec::Vp8 => {
            let fields = vp8::parse(payload).map(|ours| Vp8Fields { ours });
            (fields.is_some_and(|f| f.ours.keyframe), fields)
        }
        VideoCodec::H264 => (super::h264::starts_keyframe(payload), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_named_from_the_top() {
        use VideoQuality::*;
        assert_eq!(layer_name(0, 1), High);
        assert_eq!(layer_name(0, 2), Low);
        assert_eq!(layer_name(1, 2), High);
        assert_eq!(layer_name(0, 3), Low);
        assert_eq!(layer_name(1, 3), Medium);
        assert_eq!(layer_name(2, 3), High);
    }
}
