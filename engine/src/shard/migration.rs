//! Where a participant's media lives: demultiplexing unknown sources by STUN ufrag,
//! and moving a participant's `Rtc` to the shard its traffic reaches (claim at the
//! home shard, release by the holder after its own STUN integrity check, adopt).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chorus_protocol::demux::{classify, DatagramKind};
use chorus_protocol::signal::ParticipantId;
use chorus_protocol::stun;
use str0m::net::{Protocol as Str0mProtocol, Receive};
use str0m::Input;

use super::Shard;

use crate::io::{Peer, Protocol, Transmit};
use crate::mesh::{home_of, ufrag_participant, MediaPolicy, ShardMessage};
use crate::participant::{Participant, MAX_ADDRS};
use crate::spam::SpamRules;

/// Largest compound RTCP packet from a client that str0m reads (see
/// `Shard::receive`): a sender report, SDES and a feedback message or two.
const MAX_RTCP_FOR_STR0M: usize = 4;

/// Media received this recently keeps a participant on its shard against a check
/// that does not nominate a pair arriving at another shard (`Shard::release`). Opus
/// sends at least every 400 ms, silence included (DTX).
const MEDIA_HOLDS: Duration = Duration::from_secs(1);
/// The same for a consent check answered on its nominated pair: browsers check the
/// selected pair every ~2.5 s (a client that sends no media still does).
const PAIR_HOLDS: Duration = Duration::from_secs(6);

