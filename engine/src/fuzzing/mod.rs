//! Fuzz harness body for the sans-IO core: the cargo-fuzz target `engine_core` is a
//! one-line call into [`shards`], and the unit tests below run it over fixed inputs, so
//! it is checked on stable too. Not API: compiled only for tests and under cargo-fuzz
//! (`cfg(fuzzing)`); it panics when the engine livelocks.
//!
//! The input is read as a program: each step picks an operation (a datagram from one
//! of a few addresses — raw, or STUN naming a real participant's ICE ufrag —, a join,
//! an offer — a real browser-like one or garbage —, a candidate, mute, deafen, leave,
//! a control request, or time passing) and its arguments from the next bytes. Two
//! shards form a mesh, so hand-offs and migrations are exercised too.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chorus_protocol::control::{
    ParticipantKick, ParticipantMute, ParticipantRef, ParticipantSetPermissions, PositionSource,
    Proximity, RoomCreate, RoomDelete, RoomKind, RoomSetPositions, RoomUpdate,
};
use chorus_protocol::signal::{DisplayName, ParticipantId, RoomId};
use str0m::config::DtlsCert;
use str0m::media::{Direction, MediaKind};

use crate::io::{Command, Event, Permissions, Request, RequestId};
use crate::mesh::{participant_id, room_home};
use crate::shard::{generate_certificate, Shard};
use crate::ShardConfig;

mod video;
pub use video::video_slot;

/// `count` programs of `len` bytes from a xorshift generator seeded with `seed`: what
/// the unit tests run the harnesses over on stable.
#[cfg(test)]
fn pseudo_random_programs(mut x: u64, count: usize, len: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|_| {
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect()
        })
        .collect()
}

const SHARDS: usize = 2;
const ROOMS: [&str; 3] = ["r0", "r1", "guild:2"];
/// Steps a single input may take; more is not interesting, only slow.
const MAX_STEPS: usize = 64;
/// Rounds of message passing between the shards before it counts as a livelock.
const MAX_ROUNDS: usize = 10_000;

fn cert() -> DtlsCert {
    static CERT: OnceLock<DtlsCert> = OnceLock::new();
    CERT.get_or_init(|| generate_certificate().expect("certificate"))
        .clone()
}

/// A browser-like offer: a microphone and two receive-only slots (made by str0m once).
fn offer() -> &'static str {
    static OFFER: OnceLock<String> = OnceLock::new();
    OFFER.get_or_init(|| {
        let mut rtc = str0m::Rtc::builder()
            .set_rtp_mode(true)
            .build(Instant::now());
        let addr: SocketAddr = ([192, 0, 2, 1], 40000).into();
        if let Ok(c) = str0m::Candidate::host(addr, "udp") {
            rtc.add_local_candidate(c);
        }
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        // Video (issue 12): a simulcast camera and two video slots.
        let mut simulcast = str0m::media::Simulcast::new();
        for rid in ["q", "h", "f"] {
            simulcast.add_send_layer(str0m::media::SimulcastLayer::new(rid));
        }
        api.add_media(
            MediaKind::Video,
            Direction::SendOnly,
            None,
            None,
            Some(simulcast),
        );
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        api.apply()
            .map(|(offer, _)| offer.to_sdp_string())
            .unwrap_or_default()
    })
}

/// Lines an offer mutation may insert: what clients write that browsers do not, and
/// what tripped str0m before (a payload type mapped to Opus and RTX off its m= line).
const OFFER_LINES: &[&str] = &[
    "a=simulcast:send a;~b,c;a",
    "a=rid:a send",
    "m=video 9 UDP/TLS/RTP/SAVPF 96",
    "a=sendonly",
    "a=rtpmap:111 rtx/48000",
    "a=fmtp:111 apt=111",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:96 VP8/90000",
    "a=rtpmap:97 rtx/90000",
    "a=fmtp:97 apt=96",
    "a=rtcp-fb:96 nack pli",
    "a=setup:passive",
    "a=setup:active",
    "a=bundle-only",
    "a=recvonly",
    "a=sendrecv",
    "a=inactive",
    "a=mid:0",
    "a=ssrc:1 cname:x",
    "a=ssrc-group:FID 1 2",
    "a=group:BUNDLE 0 1 2 3",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=extmap:14 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=simulcast:send a;b",
    "a=rid:a send",
    "m=audio 0 UDP/TLS/RTP/SAVPF 0",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 0",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
];

