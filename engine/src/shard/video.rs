//! The video side of the forwarding pipeline, on a shard: a publisher's layer packet
//! (publisher side, hand-off), each subscriber's video slots (keyframe-gated layer
//! choice, rewriting, and the copy Chorus writes and seals itself, `egress.rs`),
//! keyframe requests both ways, NACKs answered from each slot's history,
//! `subscribe`, and the bandwidth allocation across a subscriber's slots by Chorus's
//! own estimate from its transport-cc feedback (`video/estimator.rs`).
//!
//! As for audio, str0m does not send the video slots: no per-copy work in its send
//! path, pacer or estimator. The payload is shared (`Arc<[u8]>`) by every copy and
//! every slot's history; each copy is one write into a pooled buffer (its VP8
//! descriptor patched there), sealed in place.

use std::time::{Duration, Instant};

use chorus_protocol::signal::{ParticipantId, RoomId};
use str0m::media::{KeyframeRequestKind, Pt};
use str0m::rtp::RtpPacket;

use super::{initial_numbers, Shard};
use crate::client_event::{ClientEvent, Refusal, VideoSource};
use crate::egress::{VideoCopy, VideoHeader, WriteError};
use crate::forwarder::Sink;
use crate::io::{Event, Transmit};
use crate::mesh::ShardMessage;
use crate::participant::Participant;
use crate::report::Notice;
use crate::video::history::Sent;
use crate::video::layers::{allocate, layer_for, Demand, KEYFRAME_REQUEST_INTERVAL};
use crate::video::packet::{inspect, VideoCodec, VideoPacket};
use crate::video::slot::{LayerKey, Request, SlotAction, VideoSlot};
use std::sync::Arc;

/// A subscriber's slots are fitted to its bandwidth estimate this often.
pub(super) const ALLOCATE_INTERVAL: Duration = Duration::from_millis(500);
/// What a subscriber's audio may take of its estimate, per occupied audio slot (Opus
/// voice at up to ~32 kbit/s, plus headers): video gets the rest.
const AUDIO_RESERVE_PER_SLOT: u64 = 40_000;

impl Shard {
    /// The pipeline's publisher side for video: one layer packet of a publisher held
    /// here goes to the local video slots and once to every other shard of the room.
    pub(super) fn forward_video(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        publication: usize,
        layer: u8,
        pkt: RtpPacket,
    ) {
        self.stats.video_in += 1;
        let origin = self.id;
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        let Some((codec, profile)) = p.video_codec(pkt.header.payload_type) else {
            self.stats.dropped_not_video += 1;
            return;
        };
        let Some(publ) = p.publications.get_mut(publication) else {
            return;
        };
        let source = publ.source;
        let allowed = p.permissions.publish
            && match source {
                VideoSource::Camera => p.permissions.sources.camera,
                VideoSource::Screen => p.permissions.sources.screen,
            };
        if !allowed {
            self.stats.dropped_not_permitted += 1;
            return;
        }
        publ.on_packet(layer, pkt.payload.len(), now);
        let (active, bitrates) = publ.activity(now);
        let layers = publ.layer_count();
        let (keyframe, vp8) = inspect(codec, &pkt.payload);
        let room = p.room.clone();
        let packet = VideoPacket {
            publisher: pid,
            source,
            profile,
            origin,
            layer,
            layers,
            active,
            bitrates,
            codec,
            ssrc: *pkt.header.ssrc,
            seq: *pkt.seq_no,
            timestamp: pkt.header.timestamp,
            marker: pkt.header.marker,
            keyframe,
            vp8,
            payload: pkt.payload,
            received: now,
        };
        self.hand_off(&room, |room| ShardMessage::Video {
            room,
            packet: packet.clone(),
        });
        let relayed = self
            .views
            .get(&room)
            .and_then(|v| v.policy)
            .is_some_and(|p| p.relay);
        if relayed {
            self.relay.push_back(crate::cluster::RelayOut::Video(
                room.clone(),
                packet.clone(),
            ));
        }
        self.fan_out_video(now, &room, &packet);
    }

