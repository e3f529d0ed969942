//! The sans-IO core: one shard of a node, driven by datagrams, commands, messages
//! from other shards, and time. See the crate docs for the run loop and
//! [`crate::mesh`] for how shards share rooms.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chorus_protocol::demux::{classify, DatagramKind};
use chorus_protocol::signal::{
    DisplayName, ErrorCode, ParticipantId, RoomId, ServerMessage, SpeakerInfo,
};
use chorus_protocol::stun;
use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::media::Mid;
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, RtpPacket};
use str0m::{Candidate, IceCreds, Input, Rtc};

use crate::config::ShardConfig;
use crate::error::EngineError;
use crate::forwarder::{forward_to, Outcome, SpeakerPacket};
use crate::io::{CloseReason, Command, Event, Transmit};
use crate::mesh::{home_of, ShardMessage, MAX_SHARDS};
use crate::participant::{Participant, SlotTx, MAX_ADDRS};
use crate::rewriter::SlotRewriter;
use crate::room::Room;
use crate::sdp::{candidates_in_every_section, prepare_offer};
use crate::slots::SlotTable;
use crate::view::RoomView;

/// How often rooms age speaker levels, announce speakers and reap silent clients.
pub const TICK: Duration = Duration::from_millis(50);

/// Counters of what the shard did with its input. Network input is never an error:
/// what is not used is dropped and counted here, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardStats {
    pub datagrams_in: u64,
    /// From an address no participant uses, and not a STUN request naming one.
    pub dropped_unknown_source: u64,
    /// Not any protocol WebRTC speaks on this port (RFC 7983), or too short for its
    /// kind. (str0m drops SRTP that fails authentication and DTLS it cannot use
    /// without telling us; those are not counted here.)
    pub dropped_malformed: u64,
    /// str0m returned an error for it.
    pub dropped_rejected: u64,
    pub rtp_in: u64,
    /// Copies sent to subscribers.
    pub rtp_forwarded: u64,
    pub dropped_muted: u64,
    /// Not the negotiated microphone Opus payload type.
    pub dropped_not_audio: u64,
    /// A subscriber had no slot free for the speaker.
    pub dropped_no_slot: u64,
    /// Reordered across a speaker switch.
    pub dropped_late: u64,
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

/// One shard of a media node. Feed it with `handle_*`, then drain it with `poll_*`.
pub struct Shard {
    id: usize,
    shards: usize,
    config: ShardConfig,
    cert: DtlsCert,
    /// Participants whose media is on this shard.
    participants: HashMap<ParticipantId, Participant>,
    /// Rooms with members whose media is on this shard, or that hand to it.
    views: HashMap<RoomId, RoomView>,
    /// Rosters of the rooms whose home is this shard.
    rooms: HashMap<RoomId, Room>,
    by_addr: HashMap<SocketAddr, ParticipantId>,
    timers: BinaryHeap<Reverse<(Instant, ParticipantId)>>,
    next_tick: Instant,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    outbox: VecDeque<(usize, ShardMessage)>,
    media: VecDeque<(ParticipantId, RtpPacket)>,
    flush: Vec<ParticipantId>,
    rng: u64,
    stats: ShardStats,
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
            participants: HashMap::new(),
            views: HashMap::new(),
            rooms: HashMap::new(),
            by_addr: HashMap::new(),
            timers: BinaryHeap::new(),
            next_tick: now + TICK,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            outbox: VecDeque::new(),
            media: VecDeque::new(),
            flush: Vec::new(),
            rng,
            stats: ShardStats::default(),
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

    /// The members of a room homed on this shard, in join order.
    pub fn room_members(&self, room: &RoomId) -> Option<&[ParticipantId]> {
        self.rooms.get(room).map(|r| r.order.as_slice())
    }

    /// The speaker a subscriber on this shard currently hears on a slot.
    pub fn slot_occupant(&self, subscriber: ParticipantId, slot: usize) -> Option<ParticipantId> {
        self.participants.get(&subscriber)?.table.occupant(slot)
    }

