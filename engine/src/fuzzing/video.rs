//! Fuzz harness body for a video slot: the cargo-fuzz target `video_slot` is a one-line
//! call into [`video_slot`]. The input is a program of packets from two publishers'
//! cameras and screens (up to three layers each, VP8 or H.264, any payload — read by
//! the same code that reads publishers' packets —, sequence numbers and timestamps
//! that step, jump, repeat and go back), requests, bandwidth caps, keyframe requests
//! and time passing, run through one [`VideoSlot`].
//!
//! Besides not panicking, the slot must keep its promise to the subscriber: the
//! sequence numbers it sends never go back behind a switch, and the first packet of
//! each new source follows the newest one sent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_protocol::signal::ParticipantId;

use crate::client_event::{VideoQuality, VideoSource};
use crate::video::packet::{inspect, VideoCodec, VideoPacket, MAX_LAYERS};
use crate::video::slot::{Request, SlotAction, VideoSlot};

/// Steps a single input may take.
const MAX_STEPS: usize = 256;
/// What each layer of every publication sends.
const BITRATES: [u32; MAX_LAYERS] = [150_000, 500_000, 1_500_000, 0];

struct Bytes<'a> {
    data: &'a [u8],
}

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let Some((b, rest)) = self.data.split_first() else {
            return 0;
        };
        self.data = rest;
        *b
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
}

/// Runs one program (see the module doc); returns the packets the slot sent.
pub fn video_slot(data: &[u8]) -> usize {
    let mut sent = 0;
    let start = Instant::now();
    let mut now = start;
    let mut input = Bytes { data };
    let mut slot = VideoSlot::new(1_000, 90_000);
    // Per (publisher, source, layer): the stream's extended sequence number and
    // timestamp, stepped by each packet.
    let mut streams = [[[(5_000u64, 0u32); 3]; 2]; 2];
    // The newest sequence number sent, and the floor no later packet may reach.
    let mut newest: Option<u64> = None;
    let mut floor: Option<u64> = None;
    for _ in 0..MAX_STEPS {
        if input.data.is_empty() {
            break;
        }
        let op = input.byte();
        match op % 8 {
            0..=3 => {
                let p = usize::from(op >> 3) % 2;
                let s = usize::from(op >> 4) % 2;
                let shape = input.byte();
                let layers = shape % 3 + 1;
                let layer = (shape >> 2) % layers;
                let codec = if shape & 0x40 == 0 {
                    VideoCodec::Vp8
                } else {
                    VideoCodec::H264
                };
                // Mostly the next packet; now and then a jump, a repeat or a step back.
                let step = input.byte();
                let (seq, ts) = &mut streams[p][s][usize::from(layer)];
                match step {
                    0..=199 => *seq += 1,
                    200..=219 => {}
                    220..=239 => *seq = seq.saturating_sub(u64::from(step - 219)),
                    _ => *seq += u64::from(step) * 100,
                }
                *ts = ts.wrapping_add(u32::from(step) * 30);
                let len = usize::from(input.byte() % 48);
                let mut payload = input.take(len).to_vec();
                // A keyframe start now and then, whatever the bytes said.
                if shape & 0x80 != 0 {
                    let head: &[u8] = match codec {
                        VideoCodec::Vp8 => &[0x90, 0x80, 0x00, 0x00],
                        VideoCodec::H264 => &[0x65, 0x88],
                    };
                    payload.splice(0..0, head.iter().copied());
                }
                let (keyframe, vp8) = inspect(codec, &payload);
                let packet = VideoPacket {
                    publisher: ParticipantId(p as u64 + 1),
                    profile: None,
                    source: if s == 0 {
                        VideoSource::Camera
                    } else {
                        VideoSource::Screen
                    },
                    origin: p,
                    layer,
                    layers,
                    active: input.byte() | 1,
                    bitrates: BITRATES,
                    codec,
                    ssrc: u32::from(layer) | u32::from(step & 0x40) << 2,
                    seq: *seq,
                    timestamp: *ts,
                    marker: step & 1 == 0,
                    keyframe,
                    vp8,
                    payload: Arc::from(payload),
                    received: now,
                };
                if !slot.wants(&packet) {
                    continue;
                }
                let (action, _keyframe_request) = slot.on_packet(&packet, now);
                if let SlotAction::Send { out, .. } = action {
                    if out.switched {
                        if let Some(n) = newest {
                            assert_eq!(out.seq, n + 1, "a new source follows the newest sent");
                        }
                        floor = newest;
                    }
                    if let Some(f) = floor {
                        assert!(out.seq > f, "sent {} behind a switch at {f}", out.seq);
                    }
                    newest = Some(newest.map_or(out.seq, |n| n.max(out.seq)));
                    sent += 1;
                }
            }
            4 => {
                let arg = input.byte();
                let request = (arg & 1 == 0).then(|| Request {
                    publisher: ParticipantId(u64::from(arg >> 1) % 3 + 1),
                    source: if arg & 8 == 0 {
                        VideoSource::Camera
                    } else {
                        VideoSource::Screen
                    },
                    quality: match (arg >> 4) % 3 {
                        0 => VideoQuality::Low,
                        1 => VideoQuality::Medium,
                        _ => VideoQuality::High,
                    },
                });
                slot.set_request(request);
            }
            5 => {
                let arg = input.byte();
                slot.cap = (arg & 1 == 0).then_some(arg >> 1);
            }
            6 => {
                let _ = slot.relay_keyframe_request(now);
                let _ = slot.state(0);
                if input.byte() == 0 {
                    slot.clear_if(ParticipantId(1));
                }
            }
            _ => {
                now += Duration::from_millis(u64::from(input.byte()) * 20);
                slot.idle_check(now);
            }
        }
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_pseudo_random_programs() {
        for program in super::super::pseudo_random_programs(0x9e37_79b9_7f4a_7c15, 200, 600) {
            video_slot(&program);
        }
    }

    #[test]
    fn a_subscribed_camera_is_forwarded() {
        // Subscribe to publisher 1's camera (high: 0x24), then 20 packets of it: op 0
        // (publisher 1, camera), shape 0x80 (three layers, the top one, VP8, a
        // keyframe start), step 0 (the next packet), 4 payload bytes, active 7.
        let mut program = vec![4, 0x24];
        for _ in 0..20 {
            program.extend_from_slice(&[0, 0x80, 0, 4, 1, 2, 3, 4, 7]);
        }
        assert_eq!(video_slot(&program), 20);
    }
}