    /// The pipeline's subscriber side for video on this shard: every local video
    /// slot that asked for the packet's publication decides on it.
    pub(super) fn fan_out_video(&mut self, now: Instant, room: &RoomId, packet: &VideoPacket) {
        // One lookup of the view per packet (the view and the shard's other fields
        // are borrowed apart; keyframe requests go out once it is let go).
        let Some(view) = self.views.get_mut(room) else {
            return;
        };
        if !view.video_gaps.is_empty() {
            let key = (packet.publisher, packet.source, packet.layer);
            if let Some(i) = view.video_gaps.iter().position(|(g, _)| *g == key) {
                if !packet.keyframe {
                    self.stats.dropped_video_gap += 1;
                    let asked = &mut view.video_gaps[i].1;
                    if now.saturating_duration_since(*asked) >= KEYFRAME_REQUEST_INTERVAL {
                        *asked = now;
                        self.ask_keyframe(now, key.0, key.1, key.2, packet.origin);
                    }
                    return;
                }
                view.video_gaps.swap_remove(i);
            }
        }
        let view = &*view;
        let mut keyframes: Vec<(LayerKey, usize)> = Vec::new();
        let mut sink = Sink {
            config: &self.config,
            pool: &mut self.pool,
            transmits: &mut self.transmits,
        };
        for m in &view.local {
            if m.id == packet.publisher {
                continue;
            }
            let Some(sub) = self.participants.at_mut(m.key) else {
                continue;
            };
            // Only slots that can receive decide anything: no switch, rewrite or
            // keyframe request on behalf of one that could not take the packet.
            let ready = sub.connected && !sub.failed && sub.permissions.subscribe;
            if sub.video.is_empty() || !ready {
                continue;
            }
            let Some(pt) = sub.video_pt(packet.codec, packet.profile) else {
                continue;
            };
            for i in 0..sub.video.len() {
                if sub.video[i].mid.is_none() || !sub.video[i].wants(packet) {
                    continue;
                }
                let before = sub.video[i].state(i);
                if sub.video[i].layers == 0 {
                    // The slot's first packet of this publication: fit the slot into the
                    // subscriber's bandwidth before it picks a layer, not at the next
                    // allocation (a keyframe of the top layer could overshoot by then).
                    sub.video[i].layers = packet.layers;
                    sub.video[i].bitrates = packet.bitrates;
                    fit_to_estimate(sub, now);
                }
                let (action, keyframe) = sub.video[i].on_packet(packet, now);
                if let Some(key) = keyframe {
                    keyframes.push((key, sub.video[i].origin));
                }
                let after = sub.video[i].state(i);
                if after != before {
                    tracing::debug!(room = %room, participant = %m.id, slot = i, layer = ?after.layer, "video slot");
                    sub.video_dirty = true;
                }
                let SlotAction::Send { out, vp8 } = action else {
                    continue;
                };
                let copy = VideoCopy {
                    pt: *pt,
                    seq: out.seq,
                    timestamp: out.timestamp,
                    marker: packet.marker,
                    vp8,
                    descriptor: packet.vp8.map(|f| f.ours),
                    payload: &packet.payload,
                    padding: 0,
                    again: None,
                };
                match send_video(sub, i, &copy, now, &mut sink) {
                    Ok(header) => {
                        self.stats.video_forwarded += 1;
                        sub.video[i].history.record(sent(
                            &copy,
                            Some(&packet.payload),
                            header,
                            now,
                        ));
                        // Between frames, padding where the estimate should grow.
                        if copy.marker && sub.egress.pad_to > 0 {
                            for _ in 0..sub.egress.padding_due(now) {
                                let Some(out) = sub.video[i].pad() else {
                                    break;
                                };
                                let pad = VideoCopy::padding(copy.pt, out);
                                let Ok(header) = send_video(sub, i, &pad, now, &mut sink) else {
                                    break;
                                };
                                sub.video[i].history.record(sent(&pad, None, header, now));
                                self.stats.video_padding += 1;
                            }
                        }
                        super::media::start_reports(sub, now, &mut self.rng, &mut self.timers);
                    }
                    Err(WriteError::NotReady) => self.stats.dropped_not_ready += 1,
                    Err(WriteError::Seal) => self.stats.dropped_unsealable += 1,
                }
            }
        }
        for ((publisher, source, layer), origin) in keyframes {
            self.ask_keyframe(now, publisher, source, layer, origin);
        }
    }

