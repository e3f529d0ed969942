//! The sans-IO core: one shard of a node, driven by datagrams, commands, messages
//! from other shards, and time. See the crate docs for the run loop and
//! [`crate::mesh`] for how shards share rooms.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use chorus_protocol::demux::{classify, DatagramKind};
use chorus_protocol::signal::{ParticipantId, RoomId};
use str0m::config::DtlsCert;

use crate::client_event::{ClientEvent, Refusal};
use crate::config::ShardConfig;
use crate::error::EngineError;
use crate::io::{Command, Datagram, Event, Peer, Protocol, Transmit};
use crate::mesh::{home_of, ShardMessage, MAX_SHARDS};
use crate::participant::Inbound;
use crate::participants::Participants;
use crate::pool::BufferPool;
use crate::report::Notice;
use crate::room::Room;
use crate::video::packet::VideoPacket;
use crate::view::RoomView;

mod cluster;
mod control;
mod media;
mod migration;
mod p2p;
mod proximity;
mod requests;
mod timers;
mod video;

/// How often rooms age speaker levels, announce speakers and reap silent clients.
pub const TICK: Duration = Duration::from_millis(50);
/// str0m's timers are served on a 20 ms grid (counted from the shard's start):
/// participants due within the same 20 ms share one wake-up. None of them is urgent
/// (RTCP, DTLS retransmissions, statistics; forwarding never waits for a timer; Chorus
/// sends the video slots itself, unpaced).
pub const TIMER_GRID: Duration = Duration::from_millis(20);

/// Counters of what the shard did with its input. Network input is never an error:
/// what is not used is dropped and counted here, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardStats {
    pub datagrams_in: u64,
    /// Local speakers' packets put out for other nodes (once each, however many).
    pub relayed_out: u64,
    /// Bytes of every datagram received.
    pub bytes_in: u64,
    /// Bytes of every datagram sent.
    pub bytes_out: u64,
    /// From an address no participant uses, and not a STUN request naming one.
    pub dropped_unknown_source: u64,
    /// Not any protocol WebRTC speaks on this port (RFC 7983), or too short for its
    /// kind. (str0m drops DTLS it cannot use and SRTCP that fails authentication
    /// without telling us; those are not counted. RTP is: `dropped_unauthenticated`.)
    pub dropped_malformed: u64,
    /// str0m returned an error for it.
    pub dropped_rejected: u64,
    /// RTP from a participant's address that str0m did not accept: failed SRTP
    /// authentication, a replay, or sent before DTLS finished.
    pub dropped_unauthenticated: u64,
    pub rtp_in: u64,
    /// Copies sent to subscribers.
    pub rtp_forwarded: u64,
    pub dropped_muted: u64,
    /// From a participant whose token does not grant `publish`.
    pub dropped_not_permitted: u64,
    /// Not the negotiated microphone Opus payload type.
    pub dropped_not_audio: u64,
    /// A subscriber had no slot free for the speaker.
    pub dropped_no_slot: u64,
    /// Reordered across a speaker switch.
    pub dropped_late: u64,
    /// A connected subscriber whose slot streams had no SRTP keys (DTLS exported
    /// none) or no address yet.
    pub dropped_not_ready: u64,
    /// A copy that could not be written or sealed.
    pub dropped_unsealable: u64,
    /// Video layer packets received from publishers held here.
    pub video_in: u64,
    /// Video copies sent on subscribers' video slots.
    pub video_forwarded: u64,
    /// Video packets sent again for a subscriber's NACK, and NACKed packets not sent
    /// again (no longer kept, or resent a moment ago).
    pub video_resent: u64,
    pub nacks_unanswered: u64,
    /// Padding packets sent on video slots to probe for bandwidth.
    pub video_padding: u64,
    /// Video in a payload type that is no negotiated video codec.
    pub dropped_not_video: u64,
    /// Keyframe requests (PLI) sent to publishers.
    pub keyframe_requests: u64,
    /// Video layers handed to this shard that lost a packet on the way (the driver's
    /// ring overflowed), and the packets of them dropped until their next keyframe.
    pub video_gaps: u64,
    pub dropped_video_gap: u64,
    /// Sender reports (SRTCP compounds) sent for slot streams.
    pub reports_out: u64,
    /// Times a participant's `Rtc` was woken for its own timers (what idle
    /// participants cost).
    pub rtc_timeouts: u64,
    /// Subscribers' SRTCP packets opened to read their reports on slot streams.
    pub reports_in: u64,
    /// Of those, the ones str0m did not need (no sender report, or a compound too
    /// large: see `Shard::receive`).
    pub rtcp_kept_from_str0m: u64,
    /// ICE consent checks on a nominated pair the shard answered itself, without
    /// str0m (`crate::consent`).
    pub consent_answered: u64,
    pub transmits_out: u64,
    /// Speaker packets handed to other shards (one per destination shard).
    pub handoffs_out: u64,
    /// Speaker packets received from other shards.
    pub handoffs_in: u64,
    /// Participants whose media moved to this shard.
    pub migrations_in: u64,
    /// Requests to move a participant here that failed the STUN integrity check.
    pub dropped_bad_claim: u64,
}

