//! The home shard's side: a room's roster, joins and leaves, what the room is told,
//! and which shards the room spans.

use std::time::Instant;

use chorus_protocol::control::{RoomKind, SpamAction, SpamGuard};
use chorus_protocol::signal::{DisplayName, ParticipantId, RoomId, MAX_WHISPER_TARGETS};
use chorus_srtp::capture::{build_rtc_with, KeyCapture};
use str0m::net::TcpType;
use str0m::rtp::Extension;
use str0m::{Candidate, IceCreds, Rtc};

use super::{ice_password, ufrag_for, Shard};
use crate::client_event::{ClientEvent, Joined, Refusal, VideoSource};
use crate::egress::Egress;
use crate::error::EngineError;
use crate::io::{CloseReason, Command, Event, Permissions};
use crate::mesh::ShardMessage;
use crate::participant::Participant;
use crate::quality::Quality;
use crate::report::Notice;
use crate::room::{Member, Room, RoomPolicy};
use crate::slots::SlotTable;
use crate::spam::{SpamRules, SpamWatch};

/// Why a whisper cannot be set: the text is what the client's or the caller's error
/// says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WhisperError {
    #[error("{0} is not in a room")]
    NotInRoom(ParticipantId),
    #[error("whisper needs participant ids in \"to\" (or null to stop)")]
    NoTargets,
    #[error("whisper names at most {MAX_WHISPER_TARGETS} participants")]
    TooManyTargets,
    #[error("one cannot whisper to oneself")]
    ToOneself,
    #[error("{0} is not in the room")]
    NotInTheRoom(ParticipantId),
}