    /// A packet of a layer handed to this shard was lost on the way: its slots wait
    /// for the layer's next keyframe (its packets are dropped until then) and one is
    /// asked for.
    pub(super) fn video_gap(
        &mut self,
        now: Instant,
        room: &RoomId,
        publisher: ParticipantId,
        source: VideoSource,
        layer: u8,
        origin: usize,
    ) {
        let Some(view) = self.views.get_mut(room) else {
            return;
        };
        self.stats.video_gaps += 1;
        let key = (publisher, source, layer);
        if view.video_gaps.iter().any(|(g, _)| *g == key) {
            return; // asked already
        }
        view.video_gaps.push((key, now));
        self.ask_keyframe(now, publisher, source, layer, origin);
    }

    /// Asks `publisher` (its media on shard `origin`) for a keyframe of a layer.
    fn ask_keyframe(
        &mut self,
        now: Instant,
        publisher: ParticipantId,
        source: VideoSource,
        layer: u8,
        origin: usize,
    ) {
        if origin == self.id {
            self.keyframe(now, publisher, source, layer);
        } else if origin == crate::cluster::REMOTE_ORIGIN {
            self.relay.push_back(crate::cluster::RelayOut::Keyframe {
                publisher,
                source,
                layer,
            });
        } else {
            self.send(
                origin,
                ShardMessage::Keyframe {
                    publisher,
                    source,
                    layer,
                },
            );
        }
    }

    /// A keyframe request for a publisher held here: a PLI on the layer's stream,
    /// at most every 250 ms per layer whoever asks.
    pub(super) fn keyframe(
        &mut self,
        now: Instant,
        publisher: ParticipantId,
        source: VideoSource,
        layer: u8,
    ) {
        let Some(p) = self.participants.get_mut(&publisher) else {
            // Not here. At its home shard (a request from another node names no
            // shard), pass it on to the shard holding its media; else it moved or
            // left: packets will name its new shard.
            if let Some(m) = self.member(publisher) {
                if !m.remote && m.shard != self.id {
                    let shard = m.shard;
                    self.send(
                        shard,
                        ShardMessage::Keyframe {
                            publisher,
                            source,
                            layer,
                        },
                    );
                }
            }
            return;
        };
        let Some(publ) = p.publications.iter_mut().find(|x| x.source == source) else {
            return;
        };
        if !publ.may_request_keyframe(layer, now) {
            return;
        }
        let (mid, rid) = (publ.mid, publ.rid_of(layer));
        let mut api = p.rtc.direct_api();
        let Some(stream) = api.stream_rx_by_mid(mid, rid) else {
            return;
        };
        stream.request_keyframe(KeyframeRequestKind::Pli);
        self.stats.keyframe_requests += 1;
        tracing::debug!(participant = %publisher, layer, "keyframe asked");
        if !p.video_touched {
            p.video_touched = true;
            self.touched.push(publisher);
        }
    }

