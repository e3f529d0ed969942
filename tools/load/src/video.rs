//! Video load (`--cameras`): camera publishers sending a three-layer VP8 simulcast, and
//! subscribers whose video slots show their room's cameras.
//!
//! A publisher writes, every frame, each layer's share of its bitrate as VP8 packets of
//! at most [`MAX_PAYLOAD`] bytes: a VP8 payload descriptor (picture id, TL0PICIDX), the
//! VP8 payload header on a frame's first packet (keyframe or not), zeros, and at the
//! end a [`VideoStamp`] saying who sent it, which layer, and when. Keyframes come when
//! the node asks for one (PLI) and every [`KEYFRAME_EVERY`] frames; they are the size
//! of any other frame (the node's cost is per packet, not per kind of frame).
//!
//! The node forwards the payload unchanged apart from the descriptor's picture id and
//! TL0PICIDX (rewritten in place, same length), so a subscriber reads the stamp back
//! from the end of each packet: the layer it gets, the latency, the bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::media::{Mid, Pt, Rid};
use str0m::rtp::RtpWrite;
use str0m::Rtc;

use crate::hist::Hist;

/// The camera's simulcast layers, lowest first (what browsers send from
/// `sendEncodings` ordered low → high).
pub const RIDS: [&str; 3] = ["q", "h", "f"];
/// The largest RTP payload a publisher writes (browsers packetize at ~1,200 bytes).
pub const MAX_PAYLOAD: usize = 1_100;
/// A keyframe of every layer every this many frames, besides those the node asks for.
pub const KEYFRAME_EVERY: u32 = 90;
/// RTP clock rate of video.
const VIDEO_HZ: u64 = 90_000;
/// The VP8 payload descriptor written: X, I (15-bit picture id), L (TL0PICIDX),
/// T and K (TID/KEYIDX byte).
const DESCRIPTOR_LEN: usize = 6;

/// The video side of a run.
#[derive(Debug, Clone)]
pub struct VideoLoad {
    /// Camera publishers per room: the first `cameras` positions of each room.
    pub cameras: u32,
    /// Time between two frames.
    pub frame: Duration,
    /// Bytes per frame of each layer, lowest first.
    pub layer_bytes: [usize; 3],
    /// What subscribers ask for.
    pub quality: Quality,
}

impl VideoLoad {
    /// From the layers' bitrates (kbit/s, lowest first) and the frame rate.
    pub fn new(cameras: u32, fps: u32, kbps: [u32; 3], quality: Quality) -> VideoLoad {
        let fps = fps.max(1);
        VideoLoad {
            cameras,
            frame: Duration::from_secs_f64(1.0 / f64::from(fps)),
            layer_bytes: kbps.map(|k| (k as usize * 1000 / 8 / fps as usize).max(STAMP_LEN + 8)),
            quality,
        }
    }

    /// Packets per frame of each layer.
    pub fn packets_per_frame(&self) -> [usize; 3] {
        self.layer_bytes.map(|b| b.div_ceil(MAX_PAYLOAD))
    }
}

/// What subscribers ask their slots for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Quality {
    /// Participants at even positions ask `high`, odd ones `medium`.
    Mixed,
    Low,
    Medium,
    High,
}

impl Quality {
    /// The quality position `pos` of a room asks for.
    pub fn for_position(self, pos: u32) -> chorus_protocol::signal::VideoQuality {
        use chorus_protocol::signal::VideoQuality as Q;
        match self {
            Quality::Mixed if pos % 2 == 0 => Q::High,
            Quality::Mixed | Quality::Medium => Q::Medium,
            Quality::Low => Q::Low,
            Quality::High => Q::High,
        }
    }
}

/// Marks a video load payload's stamp (at the payload's end).
pub const MAGIC: [u8; 4] = *b"CHLV";
/// Bytes the stamp takes.
pub const STAMP_LEN: usize = 20;

/// What a publisher writes at the end of each video payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoStamp {
    /// The publishing client's id.
    pub sender: u32,
    /// Layer index, 0 = lowest.
    pub layer: u8,
    /// Monotonic ns since the tool started, when the frame was written.
    pub send_ns: u64,
}

impl VideoStamp {
    /// Writes the stamp into the last [`STAMP_LEN`] bytes of `payload`.
    pub fn write_tail(&self, payload: &mut [u8]) {
        let Some(at) = payload.len().checked_sub(STAMP_LEN) else {
            return;
        };
        let tail = &mut payload[at..];
        tail[0..4].copy_from_slice(&MAGIC);
        tail[4..8].copy_from_slice(&self.sender.to_be_bytes());
        tail[8..12].copy_from_slice(&u32::from(self.layer).to_be_bytes());
        tail[12..20].copy_from_slice(&self.send_ns.to_be_bytes());
    }

    /// Reads the stamp from the end of a payload; `None` if there is none.
    pub fn read_tail(payload: &[u8]) -> Option<VideoStamp> {
        let at = payload.len().checked_sub(STAMP_LEN)?;
        let tail = &payload[at..];
        let (magic, rest) = tail.split_first_chunk::<4>()?;
        if *magic != MAGIC {
            return None;
        }
        let (sender, rest) = rest.split_first_chunk::<4>()?;
        let (layer, rest) = rest.split_first_chunk::<4>()?;
        let (send_ns, _) = rest.split_first_chunk::<8>()?;
        Some(VideoStamp {
            sender: u32::from_be_bytes(*sender),
            layer: u8::try_from(u32::from_be_bytes(*layer)).ok()?,
            send_ns: u64::from_be_bytes(*send_ns),
        })
    }
}