impl ShardStats {
    /// Every counter by its name (as `/metrics` and `node.stats` show them).
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("datagrams_in", self.datagrams_in),
            ("bytes_in", self.bytes_in),
            ("transmits_out", self.transmits_out),
            ("bytes_out", self.bytes_out),
            ("rtp_in", self.rtp_in),
            ("rtp_forwarded", self.rtp_forwarded),
            ("video_in", self.video_in),
            ("video_forwarded", self.video_forwarded),
            ("video_resent", self.video_resent),
            ("nacks_unanswered", self.nacks_unanswered),
            ("video_padding", self.video_padding),
            ("keyframe_requests", self.keyframe_requests),
            ("video_gaps", self.video_gaps),
            ("dropped_video_gap", self.dropped_video_gap),
            ("handoffs_out", self.handoffs_out),
            ("handoffs_in", self.handoffs_in),
            ("migrations_in", self.migrations_in),
            ("dropped_unknown_source", self.dropped_unknown_source),
            ("dropped_malformed", self.dropped_malformed),
            ("dropped_rejected", self.dropped_rejected),
            ("dropped_unauthenticated", self.dropped_unauthenticated),
            ("dropped_muted", self.dropped_muted),
            ("dropped_not_permitted", self.dropped_not_permitted),
            ("dropped_not_audio", self.dropped_not_audio),
            ("dropped_not_video", self.dropped_not_video),
            ("dropped_no_slot", self.dropped_no_slot),
            ("dropped_late", self.dropped_late),
            ("dropped_not_ready", self.dropped_not_ready),
            ("dropped_unsealable", self.dropped_unsealable),
            ("reports_out", self.reports_out),
            ("rtc_timeouts", self.rtc_timeouts),
            ("reports_in", self.reports_in),
            ("rtcp_kept_from_str0m", self.rtcp_kept_from_str0m),
            ("consent_answered", self.consent_answered),
            ("dropped_bad_claim", self.dropped_bad_claim),
        ]
    }
}