    /// What a subscriber's RTCP asked of its video slots (`Egress::read_rtcp`):
    /// NACKed packets sent again from the slots' histories, keyframe requests passed
    /// on, and the slots fitted to a changed estimate.
    pub(super) fn video_feedback(&mut self, now: Instant, pid: ParticipantId) {
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        let feedback = &mut p.egress.video_feedback;
        let keyframes = std::mem::take(&mut feedback.keyframes);
        if std::mem::take(&mut feedback.estimated) {
            if let Some(e) = p.egress.estimator.as_ref() {
                let estimate = e.estimate();
                if p.estimate != Some(estimate) {
                    tracing::trace!(room = %p.room, participant = %pid, estimate, "bandwidth estimate");
                    p.estimate = Some(estimate);
                }
            }
        }
        if !p.egress.video_feedback.nacks.is_empty() {
            let mut nacks = std::mem::take(&mut p.egress.video_feedback.nacks);
            let mut sink = Sink {
                config: &self.config,
                pool: &mut self.pool,
                transmits: &mut self.transmits,
            };
            let estimate = p.estimate.unwrap_or(crate::egress::INITIAL_ESTIMATE);
            for (i, seq) in nacks.drain(..) {
                let slot = usize::from(i);
                let Some(sent) = p
                    .video
                    .get(slot)
                    .and_then(|s| s.history.resendable(seq, now))
                    .filter(|s| p.egress.may_resend(s.wire_len(), estimate, now))
                    .cloned()
                else {
                    self.stats.nacks_unanswered += 1;
                    continue;
                };
                if let Some(s) = p.video.get_mut(slot) {
                    s.history.resent(seq, now);
                }
                match send_video(p, slot, &again(&sent), now, &mut sink) {
                    Ok(_) => self.stats.video_resent += 1,
                    Err(_) => self.stats.dropped_unsealable += 1,
                }
            }
            // The vector's room is kept for the next NACKs.
            p.egress.video_feedback.nacks = nacks;
        }
        let count = p.video.len();
        for i in 0..count {
            if keyframes & (1 << i) != 0 {
                self.subscriber_keyframe_request(now, pid, i);
            }
        }
    }

    /// A subscriber's PLI or FIR on its video slot `index`: passed on to the
    /// publisher of the layer the slot forwards.
    fn subscriber_keyframe_request(&mut self, now: Instant, pid: ParticipantId, index: usize) {
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        let Some(slot) = p.video.get_mut(index) else {
            return;
        };
        let Some((publisher, source, layer)) = slot.relay_keyframe_request(now) else {
            return;
        };
        // The slot knows where the requested publisher is; one it still forwards
        // until that one's keyframe is asked only if it is here (its keyframe ends
        // nothing: the switch does).
        let requested = slot.request.is_some_and(|r| r.publisher == publisher);
        let origin = if requested { slot.origin } else { self.id };
        self.ask_keyframe(now, publisher, source, layer, origin);
    }

    /// The media side of `subscribe` (the home shard checked the publisher is in the
    /// room).
    pub(super) fn subscribe(&mut self, pid: ParticipantId, slot: u32, request: Option<Request>) {
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        let count = usize::from(p.video_count);
        let Some(index) = usize::try_from(slot).ok().filter(|i| *i < count) else {
            let message = if count == 0 {
                "this room has no video slots".to_owned()
            } else {
                format!("slot {slot} is out of range (0..{count})")
            };
            self.refuse(pid, Refusal::BadRequest, &message);
            return;
        };
        if request.is_some_and(|r| r.publisher == pid) {
            self.refuse(
                pid,
                Refusal::BadRequest,
                "a client cannot subscribe to itself",
            );
            return;
        }
        // A voice client's first subscription gives it its slots' state (a slot
        // without state is free: clearing it changes nothing).
        if request.is_some() {
            p.give_video_slots(&mut self.rng);
        }
        if let Some(s) = p.video.get_mut(index) {
            s.set_request(request);
        }
        // The whole map goes out after each subscribe, changed or not.
        let states = p.video_states();
        p.video_dirty = false;
        self.signal(pid, ClientEvent::VideoSlots(states));
    }

    /// A member left the room: the slots that showed it are free.
    pub(super) fn clear_video_of(&mut self, room: &RoomId, publisher: ParticipantId) {
        let Some(view) = self.views.get(room) else {
            return;
        };
        for m in &view.local {
            if let Some(p) = self.participants.at_mut(m.key) {
                for s in &mut p.video {
                    p.video_dirty |= s.clear_if(publisher);
                }
                if p.video_dirty {
                    self.participants.video_changed_at(m.key);
                }
            }
        }
    }

    /// Drains the publishers str0m was asked to send a PLI (once per batch each).
    pub(super) fn drain_touched(&mut self, now: Instant) {
        while let Some(pid) = self.touched.pop() {
            if let Some(p) = self.participants.get_mut(&pid) {
                p.video_touched = false;
                self.drain(now, pid);
            }
        }
    }

