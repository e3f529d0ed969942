//! A simulated network: one shard, N str0m clients, a clock that jumps to the
//! earliest timeout.
//!
//! Clients are browsers in miniature: one `Rtc` each (full ICE, controlling), a
//! sendonly microphone m-section plus recvonly slot m-sections, Opus in rtp mode. A
//! speaking client sends one 20 ms packet per frame with an RFC 6464 level and a
//! payload that names the sender and counts, so tests can check what arrived where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_engine::cluster::participant_id_on;
use chorus_engine::{
    generate_certificate, home_of, participant_id, room_home, CloseReason, Command, Event,
    Permissions, RelayOut, Reply, Request, RequestError, RequestId, RosterChange, Shard,
    ShardConfig, ShardMessage,
};
use chorus_protocol::control::NodeEvent;
use chorus_protocol::signal::{DisplayName, ParticipantId, RoomId, ServerMessage};
use chorus_srtp::capture::{build_rtc, KeyCapture};
use str0m::change::SdpPendingOffer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Candidate, Event as RtcEvent, Input, Output, Rtc};

/// One Opus frame.
pub const FRAME: Duration = Duration::from_millis(20);
/// One video frame (30 fps).
pub const VIDEO_FRAME: Duration = Duration::from_millis(33);
/// Steps one `run_for` may take before the simulation is declared stuck.
const MAX_STEPS: usize = 2_000_000;

/// A packet a client received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub mid: Option<Mid>,
    pub ssrc: u32,
    /// Extended sequence number as the client's str0m saw it.
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    pub pt: u8,
    pub csrc: Vec<u32>,
    pub audio_level: Option<i8>,
    /// Index of the sending client (from the payload).
    pub from: usize,
    /// The sender's frame counter (from the payload).
    pub frame: u32,
    /// A video packet: the simulcast layer it was sent on (from the payload), and
    /// its VP8 descriptor as received.
    pub video: Option<VideoReceived>,
    /// Padding packets (no payload: the node probing for bandwidth) received on this
    /// SSRC since the last packet with a payload; they take sequence numbers.
    pub padded: u64,
}

/// What a client read from a video packet it received.
#[derive(Debug, Clone, Copy)]
pub struct VideoReceived {
    pub layer: u8,
    pub keyframe: bool,
    pub picture_id: u16,
    pub tl0picidx: u8,
}

/// A client's video publication in the simulation: its layers' rids (empty: one
/// layer) and what it sent.
#[derive(Debug, Clone, Default)]
pub struct Publishing {
    pub mid: Option<Mid>,
    pub rids: Vec<String>,
    /// Frames sent per layer.
    pub frames: Vec<u32>,
    /// Layers that send their next frame as a keyframe (a PLI asked).
    pub keyframe_due: Vec<bool>,
    /// Keyframe requests received, per layer.
    pub plis: Vec<u32>,
    /// Layers that do not send (a browser short of uplink stops its top layers).
    pub paused: Vec<bool>,
    pub on: bool,
    /// Sends H.264 (packetization mode 1) instead of VP8.
    pub h264: bool,
}

pub struct Client {
    pub name: String,
    pub id: ParticipantId,
    pub addr: SocketAddr,
    pub rtc: Rtc,
    pub inbox: Vec<ServerMessage>,
    pub received: Vec<Received>,
    /// Padding packets received per SSRC since its last packet with a payload.
    pub padding: Vec<(u32, u64)>,
    pub csrc: u32,
    pub audio_slots: u8,
    pub mic: Option<Mid>,
    pub slots: Vec<Mid>,
    pub connected: bool,
    /// While false the client's datagrams are lost both ways (it vanished).
    pub online: bool,
    /// Level in -dBov (0 loudest, 127 silence) of the packets it sends, if speaking.
    pub speaking: Option<u8>,
    /// Frames sent so far.
    pub sent: u32,
    /// The shard its datagrams arrive at (what `SO_REUSEPORT` hashing decides).
    pub shard: usize,
    next_timeout: Instant,
    next_frame: Instant,
    pending: Option<SdpPendingOffer>,
    /// The Opus payload type negotiated for the microphone.
    pub mic_pt: Option<Pt>,
    /// The SRTP keys the client's DTLS exported (to check what the node sends with
    /// other code than str0m's).
    pub keys: KeyCapture,
    /// When set, a copy of every datagram the node sent to this client, as sent.
    pub tap: Option<Vec<Vec<u8>>>,
    /// Its camera, when it offered one ([`Sim::connect_video`]).
    pub camera: Publishing,
    /// The video slots' mids, in order.
    pub video_slots: Vec<Mid>,
    /// Video slots the room gave it (`joined`).
    pub video_slot_count: u8,
    next_video_frame: Instant,
    /// Reaches the node over ICE-TCP only (its one candidate is an active TCP one;
    /// its datagrams go through `Shard::handle_tcp` at its home shard, as the TCP
    /// thread hands them).
    pub tcp: bool,
}