/// One shard of a media node. Feed it with `handle_*`, then drain it with `poll_*`.
pub struct Shard {
    id: usize,
    shards: usize,
    config: ShardConfig,
    cert: DtlsCert,
    /// Participants whose media is on this shard.
    participants: Participants,
    /// Rooms with members whose media is on this shard, or that hand to it.
    views: HashMap<RoomId, RoomView>,
    /// Rosters of the rooms whose home is this shard.
    rooms: HashMap<RoomId, Room>,
    /// The room of each member of those rooms.
    member_of: HashMap<ParticipantId, RoomId>,
    by_addr: HashMap<Peer, ParticipantId>,
    timers: timers::TimerWheel,
    /// The entries [`Shard::handle_timeout`] took from `timers`, being fired.
    due: Vec<(Instant, ParticipantId)>,
    next_tick: Instant,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    outbox: VecDeque<(usize, ShardMessage)>,
    /// What goes to other nodes of rooms that span nodes ([`Shard::poll_relay`]).
    relay: VecDeque<crate::cluster::RelayOut>,
    media: VecDeque<(ParticipantId, Inbound)>,
    /// Publishers str0m was asked to send a keyframe request (PLI) in this batch
    /// (drained once each at its end).
    touched: Vec<ParticipantId>,
    /// When subscribers' video slots were last fitted to their bandwidth estimates.
    last_allocation: Instant,
    /// Buffers of the datagrams the shard writes itself.
    pool: BufferPool,
    /// A buffer to open SRTCP in.
    scratch: Vec<u8>,
    /// The `now` the shard was created at (wall-clock time
    /// [`ShardConfig::wallclock_at_start`]).
    started: Instant,
    rng: u64,
    stats: ShardStats,
    /// The node drains: rooms close as soon as they are empty.
    draining: bool,
}

/// A fresh DTLS certificate, to share between the shards of a node.
pub fn generate_certificate() -> Result<DtlsCert, EngineError> {
    str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate()
        .ok_or(EngineError::Certificate)
}

impl Shard {
    /// A node of one shard. Generates the DTLS certificate its participants share.
    pub fn new(config: ShardConfig, now: Instant) -> Result<Shard, EngineError> {
        Ok(Shard::in_mesh(config, now, 0, 1, generate_certificate()?))
    }

    /// Shard `id` of `shards` (at most [`MAX_SHARDS`]); they share `cert`.
    pub fn in_mesh(
        config: ShardConfig,
        now: Instant,
        id: usize,
        shards: usize,
        cert: DtlsCert,
    ) -> Shard {
        let shards = shards.clamp(1, MAX_SHARDS);
        let rng = config.seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Shard {
            id: id % shards,
            shards,
            config,
            cert,
            participants: Participants::default(),
            views: HashMap::new(),
            rooms: HashMap::new(),
            member_of: HashMap::new(),
            by_addr: HashMap::new(),
            timers: timers::TimerWheel::new(now),
            due: Vec::new(),
            next_tick: now + TICK,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            outbox: VecDeque::new(),
            relay: VecDeque::new(),
            media: VecDeque::new(),
            touched: Vec::new(),
            last_allocation: now,
            pool: BufferPool::default(),
            scratch: Vec::with_capacity(crate::pool::BUFFER_CAPACITY),
            started: now,
            rng,
            stats: ShardStats::default(),
            draining: false,
        }
    }

    // ---- getters -------------------------------------------------------------

    pub fn id(&self) -> usize {
        self.id
    }

    pub fn stats(&self) -> &ShardStats {
        &self.stats
    }

    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// Participants whose media is on this shard.
    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    /// Whether this shard holds the participant's media.
    pub fn holds(&self, participant: ParticipantId) -> bool {
        self.participants.contains_key(&participant)
    }

    /// Rooms whose roster this shard keeps.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Rooms whose roster this shard keeps that are in p2p mode now.
    pub fn p2p_room_count(&self) -> usize {
        self.rooms
            .values()
            .filter(|r| r.mode.mode == crate::p2p::RoomMode::P2p)
            .count()
    }

    /// The members of a room homed on this shard, in join order.
    pub fn room_members(&self, room: &RoomId) -> Option<&[ParticipantId]> {
        self.rooms.get(room).map(|r| r.order.as_slice())
    }

    /// Whether a participant's str0m counts its connection as up (ICE, DTLS, SRTP):
    /// the shard answers most consent checks itself and must keep str0m's pair alive.
    pub fn str0m_connected(&self, participant: ParticipantId) -> Option<bool> {
        Some(self.participants.get(&participant)?.rtc.is_connected())
    }