    /// Periodic video work for the participants on this shard: slots whose publisher
    /// stopped show no layer, the `video_slots` messages owed go out, and (every
    /// [`ALLOCATE_INTERVAL`]) each subscriber's layers are fitted to its bandwidth
    /// estimate.
    pub(super) fn video_tick(&mut self, now: Instant, allocate_now: bool) {
        let mut owed: Vec<(ParticipantId, ClientEvent)> = Vec::new();
        // Only who negotiated video, or is owed its slot map: the tick visits no
        // voice-only participant.
        for p in self.participants.with_video_mut() {
            if allocate_now {
                fit_to_estimate(p, now);
            }
            for s in &mut p.video {
                p.video_dirty |= s.idle_check(now);
            }
            if std::mem::take(&mut p.video_dirty) {
                owed.push((p.id, ClientEvent::VideoSlots(p.video_states())));
            }
        }
        self.participants.forget_without_video();
        for (to, event) in owed {
            self.events.push_back(Event::ToClient { to, event });
        }
    }

    /// The home shard's side of a client's `video` message.
    pub(super) fn set_video(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        source: VideoSource,
        enabled: bool,
    ) {
        let Some(room_id) = self.room_of_member(pid) else {
            return;
        };
        let Some(room) = self.rooms.get(&room_id) else {
            return;
        };
        if room.policy.video_slots == 0 && enabled {
            self.refuse(pid, Refusal::Forbidden, "this room has no video");
            return;
        }
        let Some(m) = room.members.get(&pid) else {
            return;
        };
        let granted = m.permissions.publish
            && match source {
                VideoSource::Camera => m.permissions.sources.camera,
                VideoSource::Screen => m.permissions.sources.screen,
            };
        if enabled && !granted {
            let what = match source {
                VideoSource::Camera => "camera",
                VideoSource::Screen => "screen",
            };
            self.refuse(
                pid,
                Refusal::Forbidden,
                &format!("not allowed to publish {what}"),
            );
            return;
        }
        let was = match source {
            VideoSource::Camera => m.info.camera,
            VideoSource::Screen => m.info.screen,
        };
        if was == enabled {
            return;
        }
        self.update_member(now, pid, |m| match source {
            VideoSource::Camera => m.info.camera = enabled,
            VideoSource::Screen => m.info.screen = enabled,
        });
        let participant_id = pid;
        self.notify(if enabled {
            Notice::TrackPublished {
                room: room_id,
                participant_id,
                source,
            }
        } else {
            Notice::TrackUnpublished {
                room: room_id,
                participant_id,
                source,
            }
        });
    }
}

/// Writes one packet on a subscriber's video slot `i` into a pooled buffer, sealed,
/// and queues it for the socket. Returns the header extensions it carries.
fn send_video(
    sub: &mut Participant,
    i: usize,
    copy: &VideoCopy<'_>,
    now: Instant,
    sink: &mut Sink<'_>,
) -> Result<VideoHeader, WriteError> {
    let Some(slot) = sub.video.get_mut(i) else {
        return Err(WriteError::NotReady);
    };
    let mut buf = sink.pool.take();
    match sub.egress.write_video(slot, copy, now, &mut buf) {
        Ok((to, header)) => {
            let local = sink.config.local_for(to);
            sink.transmits.push_back(Transmit::to(to, local, buf));
            Ok(header)
        }
        Err(e) => {
            sink.pool.give(buf);
            Err(e)
        }
    }
}

/// What a slot's history keeps of a packet it sent (`payload` `None`: padding).
fn sent(
    copy: &VideoCopy<'_>,
    payload: Option<&Arc<[u8]>>,
    header: VideoHeader,
    now: Instant,
) -> Sent {
    Sent {
        seq: copy.seq,
        timestamp: copy.timestamp,
        marker: copy.marker,
        pt: copy.pt,
        vp8: copy.vp8,
        payload: payload.cloned(),
        padding: copy.padding,
        twcc: header.twcc,
        with_mid: header.with_mid,
        sent_at: now,
        resent_at: None,
    }
}

