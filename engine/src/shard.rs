//! The sans-IO core: a set of participants and rooms driven by datagrams, commands
//! and time. See the crate docs for the run loop.

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
use str0m::rtp::RtpPacket;
use str0m::{Candidate, Input, Rtc};

use crate::config::ShardConfig;
use crate::error::EngineError;
use crate::forwarder::{forward_to, Outcome, SpeakerPacket};
use crate::io::{CloseReason, Command, Event, Transmit};
use crate::participant::{Participant, SlotTx, MAX_ADDRS};
use crate::rewriter::SlotRewriter;
use crate::room::Room;
use crate::sdp::{candidates_in_every_section, prepare_offer};
use crate::slots::SlotTable;

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
}

/// One shard of a media node. Feed it with `handle_*`, then drain it with `poll_*`.
pub struct Shard {
    config: ShardConfig,
    cert: DtlsCert,
    participants: HashMap<ParticipantId, Participant>,
    rooms: HashMap<RoomId, Room>,
    by_addr: HashMap<SocketAddr, ParticipantId>,
    by_ufrag: HashMap<String, ParticipantId>,
    timers: BinaryHeap<Reverse<(Instant, ParticipantId)>>,
    next_tick: Instant,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    media: VecDeque<(ParticipantId, RtpPacket)>,
    flush: Vec<ParticipantId>,
    rng: u64,
    stats: ShardStats,
}

impl Shard {
    /// A shard with no rooms. Generates the DTLS certificate all its participants share.
    pub fn new(config: ShardConfig, now: Instant) -> Result<Shard, EngineError> {
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .ok_or(EngineError::Certificate)?;
        let rng = config.seed;
        Ok(Shard {
            config,
            cert,
            participants: HashMap::new(),
            rooms: HashMap::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            timers: BinaryHeap::new(),
            next_tick: now + TICK,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            media: VecDeque::new(),
            flush: Vec::new(),
            rng,
            stats: ShardStats::default(),
        })
    }

    // ---- getters -------------------------------------------------------------

    pub fn stats(&self) -> &ShardStats {
        &self.stats
    }

    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// The members of a room in join order.
    pub fn room_members(&self, room: &RoomId) -> Option<&[ParticipantId]> {
        self.rooms.get(room).map(|r| r.members.as_slice())
    }

    /// The speaker a subscriber currently hears on a slot.
    pub fn slot_occupant(&self, subscriber: ParticipantId, slot: usize) -> Option<ParticipantId> {
        self.participants.get(&subscriber)?.table.occupant(slot)
    }

    // ---- handle_* ------------------------------------------------------------