/// The browser-like [`offer`] with up to 8 line-level mutations: a line dropped,
/// copied elsewhere, or one of [`OFFER_LINES`] inserted; a number in a line changed.
fn mutated_offer(input: &mut Input<'_>) -> String {
    let mut lines: Vec<String> = offer().lines().map(str::to_owned).collect();
    for _ in 0..input.byte() % 9 {
        let (op, a, b) = (input.byte() % 4, usize::from(input.byte()), input.byte());
        if lines.is_empty() {
            break;
        }
        let at = a % lines.len();
        match op {
            0 => {
                lines.remove(at);
            }
            1 => {
                let line = lines[at].clone();
                lines.insert(usize::from(b) % (lines.len() + 1), line);
            }
            2 => lines.insert(
                at,
                OFFER_LINES[usize::from(b) % OFFER_LINES.len()].to_owned(),
            ),
            _ => {
                // The first number in the line becomes `b`.
                let line = &lines[at];
                if let Some(start) = line.find(|c: char| c.is_ascii_digit()) {
                    let end = line[start..]
                        .find(|c: char| !c.is_ascii_digit())
                        .map_or(line.len(), |e| start + e);
                    lines[at] = format!("{}{b}{}", &line[..start], &line[end..]);
                }
            }
        }
    }
    let mut sdp = lines.join("\r\n");
    sdp.push_str("\r\n");
    sdp
}

/// Reads the input a byte at a time; zeros once it is used up.
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    fn done(&self) -> bool {
        self.data.is_empty()
    }
}

struct World {
    now: Instant,
    shards: Vec<Shard>,
    /// Ids handed out by joins, and the ICE ufrags their answers carried.
    joined: Vec<(ParticipantId, Option<String>)>,
    next_request: u64,
    replies: usize,
}

impl World {
    fn pid(&self, i: u8) -> Option<ParticipantId> {
        if self.joined.is_empty() {
            return None;
        }
        Some(self.joined[usize::from(i) % self.joined.len()].0)
    }