/// A publisher's camera.
pub struct Camera {
    pub mid: Mid,
    /// VP8's payload type, once the answer is applied.
    pub pt: Option<Pt>,
    frames: u32,
    seq: [u64; 3],
    keyframe_due: [bool; 3],
    /// Keyframe requests (PLI/FIR) the node sent, all layers.
    pub keyframe_requests: u64,
    /// When the next frame is due (`None` until connected).
    pub next_frame: Option<Instant>,
}

impl Camera {
    pub fn new(mid: Mid) -> Camera {
        Camera {
            mid,
            pt: None,
            frames: 0,
            seq: [1_000, 20_000, 40_000],
            keyframe_due: [true; 3],
            keyframe_requests: 0,
            next_frame: None,
        }
    }

    /// The node asked for a keyframe of the layer `rid` (all layers if none).
    pub fn keyframe_requested(&mut self, rid: Option<Rid>) {
        self.keyframe_requests += 1;
        match rid.and_then(|r| RIDS.iter().position(|x| *x == &*r)) {
            Some(l) => self.keyframe_due[l] = true,
            None => self.keyframe_due = [true; 3],
        }
    }

    /// Writes one frame of every layer (str0m sends them on its next timeout);
    /// returns the packets written.
    pub fn write_frame(
        &mut self,
        rtc: &mut Rtc,
        cfg: &VideoLoad,
        sender: u32,
        send_ns: u64,
        now: Instant,
    ) -> u64 {
        let Some(pt) = self.pt else {
            return 0;
        };
        if self.frames % KEYFRAME_EVERY == 0 {
            self.keyframe_due = [true; 3];
        }
        let picture_id = (self.frames & 0x7fff) as u16;
        let ts_step = VIDEO_HZ as f64 * cfg.frame.as_secs_f64();
        let ts = (f64::from(self.frames) * ts_step) as u64 as u32;
        let mut written = 0;
        let mut api = rtc.direct_api();
        for (layer, rid) in RIDS.iter().enumerate() {
            let Some(tx) = api.stream_tx_by_mid(self.mid, Some(Rid::from(*rid))) else {
                continue;
            };
            let key = std::mem::take(&mut self.keyframe_due[layer]);
            let mut left = cfg.layer_bytes[layer];
            let mut first = true;
            while left > 0 {
                let len = left.clamp(DESCRIPTOR_LEN + 1 + STAMP_LEN, MAX_PAYLOAD);
                left = left.saturating_sub(len);
                let mut payload = vec![0u8; len];
                payload[..DESCRIPTOR_LEN].copy_from_slice(&[
                    if first { 0x90 } else { 0x80 },
                    0xe0,
                    0x80 | (picture_id >> 8) as u8,
                    picture_id as u8,
                    self.frames as u8,
                    0x00,
                ]);
                if first {
                    // VP8 payload header: P = 0 for a keyframe; show_frame.
                    payload[DESCRIPTOR_LEN] = if key { 0x10 } else { 0x11 };
                }
                VideoStamp {
                    sender,
                    layer: layer as u8,
                    send_ns,
                }
                .write_tail(&mut payload);
                let write = RtpWrite::new(
                    pt,
                    self.seq[layer].into(),
                    ts,
                    now,
                    Arc::<[u8]>::from(payload),
                )
                .marker(left == 0);
                tx.write_rtp(write);
                self.seq[layer] += 1;
                written += 1;
                first = false;
            }
        }
        self.frames = self.frames.wrapping_add(1);
        written
    }
}

/// What one worker's subscribers received of video, packets sent inside the window.
#[derive(Default)]
pub struct VideoCounts {
    /// Packets the publishers wrote inside the window.
    pub sent: u64,
    pub received: u64,
    /// RTP payload bytes received (headers excluded).
    pub payload_bytes: u64,
    pub per_layer: [u64; 3],
    pub latency: Hist,
    /// Keyframe requests the publishers got (whole run).
    pub keyframe_requests: u64,
}

impl VideoCounts {
    pub fn merge(&mut self, o: &VideoCounts) {
        self.sent += o.sent;
        self.received += o.received;
        self.payload_bytes += o.payload_bytes;
        for (a, b) in self.per_layer.iter_mut().zip(o.per_layer) {
            *a += b;
        }
        self.latency.merge(&o.latency);
        self.keyframe_requests += o.keyframe_requests;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stamps_round_trip_from_the_tail() {
        let s = VideoStamp {
            sender: 77,
            layer: 2,
            send_ns: 9_000_000_001,
        };
        let mut p = vec![0x90u8; 300];
        s.write_tail(&mut p);
        assert_eq!(p[0], 0x90, "the head is left alone");
        assert_eq!(VideoStamp::read_tail(&p), Some(s));
        assert_eq!(VideoStamp::read_tail(&p[..299]), None);
        assert_eq!(VideoStamp::read_tail(&[0; 10]), None);
    }

    #[test]
    fn layer_sizes_follow_the_bitrates() {
        let v = VideoLoad::new(2, 30, [150, 500, 1500], Quality::Mixed);
        assert_eq!(v.layer_bytes, [625, 2083, 6250]);
        assert_eq!(v.packets_per_frame(), [1, 2, 6]);
        use chorus_protocol::signal::VideoQuality as Q;
        assert_eq!(Quality::Mixed.for_position(0), Q::High);
        assert_eq!(Quality::Mixed.for_position(3), Q::Medium);
    }
}
