//! One participant on this shard: its str0m `Rtc`, what was negotiated, and its
//! side of the forwarding pipeline (slot table, and the slot streams Chorus sends
//! itself: `egress.rs`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_protocol::signal::{DisplayName, ParticipantId, RoomId};
use chorus_srtp::capture::KeyCapture;
use chorus_srtp::keys::DtlsSrtpKeys;
use str0m::media::{Mid, Pt};
use str0m::rtp::RtpPacket;
use str0m::{Event as RtcEvent, Output, Rtc};

use crate::client_event::MemberInfo;
use crate::egress::{Egress, SlotTx};
use crate::io::{Peer, Permissions, Protocol, Transmit};
use crate::quality::Quality;
use crate::slots::SlotTable;
use crate::spam::SpamWatch;
use crate::video::publication::Publication;
use crate::video::slot::VideoSlot;
use chorus_protocol::demux::{classify, DatagramKind};

/// Most source addresses one participant may send from (ICE candidates that passed
/// the integrity check); more are ignored.
pub(crate) const MAX_ADDRS: usize = 8;

/// A quiet participant's str0m (no media, no offer for this long; voice only, its
/// DTLS let go) is woken for its own timers at most this often (or at the `quality`
/// interval, if shorter: `ShardConfig::quiet_rtc_every`). What it still asks for is
/// its ICE agent's 3 s evaluation and its statistics (5 s by default): served
/// together, the ICE agent's a little late, they wake it about half as often. Its
/// consent checks reach it on their own schedule (`crate::consent`).
pub(crate) const QUIET_RTC_EVERY: Duration = Duration::from_secs(5);