    // ---- handle_* ------------------------------------------------------------

    /// A datagram arrived on the shard's UDP socket from `source`.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        self.stats.datagrams_in += 1;
        if classify(data) == DatagramKind::Unknown {
            self.stats.dropped_malformed += 1;
            return;
        }
        let Some(pid) = self.demux(now, source, data) else {
            return;
        };
        self.receive(now, pid, source, data);
        self.pump(now);
    }

    /// An instruction from signaling, for the participant's home shard
    /// ([`crate::mesh::home_of`]); commands reaching another shard are passed on.
    pub fn handle_command(&mut self, now: Instant, command: Command) {
        let home = home_of(command.participant(), self.shards);
        if home != self.id {
            self.send(home, ShardMessage::ForMedia(command));
            return;
        }
        self.control(now, command);
        self.pump(now);
    }

    /// A message from another shard.
    pub fn handle_shard_message(&mut self, now: Instant, message: ShardMessage) {
        match message {
            ShardMessage::Media { room, packet } => {
                self.stats.handoffs_in += 1;
                self.fan_out(now, &room, &packet);
            }
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
                source,
                datagram,
            } => self.adopt(now, *participant, source, &datagram),
            ShardMessage::Moved { participant, shard } => {
                let Some(room) = self.room_of_member(participant) else {
                    return;
                };
                if let Some(r) = self.rooms.get_mut(&room) {
                    if let Some(m) = r.members.get_mut(&participant) {
                        m.shard = shard;
                    }
                }
                self.publish_room_shards(&room);
            }
            ShardMessage::RoomShards { room, shards } => self.room_shards(room, &shards),
            ShardMessage::ForMedia(command) => {
                if home_of(command.participant(), self.shards) == self.id {
                    // A command sent to the wrong shard reaches its home this way.
                    self.control(now, command);
                } else {
                    self.media_command(now, command);
                }
            }
            ShardMessage::Left { room, participant } => self.forget_member(&room, participant),
            ShardMessage::Gone {
                participant,
                reason,
            } => self.leave_room(participant, reason),
        }
        self.pump(now);
    }

    /// Time passed. Call at [`Shard::poll_timeout`] (earlier is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, pid))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(p) = self.participants.get_mut(&pid) else {
                continue;
            };
            if p.timer_at != Some(at) {
                continue; // superseded by an earlier entry
            }
            p.timer_at = None;
            if p.next_timeout <= now {
                if let Err(e) = p.rtc.handle_input(Input::Timeout(now)) {
                    tracing::debug!(participant = %pid, error = %e, "rtc timeout failed");
                    p.failed = true;
                }
            }
            self.drain(pid);
        }
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
        Some(t)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A message for another shard: `(destination shard, message)`.
    pub fn poll_shard_message(&mut self) -> Option<(usize, ShardMessage)> {
        self.outbox.pop_front()
    }

    /// When [`Shard::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let rtc = self.timers.peek().map(|Reverse((at, _))| *at);
        let tick =
            (!self.participants.is_empty() || !self.views.is_empty()).then_some(self.next_tick);
        match (rtc, tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- demultiplexing and migration ------------------------------------------

    /// Source address first; for an unknown address, a STUN request whose USERNAME
    /// names a participant: held here, its integrity is checked by its `Rtc`; held
    /// elsewhere, it is claimed from its home shard.
    fn demux(&mut self, now: Instant, source: SocketAddr, data: &[u8]) -> Option<ParticipantId> {
        if let Some(pid) = self.by_addr.get(&source) {
            return Some(*pid);
        }
        let msg = stun::StunMessage::parse(data).ok();
        let ufrag = msg
            .as_ref()
            .and_then(|m| m.ice_ufrags())
            .map(|(ours, _)| ours);
        let Some((pid, ufrag)) = ufrag.and_then(|u| parse_ufrag(u).map(|p| (p, u))) else {
            self.stats.dropped_unknown_source += 1;
            tracing::trace!(%source, len = data.len(), "dropped: unknown source");
            return None;
        };
        let Some(p) = self.participants.get_mut(&pid) else {
            let home = home_of(pid, self.shards);
            let claim = ShardMessage::Claim {
                participant: pid,
                at: self.id,
                source,
                datagram: data.to_vec(),
            };
            if home == self.id {
                self.handle_shard_message(now, claim);
            } else {
                self.send(home, claim);
            }
            return None;
        };
        let receive = Receive::new(Protocol::Udp, source, self.config.local_addr, data).ok()?;
        if p.ufrag != ufrag
            || p.addrs.len() >= MAX_ADDRS
            || !p.rtc.accepts(&Input::Receive(now, receive))
        {
            self.stats.dropped_unknown_source += 1;
            return None;
        }
        tracing::debug!(room = %p.room, participant = %pid, %source, "new source address");
        p.addrs.push(source);
        self.by_addr.insert(source, pid);
        Some(pid)
    }

    /// At the home shard: traffic of `pid` arrives at shard `at`; ask the shard holding
    /// its media to hand it over.
    fn claim(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        at: usize,
        source: SocketAddr,
        datagram: Vec<u8>,
    ) {
        let Some(holder) = self
            .room_of_member(pid)
            .and_then(|r| self.rooms.get(&r))
            .and_then(|r| r.members.get(&pid))
            .map(|m| m.shard)
        else {
            return;
        };
        if holder == at {
            return; // already there (a retransmission crossed the move)
        }
        let release = ShardMessage::Release {
            participant: pid,
            to: at,
            source,
            datagram,
        };
        if holder == self.id {
            self.handle_shard_message(now, release);
        } else {
            self.send(holder, release);
        }
    }

    /// At the holding shard: hand the participant's media to shard `to`, if the
    /// datagram that asked for it passes the participant's own STUN integrity check.
    fn release(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        to: usize,
        source: SocketAddr,
        datagram: Vec<u8>,
    ) {
        let Some(p) = self.participants.get(&pid) else {
            return; // moved already
        };
        let Ok(receive) = Receive::new(Protocol::Udp, source, self.config.local_addr, &datagram)
        else {
            return;
        };
        if !p.rtc.accepts(&Input::Receive(now, receive)) {
            self.stats.dropped_bad_claim += 1;
            return;
        }
        let Some(p) = self.detach(pid) else {
            return;
        };
        tracing::debug!(room = %p.room, participant = %pid, from = self.id, to, "media moves");
        let adopt = ShardMessage::Adopt {
            participant: Box::new(p),
            source,
            datagram,
        };
        self.send(to, adopt);
    }

    /// At the new shard: install the participant's media and feed it the datagram.
    fn adopt(&mut self, now: Instant, mut p: Participant, source: SocketAddr, datagram: &[u8]) {
        let pid = p.id;
        self.stats.migrations_in += 1;
        p.timer_at = None;
        // Not on this shard's flush list (yet): whatever it had queued is sent below.
        p.needs_flush = false;
        p.addrs = vec![source];
        self.by_addr.insert(source, pid);
        let room = p.room.clone();
        self.views.entry(room).or_default().local.push(pid);
        self.participants.insert(pid, p);
        self.receive(now, pid, source, datagram);
        let home = home_of(pid, self.shards);
        let moved = ShardMessage::Moved {
            participant: pid,
            shard: self.id,
        };
        if home == self.id {
            self.handle_shard_message(now, moved);
        } else {
            self.send(home, moved);
        }
    }

    /// Removes a participant's media from this shard, with every index of it.
    fn detach(&mut self, pid: ParticipantId) -> Option<Participant> {
        let p = self.participants.remove(&pid)?;
        for a in &p.addrs {
            self.by_addr.remove(a);
        }
        if let Some(v) = self.views.get_mut(&p.room) {
            v.local.retain(|m| *m != pid);
        }
        self.flush.retain(|m| *m != pid);
        Some(p)
    }

    fn receive(&mut self, now: Instant, pid: ParticipantId, source: SocketAddr, data: &[u8]) {
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        let Ok(receive) = Receive::new(Protocol::Udp, source, self.config.local_addr, data) else {
            self.stats.dropped_rejected += 1;
            return;
        };
        if let Err(e) = p.rtc.handle_input(Input::Receive(now, receive)) {
            self.stats.dropped_rejected += 1;
            tracing::trace!(participant = %pid, error = %e, "dropped: rtc refused datagram");
        }
        p.last_heard = Some(now);
        self.drain(pid);
    }

    // ---- control (home shard) --------------------------------------------------

    fn control(&mut self, now: Instant, command: Command) {
        match command {
            Command::Join {
                participant,
                room,
                name,
            } => self.join(now, participant, room, name),
            Command::Candidate {
                participant,
                candidate,
            } => {
                // ICE-lite: the client's candidates are learnt from its checks, so
                // they are only checked. Valid: end-of-candidates (empty), anything
                // str0m parses, and mDNS host candidates (`<uuid>.local`, Chromium's
                // default), which str0m cannot resolve but which are not errors.
                let valid = candidate.is_empty()
                    || Candidate::from_sdp_string(&candidate).is_ok()
                    || (candidate.starts_with("candidate:") && candidate.contains(".local "));
                if !valid && self.room_of_member(participant).is_some() {
                    self.signal(
                        participant,
                        ServerMessage::error(ErrorCode::BadRequest, "invalid ICE candidate"),
                    );
                }
            }
            Command::SetMuted { participant, muted } => {
                let media = Command::SetMuted { participant, muted };
                self.update(now, participant, |i| i.muted = muted, media);
            }
            Command::SetDeafened {
                participant,
                deafened,
            } => self.update(
                now,
                participant,
                |i| i.deafened = deafened,
                Command::SetDeafened {
                    participant,
                    deafened,
                },
            ),
            Command::Offer { participant, sdp } => {
                self.send_to_media(now, participant, Command::Offer { participant, sdp });
            }
            Command::Leave { participant } => self.leave_room(participant, CloseReason::Left),
        }
    }

    fn join(&mut self, now: Instant, pid: ParticipantId, room_id: RoomId, name: DisplayName) {
        if self.room_of_member(pid).is_some() {
            self.signal(
                pid,
                ServerMessage::error(ErrorCode::BadRequest, "already joined"),
            );
            return;
        }
        if !self.rooms.contains_key(&room_id) {
            if !self.config.auto_create_rooms {
                return self.reject(pid, ErrorCode::RoomNotFound, "room does not exist");
            }
            let room = Room::new(
                room_id.clone(),
                self.config.audio_slots,
                self.config.max_participants,
            );
            self.rooms.insert(room_id.clone(), room);
        }
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        if room.is_full() {
            return self.reject(pid, ErrorCode::RoomFull, "room is full");
        }
        let audio_slots = room.audio_slots;
        let csrc = room.allocate_csrc();
        let ufrag = ufrag_for(pid, &mut self.rng);
        let pass = random_token(&mut self.rng, 24);
        let rtc = match self.new_rtc(now, ufrag.clone(), pass) {
            Ok(rtc) => rtc,
            Err(e) => {
                tracing::error!(error = %e, "could not create rtc");
                if let Some(r) = self.rooms.get_mut(&room_id) {
                    r.remove(pid);
                }
                return self.reject(pid, ErrorCode::Internal, "could not set up media");
            }
        };
        let p = Participant {
            id: pid,
            room: room_id.clone(),
            name,
            csrc,
            audio_slots,
            muted: false,
            deafened: false,
            rtc,
            ufrag,
            addrs: Vec::new(),
            next_timeout: now,
            timer_at: None,
            last_heard: None,
            connected: false,
            mic_pt: None,
            slots: Vec::new(),
            table: SlotTable::new(0),
            needs_flush: false,
            speakers_dirty: false,
            failed: false,
        };
        tracing::info!(room = %room_id, participant = %pid, name = p.name.as_str(), "joined");
        let info = p.info();
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        let others: Vec<_> = room.infos().cloned().collect();
        room.add(info.clone(), self.id);
        self.views
            .entry(room_id.clone())
            .or_default()
            .local
            .push(pid);
        self.participants.insert(pid, p);
        self.drain(pid);
        self.signal(
            pid,
            ServerMessage::Joined {
                participant_id: pid,
                csrc,
                room: room_id.clone(),
                audio_slots,
                participants: others,
                ice_servers: self.config.ice_servers.clone(),
            },
        );
        self.broadcast(&room_id, Some(pid), || ServerMessage::ParticipantJoined {
            participant: info.clone(),
        });
        self.publish_room_shards(&room_id);
    }

    fn new_rtc(&self, now: Instant, ufrag: String, pass: String) -> Result<Rtc, String> {
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .set_dtls_cert(self.cert.clone())
            .set_local_ice_credentials(IceCreds { ufrag, pass })
            // Audio is forwarded, never resent (RTX): one entry is str0m's minimum,
            // instead of 50 per slot stream (~20 KB each, most of a participant's memory).
            .set_send_buffer_audio(1)
            // Audio-only forwarding needs the level and the mid, nothing else: no
            // transport-cc (its per-packet send records were the largest share of a
            // participant's memory after the streams), no abs-send-time.
            .clear_extension_map()
            .set_extension(1, Extension::AudioLevel)
            .set_extension(4, Extension::RtpMid)
            .set_stats_interval(None)
            .build(now);
        let candidate = Candidate::host(self.config.local_addr, "udp")
            .map_err(|e| format!("local candidate {}: {e}", self.config.local_addr))?;
        rtc.add_local_candidate(candidate);
        Ok(rtc)
    }

    /// Changes what the room sees of a member, tells the whole room (the member
    /// included), and applies the media part where the member's media is.
    fn update(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        change: impl FnOnce(&mut chorus_protocol::signal::ParticipantInfo),
        media: Command,
    ) {
        let Some(room_id) = self.room_of_member(pid) else {
            return;
        };
        let Some(m) = self
            .rooms
            .get_mut(&room_id)
            .and_then(|r| r.members.get_mut(&pid))
        else {
            return;
        };
        change(&mut m.info);
        let info = m.info.clone();
        tracing::debug!(room = %room_id, participant = %pid, muted = info.muted, deafened = info.deafened, "updated");
        self.broadcast(&room_id, None, || ServerMessage::ParticipantUpdated {
            participant: info.clone(),
        });
        self.send_to_media(now, pid, media);
    }

    /// Sends the media part of a command to the shard holding the participant.
    fn send_to_media(&mut self, now: Instant, pid: ParticipantId, command: Command) {
        let holder = self
            .room_of_member(pid)
            .and_then(|r| self.rooms.get(&r))
            .and_then(|r| r.members.get(&pid))
            .map(|m| m.shard);
        match holder {
            Some(s) if s == self.id => self.media_command(now, command),
            Some(s) => self.send(s, ShardMessage::ForMedia(command)),
            None => {}
        }
    }

    fn reject(&mut self, pid: ParticipantId, code: ErrorCode, message: &str) {
        self.signal(pid, ServerMessage::error(code, message));
        self.events.push_back(Event::Closed {
            participant: pid,
            reason: CloseReason::Rejected,
        });
    }

    /// At the home shard: the participant is out of the room, whatever the reason.
    fn leave_room(&mut self, pid: ParticipantId, reason: CloseReason) {
        let Some(room_id) = self.room_of_member(pid) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        let Some(member) = room.remove(pid) else {
            return;
        };
        tracing::info!(room = %room.id, participant = %pid, ?reason, "left");
        let notify = room.notified.clone();
        let empty = room.order.is_empty();
        // The media goes wherever it is; every shard of the room frees its slots.
        if member.shard == self.id {
            self.drop_media(pid);
        } else {
            self.send(
                member.shard,
                ShardMessage::ForMedia(Command::Leave { participant: pid }),
            );
        }
        for s in notify {
            if s == self.id {
                self.forget_member(&room_id, pid);
            } else {
                self.send(
                    s,
                    ShardMessage::Left {
                        room: room_id.clone(),
                        participant: pid,
                    },
                );
            }
        }
        self.broadcast(&room_id, None, || ServerMessage::ParticipantLeft {
            participant_id: pid,
        });
        self.publish_room_shards(&room_id);
        if empty && self.config.auto_create_rooms {
            self.rooms.remove(&room_id);
        }
        self.events.push_back(Event::Closed {
            participant: pid,
            reason,
        });
    }

    /// At the home shard: tells every shard that holds (or held) members which shards
    /// the room spans now.
    fn publish_room_shards(&mut self, room_id: &RoomId) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let shards = room.shards();
        if shards == room.notified && !shards.is_empty() {
            return;
        }
        let mut targets = room.notified.clone();
        targets.extend(&shards);
        targets.sort_unstable();
        targets.dedup();
        room.notified = shards.clone();
        for s in targets {
            if s == self.id {
                self.room_shards(room_id.clone(), &shards);
            } else {
                self.send(
                    s,
                    ShardMessage::RoomShards {
                        room: room_id.clone(),
                        shards: shards.clone(),
                    },
                );
            }
        }
    }

    // ---- media (the shard holding the participant) ------------------------------

    fn media_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Offer { participant, sdp } => self.offer(now, participant, &sdp),
            Command::SetMuted { participant, muted } => {
                let Some(p) = self.participants.get_mut(&participant) else {
                    return;
                };
                p.muted = muted;
                if muted {
                    if let Some(v) = self.views.get_mut(&p.room) {
                        v.silence(participant);
                    }
                }
            }
            Command::SetDeafened {
                participant,
                deafened,
            } => {
                if let Some(p) = self.participants.get_mut(&participant) {
                    p.deafened = deafened;
                }
            }
            Command::Leave { participant } => self.drop_media(participant),
            Command::Join { .. } | Command::Candidate { .. } => {}
        }
    }

    fn drop_media(&mut self, pid: ParticipantId) {
        if let Some(mut p) = self.detach(pid) {
            p.rtc.disconnect();
        }
    }

    /// This shard's part of a room spanning `shards`.
    fn room_shards(&mut self, room: RoomId, shards: &[usize]) {
        let view = self.views.entry(room.clone()).or_default();
        view.remote = shards.iter().copied().filter(|s| *s != self.id).collect();
        if view.is_unused() {
            self.views.remove(&room);
        }
    }

    /// A member left: free its slots and level on this shard.
    fn forget_member(&mut self, room: &RoomId, pid: ParticipantId) {
        let Some(view) = self.views.get_mut(room) else {
            return;
        };
        view.forget(pid);
        for m in &view.local {
            if let Some(s) = self.participants.get_mut(m) {
                s.table.release(pid);
            }
        }
    }

    fn offer(&mut self, now: Instant, pid: ParticipantId, sdp: &str) {
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        let audio_slots = p.audio_slots as usize;
        match negotiate(p, now, sdp, audio_slots, &mut self.rng) {
            Ok(message) => {
                p.last_heard.get_or_insert(now);
                self.drain(pid);
                self.signal(pid, message);
            }
            Err(reason) => {
                tracing::debug!(participant = %pid, %reason, "offer refused");
                self.signal(pid, ServerMessage::error(ErrorCode::BadRequest, reason));
            }
        }
    }

    /// Drains one participant's `Rtc` and keeps its timer entry current.
    fn drain(&mut self, pid: ParticipantId) {
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        p.drain(&mut self.transmits, &mut self.media);
        if p.timer_at.is_none_or(|at| p.next_timeout < at) {
            p.timer_at = Some(p.next_timeout);
            self.timers.push(Reverse((p.next_timeout, pid)));
        }
    }

    /// Forwards received media and sends what was written, until both are done.
    fn pump(&mut self, now: Instant) {
        loop {
            while let Some((pid, pkt)) = self.media.pop_front() {
                self.forward(now, pid, pkt);
            }
            if self.flush.is_empty() {
                break;
            }
            // Take the list (keeping its capacity for the next round).
            let mut batch = std::mem::take(&mut self.flush);
            for pid in batch.drain(..) {
                let Some(p) = self.participants.get_mut(&pid) else {
                    continue;
                };
                p.needs_flush = false;
                // str0m sends written packets on its next timeout (send queue).
                if let Err(e) = p.rtc.handle_input(Input::Timeout(now)) {
                    tracing::debug!(participant = %pid, error = %e, "rtc flush failed");
                    p.failed = true;
                }
                self.drain(pid);
            }
            if self.flush.is_empty() {
                self.flush = batch;
            }
        }
    }

    /// The pipeline's publisher side: one packet from a speaker held here goes to
    /// the local subscribers and once to every other shard of the room.
    fn forward(&mut self, now: Instant, pid: ParticipantId, pkt: RtpPacket) {
        self.stats.rtp_in += 1;
        let Some(p) = self.participants.get(&pid) else {
            return;
        };
        if p.mic_pt != Some(pkt.header.payload_type) {
            self.stats.dropped_not_audio += 1;
            return;
        }
        if p.muted {
            self.stats.dropped_muted += 1;
            return;
        }
        let room = p.room.clone();
        let packet = SpeakerPacket {
            speaker: pid,
            csrc: p.csrc,
            seq: *pkt.seq_no,
            timestamp: pkt.header.timestamp,
            marker: pkt.header.marker,
            audio_level: pkt.header.ext_vals.audio_level,
            voice_activity: pkt.header.ext_vals.voice_activity,
            payload: pkt.payload,
        };
        if let Some(view) = self.views.get(&room) {
            for &s in &view.remote {
                self.stats.handoffs_out += 1;
                self.outbox.push_back((
                    s,
                    ShardMessage::Media {
                        room: room.clone(),
                        packet: packet.clone(),
                    },
                ));
            }
        }
        self.fan_out(now, &room, &packet);
    }

    /// The pipeline's subscriber side on this shard.
    fn fan_out(&mut self, now: Instant, room: &RoomId, packet: &SpeakerPacket) {
        let Some(view) = self.views.get_mut(room) else {
            return;
        };
        view.on_audio(packet.speaker, now, packet.audio_level);
        for sid in &view.local {
            if *sid == packet.speaker {
                continue;
            }
            let Some(sub) = self.participants.get_mut(sid) else {
                continue;
            };
            if sub.deafened || !sub.connected || sub.failed || sub.slots.is_empty() {
                continue;
            }
            let queued = sub.needs_flush;
            match forward_to(sub, packet, now, |x| view.loudness(x)) {
                Outcome::Sent => {
                    self.stats.rtp_forwarded += 1;
                    if !queued {
                        self.flush.push(*sid);
                    }
                }
                Outcome::NoSlot => self.stats.dropped_no_slot += 1,
                Outcome::Late | Outcome::NoStream => self.stats.dropped_late += 1,
            }
        }
    }

    /// Periodic work: speaker levels and announcements, silent clients.
    fn tick(&mut self, now: Instant) {
        for view in self.views.values_mut() {
            let changed = view.tick(now);
            let speakers = view.speakers();
            for m in &view.local {
                let Some(p) = self.participants.get_mut(m) else {
                    continue;
                };
                let slots_changed = p.table.take_changed();
                if !(changed || slots_changed || p.speakers_dirty) {
                    continue;
                }
                p.speakers_dirty = false;
                let list = speakers
                    .iter()
                    .map(|(id, level)| SpeakerInfo {
                        participant_id: *id,
                        level: (*level * 1000.0).round() / 1000.0,
                        slot: p.table.slot_of(*id).map(|s| s as u8),
                    })
                    .collect();
                self.events.push_back(Event::Signal {
                    to: *m,
                    message: ServerMessage::Speakers { speakers: list },
                });
            }
        }
        let timeout = self.config.disconnect_timeout;
        let gone: Vec<ParticipantId> = self
            .participants
            .values()
            .filter(|p| {
                p.failed
                    || p.last_heard
                        .is_some_and(|t| now.saturating_duration_since(t) >= timeout)
            })
            .map(|p| p.id)
            .collect();
        for pid in gone {
            let home = home_of(pid, self.shards);
            if home == self.id {
                self.leave_room(pid, CloseReason::Timeout);
            } else {
                self.drop_media(pid);
                self.send(
                    home,
                    ShardMessage::Gone {
                        participant: pid,
                        reason: CloseReason::Timeout,
                    },
                );
            }
        }
    }

    // ---- helpers ---------------------------------------------------------------

    /// The room of a participant whose roster is on this shard.
    fn room_of_member(&self, pid: ParticipantId) -> Option<RoomId> {
        if let Some(p) = self.participants.get(&pid) {
            if self
                .rooms
                .get(&p.room)
                .is_some_and(|r| r.members.contains_key(&pid))
            {
                return Some(p.room.clone());
            }
        }
        self.rooms
            .iter()
            .find(|(_, r)| r.members.contains_key(&pid))
            .map(|(id, _)| id.clone())
    }

    fn send(&mut self, to: usize, message: ShardMessage) {
        self.outbox.push_back((to, message));
    }

    fn signal(&mut self, to: ParticipantId, message: ServerMessage) {
        self.events.push_back(Event::Signal { to, message });
    }

    fn broadcast(
        &mut self,
        room: &RoomId,
        except: Option<ParticipantId>,
        message: impl Fn() -> ServerMessage,
    ) {
        let Some(room) = self.rooms.get(room) else {
            return;
        };
        for m in &room.order {
            if Some(*m) != except {
                self.events.push_back(Event::Signal {
                    to: *m,
                    message: message(),
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

fn parse_ufrag(ufrag: &str) -> Option<ParticipantId> {
    let hex = ufrag.strip_prefix('c')?.split('z').next()?;
    u64::from_str_radix(hex, 16).ok().map(ParticipantId)
}

fn random_token(rng: &mut u64, len: usize) -> String {
    const ICE_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..len)
        .map(|_| ICE_CHARS[(next_random(rng) % ICE_CHARS.len() as u64) as usize] as char)
        .collect()
}

/// Applies an offer to a participant; returns the `answer` or why not.
fn negotiate(
    p: &mut Participant,
    now: Instant,
    sdp: &str,
    audio_slots: usize,
    rng: &mut u64,
) -> Result<ServerMessage, String> {
    let prepared = prepare_offer(sdp, audio_slots).map_err(|e| format!("invalid offer: {e}"))?;
    let offer =
        SdpOffer::from_sdp_string(&prepared.sdp).map_err(|e| format!("invalid SDP: {e}"))?;
    let answer = p
        .rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| format!("offer not accepted: {e}"))?;
    let opus = p
        .rtc
        .codec_config()
        .params()
        .iter()
        .find(|c| c.spec().codec == Codec::Opus)
        .map(|c| c.pt())
        .ok_or("offer has no Opus")?;
    p.mic_pt = prepared.mic_mid.is_some().then_some(opus);

    let mut slots = Vec::new();
    for mid in &prepared.slot_mids {
        let mid = Mid::from(mid.as_str());
        if let Some(existing) = p.slots.iter().position(|s| s.mid == mid) {
            slots.push(p.slots.swap_remove(existing));
            continue;
        }
        if p.rtc.direct_api().stream_tx_by_mid(mid, None).is_none() {
            continue; // str0m found nothing it can send there (no Opus on it)
        }
        let r = next_random(rng);
        slots.push(SlotTx {
            mid,
            pt: opus,
            rewriter: SlotRewriter::new((r & 0x7fff) as u16, (r >> 32) as u32),
        });
    }
    if slots.len() != p.table.len() {
        p.table = SlotTable::new(slots.len());
    }
    p.slots = slots;
    p.last_heard = Some(now);
    Ok(ServerMessage::Answer {
        sdp: candidates_in_every_section(&answer.to_sdp_string()),
        slots: p.slots.iter().map(|s| s.mid.to_string()).collect(),
    })
}

/// splitmix64: the shard's own seeded randomness.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
