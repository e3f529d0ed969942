//! The media side, on the shard holding a participant: negotiation, the forwarding
//! pipeline (publisher side, hand-off, subscriber side), and the periodic tick.

use std::sync::Arc;
use std::time::Instant;

use chorus_protocol::signal::{ParticipantId, RoomId};
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::rtp::RtpPacket;
use str0m::{IceCreds, Input};

use super::timers::TimerWheel;
use super::{
    fresh_ssrc, ice_password, initial_numbers, next_random, random_token, ufrag_for, Shard,
    ShardStats,
};
use crate::client_event::VideoSource;
use crate::client_event::{ClientEvent, Refusal, Speaker};
use crate::egress::{SlotTx, REPORT_INTERVAL};
use crate::forwarder::{forward_to, Outcome, Sink, SpeakerPacket};
use crate::io::{CloseReason, Command, Event, Transmit};
use crate::mesh::{home_of, ShardMessage};
use crate::participant::Inbound;
use crate::participant::Participant;
use crate::proximity::{distance, Point};
use crate::report::Notice;
use crate::sdp::{answer, prepare_offer, NegotiateError, VideoPolicy};
use crate::slots::SlotTable;
use crate::video::packet::VideoCodec;
use crate::video::publication::Publication;
use crate::video::slot::Request;
use crate::view::RoomView;
use str0m::media::{Mid, Pt, Rid};

/// Times a media command may be sent after a participant that keeps moving.
const MAX_REDIRECTS: u8 = 16;

impl Shard {
    pub(super) fn media_command(&mut self, now: Instant, command: Command) {
        self.media_command_after(now, command, 0);
    }

    /// The media part of a command, `hops` redirections after it was first sent.
    pub(super) fn media_command_after(&mut self, now: Instant, command: Command, hops: u8) {
        let pid = command.participant();
        let for_media = !matches!(command, Command::Join { .. } | Command::Candidate { .. });
        if for_media && !self.participants.contains_key(&pid) {
            // It moved away (or is moving) since the sender looked.
            return self.redirect(command, hops);
        }
        match command {
            Command::Offer {
                participant,
                sdp,
                sources,
            } => self.offer(now, participant, &sdp, &sources),
            Command::Subscribe {
                participant,
                slot,
                publisher,
                source,
                quality,
            } => {
                let request = publisher.map(|publisher| Request {
                    publisher,
                    source,
                    quality,
                });
                self.subscribe(participant, slot, request);
            }
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
            Command::SetServerMuted { participant, muted } => {
                let Some(p) = self.participants.get_mut(&participant) else {
                    return;
                };
                p.server_muted = muted;
                if muted {
                    if let Some(v) = self.views.get_mut(&p.room) {
                        v.silence(participant);
                    }
                }
            }
            Command::SetPermissions {
                participant,
                permissions,
            } => {
                let Some(p) = self.participants.get_mut(&participant) else {
                    return;
                };
                p.permissions = permissions;
                if !permissions.publishes_microphone() {
                    if let Some(v) = self.views.get_mut(&p.room) {
                        v.silence(participant);
                    }
                }
            }
            Command::SetWhisper { participant, to } => {
                if let Some(p) = self.participants.get_mut(&participant) {
                    p.whisper_to = to.map(Arc::from);
                }
            }
            Command::Leave { participant } => self.drop_media(participant),
            Command::Join { .. }
            | Command::SetVideo { .. }
            | Command::Candidate { .. }
            | Command::SpamDetected { .. }
            | Command::SetPosition { .. }
            | Command::P2pSignal { .. }
            | Command::Speaking { .. }
            | Command::P2pFailed { .. } => {}
        }
    }

    /// Sends a media command after a participant that is not here: through its home
    /// shard, which knows where its media went (or will know, once the move in flight
    /// is reported). Gives up after [`MAX_REDIRECTS`].
    fn redirect(&mut self, command: Command, hops: u8) {
        let pid = command.participant();
        if hops >= MAX_REDIRECTS {
            tracing::debug!(participant = %pid, "media command dropped: the participant keeps moving");
            return;
        }
        let home = home_of(pid, self.shards);
        if home != self.id {
            let hops = hops + 1;
            return self.send(home, ShardMessage::Redirect { command, hops });
        }
        let holder = self
            .room_of_member(pid)
            .and_then(|r| self.rooms.get(&r))
            .and_then(|r| r.members.get(&pid))
            .map(|m| m.shard);
        // Not in the roster any more: nothing to do. If the roster says here although
        // it is not, a move is in flight: the message queued to this shard comes back
        // after the ones already queued (its `Moved` among them).
        if let Some(s) = holder {
            let hops = hops + 1;
            self.send(s, ShardMessage::Redirect { command, hops });
        }
    }