    /// Delivers shard messages until none move, drains transmits and events.
    fn settle(&mut self) {
        let mut queue: VecDeque<(usize, crate::mesh::ShardMessage)> = VecDeque::new();
        for round in 0.. {
            assert!(round < MAX_ROUNDS, "shards keep messaging each other");
            for s in &mut self.shards {
                while let Some(m) = s.poll_shard_message() {
                    queue.push_back(m);
                }
                while s.poll_transmit().is_some() {}
                while let Some(e) = s.poll_event() {
                    if matches!(e, Event::Reply { .. }) {
                        self.replies += 1;
                    }
                    if let Event::ToClient {
                        to,
                        event: crate::ClientEvent::Answer { sdp, .. },
                    } = e
                    {
                        let ufrag = sdp
                            .lines()
                            .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
                            .map(str::to_owned);
                        if let Some(j) = self.joined.iter_mut().find(|j| j.0 == to) {
                            j.1 = ufrag;
                        }
                    }
                }
            }
            let Some((to, m)) = queue.pop_front() else {
                return;
            };
            self.shards[to % SHARDS].handle_shard_message(self.now, m);
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        for s in &mut self.shards {
            // Timeouts due by now; each call must make progress.
            for _ in 0..MAX_ROUNDS {
                match s.poll_timeout() {
                    Some(t) if t <= self.now => s.handle_timeout(self.now),
                    _ => break,
                }
            }
            assert!(
                s.poll_timeout().is_none_or(|t| t > self.now),
                "timeouts do not advance"
            );
        }
    }
}

/// A STUN binding request with this USERNAME and garbage integrity.
fn stun_request(username: &str, tail: &[u8]) -> Vec<u8> {
    let name = username.as_bytes();
    let padded = name.len().div_ceil(4) * 4;
    let mut body = Vec::new();
    body.extend_from_slice(&0x0006u16.to_be_bytes());
    body.extend_from_slice(&(name.len() as u16).to_be_bytes());
    body.extend_from_slice(name);
    body.resize(4 + padded, 0);
    body.extend_from_slice(&0x0008u16.to_be_bytes()); // MESSAGE-INTEGRITY
    body.extend_from_slice(&20u16.to_be_bytes());
    let mut mac = [0u8; 20];
    for (m, t) in mac.iter_mut().zip(tail) {
        *m = *t;
    }
    body.extend_from_slice(&mac);
    let mut msg = Vec::new();
    msg.extend_from_slice(&0x0001u16.to_be_bytes());
    msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
    msg.extend_from_slice(&0x2112_a442u32.to_be_bytes());
    msg.extend_from_slice(&[7u8; 12]);
    msg.extend_from_slice(&body);
    msg
}

fn room(i: u8) -> RoomId {
    RoomId::new(ROOMS[usize::from(i) % ROOMS.len()]).expect("valid room")
}

/// Runs one program against two shards. Panics only on a livelock or a panic inside
/// the engine (which is the bug to find).
pub fn shards(data: &[u8]) {
    run(data);
}

/// What a program reached (for the tests: that the harness gets past the surface).
#[derive(Debug, Default)]
#[cfg_attr(not(test), allow(dead_code))]
struct Reached {
    answers: usize,
    replies: usize,
}

fn run(data: &[u8]) -> Reached {
    let start = Instant::now();
    let mut config = ShardConfig::new(([10, 0, 0, 1], 7882).into());
    config.seed = 7;
    config.quality_interval = Some(Duration::from_secs(1));
    let cert = cert();
    let mut w = World {
        now: start,
        shards: (0..SHARDS)
            .map(|i| Shard::in_mesh(config.clone(), start, i, SHARDS, cert.clone()))
            .collect(),
        joined: Vec::new(),
        next_request: 0,
        replies: 0,
    };
    let mut input = Input { data };
    let mut serial = 0u64;
    for _ in 0..MAX_STEPS {
        if input.done() {
            break;
        }
        let op = input.byte();
        let arg = input.byte();
        let shard = usize::from(arg) % SHARDS;
        let now = w.now;
        match op % 10 {
            0 => {
                let source: SocketAddr = ([192, 0, 2, 1 + (arg % 4)], 40000).into();
                let len = usize::from(input.byte()) * 6;
                let bytes = input.bytes(len).to_vec();
                w.shards[shard].handle_datagram(now, source, &bytes);
            }
            1 => {
                // STUN naming a real participant's ufrag, from a new address.
                let Some(pid) = w.pid(arg) else { continue };
                let ufrag = w
                    .joined
                    .iter()
                    .find(|j| j.0 == pid)
                    .and_then(|j| j.1.clone())
                    .unwrap_or_else(|| format!("c{:x}zAAAAAA", pid.0));
                let port = 40000 + u16::from(input.byte());
                let source: SocketAddr = ([192, 0, 2, 9], port).into();
                let tail = input.bytes(20).to_vec();
                let msg = stun_request(&format!("{ufrag}:remote"), &tail);
                w.shards[shard].handle_datagram(now, source, &msg);
            }
            2 => {
                serial += 1;
                let room = room(input.byte());
                let pid = participant_id(serial, room_home(&room, SHARDS));
                let permissions = Permissions {
                    publish: arg & 1 == 0,
                    subscribe: arg & 2 == 0,
                    priority: arg & 4 != 0,
                    sources: crate::io::Sources {
                        microphone: arg & 8 == 0,
                        ..crate::io::Sources::ALL
                    },
                };
                w.joined.push((pid, None));
                let home = crate::mesh::home_of(pid, SHARDS);
                w.shards[home].handle_command(
                    now,
                    Command::Join {
                        participant: pid,
                        room,
                        name: DisplayName::new("fuzz").expect("valid name"),
                        identity: (arg & 4 == 0).then(|| "user".to_owned()),
                        permissions,
                        p2p: arg & 8 != 0,
                    },
                );
            }
            3 => {
                let Some(pid) = w.pid(arg) else { continue };
                let choice = input.byte();
                let sdp = match choice % 4 {
                    0 => {
                        let len = usize::from(input.byte()) * 4;
                        String::from_utf8_lossy(input.bytes(len)).into_owned()
                    }
                    3 => mutated_offer(&mut input),
                    _ => offer().to_owned(),
                };
                // Sources naming mids of the offer, or not (with the choice's top bit).
                let sources = (0..if choice & 0x80 != 0 {
                    input.byte() % 3
                } else {
                    0
                })
                    .map(|i| {
                        let source = if i == 0 {
                            crate::VideoSource::Camera
                        } else {
                            crate::VideoSource::Screen
                        };
                        ((input.byte() % 8).to_string(), source)
                    })
                    .collect();
                w.shards[shard].handle_command(
                    now,
                    Command::Offer {
                        participant: pid,
                        sdp,
                        sources,
                    },
                );
            }
            4 => {
                let Some(pid) = w.pid(arg) else { continue };
                let len = usize::from(input.byte());
                let candidate = String::from_utf8_lossy(input.bytes(len)).into_owned();
                w.shards[shard].handle_command(
                    now,
                    Command::Candidate {
                        participant: pid,
                        candidate,
                    },
                );
            }
            5 => {
                let Some(pid) = w.pid(arg) else { continue };
                let flag = input.byte();
                let source = if flag & 16 == 0 {
                    crate::VideoSource::Camera
                } else {
                    crate::VideoSource::Screen
                };
                let command = match flag % 9 {
                    // P2p: a relay to anyone (self, strangers), a level of any
                    // value, a failed peer connection.
                    6 => Command::P2pSignal {
                        participant: pid,
                        to: w.pid(input.byte()).unwrap_or(ParticipantId(11)),
                        data: "{}".to_owned(),
                    },
                    7 => Command::Speaking {
                        participant: pid,
                        level: f32::from(input.byte()) / 128.0 - 0.5,
                    },
                    8 => Command::P2pFailed {
                        participant: pid,
                        peer: w.pid(input.byte()).unwrap_or(ParticipantId(13)),
                    },
                    // Video: start or stop a source; a subscription to anyone (self,
                    // strangers), any slot, any quality, or none.
                    4 => Command::SetVideo {
                        participant: pid,
                        source,
                        enabled: flag & 32 == 0,
                    },
                    5 => Command::Subscribe {
                        participant: pid,
                        slot: u32::from(input.byte() % 6),
                        publisher: (flag & 32 == 0)
                            .then(|| w.pid(input.byte()).unwrap_or(ParticipantId(9))),
                        source,
                        quality: match input.byte() % 3 {
                            0 => crate::VideoQuality::Low,
                            1 => crate::VideoQuality::Medium,
                            _ => crate::VideoQuality::High,
                        },
                    },
                    0 => Command::SetMuted {
                        participant: pid,
                        muted: flag & 4 == 0,
                    },
                    1 => Command::SetDeafened {
                        participant: pid,
                        deafened: flag & 4 == 0,
                    },
                    // A whisper to up to 3 participants (self, strangers and
                    // duplicates included), or an end to it.
                    2 => Command::SetWhisper {
                        participant: pid,
                        to: (flag & 4 == 0).then(|| {
                            (0..flag >> 6)
                                .map(|_| w.pid(input.byte()).unwrap_or(ParticipantId(7)))
                                .collect()
                        }),
                    },
                    3 if flag & 8 != 0 => Command::SetPosition {
                        participant: pid,
                        position: [f64::from(flag >> 4), 0.0, f64::from(input.byte() % 16)],
                    },
                    _ => Command::Leave { participant: pid },
                };
                w.shards[shard].handle_command(now, command);
            }
            6 | 7 => {
                let ms = u64::from(arg) * u64::from(input.byte().max(1));
                w.advance(Duration::from_millis(ms));
            }
            _ => {
                let room = room(input.byte());
                let pid = w.pid(input.byte()).unwrap_or(ParticipantId(1));
                let flag = input.byte();
                let request = match arg % 11 {
                    0 => Request::CreateRoom(RoomCreate {
                        room,
                        kind: Some(RoomKind::Party),
                        max_participants: Some(usize::from(flag % 4) + 1),
                        audio_slots: Some(flag % 3 + 1),
                        video_slots: Some(flag % 3),
                        empty_timeout_s: Some(u64::from(flag % 3)),
                        metadata: None,
                        whisper: None,
                        spam_guard: None,
                        proximity: (flag & 8 != 0).then(|| Proximity {
                            radius: f64::from(flag % 16 + 1),
                            positions: if flag & 16 == 0 {
                                PositionSource::Backend
                            } else {
                                PositionSource::Client
                            },
                        }),
                        p2p_max: Some(flag % 5),
                        p2p_downgrade_s: Some(u32::from(flag % 3) + 1),
                        span: None,
                    }),
                    1 => Request::GetRoom(room),
                    2 => Request::ListRooms,
                    3 => Request::UpdateRoom(RoomUpdate {
                        room,
                        max_participants: Some(usize::from(flag % 3) + 1),
                        audio_slots: Some(flag % 4 + 1),
                        video_slots: Some(flag % 2),
                        empty_timeout_s: Some(u64::from(flag % 2)),
                        metadata: Some("m".into()),
                        whisper: None,
                        spam_guard: None,
                        proximity: (flag & 4 != 0).then(|| {
                            (flag & 8 != 0).then(|| Proximity {
                                radius: f64::from(flag % 7 + 1),
                                positions: PositionSource::Client,
                            })
                        }),
                        p2p_max: (flag & 32 != 0).then_some(flag % 5),
                        p2p_downgrade_s: None,
                    }),
                    4 => Request::DeleteRoom(RoomDelete { room, reason: None }),
                    5 => Request::ListParticipants(room),
                    6 => Request::GetParticipant(ParticipantRef {
                        room,
                        participant_id: pid,
                    }),
                    7 => Request::Kick(ParticipantKick {
                        room,
                        participant_id: pid,
                        reason: None,
                    }),
                    8 => Request::Mute(ParticipantMute {
                        room,
                        participant_id: pid,
                        muted: flag & 1 == 0,
                    }),
                    9 => Request::SetPermissions(ParticipantSetPermissions {
                        room,
                        participant_id: pid,
                        publish: Some(flag & 1 == 0),
                        subscribe: Some(flag & 2 == 0),
                        priority: (flag & 4 != 0).then_some(flag & 8 == 0),
                        sources: (flag & 16 != 0).then(|| {
                            if flag & 32 == 0 {
                                vec![chorus_protocol::signal::Source::Microphone]
                            } else {
                                Vec::new()
                            }
                        }),
                    }),
                    // Positions for up to 7 participants (strangers included), in a
                    // box of 16 units, now and then far away or on the same spot.
                    10 if flag & 1 == 0 => Request::SetPositions(RoomSetPositions {
                        room,
                        positions: (0..flag >> 5)
                            .map(|_| {
                                let id = w.pid(input.byte()).unwrap_or(ParticipantId(7));
                                let c = |b: u8| f64::from(b % 16) * if b > 250 { 1e8 } else { 1.0 };
                                (id, [c(input.byte()), c(input.byte()), c(input.byte())])
                            })
                            .collect(),
                    }),
                    _ => Request::Stats,
                };
                w.next_request += 1;
                w.shards[shard].handle_request(now, RequestId(w.next_request), request);
            }
        }
        w.settle();
    }
    // Let every timer run out: participants time out, rooms close, nothing spins.
    w.advance(Duration::from_secs(600));
    w.settle();
    Reached {
        answers: w.joined.iter().filter(|j| j.1.is_some()).count(),
        replies: w.replies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_fixed_programs() {
        // Joins, real offers, STUN with the real ufrag from a new address, control
        // requests, time; then garbage.
        let programs: [&[u8]; 5] = [
            &[],
            &[
                2, 0, 0, 2, 1, 0, 3, 0, 1, 3, 1, 1, 1, 0, 5, 1, 1, 0, 6, 50, 2,
            ],
            &[
                2, 0, 1, 3, 0, 1, 8, 7, 1, 0, 1, 8, 8, 1, 0, 0, 6, 200, 100, 8, 4, 1, 0, 0,
            ],
            &[
                9, 0, 0, 0, 2, 3, 0, 2, 0, 0, 5, 0, 2, 6, 255, 255, 0, 1, 3, 1, 2, 3, 4,
            ],
            &[0xff; 300],
        ];
        let reached: Vec<_> = programs.iter().map(|p| run(p)).collect();
        assert!(reached[1].answers >= 2, "{reached:?}");
        assert!(reached[2].replies >= 2, "{reached:?}");
    }

    #[test]
    fn runs_pseudo_random_programs() {
        for program in pseudo_random_programs(0x2545_f491_4f6c_dd1d, 40, 200) {
            shards(&program);
        }
    }
}