impl Shard {
    pub(super) fn control(&mut self, now: Instant, command: Command) {
        match command {
            Command::Join {
                participant,
                room,
                name,
                identity,
                permissions,
                p2p,
            } => self.join(now, participant, room, name, identity, permissions, p2p),
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
                    self.refuse(participant, Refusal::BadRequest, "invalid ICE candidate");
                }
            }
            Command::SetMuted { participant, muted } => {
                if !muted
                    && self
                        .member(participant)
                        .is_some_and(|m| m.info.server_muted)
                {
                    self.refuse(participant, Refusal::Forbidden, "muted by the server");
                    return;
                }
                let media = Command::SetMuted { participant, muted };
                self.update(now, participant, |m| m.info.muted = muted, media);
            }
            Command::SetDeafened {
                participant,
                deafened,
            } => self.update(
                now,
                participant,
                |m| m.info.deafened = deafened,
                Command::SetDeafened {
                    participant,
                    deafened,
                },
            ),
            Command::Offer {
                participant,
                sdp,
                sources,
            } => {
                let offer = Command::Offer {
                    participant,
                    sdp,
                    sources,
                };
                self.send_to_media(now, participant, offer);
            }
            Command::SetVideo {
                participant,
                source,
                enabled,
            } => self.set_video(now, participant, source, enabled),
            Command::Subscribe {
                participant,
                slot,
                publisher,
                source,
                quality,
            } => {
                // The home shard knows the roster: the publisher must be a member.
                let Some(room) = self.room_of_member(participant) else {
                    return;
                };
                let known = publisher.is_none_or(|p| {
                    self.rooms
                        .get(&room)
                        .is_some_and(|r| r.members.contains_key(&p))
                });
                if !known {
                    let message = format!(
                        "participant {} is not in the room",
                        publisher.map(|p| p.to_string()).unwrap_or_default()
                    );
                    self.refuse(participant, Refusal::BadRequest, &message);
                    return;
                }
                let media = Command::Subscribe {
                    participant,
                    slot,
                    publisher,
                    source,
                    quality,
                };
                self.send_to_media(now, participant, media);
            }
            Command::Leave { participant } => self.leave_room(now, participant, CloseReason::Left),
            Command::SetWhisper { participant, to } => {
                // Stopping is always allowed (the policy may have been turned off
                // while this whisper went on).
                let allowed = to.is_none()
                    || self
                        .room_of_member(participant)
                        .and_then(|r| self.rooms.get(&r))
                        .is_some_and(|r| r.policy.whisper);
                if !allowed {
                    self.refuse(
                        participant,
                        Refusal::Forbidden,
                        "whisper is off in this room",
                    );
                } else if let Err(why) = self.set_whisper(now, participant, to) {
                    self.refuse(participant, Refusal::BadRequest, &why.to_string());
                }
            }
            Command::SpamDetected {
                participant,
                reason,
                level,
            } => self.spam_detected(now, participant, reason, level),
            Command::SetPosition {
                participant,
                position,
            } => self.client_position(participant, position),
            Command::P2pSignal {
                participant,
                to,
                data,
            } => self.relay_p2p_signal(participant, to, data),
            Command::Speaking { participant, level } => {
                self.speaking_report(now, participant, level)
            }
            Command::P2pFailed { participant, peer } => self.p2p_failed(now, participant, peer),
            // Only the control plane changes these (through `handle_request`).
            Command::SetServerMuted { .. } | Command::SetPermissions { .. } => {}
        }
    }

    /// The speaker's media shard flagged it: the event, and the room's action.
    fn spam_detected(&mut self, now: Instant, pid: ParticipantId, reason: String, level: f32) {
        let Some(room_id) = self.room_of_member(pid) else {
            return;
        };
        let Some(room) = self.rooms.get(&room_id) else {
            return;
        };
        let mute = room.policy.spam_guard.action == SpamAction::Mute
            && room.members.get(&pid).is_some_and(|m| !m.info.server_muted);
        tracing::info!(room = %room_id, participant = %pid, %reason, level, mute, "mic spam");
        self.notify(Notice::SpamDetected {
            room: room_id,
            participant_id: pid,
            reason,
            level,
        });
        if mute {
            self.server_mute(now, pid, true);
        }
    }

    /// The backend's mute (or the spam guard's): the room is told, the media stops.
    pub(super) fn server_mute(&mut self, now: Instant, participant: ParticipantId, muted: bool) {
        self.update(
            now,
            participant,
            |m| m.info.server_muted = muted,
            Command::SetServerMuted { participant, muted },
        );
    }

    /// Takes a participant that left out of every whisper in its room; a whisper left
    /// with no one to reach ends (its whisperer is heard by everyone again).
    fn forget_whisper_target(&mut self, now: Instant, room_id: &RoomId, gone: ParticipantId) {
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        let whisperers: Vec<(ParticipantId, Vec<ParticipantId>)> = room
            .members
            .iter()
            .filter_map(|(id, m)| {
                let to = m.whisper_to.as_ref()?;
                to.contains(&gone)
                    .then(|| (*id, to.iter().copied().filter(|t| *t != gone).collect()))
            })
            .collect();
        for (whisperer, rest) in whisperers {
            let to = (!rest.is_empty()).then_some(rest);
            let media = Command::SetWhisper {
                participant: whisperer,
                to: to.clone(),
            };
            self.update(now, whisperer, |m| m.whisper_to = to, media);
        }
    }

    /// Sets whom a member's audio goes to (`None`: everyone), once `to` is checked:
    /// 1 to [`MAX_WHISPER_TARGETS`] other members of its room. The error says what is
    /// wrong.
    pub(super) fn set_whisper(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        to: Option<Vec<ParticipantId>>,
    ) -> Result<(), WhisperError> {
        let room = self
            .room_of_member(pid)
            .and_then(|r| self.rooms.get(&r))
            .ok_or(WhisperError::NotInRoom(pid))?;
        let to = match to {
            None => None,
            Some(mut to) => {
                to.sort_unstable();
                to.dedup();
                if to.is_empty() {
                    return Err(WhisperError::NoTargets);
                }
                if to.len() > MAX_WHISPER_TARGETS {
                    return Err(WhisperError::TooManyTargets);
                }
                if to.contains(&pid) {
                    return Err(WhisperError::ToOneself);
                }
                if let Some(t) = to.iter().find(|t| !room.members.contains_key(t)) {
                    return Err(WhisperError::NotInTheRoom(*t));
                }
                Some(to)
            }
        };
        tracing::debug!(participant = %pid, to = ?to, "whisper");
        let media = Command::SetWhisper {
            participant: pid,
            to: to.clone(),
        };
        self.update(now, pid, |m| m.whisper_to = to, media);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn join(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        room_id: RoomId,
        name: DisplayName,
        identity: Option<String>,
        permissions: Permissions,
        p2p: bool,
    ) {
        if self.room_of_member(pid).is_some() {
            self.refuse(pid, Refusal::BadRequest, "already joined");
            return;
        }
        if !self.rooms.contains_key(&room_id) {
            if !self.config.auto_create_rooms {
                return self.reject(pid, Refusal::RoomNotFound, "room does not exist");
            }
            let policy = RoomPolicy {
                kind: RoomKind::default(),
                audio_slots: self.config.audio_slots,
                video_slots: self.config.video_slots,
                max_participants: self.config.max_participants,
                empty_timeout: None,
                metadata: String::new(),
                auto_created: true,
                whisper: RoomKind::default().defaults().whisper,
                spam_guard: SpamGuard::default(),
                proximity: None,
                p2p_max: RoomKind::default().defaults().p2p_max,
                p2p_downgrade: crate::p2p::downgrade_delay(None),
                replica: false,
            };
            self.create_room(now, room_id.clone(), policy);
        }
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        if room.is_full() {
            return self.reject(pid, Refusal::RoomFull, "room is full");
        }
        let audio_slots = room.policy.audio_slots;
        let video_slots = room.policy.video_slots;
        let spam_rules = SpamRules::of(&room.policy.spam_guard);
        let csrc = room.allocate_csrc();
        let ufrag = ufrag_for(pid, &mut self.rng);
        let pass = ice_password(&mut self.rng);
        let (rtc, keys) = match self.new_rtc(now, ufrag.clone(), pass, video_slots > 0) {
            Ok(built) => built,
            Err(e) => {
                tracing::error!(error = %e, "could not create rtc");
                if let Some(r) = self.rooms.get_mut(&room_id) {
                    r.remove(pid, now);
                }
                return self.reject(pid, Refusal::Internal, "could not set up media");
            }
        };
        let p = Participant {
            id: pid,
            room: room_id.clone(),
            name,
            csrc,
            audio_slots,
            permissions,
            muted: false,
            server_muted: false,
            whisper_to: None,
            spam: SpamWatch::new(now, spam_rules),
            deafened: false,
            rtc: Box::new(rtc),
            ufrag,
            addrs: Vec::new(),
            next_timeout: now,
            rtc_woken_at: now,
            rtc_busy_at: now,
            timer_at: None,
            last_heard: None,
            media_heard: None,
            pair_heard: None,
            consent: Default::default(),
            dtls_retired: Default::default(),
            connected: false,
            mic_pt: None,
            mic_unmapped: None,
            mic_ssrcs_left: crate::participant::MIC_SSRCS_MAPPED,
            slots: Vec::new(),
            table: SlotTable::new(0),
            egress: Egress::new(),
            // Their state comes when a subscription or an offer needs it.
            video: Vec::new(),
            video_count: video_slots,
            video_touched: false,
            video_dirty: false,
            video_negotiated: false,
            publications: Vec::new(),
            video_pts: Vec::new(),
            slot_pts: Vec::new(),
            // Set when an offer negotiates video slots.
            estimate: None,
            answered: false,
            keys,
            // The current speakers go out at the next tick, not only at the next change.
            speakers_dirty: true,
            failed: false,
            quality: Quality::new(now),
        };
        tracing::info!(room = %room_id, participant = %pid, name = p.name.as_str(), "joined");
        let info = p.info();
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        let others: Vec<_> = room.infos().cloned().collect();
        let member = Member {
            info: info.clone(),
            shard: self.id,
            identity,
            permissions,
            whisper_to: None,
            p2p,
            remote: false,
        };
        let details = member.details(&room_id);
        room.add(member);
        self.member_of.insert(pid, room_id.clone());
        // The joiner reads the mode in `joined`; the others are told of a change.
        self.reconsider_mode(now, &room_id, Some(pid));
        let mode = self
            .rooms
            .get(&room_id)
            .map_or(crate::p2p::RoomMode::Sfu, |r| r.mode.mode);
        let key = self.participants.insert(p);
        self.views
            .entry(room_id.clone())
            .or_default()
            .add_local(pid, key);
        self.drain(now, pid);
        self.signal(
            pid,
            ClientEvent::Joined(Joined {
                participant: pid,
                csrc,
                room: room_id.clone(),
                audio_slots,
                video_slots,
                members: others,
                mode,
            }),
        );
        self.broadcast(&room_id, Some(pid), || {
            ClientEvent::MemberJoined(info.clone())
        });
        self.notify(Notice::ParticipantJoined {
            room: room_id.clone(),
            participant: details,
        });
        self.report_member(&room_id, pid);
        self.publish_room_shards(now, &room_id);
    }

    /// Creates a room homed here and reports it.
    pub(super) fn create_room(&mut self, now: Instant, id: RoomId, policy: RoomPolicy) {
        tracing::info!(room = %id, kind = policy.kind.as_str(), auto = policy.auto_created, replica = policy.replica, "room created");
        if !policy.replica {
            self.notify(Notice::RoomCreated {
                room: id.clone(),
                kind: policy.kind,
                auto_created: policy.auto_created,
            });
        }
        self.rooms
            .insert(id.clone(), Room::new(id, policy, now, self.config.node));
    }

    /// A member of a room homed here.
    pub(super) fn member(&self, pid: ParticipantId) -> Option<&Member> {
        let room = self.room_of_member(pid)?;
        self.rooms.get(&room)?.members.get(&pid)
    }

    /// A participant's `Rtc`, and where its DTLS will hand over the SRTP keys.
    pub(super) fn new_rtc(
        &self,
        now: Instant,
        ufrag: String,
        pass: String,
        video: bool,
    ) -> Result<(Rtc, KeyCapture), EngineError> {
        let mut config = Rtc::builder()
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
            .set_stats_interval(self.config.quality_interval);
        if video {
            // Video rooms only: VP8 and H.264 and the simulcast RID extensions for
            // what the client publishes, and transport-wide congestion control so that
            // str0m's feedback lets the client's own estimator fit its uplink (`sdp.rs`
            // keeps it off audio sections). str0m sends no video: Chorus sends the
            // video slots (`egress.rs`), with its own estimate of the subscriber's
            // bandwidth; str0m runs no estimator or pacer.
            config = config
                .enable_vp8(true)
                .enable_h264(true)
                .set_extension(3, Extension::TransportSequenceNumber)
                .set_extension(10, Extension::RtpStreamId)
                .set_extension(11, Extension::RepairedRtpStreamId);
        }
        let (mut rtc, keys) = build_rtc_with(config, now, self.config.srtp_profiles.as_deref());
        for addr in self.config.udp_candidates() {
            let candidate = Candidate::host(addr, "udp").map_err(|e| EngineError::Candidate {
                addr,
                reason: e.to_string(),
            })?;
            rtc.add_local_candidate(candidate);
        }
        for tcp in self.config.tcp_candidates() {
            // ICE-TCP (RFC 6544): passive, the clients connect. Its type preference
            // (90 against UDP's 126) puts it after the UDP candidates.
            let candidate = Candidate::builder()
                .tcp()
                .host(tcp)
                .tcptype(TcpType::Passive)
                .build()
                .map_err(|e| EngineError::Candidate {
                    addr: tcp,
                    reason: e.to_string(),
                })?;
            rtc.add_local_candidate(candidate);
        }
        Ok((rtc, keys))
    }

    /// Changes what the room sees of a member, tells the whole room (the member
    /// included), and applies the media part where the member's media is.
    pub(super) fn update(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        change: impl FnOnce(&mut Member),
        media: Command,
    ) {
        if self.update_member(now, pid, change) {
            self.send_to_media(now, pid, media);
        }
    }

    /// Changes what the room sees of a member and tells the whole room (the member
    /// included) and the backend. Returns whether it is a member.
    pub(super) fn update_member(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        change: impl FnOnce(&mut Member),
    ) -> bool {
        let Some(room_id) = self.room_of_member(pid) else {
            return false;
        };
        let Some(m) = self
            .rooms
            .get_mut(&room_id)
            .and_then(|r| r.members.get_mut(&pid))
        else {
            return false;
        };
        let before = m.info.clone();
        let before_details = m.details(&room_id);
        let remote = m.remote;
        change(m);
        let info = m.info.clone();
        let details = m.details(&room_id);
        tracing::debug!(room = %room_id, participant = %pid, muted = info.muted, server_muted = info.server_muted, deafened = info.deafened, "updated");
        if info != before {
            self.broadcast(&room_id, None, || ClientEvent::MemberUpdated(info.clone()));
        }
        if details != before_details && !remote {
            self.notify(Notice::ParticipantUpdated {
                room: room_id.clone(),
                participant: details,
            });
            self.report_member(&room_id, pid);
        }
        // A server mute, lost grants or video may end p2p mode.
        self.reconsider_mode(now, &room_id, None);
        true
    }

    /// Sends the media part of a command to the shard holding the participant.
    pub(super) fn send_to_media(&mut self, now: Instant, pid: ParticipantId, command: Command) {
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

    pub(super) fn reject(&mut self, pid: ParticipantId, why: Refusal, message: &str) {
        self.refuse(pid, why, message);
        self.events.push_back(Event::Closed {
            participant: pid,
            reason: CloseReason::Rejected,
        });
    }

    /// The node drains: every room homed here that is empty closes now
    /// (`room_closed {reason: "node_draining"}`), and every other one as soon as its
    /// last member leaves.
    pub fn start_draining(&mut self, now: Instant) {
        self.draining = true;
        let empty: Vec<RoomId> = self
            .rooms
            .values()
            .filter(|r| r.order.is_empty())
            .map(|r| r.id.clone())
            .collect();
        for room in empty {
            self.close_room(now, &room, "node_draining");
        }
        self.pump(now);
    }

    /// Closes every room homed here: each member gets `room_closed {reason}` and is
    /// removed (its connection closes).
    pub fn close_rooms(&mut self, now: Instant, reason: &str) {
        let rooms: Vec<RoomId> = self.rooms.keys().cloned().collect();
        for room in rooms {
            self.close_room(now, &room, reason);
        }
        self.pump(now);
    }

    /// Closes one room homed here: `room_closed {reason}` to every member, who is
    /// removed; then the room is gone.
    pub(super) fn close_room(&mut self, now: Instant, room: &RoomId, reason: &str) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        r.closing = true;
        let members = r.order.clone();
        let local: Vec<ParticipantId> = r.local_members().map(|m| m.info.id).collect();
        tracing::info!(%room, reason, members = members.len(), "room closed");
        for pid in &local {
            self.signal(
                *pid,
                ClientEvent::RoomClosed {
                    reason: reason.to_owned(),
                },
            );
        }
        for pid in members {
            self.leave_room(now, pid, CloseReason::RoomClosed);
        }
        if let Some(closed) = self.rooms.remove(room) {
            self.room_closed(room, &closed.policy, reason);
        }
    }

    /// A room closed here: the backend is told (unless another node is its home),
    /// and in a cluster the other nodes.
    fn room_closed(&mut self, room: &RoomId, policy: &RoomPolicy, reason: &str) {
        if !policy.replica {
            self.notify(Notice::RoomClosed {
                room: room.clone(),
                reason: reason.to_owned(),
            });
        }
        self.report_closed(room, reason);
    }

    /// At the home shard: the participant is out of the room, whatever the reason.
    pub(super) fn leave_room(&mut self, now: Instant, pid: ParticipantId, reason: CloseReason) {
        let Some(room_id) = self.room_of_member(pid) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        let Some(member) = room.remove(pid, now) else {
            return;
        };
        self.member_of.remove(&pid);
        tracing::info!(room = %room.id, participant = %pid, ?reason, "left");
        let notify = room.notified.clone();
        let close_now = room.order.is_empty() && room.policy.auto_created && !room.closing;
        // The media goes wherever it is; every shard of the room frees its slots.
        if member.remote {
            // Another node holds it.
        } else if member.shard == self.id {
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
        self.broadcast(&room_id, None, || ClientEvent::MemberLeft(pid));
        self.reconsider_mode(now, &room_id, None);
        for (sending, source) in [
            (member.info.camera, VideoSource::Camera),
            (member.info.screen, VideoSource::Screen),
        ] {
            if sending && !member.remote {
                self.notify(Notice::TrackUnpublished {
                    room: room_id.clone(),
                    participant_id: pid,
                    source,
                });
            }
        }
        if !member.remote {
            self.notify(Notice::ParticipantLeft {
                room: room_id.clone(),
                participant_id: pid,
                reason: reason.as_str().to_owned(),
            });
            self.report_member(&room_id, pid);
        }
        self.forget_whisper_target(now, &room_id, pid);
        self.publish_room_shards(now, &room_id);
        let drained = self.draining
            && self
                .rooms
                .get(&room_id)
                .is_some_and(|r| r.order.is_empty() && !r.closing);
        if drained {
            self.close_room(now, &room_id, "node_draining");
        } else if close_now {
            // A room made by a join lives as long as someone is in it.
            if let Some(closed) = self.rooms.remove(&room_id) {
                self.room_closed(&room_id, &closed.policy, "empty");
            }
        }
        if !member.remote {
            self.events.push_back(Event::Closed {
                participant: pid,
                reason,
            });
        }
    }

    /// At the home shard: tells every shard that holds (or held) members which shards
    /// the room spans now.
    pub(super) fn publish_room_shards(&mut self, now: Instant, room_id: &RoomId) {
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
        let joined: Vec<usize> = shards
            .iter()
            .copied()
            .filter(|s| !room.notified.contains(s))
            .collect();
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
        // A shard new to the room learns its policy and positions (after the shards,
        // which set up its view).
        self.publish_room_media(now, room_id, &joined);
    }
}