    /// The speaker a subscriber on this shard currently hears on a slot.
    pub fn slot_occupant(&self, subscriber: ParticipantId, slot: usize) -> Option<ParticipantId> {
        self.participants.get(&subscriber)?.table.occupant(slot)
    }

    // ---- handle_* ------------------------------------------------------------

    /// Datagrams that arrived together (one `recvmmsg`), all at `now`.
    ///
    /// Each is demultiplexed to its participant and handed to its `Rtc` (in rtp mode
    /// str0m holds one received packet at a time, so the sender's `Rtc` is drained
    /// after each); a speaker's packet is forwarded at once: Chorus writes and seals
    /// every subscriber's copy itself, so no subscriber's `Rtc` is touched.
    pub fn handle_batch<'a>(
        &mut self,
        now: Instant,
        datagrams: impl IntoIterator<Item = Datagram<'a>>,
    ) {
        for d in datagrams {
            self.datagram(
                now,
                Peer {
                    proto: d.proto,
                    addr: d.source,
                },
                d.contents,
            );
        }
        self.pump(now);
    }

    /// A datagram from an ICE-TCP connection the driver bound to `participant` (the
    /// USERNAME of the connection's first STUN request names it). It is processed
    /// where the participant's media is (passed on through its home shard when that
    /// is another shard); TCP never moves a participant's media.
    ///
    /// Empty `data` is the TCP thread's notice that the connection closed (frames are
    /// never empty): the shard holding the media forgets that address (the slot
    /// streams stop going there; a later connection from the same address may be
    /// someone else's). To the client it is an ICE failure like any other.
    pub fn handle_tcp(
        &mut self,
        now: Instant,
        participant: ParticipantId,
        source: SocketAddr,
        data: &[u8],
    ) {
        if !data.is_empty() {
            self.stats.datagrams_in += 1;
            self.stats.bytes_in += data.len() as u64;
            if classify(data) == DatagramKind::Unknown {
                self.stats.dropped_malformed += 1;
                return;
            }
        }
        self.tcp_datagram(now, participant, source, data, 0);
        self.pump(now);
    }

    /// One datagram on the shard's UDP socket from `source` (a batch of one).
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        let peer = Peer {
            proto: Protocol::Udp,
            addr: source,
        };
        self.datagram(now, peer, data);
        self.pump(now);
    }

    fn datagram(&mut self, now: Instant, peer: Peer, data: &[u8]) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += data.len() as u64;
        if classify(data) == DatagramKind::Unknown {
            self.stats.dropped_malformed += 1;
            return;
        }
        let Some(pid) = self.demux(now, peer, data) else {
            return;
        };
        self.receive(now, pid, peer, data);
    }

    /// Takes back the buffer of a sent [`Transmit`], for the next datagram.
    pub fn recycle(&mut self, contents: Vec<u8>) {
        self.pool.give(contents);
    }

    /// An instruction from signaling, for the participant's home shard
    /// ([`crate::mesh::home_of`]); commands reaching another shard are passed on.
    pub fn handle_command(&mut self, now: Instant, command: Command) {
        self.at_home(now, command);
        self.pump(now);
    }

    /// Carries out a command at the participant's home shard: here, or passed on.
    fn at_home(&mut self, now: Instant, command: Command) {
        let home = home_of(command.participant(), self.shards);
        if home != self.id {
            self.send(home, ShardMessage::ForMedia(command));
            return;
        }
        self.control(now, command);
    }

    /// Video packets other shards handed to this one, all at `now`: fanned out to the
    /// local video slots (then each publisher str0m was asked a keyframe of drained
    /// once).
    pub fn handle_video_batch(
        &mut self,
        now: Instant,
        packets: impl IntoIterator<Item = (RoomId, VideoPacket)>,
    ) {
        for (room, packet) in packets {
            self.stats.handoffs_in += 1;
            self.fan_out_video(now, &room, &packet);
        }
        self.pump(now);
    }

    /// A message from another shard.
    pub fn handle_shard_message(&mut self, now: Instant, message: ShardMessage) {
        match message {
            ShardMessage::Media { room, packet } => {
                self.stats.handoffs_in += 1;
                self.fan_out(now, &room, &packet);
            }
            ShardMessage::Video { room, packet } => {
                self.stats.handoffs_in += 1;
                self.fan_out_video(now, &room, &packet);
            }
            ShardMessage::Keyframe {
                publisher,
                source,
                layer,
            } => self.keyframe(now, publisher, source, layer),
            ShardMessage::VideoGap {
                room,
                publisher,
                source,
                layer,
                origin,
            } => self.video_gap(now, &room, publisher, source, layer, origin),
            ShardMessage::Claim {
                participant,
                at,
                source,
                datagram,
            } => self.claim(now, participant, at, source, datagram),
            ShardMessage::Release {
                participant,
                to,
                source,
                datagram,
            } => self.release(now, participant, to, source, datagram),
            ShardMessage::Adopt {
                participant,
                policy,
                source,
                datagram,
            } => self.adopt(now, *participant, policy, source, &datagram),
            ShardMessage::Moved { participant, shard } => {
                let Some(room) = self.room_of_member(participant) else {
                    return;
                };
                if let Some(r) = self.rooms.get_mut(&room) {
                    if let Some(m) = r.members.get_mut(&participant) {
                        m.shard = shard;
                    }
                }
                self.publish_room_shards(now, &room);
            }
            ShardMessage::RoomShards { room, shards } => self.room_shards(room, &shards),
            ShardMessage::RoomMedia { room, sync } => self.sync_room(now, &room, sync),
            ShardMessage::Positions {
                room,
                positions,
                seq,
            } => self.apply_positions(&room, &positions, seq),
            ShardMessage::Resync { room, shard } => self.resync(now, &room, shard),
            ShardMessage::Speaking {
                room,
                speaker,
                level,
            } => self.apply_speaking(now, &room, speaker, level),
            ShardMessage::Tcp {
                participant,
                source,
                datagram,
                hops,
            } => self.tcp_datagram(now, participant, source, &datagram, hops),
            ShardMessage::ForMedia(command) => {
                if home_of(command.participant(), self.shards) == self.id {
                    // A command sent to the wrong shard reaches its home this way.
                    self.control(now, command);
                } else {
                    self.media_command(now, command);
                }
            }
            ShardMessage::Left { room, participant } => self.forget_member(&room, participant),
            ShardMessage::Redirect { command, hops } => {
                self.media_command_after(now, command, hops)
            }
            ShardMessage::Request { id, request } => {
                return self.handle_request(now, id, request);
            }
            ShardMessage::Gone {
                participant,
                reason,
            } => self.leave_room(now, participant, reason),
            ShardMessage::Remote { room, change } => self.remote_roster(now, room, change),
            ShardMessage::NodeLost { node } => self.node_lost(now, node),
        }
        self.pump(now);
    }

    /// Time passed. Call at [`Shard::poll_timeout`] (earlier is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due);
        self.timers.take_due(now, &mut due);
        for (at, pid) in due.drain(..) {
            let Some(p) = self.participants.get_mut(&pid) else {
                continue;
            };
            if p.timer_at != Some(at) {
                continue; // superseded by an earlier entry
            }
            p.timer_at = None;
            if self.on_timer(now, pid) {
                self.gone(now, pid);
            }
        }
        self.due = due;
        if self.next_tick <= now {
            self.tick(now);
            self.next_tick = now + TICK;
        }
        self.pump(now);
    }

    // ---- poll_* --------------------------------------------------------------

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front()?;
        self.stats.transmits_out += 1;
        self.stats.bytes_out += t.contents.len() as u64;
        Some(t)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A local speaker's packet for the other nodes of its room (a room that spans
    /// nodes): the cluster layer sends it once to each.
    pub fn poll_relay(&mut self) -> Option<crate::cluster::RelayOut> {
        self.relay.pop_front()
    }

    /// A message for another shard: `(destination shard, message)`.
    pub fn poll_shard_message(&mut self) -> Option<(usize, ShardMessage)> {
        self.outbox.pop_front()
    }

    /// When [`Shard::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let rtc = self.timers.next_due();
        let tick =
            (!self.participants.is_empty() || !self.views.is_empty() || !self.rooms.is_empty())
                .then_some(self.next_tick);
        match (rtc, tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- helpers ---------------------------------------------------------------

    /// The wall-clock time at `now` (for RTCP's NTP timestamps).
    fn wallclock(&self, now: Instant) -> SystemTime {
        self.config.wallclock_at_start + now.saturating_duration_since(self.started)
    }

    /// The room of a participant whose roster is on this shard.
    fn room_of_member(&self, pid: ParticipantId) -> Option<RoomId> {
        self.member_of.get(&pid).cloned()
    }

    fn send(&mut self, to: usize, message: ShardMessage) {
        self.outbox.push_back((to, message));
    }

    fn signal(&mut self, to: ParticipantId, event: ClientEvent) {
        self.events.push_back(Event::ToClient { to, event });
    }

    /// Tells `to` its request was refused.
    fn refuse(&mut self, to: ParticipantId, why: Refusal, message: &str) {
        self.signal(
            to,
            ClientEvent::Refused {
                why,
                message: message.to_owned(),
            },
        );
    }

    fn notify(&mut self, event: Notice) {
        self.events.push_back(Event::Notify(event));
    }

    fn broadcast(
        &mut self,
        room: &RoomId,
        except: Option<ParticipantId>,
        event: impl Fn() -> ClientEvent,
    ) {
        let Some(room) = self.rooms.get(room) else {
            return;
        };
        for m in room.local_members().map(|m| m.info.id) {
            if Some(m) != except {
                self.events.push_back(Event::ToClient {
                    to: m,
                    event: event(),
                });
            }
        }
    }
}