    pub(super) fn drop_media(&mut self, pid: ParticipantId) {
        if let Some(mut p) = self.detach(pid) {
            p.rtc.disconnect();
        }
    }

    /// This shard's part of a room spanning `shards`.
    pub(super) fn room_shards(&mut self, room: RoomId, shards: &[usize]) {
        let view = self.views.entry(room.clone()).or_default();
        view.remote = shards.iter().copied().filter(|s| *s != self.id).collect();
        // A shard that no longer holds members drops its view (levels, positions): if
        // it holds some again, the home shard sends it the room's state afresh.
        if view.is_unused() || (view.local.is_empty() && !shards.contains(&self.id)) {
            self.views.remove(&room);
        }
    }

    /// A member left: free its slots and level on this shard.
    pub(super) fn forget_member(&mut self, room: &RoomId, pid: ParticipantId) {
        let Some(view) = self.views.get_mut(room) else {
            return;
        };
        view.forget(pid);
        view.members_dirty = true;
        for m in &view.local {
            if let Some(s) = self.participants.at_mut(m.key) {
                s.table.release(pid);
            }
        }
        self.clear_video_of(room, pid);
    }

    pub(super) fn offer(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        sdp: &str,
        sources: &[(String, VideoSource)],
    ) {
        self.voice_rtc_for_voice_offer(now, pid, sdp);
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        let audio_slots = p.audio_slots as usize;
        let video = VideoPolicy {
            slots: usize::from(p.video_count),
            sources,
        };
        // A data channel (SCTP over DTLS) needs DTLS for the whole session.
        if sdp.lines().any(|l| l.starts_with("m=application")) {
            p.keys.keep_dtls();
        }
        let negotiated = negotiate(p, now, sdp, audio_slots, video, &mut self.rng);
        self.participants.video_changed(&pid);
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        match negotiated {
            Ok((message, ufrag)) => {
                p.answered = true;
                p.rtc_busy_at = now;
                p.last_heard.get_or_insert(now);
                if let Some(ufrag) = ufrag {
                    // An ICE restart: new credentials, ours, naming the participant
                    // like the first ones (any shard routes them by USERNAME alone).
                    p.ufrag = ufrag;
                    tracing::info!(room = %p.room, participant = %pid, "ICE restart");
                }
                self.drain(now, pid);
                self.signal(pid, message);
            }
            Err(reason) => {
                tracing::debug!(participant = %pid, ?reason, "offer refused");
                self.refuse(pid, Refusal::BadRequest, &reason.to_string());
            }
        }
    }

    /// Drains one participant's `Rtc` and keeps its timer entry current.
    pub(super) fn drain(&mut self, now: Instant, pid: ParticipantId) {
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        p.drain(&self.config, &mut self.transmits, &mut self.media);
        p.quality.add_reports(std::mem::take(&mut p.egress.reports));
        if let Some(q) = p.quality.take() {
            self.events
                .push_back(Event::Notify(q.event(p.room.clone(), pid)));
        }
        self.schedule(now, pid);
    }