/// A participant's media state; it moves between shards whole (str0m `Rtc` is `Send`).
///
/// Laid out in declaration order (`repr(C)`), what a forwarded copy reads first: a
/// speaker's packet visits every subscriber, and these fields share a few cache lines
/// instead of sitting after the 10 KB `Rtc` (which lives in its own allocation).
#[repr(C)]
pub struct Participant {
    // ---- read for every forwarded copy ----
    pub(crate) deafened: bool,
    /// DTLS is up: media may be sent.
    pub(crate) connected: bool,
    /// str0m returned an error: the `Rtc` is unusable.
    pub(crate) failed: bool,
    /// The `speakers` message must be sent again.
    pub(crate) speakers_dirty: bool,
    pub(crate) permissions: Permissions,
    pub(crate) table: SlotTable,
    pub(crate) slots: Vec<SlotTx>,
    /// The slot streams' send side (keys, address, reports).
    pub(crate) egress: Egress,
    /// Its video slots' state: empty until a subscription or an offer that
    /// negotiates video needs it, then `video_count` slots (a slot's mid comes with
    /// the offer). A voice client in a room with video slots never pays for them.
    pub(crate) video: Vec<VideoSlot>,
    /// The video slots the room gave it at join (what `joined.video_slots` said).
    pub(crate) video_count: u8,
    /// str0m was asked to send it a keyframe request (PLI) since it was last
    /// drained: the shard drains it once per batch.
    pub(crate) video_touched: bool,
    /// Its `video_slots` message must be sent again.
    pub(crate) video_dirty: bool,
    /// Its last offer negotiated video (a publication or a video slot's mid). With
    /// `video_dirty`, what the slab's dense flags (`Participants::with_video_mut`)
    /// follow, so that the shard's tick never visits a voice-only participant.
    pub(crate) video_negotiated: bool,
    // ---- read when its timer fires ----
    /// When the participant's timer entry in the shard's timing wheel is due, if any.
    pub(crate) timer_at: Option<Instant>,
    /// When str0m wants `Input::Timeout` next.
    pub(crate) next_timeout: Instant,
    /// When str0m was last given `Input::Timeout`.
    pub(crate) rtc_woken_at: Instant,
    /// When str0m last had more to do than ICE and statistics: media it handed out,
    /// an offer, the participant's creation ([`QUIET_RTC_EVERY`]).
    pub(crate) rtc_busy_at: Instant,
    /// Last datagram from the client (or the answer, before the first one).
    pub(crate) last_heard: Option<Instant>,
    /// Last media (RTP that passed SRTP) from the client, on this shard, and last
    /// consent check answered on its nominated pair here: where its traffic arrives
    /// (`shard/migration.rs` `release`).
    pub(crate) media_heard: Option<Instant>,
    pub(crate) pair_heard: Option<Instant>,
    /// What answering its consent checks without str0m takes.
    pub(crate) consent: crate::consent::Consent,
    /// Its DTLS state was let go (`KeyCapture::dtls_retired`, which never turns back):
    /// remembered here so that its timer stops taking the capture's lock, a cache
    /// line of its own, each time it fires.
    pub(crate) dtls_retired: AtomicBool,
    // ---- the rest ----
    pub(crate) id: ParticipantId,
    pub(crate) room: RoomId,
    pub(crate) name: DisplayName,
    pub(crate) csrc: u32,
    /// The room's slot count (to set up its view on a shard it moves to).
    pub(crate) audio_slots: u8,
    pub(crate) muted: bool,
    /// Muted by the control plane; the client cannot lift it.
    pub(crate) server_muted: bool,
    /// While it whispers: the only participants its audio goes to.
    pub(crate) whisper_to: Option<Arc<[ParticipantId]>>,
    /// The mic-spam guard's view of its microphone.
    pub(crate) spam: SpamWatch,
    pub(crate) ufrag: String,
    /// Source addresses (and transports) mapped to this participant.
    pub(crate) addrs: Vec<Peer>,
    /// The microphone's Opus payload type, once negotiated.
    pub(crate) mic_pt: Option<Pt>,
    /// The microphone's mid while its SSRC is unknown to str0m (an offer without
    /// `a=ssrc`): the RTP the participant sends is mapped to it by SSRC as it arrives
    /// ([`Participant::map_mic_ssrc`]).
    pub(crate) mic_unmapped: Option<Mid>,
    /// How many more SSRCs may be declared for the microphone, for the participant's
    /// whole life (not per offer): one whose first packet fails SRTP gives its place
    /// back ([`Participant::settle_mic_ssrc`]).
    pub(crate) mic_ssrcs_left: u8,
    /// Where str0m's DTLS hands over the session's SRTP keys.
    pub(crate) keys: KeyCapture,
    pub(crate) quality: Quality,
    /// The video m-sections it publishes on (camera, screen).
    pub(crate) publications: Vec<Publication>,
    /// The video payload types it publishes in (str0m negotiated them), their codecs
    /// and, for H.264, the profile-level-id of their fmtp.
    pub(crate) video_pts: Vec<(Pt, crate::video::packet::VideoCodec, Option<u32>)>,
    /// The same for what its video slots receive (Chorus answered them).
    pub(crate) slot_pts: Vec<(Pt, crate::video::packet::VideoCodec, Option<u32>)>,
    /// What its bandwidth estimate allows sending to it, bits per second (while it
    /// has video slots: `egress.estimator`).
    pub(crate) estimate: Option<u64>,
    /// An offer was answered (the `Rtc` may no longer be rebuilt).
    pub(crate) answered: bool,
    pub(crate) rtc: Box<Rtc>,
}

/// What a participant's `Rtc` handed out for the shard's forwarding pipeline.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// RTP on its microphone (or on a mid str0m knows but Chorus does not use).
    Audio(RtpPacket),
    /// RTP of one layer of a video publication (an index in `publications`).
    Video {
        publication: usize,
        layer: u8,
        packet: RtpPacket,
    },
}

/// SSRCs a microphone without `a=ssrc` may have declared for it over a participant's
/// life: its own, and a few more should it change (a restarted encoder). Only an SSRC
/// whose first packet passes SRTP keeps its place.
pub(crate) const MIC_SSRCS_MAPPED: u8 = 4;