impl Shard {
    /// Source address first; for an unknown address, a STUN request whose USERNAME
    /// names a participant: held here, its integrity is checked by its `Rtc`; held
    /// elsewhere, it is claimed from its home shard.
    pub(super) fn demux(&mut self, now: Instant, peer: Peer, data: &[u8]) -> Option<ParticipantId> {
        if let Some(pid) = self.by_addr.get(&peer) {
            return Some(*pid);
        }
        let source = peer.addr;
        let msg = stun::StunMessage::parse(data).ok();
        let ufrag = msg
            .as_ref()
            .and_then(|m| m.ice_ufrags())
            .map(|(ours, _)| ours);
        // Every ufrag the node hands out names its participant (`c<id>z…`).
        let Some((pid, ufrag)) = ufrag.and_then(|u| ufrag_participant(u).map(|p| (p, u))) else {
            self.stats.dropped_unknown_source += 1;
            tracing::trace!(%source, len = data.len(), "dropped: unknown source");
            return None;
        };
        let Some(p) = self.participants.get_mut(&pid) else {
            if peer.proto == Protocol::Tcp {
                // TCP datagrams reach the holder through `handle_tcp`; they never
                // move a participant.
                self.stats.dropped_unknown_source += 1;
                return None;
            }
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
        let local = self.config.local_for(peer);
        let receive = Receive::new(peer.proto.str0m(), source, local, data).ok()?;
        if p.ufrag != ufrag
            || p.addrs.len() >= MAX_ADDRS
            || !p.rtc.accepts(&Input::Receive(now, receive))
        {
            self.stats.dropped_unknown_source += 1;
            return None;
        }
        tracing::debug!(room = %p.room, participant = %pid, %peer, "new source address");
        p.addrs.push(peer);
        self.by_addr.insert(peer, pid);
        Some(pid)
    }

    /// At the home shard: traffic of `pid` arrives at shard `at`; ask the shard holding
    /// its media to hand it over.
    pub(super) fn claim(
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
            // A ufrag naming a participant that is not (or no longer) in any room.
            self.stats.dropped_unknown_source += 1;
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
    pub(super) fn release(
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
        let Ok(receive) = Receive::new(
            Str0mProtocol::Udp,
            source,
            self.config.local_for(Peer {
                proto: Protocol::Udp,
                addr: source,
            }),
            &datagram,
        ) else {
            return;
        };
        if !p.rtc.accepts(&Input::Receive(now, receive)) {
            self.stats.dropped_bad_claim += 1;
            return;
        }
        // A client keeps checking its other candidate pairs while its media flows on
        // the one it nominated (libwebrtc every ~2.5 s), and such a pair may hash to
        // another shard. The media stays where the client's traffic arrives: media
        // within `MEDIA_HOLDS`, or a consent check on its nominated pair within
        // `PAIR_HOLDS`. Such a check is answered here all the same (the reply leaves
        // from this shard's socket, on the same port), so the pair stays usable: the
        // client may nominate it later, and a check that nominates moves the media.
        let recent = |t: Option<Instant>, hold: Duration| {
            t.is_some_and(|t| now.saturating_duration_since(t) < hold)
        };
        let nominates = stun::StunMessage::parse(&datagram)
            .is_ok_and(|m| m.attribute(stun::attr::USE_CANDIDATE).is_some());
        let here = recent(p.media_heard, MEDIA_HOLDS) || recent(p.pair_heard, PAIR_HOLDS);
        if here && !nominates {
            tracing::debug!(room = %p.room, participant = %pid, %source, at = to, "media kept: a check on a pair it did not nominate, answered here");
            let peer = Peer {
                proto: Protocol::Udp,
                addr: source,
            };
            self.receive(now, pid, peer, &datagram);
            return;
        }
        let Some(p) = self.detach(pid) else {
            return;
        };
        tracing::debug!(room = %p.room, participant = %pid, from = self.id, to, "media moves");
        let policy = self.views.get(&p.room).and_then(|v| v.policy);
        let adopt = ShardMessage::Adopt {
            participant: Box::new(p),
            policy,
            source,
            datagram,
        };
        self.send(to, adopt);
    }

    /// At the new shard: install the participant's media and feed it the datagram.
    pub(super) fn adopt(
        &mut self,
        now: Instant,
        mut p: Participant,
        policy: Option<MediaPolicy>,
        source: SocketAddr,
        datagram: &[u8],
    ) {
        let pid = p.id;
        self.stats.migrations_in += 1;
        p.timer_at = None;
        // What was heard on the shard it left says nothing of this one.
        p.media_heard = None;
        p.pair_heard = None;
        // The addresses it had elsewhere: UDP ones arrive at their own shard (the
        // kernel's choice), TCP ones through `handle_tcp` wherever it is.
        let udp = Peer {
            proto: Protocol::Udp,
            addr: source,
        };
        p.addrs.retain(|a| a.proto == Protocol::Tcp);
        p.addrs.push(udp);
        for a in &p.addrs {
            self.by_addr.insert(*a, pid);
        }
        let room = p.room.clone();
        let view = self.views.entry(room).or_default();
        // A shard new to the room follows the releasing shard's view of the policy
        // until the home shard's own arrives (right after it learns of the move).
        if view.policy.is_none() {
            if let Some(policy) = policy {
                // No positions yet: they come with the home shard's state.
                view.set_policy(policy, &[]);
            }
        }
        if let Some(policy) = view.policy {
            p.spam.set_rules(now, SpamRules::of(&policy.spam_guard));
        }
        let key = self.participants.insert(p);
        view.add_local(pid, key);
        self.receive(now, pid, udp, datagram);
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
    pub(super) fn detach(&mut self, pid: ParticipantId) -> Option<Participant> {
        let p = self.participants.remove(&pid)?;
        for a in &p.addrs {
            self.by_addr.remove(a);
        }
        if let Some(v) = self.views.get_mut(&p.room) {
            v.remove_local(pid);
        }
        Some(p)
    }

    pub(super) fn receive(&mut self, now: Instant, pid: ParticipantId, peer: Peer, data: &[u8]) {
        let source = peer.addr;
        let wallclock = self.wallclock(now);
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        let local = self.config.local_for(peer);
        let Ok(receive) = Receive::new(peer.proto.str0m(), source, local, data) else {
            self.stats.dropped_rejected += 1;
            return;
        };
        let kind = classify(data);
        let check = match kind {
            DatagramKind::Stun => stun::StunMessage::parse(data).ok(),
            _ => None,
        };
        // A consent check on the nominated pair, like the last one str0m answered
        // there: answered here, str0m left asleep (`crate::consent`).
        if let Some(check) = check.as_ref().filter(|_| p.egress.remote == Some(peer)) {
            let mut answer = self.pool.take();
            if p.consent.answer(now, check, source, &mut answer) {
                p.last_heard = Some(now);
                p.pair_heard = Some(now);
                self.stats.consent_answered += 1;
                self.transmits.push_back(Transmit::to(peer, local, answer));
                return;
            }
            self.pool.give(answer);
        }
        let mut for_str0m = true;
        // Reports on the audio slot streams are for Chorus, which sends them. In a
        // voice-only session str0m sends no stream, so all it needs of the client's
        // RTCP is the microphone's sender report (its LSR goes into str0m's receiver
        // reports: the client's round trip time). It gets that in compounds of a few
        // packets, as browsers send them, and nothing else: str0m 0.25 keeps its RTCP
        // decoding queue at the largest compound it ever read, ~1 KB per packet in
        // it, per participant (32 KB for str0m-based clients that send a report per
        // stream). The video slots' feedback (NACK, PLI, FIR, transport-cc) is
        // Chorus's too; a publisher's str0m gets its compounds with sender reports
        // whatever their size.
        if kind == DatagramKind::Rtcp {
            if let Some(seen) = p.egress.read_rtcp(
                &mut p.slots,
                &mut p.video,
                data,
                now,
                wallclock,
                &mut self.scratch,
            ) {
                self.stats.reports_in += 1;
                // The feedback on the video slots is Chorus's (answered below); a
                // publisher's compounds with its sender reports go to str0m whatever
                // their size (one report per simulcast layer).
                if !seen.sender_report
                    || (p.publications.is_empty() && seen.packets > MAX_RTCP_FOR_STR0M)
                {
                    self.stats.rtcp_kept_from_str0m += 1;
                    for_str0m = false;
                }
            }
        }
        let declared = match kind {
            DatagramKind::Rtp => p.map_mic_ssrc(data),
            _ => None,
        };
        if for_str0m {
            if let Err(e) = p.rtc.handle_input(Input::Receive(now, receive)) {
                self.stats.dropped_rejected += 1;
                tracing::trace!(participant = %pid, error = %e, "dropped: rtc refused datagram");
            }
        }
        let (accepted_before, sent_before) = (self.media.len(), self.transmits.len());
        self.drain(now, pid);
        if kind == DatagramKind::Rtcp {
            self.video_feedback(now, pid);
        }
        let media = self.media.len() > accepted_before;
        if let Some(ssrc) = declared {
            if let Some(p) = self.participants.get_mut(&pid) {
                p.settle_mic_ssrc(ssrc, media);
            }
        }
        // Only proof that the client is there keeps it alive: a STUN request with its
        // ICE password's integrity (consent checks come every few seconds), or RTP
        // that passes SRTP. Anyone can send RTCP, DTLS or STUN from (or spoofed as) its
        // address. str0m answers a binding request only once its USERNAME and
        // MESSAGE-INTEGRITY check out (`is` agent: `accepts_message` before
        // `handle_packet`), so its STUN answer to this source is that proof, at no
        // second integrity check.
        let consent = kind == DatagramKind::Stun
            && self.transmits.range(sent_before..).any(|t| {
                t.destination == source
                    && t.proto == peer.proto
                    && classify(&t.contents) == DatagramKind::Stun
            });
        // In rtp mode str0m hands out every RTP packet it accepts; one it kept quiet
        // about failed SRTP authentication or replay protection (or came before DTLS).
        if kind == DatagramKind::Rtp && !media {
            self.stats.dropped_unauthenticated += 1;
        }
        if consent || media {
            if let Some(p) = self.participants.get_mut(&pid) {
                p.last_heard = Some(now);
                if media {
                    p.rtc_busy_at = now;
                    p.media_heard = Some(now);
                }
                // The client nominated this pair (USE-CANDIDATE, answered: it passed
                // the integrity check): the slot streams go there from now on. This
                // is how an ICE restart, or a move from UDP to TCP, moves them.
                let nominated = consent
                    && check.is_some_and(|m| m.attribute(stun::attr::USE_CANDIDATE).is_some());
                if nominated && p.egress.remote != Some(peer) {
                    tracing::debug!(room = %p.room, participant = %pid, %peer, "nominated pair");
                    p.egress.remote = Some(peer);
                }
                let on_pair = consent && p.egress.remote == Some(peer);
                if on_pair {
                    p.pair_heard = Some(now);
                }
                // The checks that follow on this pair can be answered here.
                if let Some(check) = check.filter(|_| on_pair) {
                    let rtc = &mut p.rtc;
                    p.consent.str0m_answered(now, &check, || {
                        rtc.direct_api().local_ice_credentials().pass
                    });
                }
            }
        }
    }

    /// A datagram from an ICE-TCP connection bound to `pid` (by the USERNAME of its
    /// first STUN request), processed where `pid`'s media is: here, or passed to its
    /// home shard, which knows where that is. A TCP datagram never moves media.
    pub(super) fn tcp_datagram(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        source: SocketAddr,
        data: &[u8],
        hops: u8,
    ) {
        let peer = Peer {
            proto: Protocol::Tcp,
            addr: source,
        };
        if data.is_empty() {
            // Its connection closed: forget the address where the media is.
            if let Some(p) = self.participants.get_mut(&pid) {
                p.addrs.retain(|a| *a != peer);
                if p.egress.remote == Some(peer) {
                    p.egress.remote = None;
                }
                if self.by_addr.get(&peer) == Some(&pid) {
                    self.by_addr.remove(&peer);
                }
                return;
            }
        } else if self.participants.contains_key(&pid) {
            match self.demux(now, peer, data) {
                Some(p) if p == pid => self.receive(now, pid, peer, data),
                // A connection bound to one participant speaking for another.
                _ => self.stats.dropped_unknown_source += 1,
            }
            return;
        }
        let home = home_of(pid, self.shards);
        let to = if home == self.id {
            self.room_of_member(pid)
                .and_then(|r| self.rooms.get(&r))
                .and_then(|r| r.members.get(&pid))
                .map(|m| m.shard)
        } else {
            Some(home)
        };
        match to {
            Some(to) if to != self.id && hops < MAX_TCP_HOPS => self.send(
                to,
                ShardMessage::Tcp {
                    participant: pid,
                    source,
                    datagram: data.to_vec(),
                    hops: hops + 1,
                },
            ),
            _ => self.stats.dropped_unknown_source += 1,
        }
    }
}

/// Times a TCP datagram may be passed between shards after a participant that moves.
const MAX_TCP_HOPS: u8 = 4;