    /// A client whose first offer has no video section, in a room with video (a voice
    /// client in a guild or party room), gets the voice `Rtc` it would have in a voice
    /// room: no video codecs or transport-cc (str0m's estimator and pacer, which it
    /// ran for video participants until Chorus sent the video slots itself, woke the
    /// shard every 40 ms per participant). Same ICE credentials; nothing was
    /// negotiated yet.
    fn voice_rtc_for_voice_offer(&mut self, now: Instant, pid: ParticipantId, sdp: &str) {
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        // A room with video slots builds the video `Rtc` at join.
        if p.answered || p.video_count == 0 || crate::sdp::offers_video(sdp) {
            return;
        }
        let creds = p.rtc.direct_api().local_ice_credentials();
        match self.new_rtc(now, creds.ufrag, creds.pass, false) {
            Ok((rtc, keys)) => {
                if let Some(p) = self.participants.get_mut(&pid) {
                    *p.rtc = rtc;
                    p.keys = keys;
                    p.dtls_retired
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Err(e) => tracing::warn!(participant = %pid, error = %e, "voice rtc not built"),
        }
    }

    /// Keeps the participant's timer entry at its next due time.
    fn schedule(&mut self, now: Instant, pid: ParticipantId) {
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        let due = self.timers.on_grid(p.due(now, &self.config));
        if p.timer_at.is_none_or(|at| due < at) {
            p.timer_at = Some(due);
            self.timers.push(due, pid);
        }
    }

    /// A participant's timer fired: str0m's timeout, its sender report, or the
    /// deadline after which a silent client counts as gone, whichever are due.
    /// Returns whether it is gone (failed, or not heard from for
    /// `disconnect_timeout`).
    pub(super) fn on_timer(&mut self, now: Instant, pid: ParticipantId) -> bool {
        let wallclock = self.wallclock(now);
        let Some(p) = self.participants.get_mut(&pid) else {
            return false;
        };
        let rtc_due = p.rtc_due(now, self.config.quiet_rtc_every()) <= now;
        if rtc_due {
            self.stats.rtc_timeouts += 1;
            p.rtc_woken_at = now;
            if let Err(e) = p.rtc.handle_input(Input::Timeout(now)) {
                tracing::debug!(participant = %pid, error = %e, "rtc timeout failed");
                p.failed = true;
            }
        }
        if p.egress.next_report.is_some_and(|at| at <= now) {
            p.egress.next_report = Some(next_report_at(now, &mut self.rng));
            let mut buf = self.pool.take();
            match p
                .egress
                .write_report(&p.slots, &p.video, now, wallclock, &mut buf)
            {
                Ok(Some(to)) => {
                    self.stats.reports_out += 1;
                    let local = self.config.local_for(to);
                    self.transmits.push_back(Transmit::to(to, local, buf));
                }
                // No slot carried audio lately: no more reports until one does.
                Ok(None) => {
                    p.egress.next_report = None;
                    self.pool.give(buf);
                }
                Err(_) => self.pool.give(buf),
            }
        }
        let timeout = self.config.disconnect_timeout;
        if p.failed
            || p.last_heard
                .is_some_and(|t| now.saturating_duration_since(t) >= timeout)
        {
            return true;
        }
        // str0m is polled only when it had input: a report's turn costs it nothing.
        if rtc_due {
            self.drain(now, pid);
        } else {
            self.schedule(now, pid);
        }
        false
    }

    /// A participant that failed or went silent leaves (its room, at its home shard).
    pub(super) fn gone(&mut self, now: Instant, pid: ParticipantId) {
        let home = home_of(pid, self.shards);
        if home == self.id {
            self.leave_room(now, pid, CloseReason::Timeout);
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

    /// Forwards the media str0m handed out, then drains once each publisher str0m was
    /// asked to send a keyframe request (which may hand out more).
    pub(super) fn pump(&mut self, now: Instant) {
        loop {
            while let Some((pid, inbound)) = self.media.pop_front() {
                match inbound {
                    Inbound::Audio(pkt) => self.forward(now, pid, pkt),
                    Inbound::Video {
                        publication,
                        layer,
                        packet,
                    } => self.forward_video(now, pid, publication, layer, packet),
                }
            }
            if self.touched.is_empty() {
                return;
            }
            self.drain_touched(now);
        }
    }

    /// The pipeline's publisher side: one packet from a speaker held here goes to
    /// the local subscribers and once to every other shard of the room.
    pub(super) fn forward(&mut self, now: Instant, pid: ParticipantId, pkt: RtpPacket) {
        self.stats.rtp_in += 1;
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        if p.mic_pt != Some(pkt.header.payload_type) {
            self.stats.dropped_not_audio += 1;
            return;
        }
        if p.muted || p.server_muted {
            self.stats.dropped_muted += 1;
            return;
        }
        if !p.permissions.publishes_microphone() {
            self.stats.dropped_not_permitted += 1;
            return;
        }
        let spam = p.spam.on_packet(now, pkt.header.ext_vals.audio_level);
        let room = p.room.clone();
        let packet = SpeakerPacket {
            speaker: pid,
            csrc: p.csrc,
            seq: *pkt.seq_no,
            timestamp: pkt.header.timestamp,
            marker: pkt.header.marker,
            audio_level: pkt.header.ext_vals.audio_level,
            voice_activity: pkt.header.ext_vals.voice_activity,
            priority: p.permissions.priority,
            audience: p.whisper_to.clone(),
            payload: pkt.payload,
            received: now,
        };
        if let Some(flag) = spam {
            // The room's home applies its policy (event, or event and server mute).
            let command = Command::SpamDetected {
                participant: pid,
                reason: flag.reason.as_str().to_owned(),
                level: (flag.level * 1000.0).round() / 1000.0,
            };
            self.at_home(now, command);
        }
        self.hand_off(&room, |room| ShardMessage::Media {
            room,
            packet: packet.clone(),
        });
        let relayed = self
            .views
            .get(&room)
            .and_then(|v| v.policy)
            .is_some_and(|p| p.relay);
        if relayed {
            self.stats.relayed_out += 1;
            self.relay.push_back(crate::cluster::RelayOut::Audio(
                room.clone(),
                packet.clone(),
            ));
        }
        self.fan_out(now, &room, &packet);
    }

    /// Hands a publisher's packet once to every other shard holding members of
    /// `room` (`message` builds each shard's copy).
    pub(super) fn hand_off(&mut self, room: &RoomId, message: impl Fn(RoomId) -> ShardMessage) {
        let Some(view) = self.views.get(room) else {
            return;
        };
        for &s in &view.remote {
            self.stats.handoffs_out += 1;
            self.outbox.push_back((s, message(room.clone())));
        }
    }

    /// The pipeline's subscriber side on this shard. In a proximity room an ordinary
    /// speaker's packet visits only the listeners the room's [`crate::proximity::Space`]
    /// finds near it; priority speakers and whispers ignore distance.
    pub(super) fn fan_out(&mut self, now: Instant, room: &RoomId, packet: &SpeakerPacket) {
        let Some(view) = self.views.get_mut(room) else {
            return;
        };
        view.on_audio(now, packet);
        let mut copies = Copies {
            sink: Sink {
                config: &self.config,
                pool: &mut self.pool,
                transmits: &mut self.transmits,
            },
            stats: &mut self.stats,
            rng: &mut self.rng,
            timers: &mut self.timers,
        };
        let participants = &mut self.participants;
        let mut slots_changed = false;
        let heard: &RoomView = view;
        let by_distance = heard
            .proximity
            .as_ref()
            .filter(|_| !packet.priority && packet.audience.is_none());
        match by_distance {
            Some(space) => {
                let Some(at) = space.position(packet.speaker) else {
                    // Without a position, an ordinary speaker is heard by no one.
                    return;
                };
                space.near(at, |l, d| {
                    if l.id == packet.speaker {
                        return;
                    }
                    let Some(sub) = participants.at_mut(l.key) else {
                        return;
                    };
                    if space.audible(d, sub.table.slot_of(packet.speaker).is_some()) {
                        slots_changed |= copies.copy(sub, Some(l.at), packet, now, heard);
                    }
                });
            }
            None => {
                for m in &heard.local {
                    if m.id == packet.speaker {
                        continue;
                    }
                    let Some(sub) = participants.at_mut(m.key) else {
                        continue;
                    };
                    // A whisper goes only to its audience; a listener outside it gets the
                    // whisperer's slot back for others (no one else could take it while
                    // the whisperer, priority at its audience, is in conversation).
                    if packet.audience.as_ref().is_some_and(|a| !a.contains(&m.id)) {
                        slots_changed |= sub.table.release(packet.speaker).is_some();
                        continue;
                    }
                    slots_changed |= copies.copy(sub, heard.position(m.id), packet, now, heard);
                }
            }
        }
        view.members_dirty |= slots_changed;
    }

    /// Periodic work: speaker levels and announcements, rooms to close.
    pub(super) fn tick(&mut self, now: Instant) {
        for (room, view) in self.views.iter_mut() {
            let change = view.tick(now);
            let changed = change.is_some() || std::mem::take(&mut view.speakers_changed);
            // Each speaker is reported by the shard holding its media.
            for (started, list) in change
                .iter()
                .flat_map(|c| [(true, &c.started), (false, &c.stopped)])
            {
                for pid in list.iter().filter(|p| view.is_local(**p)) {
                    let (room, participant_id) = (room.clone(), *pid);
                    self.events.push_back(Event::Notify(if started {
                        Notice::SpeakingStarted {
                            room,
                            participant_id,
                        }
                    } else {
                        Notice::SpeakingStopped {
                            room,
                            participant_id,
                        }
                    }));
                }
            }
            // Only rooms where something changed are looked at: a tick visits no
            // participant of a quiet room.
            if !(changed || view.members_dirty) {
                continue;
            }
            view.members_dirty = false;
            // Built once per room, and only when some member is told.
            let mut speakers = None;
            for m in &view.local {
                let Some(p) = self.participants.at_mut(m.key) else {
                    continue;
                };
                let slots_changed = p.table.take_changed();
                if !(changed || slots_changed || p.speakers_dirty) {
                    continue;
                }
                p.speakers_dirty = false;
                let space = view.proximity.as_ref();
                let me = space.and_then(|s| s.position(m.id));
                let list = speakers
                    .get_or_insert_with(|| view.speakers())
                    .iter()
                    .filter_map(|s| {
                        // A whisperer is seen only by its audience (and itself).
                        let whisper = s.audience.as_ref().map(|a| a.contains(&m.id));
                        if whisper == Some(false) && s.id != m.id {
                            return None;
                        }
                        let slot = p.table.slot_of(s.id);
                        let d = me.zip(space.and_then(|sp| sp.position(s.id)));
                        let d = d.map(|(a, b)| distance(a, b));
                        // How far a priority speaker or a whisperer is only within
                        // reach: past it, the distance would tell where it is.
                        let shown = d.filter(|d| space.is_some_and(|sp| sp.within_reach(*d)));
                        // In a proximity room, only who it can hear.
                        if let Some(space) = space {
                            let heard = s.id == m.id
                                || s.priority
                                || whisper == Some(true)
                                || d.is_some_and(|d| space.audible(d, slot.is_some()));
                            if !heard {
                                return None;
                            }
                        }
                        Some(Speaker {
                            id: s.id,
                            level: (s.level * 1000.0).round() / 1000.0,
                            slot: slot.map(|i| i as u8),
                            priority: s.priority,
                            whisper: whisper == Some(true),
                            distance: shown.map(|d| ((d * 100.0).round() / 100.0) as f32),
                        })
                    })
                    .collect();
                self.events.push_back(Event::ToClient {
                    to: m.id,
                    event: ClientEvent::Speakers(list),
                });
            }
        }
        let allocate =
            now.saturating_duration_since(self.last_allocation) >= super::video::ALLOCATE_INTERVAL;
        if allocate {
            self.last_allocation = now;
        }
        self.video_tick(now, allocate);
        self.flush_positions();
        self.downgrade_due_rooms(now);
        self.close_expired_rooms(now);
    }
}

/// What a speaker's packet needs on its way to each listener of the shard.
struct Copies<'a> {
    sink: Sink<'a>,
    stats: &'a mut ShardStats,
    rng: &'a mut u64,
    timers: &'a mut TimerWheel,
}

impl Copies<'_> {
    /// One listener's copy (`at`: where it is, in a proximity room). Returns whether
    /// its slot map changed.
    fn copy(
        &mut self,
        sub: &mut Participant,
        at: Option<Point>,
        packet: &SpeakerPacket,
        now: Instant,
        view: &RoomView,
    ) -> bool {
        if sub.deafened
            || !sub.permissions.subscribe
            || !sub.connected
            || sub.failed
            || sub.slots.is_empty()
        {
            return false;
        }
        let loudness = |x| view.loudness_at(x, at, now);
        match forward_to(sub, packet, now, loudness, &mut self.sink) {
            Outcome::Sent => {
                self.stats.rtp_forwarded += 1;
                start_reports(sub, now, self.rng, self.timers);
            }
            Outcome::NoSlot => self.stats.dropped_no_slot += 1,
            Outcome::Late | Outcome::NoStream => self.stats.dropped_late += 1,
            Outcome::NotReady => self.stats.dropped_not_ready += 1,
            Outcome::Failed => self.stats.dropped_unsealable += 1,
        }
        sub.table.is_changed()
    }
}

/// The first copy on a slot after a quiet spell starts the subscriber's sender
/// reports.
pub(super) fn start_reports(
    sub: &mut Participant,
    now: Instant,
    rng: &mut u64,
    timers: &mut TimerWheel,
) {
    if sub.egress.next_report.is_none() {
        let at = timers.on_grid(next_report_at(now, rng));
        sub.egress.next_report = Some(at);
        if sub.timer_at.is_none_or(|t| at < t) {
            sub.timer_at = Some(at);
            timers.push(at, sub.id);
        }
    }
}

/// Applies an offer to a participant; returns the `answer` (and the new local ICE
/// ufrag if the offer restarted ICE) or why not.
fn negotiate(
    p: &mut Participant,
    now: Instant,
    sdp: &str,
    audio_slots: usize,
    video: VideoPolicy<'_>,
    rng: &mut u64,
) -> Result<(ClientEvent, Option<String>), NegotiateError> {
    let prepared = prepare_offer(sdp, audio_slots, video)?;
    let offer = SdpOffer::from_sdp_string(&prepared.sdp).map_err(NegotiateError::Sdp)?;
    let negotiated = p
        .rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(NegotiateError::Refused)?;
    let opus = p
        .rtc
        .codec_config()
        .params()
        .iter()
        .find(|c| c.spec().codec == Codec::Opus)
        .map(|c| c.pt())
        .ok_or(NegotiateError::NoOpus)?;
    p.mic_pt = prepared.mic_mid.is_some().then_some(opus);
    // Only what the client's publishing sections listed (str0m's codec table also
    // has payload types the client never offered).
    let offered: Vec<Pt> = prepared
        .publications
        .iter()
        .filter_map(|v| p.rtc.media(Mid::from(v.mid.as_str())))
        .flat_map(|m| m.remote_pts().iter().copied())
        .collect();
    p.video_pts = video_payload_types(&p.rtc)
        .into_iter()
        .filter(|(pt, _, _)| offered.contains(pt))
        .collect();
    // What its video slots receive, as its offer listed them (Chorus answers them).
    p.slot_pts = Vec::new();
    for f in prepared.video_slots.iter().flat_map(|s| &s.formats) {
        if !p.slot_pts.iter().any(|(pt, _, _)| **pt == f.pt) {
            p.slot_pts.push((Pt::from(f.pt), f.codec, f.profile));
        }
    }
    // What it publishes on, and the video slots' mids.
    p.publications = prepared
        .publications
        .iter()
        .map(|v| {
            let rids = v.rids.iter().map(|r| Rid::from(r.as_str())).collect();
            Publication::new(v.source, Mid::from(v.mid.as_str()), rids)
        })
        .collect();
    p.mic_unmapped = prepared
        .mic_mid
        .as_deref()
        .filter(|_| prepared.mic_without_ssrc)
        .map(str0m::media::Mid::from);

    // A slot keeps its SSRC and sequence across renegotiations (ICE restarts); a new
    // mid is a new stream with a fresh SSRC (RFC 3550 §8: distinct within the session).
    let mut slots: Vec<SlotTx> = Vec::with_capacity(prepared.slots.len());
    for offered in &prepared.slots {
        if let Some(existing) = p.slots.iter().position(|s| s.mid == offered.mid) {
            let mut slot = p.slots.swap_remove(existing);
            slot.pt = offered.pt;
            slots.push(slot);
            continue;
        }
        let ssrc = fresh_ssrc(rng, |c| {
            slots.iter().chain(&p.slots).any(|s| s.ssrc == c) || p.video.iter().any(|s| s.ssrc == c)
        });
        let (seq, ts) = initial_numbers(rng);
        slots.push(SlotTx::new(offered.mid, ssrc, offered.pt, seq, ts));
    }
    p.egress.ext = prepared.ext;
    if p.egress.cname.is_empty() {
        p.egress.cname = random_token(rng, 16);
    }
    if slots.len() != p.table.len() {
        p.table = SlotTable::new(slots.len());
    }
    p.slots = slots;
    // A video slot keeps its SSRC across renegotiations while its mid stays; a new
    // mid starts a new stream, on an SSRC no other slot sends on.
    if !prepared.video_slots.is_empty() {
        p.give_video_slots(rng);
    }
    for i in 0..p.video.len() {
        let mid = prepared.video_slots.get(i).map(|s| s.mid);
        if p.video[i].mid != mid || p.video[i].ssrc == 0 {
            let ssrc = match mid {
                Some(_) => fresh_ssrc(rng, |c| {
                    p.slots.iter().any(|s| s.ssrc == c) || p.video.iter().any(|s| s.ssrc == c)
                }),
                None => 0,
            };
            // A new SSRC is a new stream: its receiver's SRTP starts its rollover
            // counter at 0, so its numbers start afresh too.
            let (seq, ts) = initial_numbers(rng);
            p.video[i].restart_stream(ssrc, seq, ts);
        }
        p.video[i].mid = mid;
    }
    if p.egress.video_ext != prepared.video_ext {
        // Resends repeat the first bytes, written with the extension ids of then:
        // with other ids they would differ under the same SRTP nonce. Forget them.
        for s in &mut p.video {
            s.history.clear();
        }
    }
    p.egress.video_ext = prepared.video_ext;
    p.video_negotiated = !p.publications.is_empty() || p.video.iter().any(|s| s.mid.is_some());
    if p.video.iter().any(|s| s.mid.is_some()) {
        p.estimate.get_or_insert(crate::egress::INITIAL_ESTIMATE);
    }
    p.last_heard = Some(now);
    let mut sdp = negotiated.to_sdp_string();
    let line = |sdp: &str, key: &str| {
        sdp.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|u| u.trim().to_owned())
    };
    let restarted = line(&sdp, "a=ice-ufrag:").filter(|u| *u != p.ufrag);
    let ufrag = match restarted {
        // An ICE restart: str0m picked credentials that do not name the participant.
        // Ours do, so that any shard, and the ICE-TCP thread, can route a new
        // connection's first STUN request by its USERNAME alone.
        Some(theirs) => {
            let creds = IceCreds {
                ufrag: ufrag_for(p.id, rng),
                pass: ice_password(rng),
            };
            let pwd = line(&sdp, "a=ice-pwd:").ok_or(NegotiateError::NoIceCredentials)?;
            sdp = sdp
                .replace(
                    &format!("a=ice-pwd:{pwd}"),
                    &format!("a=ice-pwd:{}", creds.pass),
                )
                .replace(&theirs, &creds.ufrag);
            let ufrag = creds.ufrag.clone();
            p.rtc.direct_api().set_local_ice_credentials(creds);
            // Checks with the old credentials are str0m's to refuse from now on.
            p.consent = Default::default();
            Some(ufrag)
        }
        None => None,
    };
    let ssrcs: Vec<u32> = p.slots.iter().map(|s| s.ssrc).collect();
    let video_ssrcs: Vec<u32> = p.video.iter().map(|s| s.ssrc).collect();
    let answer = answer(&prepared, &sdp, &ssrcs, &video_ssrcs, &p.egress.cname)?;
    Ok((
        ClientEvent::Answer {
            sdp: answer,
            slots: p.slots.iter().map(|s| s.mid.to_string()).collect(),
            video_slots: prepared
                .video_slots
                .iter()
                .map(|s| s.mid.to_string())
                .collect(),
        },
        ufrag,
    ))
}

/// The video payload types str0m negotiated, their codecs (H.264 only in
/// packetization mode 1, the one browsers send and Chorus forwards) and H.264's
/// profile-level-id.
fn video_payload_types(rtc: &str0m::Rtc) -> Vec<(Pt, VideoCodec, Option<u32>)> {
    rtc.codec_config()
        .params()
        .iter()
        .filter_map(|c| {
            let spec = c.spec();
            let codec = match spec.codec {
                Codec::Vp8 => VideoCodec::Vp8,
                Codec::H264 if spec.format.packetization_mode == Some(1) => VideoCodec::H264,
                _ => return None,
            };
            let profile = (codec == VideoCodec::H264)
                .then_some(spec.format.profile_level_id)
                .flatten();
            Some((c.pt(), codec, profile))
        })
        .collect()
}

/// RFC 3550 §6.3.5: the next sender report, spread over [0.5, 1.5] × the interval.
fn next_report_at(now: Instant, rng: &mut u64) -> Instant {
    let spread = REPORT_INTERVAL.as_millis() as u64;
    let jitter = next_random(rng) % spread;
    now + REPORT_INTERVAL / 2 + std::time::Duration::from_millis(jitter)
}