    /// A datagram arrived on the shard's UDP socket from `source`.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        self.stats.datagrams_in += 1;
        let Some(pid) = self.demux(now, source, data) else {
            self.stats.dropped_unknown_source += 1;
            tracing::trace!(%source, len = data.len(), "dropped: unknown source");
            return;
        };
        if classify(data) == DatagramKind::Unknown {
            self.stats.dropped_malformed += 1;
            return;
        }
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
        self.pump(now);
    }

    /// An instruction from signaling.
    pub fn handle_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Join {
                participant,
                room,
                name,
            } => self.join(now, participant, room, name),
            Command::Offer { participant, sdp } => self.offer(now, participant, &sdp),
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
                if !valid {
                    self.signal(
                        participant,
                        ServerMessage::error(ErrorCode::BadRequest, "invalid ICE candidate"),
                    );
                }
            }
            Command::SetMuted { participant, muted } => {
                self.update(participant, |p, room| {
                    p.muted = muted;
                    if muted {
                        room.silence(p.id);
                    }
                });
            }
            Command::SetDeafened {
                participant,
                deafened,
            } => self.update(participant, |p, _| p.deafened = deafened),
            Command::Leave { participant } => self.remove(participant, CloseReason::Left),
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

    /// When [`Shard::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let rtc = self.timers.peek().map(|Reverse((at, _))| *at);
        let tick = (!self.participants.is_empty()).then_some(self.next_tick);
        match (rtc, tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- internals -----------------------------------------------------------

    /// Source address first; for an unknown address, a STUN request whose USERNAME
    /// names one of our ufrags and whose integrity str0m accepts.
    fn demux(&mut self, now: Instant, source: SocketAddr, data: &[u8]) -> Option<ParticipantId> {
        if let Some(pid) = self.by_addr.get(&source) {
            return Some(*pid);
        }
        let msg = stun::StunMessage::parse(data).ok()?;
        let (ours, _theirs) = msg.ice_ufrags()?;
        let pid = *self.by_ufrag.get(ours)?;
        let p = self.participants.get_mut(&pid)?;
        let receive = Receive::new(Protocol::Udp, source, self.config.local_addr, data).ok()?;
        if !p.rtc.accepts(&Input::Receive(now, receive)) || p.addrs.len() >= MAX_ADDRS {
            return None;
        }
        tracing::debug!(room = %p.room, participant = %pid, %source, "new source address");
        p.addrs.push(source);
        self.by_addr.insert(source, pid);
        Some(pid)
    }

    fn join(&mut self, now: Instant, pid: ParticipantId, room_id: RoomId, name: DisplayName) {
        if self.participants.contains_key(&pid) {
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
        if self.rooms.get(&room_id).is_some_and(Room::is_full) {
            return self.reject(pid, ErrorCode::RoomFull, "room is full");
        }
        let rtc = match self.new_rtc(now) {
            Ok(rtc) => rtc,
            Err(e) => {
                tracing::error!(error = %e, "could not create rtc");
                return self.reject(pid, ErrorCode::Internal, "could not set up media");
            }
        };
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        let mut rtc = rtc;
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        let csrc = room.add(pid);
        let others: Vec<_> = room
            .members
            .iter()
            .filter_map(|m| self.participants.get(m))
            .map(Participant::info)
            .collect();
        let p = Participant {
            id: pid,
            room: room_id.clone(),
            name,
            csrc,
            muted: false,
            deafened: false,
            rtc,
            ufrag: ufrag.clone(),
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
        let audio_slots = room.audio_slots;
        self.by_ufrag.insert(ufrag, pid);
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
    }

    fn new_rtc(&self, now: Instant) -> Result<Rtc, String> {
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .set_dtls_cert(self.cert.clone())
            .set_stats_interval(None)
            .build(now);
        let candidate = Candidate::host(self.config.local_addr, "udp")
            .map_err(|e| format!("local candidate {}: {e}", self.config.local_addr))?;
        rtc.add_local_candidate(candidate);
        Ok(rtc)
    }

    fn offer(&mut self, now: Instant, pid: ParticipantId, sdp: &str) {
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        let audio_slots = self
            .rooms
            .get(&p.room)
            .map_or(self.config.audio_slots, |r| r.audio_slots);
        let result = negotiate(p, now, sdp, audio_slots as usize, &mut self.rng);
        match result {
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

    /// Changes a participant and tells its whole room, itself included.
    fn update(&mut self, pid: ParticipantId, change: impl FnOnce(&mut Participant, &mut Room)) {
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&p.room) else {
            return;
        };
        change(p, room);
        let info = p.info();
        let room_id = p.room.clone();
        tracing::debug!(room = %room_id, participant = %pid, muted = info.muted, deafened = info.deafened, "updated");
        self.broadcast(&room_id, None, || ServerMessage::ParticipantUpdated {
            participant: info.clone(),
        });
    }

    fn reject(&mut self, pid: ParticipantId, code: ErrorCode, message: &str) {
        self.signal(pid, ServerMessage::error(code, message));
        self.events.push_back(Event::Closed {
            participant: pid,
            reason: CloseReason::Rejected,
        });
    }

    fn remove(&mut self, pid: ParticipantId, reason: CloseReason) {
        let Some(p) = self.participants.remove(&pid) else {
            return;
        };
        tracing::info!(room = %p.room, participant = %pid, ?reason, "left");
        for a in &p.addrs {
            self.by_addr.remove(a);
        }
        self.by_ufrag.remove(&p.ufrag);
        if let Some(room) = self.rooms.get_mut(&p.room) {
            room.remove(pid, p.csrc);
            for m in &room.members {
                if let Some(s) = self.participants.get_mut(m) {
                    s.table.release(pid);
                }
            }
            if room.members.is_empty() && self.config.auto_create_rooms {
                self.rooms.remove(&p.room);
            }
        }
        self.broadcast(&p.room, None, || ServerMessage::ParticipantLeft {
            participant_id: pid,
        });
        self.events.push_back(Event::Closed {
            participant: pid,
            reason,
        });
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
            for pid in std::mem::take(&mut self.flush) {
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
        }
    }

    /// The pipeline: one packet from a speaker to every subscriber of its room.
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
        let Some(room) = self.rooms.get_mut(&p.room) else {
            return;
        };
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
        room.on_audio(pid, now, packet.audio_level);
        for sid in &room.members {
            if *sid == pid {
                continue;
            }
            let Some(sub) = self.participants.get_mut(sid) else {
                continue;
            };
            if sub.deafened || !sub.connected || sub.failed || sub.slots.is_empty() {
                continue;
            }
            match forward_to(sub, &packet, now, |x| room.loudness(x)) {
                Outcome::Sent => {
                    self.stats.rtp_forwarded += 1;
                    if !self.flush.contains(sid) {
                        self.flush.push(*sid);
                    }
                }
                Outcome::NoSlot => self.stats.dropped_no_slot += 1,
                Outcome::Late | Outcome::NoStream => self.stats.dropped_late += 1,
            }
        }
    }

    /// Periodic room work: speaker levels and announcements, silent clients.
    fn tick(&mut self, now: Instant) {
        for room in self.rooms.values_mut() {
            let changed = room.tick(now);
            let speakers = room.speakers();
            for m in &room.members {
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
            self.remove(pid, CloseReason::Timeout);
        }
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
        for m in &room.members {
            if Some(*m) != except {
                self.events.push_back(Event::Signal {
                    to: *m,
                    message: message(),
                });
            }
        }
    }
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