impl Client {
    /// Packets received from client `from`.
    pub fn from(&self, from: usize) -> impl Iterator<Item = &Received> {
        self.received.iter().filter(move |r| r.from == from)
    }

    /// The entries of the latest `speakers` message (empty before any).
    pub fn last_speakers(&self) -> &[chorus_protocol::signal::SpeakerInfo] {
        self.inbox
            .iter()
            .rev()
            .find_map(|m| match m {
                ServerMessage::Speakers { speakers } => Some(speakers.as_slice()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// Messages of one `type`, in order.
    pub fn messages(&self, kind: &str) -> Vec<&ServerMessage> {
        self.inbox
            .iter()
            .filter(|m| serde_json::to_value(m).unwrap()["type"].as_str() == Some(kind))
            .collect()
    }
}

pub struct Sim {
    pub now: Instant,
    /// The node's shards; one unless made with [`Sim::with_shards`].
    pub shards: Vec<Shard>,
    pub server: SocketAddr,
    pub clients: Vec<Client>,
    pub closed: Vec<(ParticipantId, CloseReason)>,
    /// Answers to control requests, in arrival order.
    pub replies: Vec<(RequestId, Result<Reply, RequestError>)>,
    /// Control-plane events, in order.
    pub events: Vec<NodeEvent>,
    /// Messages between shards this returns true for are lost (as a full queue loses
    /// them under overload): `(destination shard, message)`.
    #[allow(clippy::type_complexity)]
    pub lose: Option<Box<dyn FnMut(usize, &ShardMessage) -> bool>>,
    /// Datagrams from the node this returns true for are lost on the way to the
    /// client: `(client index, datagram)`.
    #[allow(clippy::type_complexity)]
    pub lose_to_client: Option<Box<dyn FnMut(usize, &[u8]) -> bool>>,
    /// When set, the datagrams the node sent to addresses no client has (destination
    /// and bytes), in order.
    pub stray: Option<Vec<(SocketAddr, Vec<u8>)>>,
    /// Joins say `p2p: true` (they can carry a call peer to peer) while this is set.
    pub join_p2p: bool,
    /// In a cluster (`ShardConfig::node` set): the changes of this node's members, for
    /// the other nodes, in order.
    pub roster: Vec<(RoomId, RosterChange)>,
    /// What the node put out for the other nodes of its rooms.
    pub relayed: Vec<RelayOut>,
    start: Instant,
    steps: usize,
    next_request: u64,
}

impl Sim {
    pub fn new() -> Sim {
        Sim::with_config(|_| {})
    }

    pub fn with_config(change: impl FnOnce(&mut ShardConfig)) -> Sim {
        Sim::with_shards(1, change)
    }

    /// A node of `n` shards sharing one address, like `chorus serve --shards n`.
    /// Client `i`'s datagrams arrive at shard `i % n` unless its `shard` is changed.
    pub fn with_shards(n: usize, change: impl FnOnce(&mut ShardConfig)) -> Sim {
        let now = Instant::now();
        let server: SocketAddr = "10.0.0.1:7882".parse().unwrap();
        let mut config = ShardConfig::new(server);
        config.tcp_addr = Some(server);
        config.seed = 42;
        change(&mut config);
        let cert = generate_certificate().unwrap();
        let shards = (0..n)
            .map(|i| Shard::in_mesh(config.clone(), now, i, n, cert.clone()))
            .collect();
        Sim {
            now,
            shards,
            server,
            clients: Vec::new(),
            closed: Vec::new(),
            replies: Vec::new(),
            events: Vec::new(),
            lose: None,
            lose_to_client: None,
            stray: None,
            join_p2p: false,
            roster: Vec::new(),
            relayed: Vec::new(),
            start: now,
            steps: 0,
            next_request: 0,
        }
    }

    /// Sends a control request to shard 0 (which passes it on to the room's home
    /// shard), delivers everything, and returns the answers to it.
    pub fn request(&mut self, request: Request) -> Vec<Result<Reply, RequestError>> {
        self.next_request += 1;
        let id = RequestId(self.next_request);
        match request.room() {
            Some(_) => self.shards[0].handle_request(self.now, id, request),
            None => {
                for k in 0..self.shards.len() {
                    self.shards[k].handle_request(self.now, id, request.clone());
                }
            }
        }
        self.pump();
        self.replies
            .iter()
            .filter(|(r, _)| *r == id)
            .map(|(_, result)| result.clone())
            .collect()
    }

    /// The events of one type so far.
    pub fn events_of(&self, kind: &str) -> Vec<&NodeEvent> {
        self.events.iter().filter(|e| e.kind() == kind).collect()
    }

    /// Time since the simulation started.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// A client joins `room` (signaling only; see [`Sim::connect`]).
    pub fn join(&mut self, name: &str, room: &str) -> usize {
        self.join_with_pt(name, room, 111)
    }

    /// Like [`Sim::join`], for a client whose Opus payload type is `opus_pt`
    /// (Chromium uses 111, aiortc 96).
    pub fn join_with_pt(&mut self, name: &str, room: &str, opus_pt: u8) -> usize {
        self.join_with(name, room, opus_pt, Permissions::ALL)
    }

    /// Joins, offers and connects a client with these permissions (its token's grants).
    pub fn connect_with_permissions(
        &mut self,
        name: &str,
        room: &str,
        permissions: Permissions,
    ) -> usize {
        let idx = self.join_with(name, room, 111, permissions);
        self.offer_and_connect(idx, "")
    }

    fn join_with(
        &mut self,
        name: &str,
        room: &str,
        opus_pt: u8,
        permissions: Permissions,
    ) -> usize {
        self.join_over(name, room, opus_pt, permissions, false, None)
    }

    /// Joins, offers and connects a client that reaches the node over ICE-TCP only.
    pub fn connect_tcp(&mut self, name: &str, room: &str) -> usize {
        let idx = self.join_over(name, room, 111, Permissions::ALL, true, None);
        self.offer_and_connect(idx, " over TCP")
    }

    /// Joins, offers and connects a client whose (only) host candidate is `addr`, over
    /// UDP: e.g. an IPv6 client of a node that advertises an IPv6 address too.
    pub fn connect_from(&mut self, name: &str, room: &str, addr: SocketAddr) -> usize {
        let idx = self.join_over(name, room, 111, Permissions::ALL, false, Some(addr));
        self.offer_and_connect(idx, &format!(" from {addr}"))
    }

    /// Offers client `idx` every slot of its room and runs until its media is up
    /// (`how` ends the failure message: " over TCP").
    fn offer_and_connect(&mut self, idx: usize, how: &str) -> usize {
        let slots = self.clients[idx].audio_slots as usize;
        self.offer(idx, slots);
        self.run_until(Duration::from_secs(5), |s| s.clients[idx].connected);
        let name = &self.clients[idx].name;
        assert!(self.clients[idx].connected, "{name} did not connect{how}");
        idx
    }

    fn join_over(
        &mut self,
        name: &str,
        room: &str,
        opus_pt: u8,
        permissions: Permissions,
        tcp: bool,
        addr: Option<SocketAddr>,
    ) -> usize {
        let idx = self.clients.len();
        let room_id = RoomId::new(room).unwrap();
        let node = self.shards[0].config().node;
        let id = participant_id_on(
            node,
            1000 + idx as u64,
            room_home(&room_id, self.shards.len()),
        );
        let addr: SocketAddr = addr.unwrap_or_else(|| {
            format!("192.0.2.{}:{}", 1 + idx % 250, 40000 + idx)
                .parse()
                .unwrap()
        });
        let config = chorus_client::video_config(opus_pt);
        let (mut rtc, keys) = build_rtc(config, self.now);
        if tcp {
            let active = Candidate::builder()
                .tcp()
                .host(addr)
                .tcptype(TcpType::Active)
                .build()
                .unwrap();
            rtc.add_local_candidate(active);
        } else {
            rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        }
        self.clients.push(Client {
            name: name.to_owned(),
            id,
            addr,
            rtc,
            inbox: Vec::new(),
            received: Vec::new(),
            padding: Vec::new(),
            csrc: 0,
            audio_slots: 0,
            mic: None,
            slots: Vec::new(),
            connected: false,
            online: true,
            speaking: None,
            sent: 0,
            shard: idx % self.shards.len(),
            next_timeout: self.now,
            next_frame: self.now,
            pending: None,
            mic_pt: None,
            keys,
            tap: None,
            camera: Publishing::default(),
            video_slots: Vec::new(),
            video_slot_count: 0,
            next_video_frame: self.now,
            tcp,
        });
        self.command(Command::Join {
            participant: id,
            room: room_id,
            name: DisplayName::new(name).unwrap(),
            identity: None,
            permissions,
            p2p: self.join_p2p,
        });
        let joined = self.clients[idx].inbox.iter().find_map(|m| match m {
            ServerMessage::Joined {
                csrc,
                audio_slots,
                video_slots,
                ..
            } => Some((*csrc, *audio_slots, *video_slots)),
            _ => None,
        });
        if let Some((csrc, audio_slots, video_slots)) = joined {
            self.clients[idx].csrc = csrc;
            self.clients[idx].audio_slots = audio_slots;
            self.clients[idx].video_slot_count = video_slots;
        }
        idx
    }

    /// A client with its own `Rtc` that has not sent `join` yet (see [`Sim::make_offer`]).
    pub fn join_detached(&mut self, name: &str, room: &str) -> usize {
        let idx = self.join(name, "detached-setup");
        let id = self.clients[idx].id;
        self.command(Command::Leave { participant: id });
        self.clients[idx].inbox.clear();
        let room_id = RoomId::new(room).unwrap();
        self.clients[idx].id =
            participant_id(1000 + idx as u64, room_home(&room_id, self.shards.len()));
        self.clients[idx].id.0 |= 1 << 40; // not the id just used
        idx
    }

    /// The client's offer (a microphone and `slots` receive sections), not yet sent.
    pub fn make_offer(&mut self, idx: usize, slots: usize) -> String {
        let c = &mut self.clients[idx];
        let offer = chorus_client::offer(&mut c.rtc, slots).unwrap();
        c.mic = Some(offer.mic);
        c.slots = offer.slots;
        c.pending = Some(offer.pending);
        offer.sdp
    }

    /// The last `answer` in the client's inbox: its SDP and slot mids.
    pub fn last_answer(&self, idx: usize) -> Option<(&str, &[String])> {
        self.clients[idx].inbox.iter().rev().find_map(|m| match m {
            ServerMessage::Answer { sdp, slots, .. } => Some((sdp.as_str(), slots.as_slice())),
            _ => None,
        })
    }

    /// How many packets client `to` receives from client `from` while the simulation
    /// runs for `d`.
    pub fn heard_over(&mut self, to: usize, from: usize, d: Duration) -> usize {
        let before = self.clients[to].from(from).count();
        self.run_for(d);
        self.clients[to].from(from).count() - before
    }

    /// Applies the last `answer` in the client's inbox.
    pub fn accept_answer(&mut self, idx: usize) {
        let answer = self.last_answer(idx).expect("an answer").0.to_owned();
        let c = &mut self.clients[idx];
        let pending = c.pending.take().unwrap();
        c.mic_pt = chorus_client::accept_answer(&mut c.rtc, pending, &answer).unwrap();
        self.pump();
    }

    /// The client's network changes: it moves to `addr` (its datagrams now arriving at
    /// `shard`), restarts ICE with new credentials and a new host candidate, as a
    /// browser's `restartIce()` does, and renegotiates.
    pub fn restart_ice(&mut self, idx: usize, addr: SocketAddr, shard: usize) {
        let c = &mut self.clients[idx];
        c.addr = addr;
        c.shard = shard;
        let mut api = c.rtc.sdp_api();
        api.ice_restart(false);
        let (offer, pending) = api.apply().expect("an offer with new credentials");
        c.pending = Some(pending);
        let sdp = offer.to_sdp_string();
        let participant = c.id;
        self.command(Command::Offer {
            participant,
            sdp,
            sources: Vec::new(),
        });
        self.accept_answer(idx);
        // str0m restarts (dropping the old candidates) when the answer is applied.
        self.clients[idx]
            .rtc
            .add_local_candidate(Candidate::host(addr, "udp").unwrap());
        self.pump();
    }

    /// Offers a microphone and `slots` receive sections and applies the answer.
    pub fn offer(&mut self, idx: usize, slots: usize) {
        let sdp = self.make_offer(idx, slots);
        let participant = self.clients[idx].id;
        self.command(Command::Offer {
            participant,
            sdp,
            sources: Vec::new(),
        });
        self.accept_answer(idx);
    }

    /// Joins with a client that offers video as a browser does: a microphone, the
    /// audio slots, a camera with simulcast `rids` (lowest first; `None`: no camera)
    /// and the room's video slots; runs until media is up. The camera sends once
    /// [`Sim::publish`] turns it on.
    pub fn connect_video(&mut self, name: &str, room: &str, rids: Option<&[&str]>) -> usize {
        self.connect_video_over(name, room, rids, false)
    }

    /// [`Sim::connect_video`] over ICE-TCP only (`tcp`) or UDP.
    pub fn connect_video_over(
        &mut self,
        name: &str,
        room: &str,
        rids: Option<&[&str]>,
        tcp: bool,
    ) -> usize {
        let idx = self.join_over(name, room, 111, Permissions::ALL, tcp, None);
        self.video_offer(idx, rids);
        self.run_until(Duration::from_secs(5), |s| s.clients[idx].connected);
        assert!(self.clients[idx].connected, "{name} did not connect");
        idx
    }

    /// Offers audio and video ([`Sim::connect_video`]) and applies the answer.
    pub fn video_offer(&mut self, idx: usize, rids: Option<&[&str]>) {
        let c = &mut self.clients[idx];
        let sections = chorus_client::VideoSections {
            camera: rids,
            screen: false,
            slots: c.video_slot_count as usize,
        };
        let offer =
            chorus_client::offer_with_video(&mut c.rtc, c.audio_slots as usize, &sections).unwrap();
        c.mic = Some(offer.mic);
        c.slots = offer.slots;
        c.video_slots = offer.video_slots;
        let layers = rids.map_or(0, |r| r.len().max(1));
        c.camera = Publishing {
            mid: offer.camera,
            rids: rids
                .unwrap_or_default()
                .iter()
                .map(|r| (*r).to_owned())
                .collect(),
            frames: vec![0; layers],
            keyframe_due: vec![true; layers],
            plis: vec![0; layers],
            paused: vec![false; layers],
            on: false,
            h264: false,
        };
        c.pending = Some(offer.pending);
        let participant = c.id;
        let sources = offer
            .camera
            .map(|m| vec![(m.to_string(), chorus_engine::VideoSource::Camera)])
            .unwrap_or_default();
        self.command(Command::Offer {
            participant,
            sdp: offer.sdp,
            sources,
        });
        self.accept_answer(idx);
    }

    /// The client starts (or stops) sending its camera, and says so (`video`).
    pub fn publish(&mut self, idx: usize, on: bool) {
        self.clients[idx].camera.on = on;
        let participant = self.clients[idx].id;
        self.command(Command::SetVideo {
            participant,
            source: chorus_engine::VideoSource::Camera,
            enabled: on,
        });
    }

    /// The client's `subscribe`: video slot `slot` shows `publisher`'s camera at
    /// `quality` (`None`: clear it).
    pub fn subscribe(
        &mut self,
        idx: usize,
        slot: u32,
        publisher: Option<usize>,
        quality: chorus_engine::VideoQuality,
    ) {
        let participant = self.clients[idx].id;
        let publisher = publisher.map(|p| self.clients[p].id);
        self.command(Command::Subscribe {
            participant,
            slot,
            publisher,
            source: chorus_engine::VideoSource::Camera,
            quality,
        });
    }

    /// Video packets client `to` received on its slot `slot` from client `from`.
    pub fn video_from(&self, to: usize, slot: usize, from: usize) -> Vec<Received> {
        let c = &self.clients[to];
        let mid = c.video_slots.get(slot).copied();
        c.received
            .iter()
            .filter(|r| r.video.is_some() && r.mid == mid && r.from == from)
            .cloned()
            .collect()
    }

    /// Joins, offers the room's slot count, and runs until media is up.
    pub fn connect(&mut self, name: &str, room: &str) -> usize {
        self.connect_with_pt(name, room, 111)
    }

    /// [`Sim::connect`] for a client whose datagrams arrive at `shard`.
    pub fn connect_on(&mut self, name: &str, room: &str, shard: usize) -> usize {
        let idx = self.join(name, room);
        self.clients[idx].shard = shard;
        self.offer_and_connect(idx, "")
    }

    /// Joins as a listener (receive slots only, no microphone: what chorus.js offers
    /// with `audioTrack: null`) and runs until media is up.
    pub fn connect_listener(&mut self, name: &str, room: &str) -> usize {
        let idx = self.join(name, room);
        let c = &mut self.clients[idx];
        let count = c.audio_slots as usize;
        let mut api = c.rtc.sdp_api();
        let slots: Vec<Mid> = (0..count)
            .map(|_| api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None))
            .collect();
        let (offer, pending) = api.apply().expect("an offer");
        c.mic = None;
        c.slots = slots;
        c.pending = Some(pending);
        let participant = c.id;
        let sdp = offer.to_sdp_string();
        self.command(Command::Offer {
            participant,
            sdp,
            sources: Vec::new(),
        });
        self.accept_answer(idx);
        self.run_until(Duration::from_secs(5), |s| s.clients[idx].connected);
        assert!(self.clients[idx].connected, "{name} did not connect");
        idx
    }

    /// [`Sim::connect`] for a client whose Opus payload type is `opus_pt`.
    pub fn connect_with_pt(&mut self, name: &str, room: &str, opus_pt: u8) -> usize {
        let idx = self.join_with_pt(name, room, opus_pt);
        self.offer_and_connect(idx, "")
    }

    /// Three clients `a`, `b`, `c` connect to `room` and talk (−20 dBov) for a second.
    pub fn three_talking(&mut self, room: &str) -> (usize, usize, usize) {
        let (a, b, c) = (
            self.connect("a", room),
            self.connect("b", room),
            self.connect("c", room),
        );
        for i in [a, b, c] {
            self.clients[i].speaking = Some(20);
        }
        self.run_for(Duration::from_secs(1));
        (a, b, c)
    }

    /// Sends a command to the participant's home shard, as signaling does.
    pub fn command(&mut self, command: Command) {
        let home = home_of(command.participant(), self.shards.len());
        self.shards[home].handle_command(self.now, command);
        self.pump();
    }

    /// The shard holding a client's media.
    pub fn holder(&self, idx: usize) -> Option<usize> {
        let id = self.clients[idx].id;
        self.shards.iter().position(|s| s.holds(id))
    }

    /// Runs the clock forward by `d`.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(d, |s| s.now >= end);
        self.now = self.now.max(end);
    }

    /// Runs until `done` or `limit` of simulated time passed.
    pub fn run_until(&mut self, limit: Duration, done: impl Fn(&Sim) -> bool) {
        let end = self.now + limit;
        while !done(self) && self.now < end {
            self.steps += 1;
            assert!(self.steps < MAX_STEPS, "simulation made no progress");
            let mut next = end;
            for shard in &self.shards {
                if let Some(t) = shard.poll_timeout() {
                    next = next.min(t);
                }
            }
            for c in &self.clients {
                next = next.min(c.next_timeout);
                if c.speaking.is_some() && c.connected {
                    next = next.min(c.next_frame);
                }
                if c.camera.on && c.connected {
                    next = next.min(c.next_video_frame);
                }
            }
            self.now = self.now.max(next);
            let now = self.now;
            for shard in &mut self.shards {
                shard.handle_timeout(now);
            }
            for i in 0..self.clients.len() {
                let c = &mut self.clients[i];
                if c.next_timeout <= now {
                    c.rtc.handle_input(Input::Timeout(now)).unwrap();
                }
                if c.connected && c.next_frame <= now {
                    if let Some(level) = c.speaking {
                        send_frame(c, i, now, level);
                        c.rtc.handle_input(Input::Timeout(now)).unwrap();
                    }
                    c.next_frame = now + FRAME;
                }
                if c.connected && c.camera.on && c.next_video_frame <= now {
                    send_video_frame(c, i, now);
                    c.rtc.handle_input(Input::Timeout(now)).unwrap();
                    c.next_video_frame = now + VIDEO_FRAME;
                }
            }
            self.pump();
        }
    }

    /// Delivers everything in flight, instantly, until nothing moves.
    pub fn pump(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.clients.len() {
                moved |= self.drain_client(i);
            }
            for k in 0..self.shards.len() {
                while let Some(t) = self.shards[k].poll_transmit() {
                    moved = true;
                    let Some(i) = self.clients.iter().position(|c| c.addr == t.destination) else {
                        if let Some(stray) = &mut self.stray {
                            stray.push((t.destination, t.contents.clone()));
                        }
                        continue;
                    };
                    if let Some(lose) = self.lose_to_client.as_mut() {
                        if lose(i, &t.contents) {
                            self.shards[k].recycle(t.contents);
                            continue;
                        }
                    }
                    let c = &mut self.clients[i];
                    if !c.online {
                        continue;
                    }
                    if let Some(tap) = &mut c.tap {
                        tap.push(t.contents.clone());
                    }
                    let proto = match t.proto {
                        chorus_engine::Protocol::Tcp => Protocol::Tcp,
                        _ => Protocol::Udp,
                    };
                    if (proto == Protocol::Tcp) != c.tcp {
                        continue; // not a transport this client has
                    }
                    let r = Receive::new(proto, t.source, c.addr, &t.contents).unwrap();
                    // A client that already left drops stray datagrams, like a browser.
                    let _ = c.rtc.handle_input(Input::Receive(self.now, r));
                    // str0m's contract (rtp mode holds one packet): drain after every input.
                    self.drain_client(i);
                    // As a driver does once the datagram is sent.
                    self.shards[k].recycle(t.contents);
                }
                while let Some(e) = self.shards[k].poll_event() {
                    moved = true;
                    match e {
                        // As the client would read it: protocol v1, as signaling
                        // writes it.
                        Event::ToClient { to, event } => {
                            if let Some(c) = self.clients.iter_mut().find(|c| c.id == to) {
                                c.inbox.push(chorus_signaling::wire::server_message(event));
                            }
                        }
                        Event::Closed {
                            participant,
                            reason,
                        } => self.closed.push((participant, reason)),
                        Event::Reply { id, result, .. } => self.replies.push((id, result)),
                        Event::Notify(e) => self.events.push(chorus_signaling::wire::node_event(e)),
                        Event::Roster { room, change } => self.roster.push((room, change)),
                    }
                }
                while let Some(relayed) = self.shards[k].poll_relay() {
                    moved = true;
                    self.relayed.push(relayed);
                }
                while let Some((to, message)) = self.shards[k].poll_shard_message() {
                    moved = true;
                    if self.lose.as_mut().is_some_and(|lose| lose(to, &message)) {
                        continue;
                    }
                    self.shards[to].handle_shard_message(self.now, message);
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Polls one client until it wants a timeout; its datagrams go to the shard.
    fn drain_client(&mut self, i: usize) -> bool {
        let now = self.now;
        let mut moved = false;
        loop {
            match self.clients[i].rtc.poll_output().unwrap() {
                Output::Timeout(t) => {
                    self.clients[i].next_timeout = t;
                    return moved;
                }
                Output::Transmit(t) => {
                    moved = true;
                    if self.clients[i].online {
                        let from = self.clients[i].addr;
                        if self.clients[i].tcp {
                            // The TCP thread: to the participant's home shard.
                            let id = self.clients[i].id;
                            let home = home_of(id, self.shards.len());
                            self.shards[home].handle_tcp(now, id, from, &t.contents);
                        } else {
                            let shard = self.clients[i].shard;
                            self.shards[shard].handle_datagram(now, from, &t.contents);
                        }
                    }
                }
                Output::Event(e) => on_client_event(&mut self.clients[i], now, e),
            }
        }
    }
}

impl Default for Sim {
    fn default() -> Self {
        Sim::new()
    }
}

fn send_frame(c: &mut Client, idx: usize, now: Instant, level: u8) {
    let (Some(mid), Some(pt)) = (c.mic, c.mic_pt) else {
        return;
    };
    let mut payload = vec![0xC5, idx as u8];
    payload.extend_from_slice(&c.sent.to_be_bytes());
    payload.extend_from_slice(&[0u8; 40]);
    let ext = ExtensionValues {
        audio_level: Some(-(level.min(127) as i8)),
        voice_activity: Some(level < 127),
        ..Default::default()
    };
    let seq = 1000 + c.sent as u64;
    let ts = 5000u32.wrapping_add(c.sent.wrapping_mul(960));
    let write = RtpWrite::new(pt, seq.into(), ts, now, Arc::<[u8]>::from(payload)).ext_vals(ext);
    if let Some(tx) = c.rtc.direct_api().stream_tx_by_mid(mid, None) {
        tx.write_rtp(write);
        c.sent += 1;
    }
}

/// One video frame per layer of a publishing client: one packet each, VP8 with a
/// 15-bit picture id and TL0PICIDX, then `0xD1`, the sender's index, the layer and
/// the frame counter. A layer's first frame, and one after a PLI, is a keyframe.
/// With H.264 ([`Publishing::h264`]): a layer's first keyframe is a STAP-A of SPS and
/// PPS, later ones the first fragment (FU-A) of an IDR slice, other frames a non-IDR
/// slice; then `0xD2`, the sender, layer and frame.
fn send_video_frame(c: &mut Client, idx: usize, now: Instant) {
    let Some(mid) = c.camera.mid else {
        return;
    };
    let h264 = c.camera.h264;
    let Some(pt) = c
        .rtc
        .codec_config()
        .params()
        .iter()
        .find(|p| {
            if h264 {
                p.spec().codec == Codec::H264 && p.spec().format.packetization_mode == Some(1)
            } else {
                p.spec().codec == Codec::Vp8
            }
        })
        .map(|p| p.pt())
    else {
        return;
    };
    for layer in 0..c.camera.frames.len() {
        if c.camera.paused[layer] {
            continue;
        }
        let frame = c.camera.frames[layer];
        let key = std::mem::take(&mut c.camera.keyframe_due[layer]);
        // Each layer numbers its pictures from its own base, as encoders do.
        let picture_id = (frame as u16).wrapping_add(1000 * layer as u16) & 0x7fff;
        let mut payload = if h264 {
            let mut p = match (key, frame) {
                // STAP-A: SPS (3 bytes), PPS (2 bytes).
                (true, 0) => vec![0x78, 0, 3, 0x67, 0x42, 0x1f, 0, 2, 0x68, 0xce],
                // FU-A (NRI 3), start fragment of an IDR slice (type 5).
                (true, _) => vec![0x7c, 0x85],
                (false, _) => vec![0x41],
            };
            p.extend_from_slice(&[0xD2, idx as u8, layer as u8]);
            p
        } else {
            vec![
                0x90,
                0xe0,
                0x80 | (picture_id >> 8) as u8,
                picture_id as u8,
                (frame as u8).wrapping_add(layer as u8 * 50),
                0x00, // TID 0, Y 0
                if key { 0x00 } else { 0x01 },
                0xD1,
                idx as u8,
                layer as u8,
            ]
        };
        payload.extend_from_slice(&frame.to_be_bytes());
        payload.extend_from_slice(&[0u8; 100]);
        let seq = 20_000 * (layer as u64 + 1) + frame as u64;
        let ts = (layer as u32 * 77_777).wrapping_add(frame.wrapping_mul(3000));
        let rid = c
            .camera
            .rids
            .get(layer)
            .map(|r| str0m::media::Rid::from(r.as_str()));
        let write = RtpWrite::new(pt, seq.into(), ts, now, Arc::<[u8]>::from(payload)).marker(true);
        if let Some(tx) = c.rtc.direct_api().stream_tx_by_mid(mid, rid) {
            tx.write_rtp(write);
            c.camera.frames[layer] += 1;
        }
    }
}

fn on_client_event(c: &mut Client, now: Instant, e: RtcEvent) {
    match e {
        RtcEvent::Connected => c.connected = true,
        RtcEvent::KeyframeRequest(r) => {
            let layer = match r.rid {
                Some(rid) => c.camera.rids.iter().position(|x| x.as_str() == &*rid),
                None => Some(0),
            };
            if let Some(l) = layer.filter(|l| *l < c.camera.keyframe_due.len()) {
                c.camera.keyframe_due[l] = true;
                c.camera.plis[l] += 1;
            }
        }
        RtcEvent::RtpPacket(p) => {
            let ssrc = *p.header.ssrc;
            let at = match c.padding.iter().position(|(s, _)| *s == ssrc) {
                Some(i) => i,
                None => {
                    c.padding.push((ssrc, 0));
                    c.padding.len() - 1
                }
            };
            if p.payload.is_empty() {
                c.padding[at].1 += 1;
                return;
            }
            let padded = std::mem::take(&mut c.padding[at].1);
            let mid = c
                .rtc
                .direct_api()
                .stream_rx(&p.header.ssrc)
                .map(|s| s.mid());
            let (from, frame, video) = match &p.payload[..] {
                [0xC5, from, a, b, cc, d, ..] => {
                    (*from as usize, u32::from_be_bytes([*a, *b, *cc, *d]), None)
                }
                [0x90, 0xe0, p0, p1, tl0, _, vp8, 0xD1, from, layer, a, b, cc, d, ..] => (
                    *from as usize,
                    u32::from_be_bytes([*a, *b, *cc, *d]),
                    Some(VideoReceived {
                        layer: *layer,
                        keyframe: vp8 & 1 == 0,
                        picture_id: (u16::from(p0 & 0x7f) << 8) | u16::from(*p1),
                        tl0picidx: *tl0,
                    }),
                ),
                // H.264: a non-IDR slice, a keyframe's STAP-A (SPS, PPS), or an IDR
                // slice's first fragment.
                [0x41, 0xD2, from, layer, a, b, cc, d, ..]
                | [0x7c, 0x85, 0xD2, from, layer, a, b, cc, d, ..]
                | [0x78, 0, 3, 0x67, _, _, 0, 2, 0x68, _, 0xD2, from, layer, a, b, cc, d, ..] => (
                    *from as usize,
                    u32::from_be_bytes([*a, *b, *cc, *d]),
                    Some(VideoReceived {
                        layer: *layer,
                        keyframe: p.payload[0] != 0x41,
                        picture_id: 0,
                        tl0picidx: 0,
                    }),
                ),
                _ => (usize::MAX, 0, None),
            };
            c.received.push(Received {
                at: now,
                mid,
                ssrc: *p.header.ssrc,
                seq: *p.seq_no,
                timestamp: p.header.timestamp,
                marker: p.header.marker,
                pt: *p.header.payload_type,
                csrc: p.header.csrc[..p.header.csrc_count].to_vec(),
                audio_level: p.header.ext_vals.audio_level,
                from,
                frame,
                video,
                padded,
            });
        }
        _ => {}
    }
}