/// A packet of a slot's history to send again: byte for byte what went out first
/// (one SRTP nonce, one packet).
fn again(sent: &Sent) -> VideoCopy<'_> {
    VideoCopy {
        pt: sent.pt,
        seq: sent.seq,
        timestamp: sent.timestamp,
        marker: sent.marker,
        vp8: sent.vp8,
        descriptor: None,
        payload: sent.payload.as_deref().unwrap_or_default(),
        padding: sent.padding,
        again: Some((sent.twcc, sent.with_mid)),
    }
}

/// Fits a subscriber's video slots to its bandwidth estimate, less what its audio
/// needs: each slot gets a layer cap ([`allocate`]); a slot whose lowest layer does
/// not fit keeps it anyway (video degrades to its lowest layer rather than stopping).
/// The slots are padded towards the next layer, probing (`video/probe.rs`).
fn fit_to_estimate(p: &mut Participant, now: Instant) {
    let Some(estimate) = p.estimate else {
        return;
    };
    let audio = p.table.occupied() as u64 * AUDIO_RESERVE_PER_SLOT;
    let budget = estimate.saturating_sub(audio);
    let active: Vec<usize> = (0..p.video.len())
        .filter(|i| p.video[*i].request.is_some() && p.video[*i].layers > 0)
        .collect();
    let demands: Vec<Demand> = active
        .iter()
        .map(|i| {
            let s = &p.video[*i];
            let layers = usize::from(s.layers);
            let wanted = s
                .request
                .and_then(|r| layer_for(r.quality, layers))
                .unwrap_or(0);
            // A layer not measured yet costs what such a layer usually does; one that
            // sends nothing now, what the one below it does.
            let mut bitrates: Vec<u64> = s.bitrates[..layers]
                .iter()
                .enumerate()
                .map(|(l, b)| match *b {
                    0 => nominal_bitrate(l, layers),
                    b => u64::from(b),
                })
                .collect();
            for l in 1..bitrates.len() {
                bitrates[l] = bitrates[l].max(bitrates[l - 1]);
            }
            Demand { wanted, bitrates }
        })
        .collect();
    let chosen = allocate(budget, &demands);
    let mut desired: u64 = audio;
    let mut sending: u64 = audio;
    let mut next_step: Option<u64> = None;
    for ((i, d), c) in active.iter().zip(&demands).zip(&chosen) {
        let layer = c.unwrap_or(0);
        if p.video[*i].cap != Some(layer as u8) {
            tracing::debug!(room = %p.room, participant = %p.id, slot = *i, cap = layer, estimate, "video slot cap");
        }
        p.video[*i].cap = Some(layer as u8);
        let rate = |l: usize| d.bitrates.get(l).copied().unwrap_or(0);
        desired += rate(d.wanted);
        sending += rate(layer);
        if layer < d.wanted {
            let step = rate(layer + 1).saturating_sub(rate(layer));
            next_step = Some(next_step.map_or(step, |s| s.min(step)));
        }
    }
    // While a slot forwards less than it asked for, the slots are padded up to what
    // they send now plus the cheapest next layer: within the estimate, or above it
    // while probing (`video/probe.rs`), so that the estimate can grow to fit that
    // layer before a slot switches up.
    // Only where transport-cc feedback measures what padding does.
    let measured = p.egress.video_ext.twcc.is_some()
        && p.egress
            .estimator
            .as_ref()
            .is_some_and(|e| e.measuring(now));
    p.egress.pad_to = match next_step.filter(|_| measured) {
        Some(step) => {
            let want = (sending + step).min(desired);
            let pad_to = p.egress.probing.pad_to(want, estimate, now);
            if pad_to > estimate {
                if let Some(e) = p.egress.estimator.as_mut() {
                    e.probing(now);
                }
            }
            pad_to.saturating_sub(audio)
        }
        None => {
            p.egress.probing.idle();
            0
        }
    };
}