impl Participant {
    /// An RTP packet `data` from this participant, before str0m reads it: if its
    /// microphone's SSRC is unknown to str0m, the packet's SSRC is declared as the
    /// microphone's stream (str0m would drop it otherwise, having no `a=ssrc` and no
    /// MID header extension to map it by). Returns the SSRC declared, if one was: the
    /// caller gives it back ([`Participant::settle_mic_ssrc`]) unless the packet passed
    /// SRTP.
    pub(crate) fn map_mic_ssrc(&mut self, data: &[u8]) -> Option<u32> {
        let mid = self.mic_unmapped?;
        if self.mic_ssrcs_left == 0 {
            return None;
        }
        let ssrc = data
            .get(8..12)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))?;
        // SSRC 0: libwebrtc's bandwidth probes, which str0m handles itself.
        if ssrc == 0 {
            return None;
        }
        // str0m panics declaring a stream on a mid it has no media for (a refused
        // renegotiation can leave the offer's mid unknown to it).
        if self.rtc.media(mid).is_none() {
            self.mic_unmapped = None;
            return None;
        }
        let mut api = self.rtc.direct_api();
        if api.stream_rx(&ssrc.into()).is_some() {
            return None;
        }
        api.expect_stream_rx(ssrc.into(), None, mid, None);
        self.mic_ssrcs_left -= 1;
        Some(ssrc)
    }

    /// After the packet that declared `ssrc` ([`Participant::map_mic_ssrc`]) went
    /// through str0m: kept if it passed SRTP (the microphone is found, no more
    /// looking), otherwise undeclared and its place given back, so packets that only
    /// look like RTP from the participant's address cannot use up the places.
    pub(crate) fn settle_mic_ssrc(&mut self, ssrc: u32, authenticated: bool) {
        if authenticated {
            tracing::debug!(room = %self.room, participant = %self.id, ssrc, "microphone stream mapped by SSRC");
            self.mic_unmapped = None;
        } else {
            self.rtc.direct_api().remove_stream_rx(ssrc.into());
            self.mic_ssrcs_left += 1;
        }
    }

    pub(crate) fn info(&self) -> MemberInfo {
        MemberInfo {
            id: self.id,
            name: self.name.clone(),
            muted: self.muted,
            server_muted: self.server_muted,
            deafened: self.deafened,
            csrc: self.csrc,
            camera: false,
            screen: false,
        }
    }

    /// When the shard must look at this participant next: str0m's timeout, the
    /// slots' next sender report (while they carry audio), the moment it would count
    /// as gone — or now, if str0m failed.
    pub(crate) fn due(&self, now: Instant, config: &crate::config::ShardConfig) -> Instant {
        if self.failed {
            return now;
        }
        let mut due = self.rtc_due(now, config.quiet_rtc_every());
        if let Some(report) = self.egress.next_report {
            due = due.min(report);
        }
        if let Some(heard) = self.last_heard {
            due = due.min(heard + config.disconnect_timeout);
        }
        due
    }

    /// When str0m is given its next `Input::Timeout`: when it asks, or for a quiet
    /// participant no sooner than `quiet_every` after the last one.
    pub(crate) fn rtc_due(&self, now: Instant, quiet_every: Duration) -> Instant {
        let quiet = now.saturating_duration_since(self.rtc_busy_at) >= QUIET_RTC_EVERY
            && !self.video_negotiated
            && self.publications.is_empty()
            && self.dtls_retired();
        if quiet {
            self.next_timeout.max(self.rtc_woken_at + quiet_every)
        } else {
            self.next_timeout
        }
    }

    /// Whether its DTLS state was let go; asks the key capture until it says so.
    pub(crate) fn dtls_retired(&self) -> bool {
        // Relaxed: only this participant's shard reads and writes it (an atomic only
        // so that `Participant` stays `Sync`).
        if !self.dtls_retired.load(Ordering::Relaxed) && self.keys.dtls_retired() {
            self.dtls_retired.store(true, Ordering::Relaxed);
        }
        self.dtls_retired.load(Ordering::Relaxed)
    }

    /// Drains str0m until it asks for a timeout (its contract after every input).
    /// `config` has the addresses str0m's datagrams leave from.
    pub(crate) fn drain(
        &mut self,
        config: &crate::config::ShardConfig,
        transmits: &mut VecDeque<Transmit>,
        media: &mut VecDeque<(ParticipantId, Inbound)>,
    ) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    let Some(proto) = Protocol::from_str0m(t.proto) else {
                        continue;
                    };
                    let to = Peer {
                        proto,
                        addr: t.destination,
                    };
                    // Until the client nominates a pair (USE-CANDIDATE, see
                    // `Shard::receive`), the slot streams go where str0m sends DTLS
                    // and RTCP. STUN answers go to whichever pair the client checks.
                    if self.egress.remote.is_none() && classify(&t.contents) != DatagramKind::Stun {
                        self.egress.remote = Some(to);
                    }
                    transmits.push_back(Transmit::to(to, config.local_for(to), t.contents.into()))
                }
                Ok(Output::Event(e)) => match e {
                    RtcEvent::RtpPacket(p) => {
                        let inbound = self.classify(p);
                        media.push_back((self.id, inbound));
                    }
                    RtcEvent::Connected => {
                        tracing::debug!(room = %self.room, participant = %self.id, "media connected");
                        self.connected = true;
                        self.take_keys();
                    }
                    RtcEvent::PeerStats(s) => self.quality.on_peer(&s, self.egress.bytes_sent),
                    RtcEvent::MediaIngressStats(s) => self.quality.on_ingress(&s),
                    RtcEvent::IceConnectionStateChange(s) => {
                        tracing::debug!(room = %self.room, participant = %self.id, state = ?s, "ice");
                    }
                    _ => {}
                },
                Err(e) => {
                    tracing::warn!(room = %self.room, participant = %self.id, error = %e, "rtc failed");
                    self.failed = true;
                    return;
                }
            }
        }
    }

    /// Tells a video layer's packet from the microphone's, by the stream str0m
    /// received it on.
    fn classify(&mut self, packet: RtpPacket) -> Inbound {
        if self.publications.is_empty() || Some(packet.header.payload_type) == self.mic_pt {
            return Inbound::Audio(packet);
        }
        let Some(stream) = self
            .rtc
            .direct_api()
            .stream_rx(&packet.header.ssrc)
            .map(|s| (s.mid(), s.rid()))
        else {
            return Inbound::Audio(packet);
        };
        let (mid, rid) = stream;
        let found = self
            .publications
            .iter()
            .enumerate()
            .find_map(|(i, p)| (p.mid == mid).then(|| p.layer_of(rid).map(|layer| (i, layer))));
        match found {
            Some(Some((publication, layer))) => Inbound::Video {
                publication,
                layer,
                packet,
            },
            // A rid the offer did not name, or not a publication's mid: the audio
            // path drops it (not the microphone's payload type) and counts it.
            _ => Inbound::Audio(packet),
        }
    }

    /// Keys the slot streams with what the DTLS handshake exported.
    fn take_keys(&mut self) {
        let Some(captured) = self.keys.take() else {
            tracing::warn!(room = %self.room, participant = %self.id, "DTLS connected without SRTP keys: slots stay silent");
            return;
        };
        let keyed = DtlsSrtpKeys::from_exporter(captured.profile, &captured.material)
            .is_ok_and(|keys| self.egress.set_keys(&keys, captured.dtls_client));
        if keyed {
            tracing::debug!(room = %self.room, participant = %self.id, profile = captured.profile.name(), "slot streams keyed");
        } else {
            tracing::warn!(room = %self.room, participant = %self.id, "unusable SRTP keys: slots stay silent");
        }
    }
}