/// ICE ufrag naming the participant (so any shard can route its first STUN request)
/// plus randomness. RFC 8445 §5.3: ufrag and pwd are ice-chars, at least 4 and 22.
fn ufrag_for(pid: ParticipantId, rng: &mut u64) -> String {
    format!("c{:x}z{}", pid.0, random_token(rng, 6))
}

/// An ICE password: from the operating system's randomness (the shard's own seeded
/// generator makes SSRCs that clients see, so it must not make secrets); the seeded
/// generator only if the OS has none to give.
fn ice_password(rng: &mut u64) -> String {
    const ICE_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = [0u8; 24];
    if getrandom::fill(&mut bytes).is_err() {
        return random_token(rng, 24);
    }
    bytes
        .iter()
        .map(|b| ICE_CHARS[usize::from(*b) % ICE_CHARS.len()] as char)
        .collect()
}

fn random_token(rng: &mut u64, len: usize) -> String {
    const ICE_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..len)
        .map(|_| ICE_CHARS[(next_random(rng) % ICE_CHARS.len() as u64) as usize] as char)
        .collect()
}

/// A new stream's first sequence number (below 2^15: random, RFC 3550 §5.1, with
/// room before its first rollover) and RTP timestamp.
fn initial_numbers(rng: &mut u64) -> (u16, u32) {
    let r = next_random(rng);
    ((r & 0x7fff) as u16, (r >> 32) as u32)
}

/// A random SSRC, not 0 and not `taken` (RFC 3550 §8: distinct within the session).
fn fresh_ssrc(rng: &mut u64, taken: impl Fn(u32) -> bool) -> u32 {
    loop {
        let candidate = next_random(rng) as u32;
        if candidate != 0 && !taken(candidate) {
            return candidate;
        }
    }
}

/// splitmix64: the shard's own seeded randomness.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