/// What layer `layer` of `layers` usually sends (browsers' simulcast ladder: the top
/// layer ~1.5 Mbit/s, the one below ~500 kbit/s, the next ~150 kbit/s), for layers
/// whose rate is not measured yet.
fn nominal_bitrate(layer: usize, layers: usize) -> u64 {
    match layers.saturating_sub(layer + 1) {
        0 => 1_500_000,
        1 => 500_000,
        _ => 150_000,
    }
}

impl Participant {
    /// The codec of a payload type it sends video in, and H.264's profile-level-id.
    pub(crate) fn video_codec(&self, pt: Pt) -> Option<(VideoCodec, Option<u32>)> {
        self.video_pts
            .iter()
            .find(|(p, _, _)| *p == pt)
            .map(|(_, c, profile)| (*c, *profile))
    }

    /// The payload type its video slots receive `codec` in: for H.264, one of the
    /// publisher's profile (`profile`'s profile_idc and constraint flags) if it has
    /// one, else one of the same profile_idc, else its first.
    pub(crate) fn video_pt(&self, codec: VideoCodec, profile: Option<u32>) -> Option<Pt> {
        pick_video_pt(&self.slot_pts, codec, profile)
    }

    /// Its whole video slot map (a slot whose state was never needed shows free).
    pub(crate) fn video_states(&self) -> Vec<crate::client_event::VideoSlotState> {
        (0..usize::from(self.video_count))
            .map(|i| match self.video.get(i) {
                Some(s) => s.state(i),
                None => VideoSlot::free_state(i),
            })
            .collect()
    }

    /// Gives it its video slots' state, if it has none yet: a subscription or an
    /// offer that negotiates video needs it. Each slot starts its own stream numbers.
    pub(super) fn give_video_slots(&mut self, rng: &mut u64) {
        while self.video.len() < usize::from(self.video_count) {
            let (seq, ts) = initial_numbers(rng);
            self.video.push(VideoSlot::new(seq, ts));
        }
    }
}

/// The payload type, of `pts`, to forward `codec` in: for H.264, one of the
/// publisher's profile (`profile`'s profile_idc and constraint flags, the
/// profile-level-id without its level) if there is one, else one of the same
/// profile_idc, else the first of the codec.
fn pick_video_pt(
    pts: &[(Pt, VideoCodec, Option<u32>)],
    codec: VideoCodec,
    profile: Option<u32>,
) -> Option<Pt> {
    let candidates = || pts.iter().filter(|(_, c, _)| *c == codec);
    let matching = |shift: u32| {
        let want = profile? >> shift;
        candidates()
            .find(|(_, _, p)| p.is_some_and(|p| p >> shift == want))
            .map(|(pt, _, _)| *pt)
    };
    matching(8)
        .or_else(|| matching(16))
        .or_else(|| candidates().next().map(|(pt, _, _)| *pt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_goes_out_in_the_publishers_profile_where_the_subscriber_has_it() {
        use VideoCodec::{Vp8, H264};
        let pts = [
            (Pt::from(96), Vp8, None),
            (Pt::from(102), H264, Some(0x42_00_1f)), // constrained baseline (old style)
            (Pt::from(104), H264, Some(0x42_e0_1f)), // constrained baseline
            (Pt::from(106), H264, Some(0x4d_00_1f)), // main
            (Pt::from(108), H264, Some(0x64_00_1f)), // high
        ];
        let pick = |codec, profile| pick_video_pt(&pts, codec, profile).map(|p| *p);
        assert_eq!(pick(Vp8, None), Some(96));
        // The same profile and constraints, whatever the level.
        assert_eq!(pick(H264, Some(0x42_e0_34)), Some(104));
        assert_eq!(pick(H264, Some(0x64_00_28)), Some(108));
        // Safari's high profile with other constraint flags: the same profile_idc.
        assert_eq!(pick(H264, Some(0x64_0c_1f)), Some(108));
        // A profile the subscriber lacks, or none known: its first H.264.
        assert_eq!(pick(H264, Some(0xf4_00_1f)), Some(102));
        assert_eq!(pick(H264, None), Some(102));
        assert_eq!(pick_video_pt(&pts[..1], H264, Some(0x42_e0_1f)), None);
    }
}
