//! What Chorus itself sends to one subscriber: its slot streams.
//!
//! Chorus answers the slots (one recvonly audio m-section each, `sdp.rs`) with its
//! own SSRCs; str0m never sees them and Chorus is the only sender on those SSRCs.
//! Per forwarded copy it writes the RTP header
//! (the slot's SSRC, sequence number and timestamp from [`SlotRewriter`], the
//! speaker's CSRC, the audio level, and the MID until the subscriber has reported on
//! the slot), seals it with the session's SRTP keys captured from str0m's DTLS
//! handshake, and queues the datagram to the address str0m last sent to. Its SRTCP is
//! Chorus's too: a sender report and SDES CNAME for the slots that carried media,
//! about once a second (RFC 3550 §6.4.1), and the subscriber's receiver reports on
//! them, read here for the `quality` event.
//!
//! A slot that has never carried a speaker costs its [`SlotTx`] (40 B) and its entry
//! in the subscriber's slot table (24 B), nothing else; its stream state
//! ([`SlotStream`], ~100 B) comes with its first speaker and stays for the SSRC's life.
//!
//! Video slots (issue 12) are sent the same way: [`Egress::write_video`] writes a
//! publisher's packet with the slot's SSRC, rewritten sequence number, timestamp and
//! VP8 descriptor, the MID extension until the first report, and a transport-wide
//! sequence number (transport-cc) for the bandwidth estimate
//! ([`crate::video::estimator`]). The subscriber's NACKs, PLIs, FIRs and
//! transport-cc feedback on the video slots are read here ([`Egress::read_rtcp`]) and
//! answered by the shard (`shard/video.rs`): resends from the slot's history, keyframe
//! requests to the publisher, layers fitted to the estimate.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chorus_protocol::encode::Encode;
use chorus_protocol::rtcp::{
    Compound, RtcpPacket, SdesCnameWriter, SenderInfo, SenderReportWriter,
};
use chorus_protocol::rtp::{ExtensionSpec, RtpWriter, SeqNo, Ssrc};
use chorus_srtp::keys::DtlsSrtpKeys;
use chorus_srtp::{SrtpRx, SrtpTx};

use crate::forwarder::SpeakerPacket;
use crate::io::Peer;
use crate::pool::BUFFER_CAPACITY;
use crate::rewriter::{Rewritten, SlotRewriter};
use crate::video::estimator::Estimator;
use crate::video::probe::Probing;
use crate::video::slot::VideoSlot;
use crate::video::vp8;

/// How often sender reports go out (RFC 3550 §6.2: at least every 5 s; browsers
/// send about once a second for audio).
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// A slot whose last packet is older than this gets no sender report (RFC 3550
/// §6.4: a participant that has not sent in the last two intervals is no sender).
const SENDER_WINDOW: Duration = Duration::from_secs(2);
/// Most slot SSRCs in one compound report: one SR (28 bytes) and one SDES chunk (24
/// with a 16-byte CNAME) each must fit in a datagram with the SRTCP trailer. Rooms
/// allow 32 audio and 16 video slots: a subscriber with more slots sending at once
/// reports on the first 24.
const MAX_REPORTED: usize = 24;
/// A padding packet's padding (RFC 3550 §5.1: at most 255 octets, the count in the
/// last one).
const PADDING_BYTES: u8 = 255;
/// Resends take at most 1/`RESEND_SHARE` of a subscriber's estimate.
const RESEND_SHARE: u64 = 4;
/// Most padding packets after one frame.
const MAX_PADDING_PER_FRAME: usize = 16;
/// Most NACKed packets kept from one RTCP packet for the shard to send again.
const MAX_NACKS: usize = 128;
/// A subscriber's bandwidth estimate: where it starts (enough for a medium layer,
/// until transport-cc feedback tells) and its bounds.
pub(crate) const INITIAL_ESTIMATE: u64 = 800_000;
const MIN_ESTIMATE: u64 = 100_000;
const MAX_ESTIMATE: u64 = 20_000_000;

/// A slot's mid as the RFC 8843 MID extension carries it: 1 to 16 visible ASCII
/// characters, kept inline so that writing it per copy is a copy of bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotMid {
    bytes: [u8; 16],
    len: u8,
}

impl SlotMid {
    /// `None` unless `mid` is 1 to 16 visible ASCII characters.
    pub fn new(mid: &str) -> Option<SlotMid> {
        let len = mid.len();
        if !(1..=16).contains(&len) || !mid.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let mut bytes = [0; 16];
        bytes[..len].copy_from_slice(mid.as_bytes());
        Some(SlotMid {
            bytes,
            len: len as u8,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub fn as_str(&self) -> &str {
        // Only visible ASCII is ever stored.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl std::fmt::Display for SlotMid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for SlotMid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SlotMid({})", self.as_str())
    }
}

/// One negotiated audio slot: a stream Chorus sends to this subscriber. Until a
/// speaker is first routed to it, it is only what the answer said (40 B); its stream
/// state ([`SlotStream`]) comes with that first speaker.
#[derive(Debug)]
pub(crate) struct SlotTx {
    /// The stream, from the slot's first speaker on ([`SlotTx::stream`]). Kept for the
    /// SSRC's life: its numbering and its RFC 3550 counts continue across speakers.
    pub stream: Option<Box<SlotStream>>,
    /// The SSRC Chorus chose and wrote into the answer.
    pub ssrc: u32,
    /// Where the stream's timestamps and sequence numbers start (RFC 3550: random).
    start_ts: u32,
    start_seq: u16,
    pub mid: SlotMid,
    /// The subscriber's Opus payload type.
    pub pt: u8,
    /// Write the MID extension until a receiver report names this SSRC (RFC 8843
    /// §9.1: the receiver has learnt the SSRC by then).
    pub send_mid: bool,
}

/// What a slot that has carried a speaker keeps: its rewriting and what it sent.
#[derive(Debug)]
pub(crate) struct SlotStream {
    pub rewriter: SlotRewriter,
    /// RFC 3550 §6.4.1: packets and payload octets sent (wrapping).
    pub packets: u32,
    pub octets: u32,
}

impl SlotTx {
    /// A slot on `ssrc` whose stream will start at `start_seq` and `start_ts`.
    pub fn new(mid: SlotMid, ssrc: u32, pt: u8, start_seq: u16, start_ts: u32) -> SlotTx {
        SlotTx {
            stream: None,
            ssrc,
            start_ts,
            start_seq,
            mid,
            pt,
            send_mid: true,
        }
    }

    /// The slot's stream, made when its first speaker is routed to it: once per slot,
    /// not per copy.
    pub fn stream(&mut self) -> &mut SlotStream {
        let (seq, ts) = (self.start_seq, self.start_ts);
        self.stream.get_or_insert_with(|| {
            Box::new(SlotStream {
                rewriter: SlotRewriter::new(seq, ts),
                packets: 0,
                octets: 0,
            })
        })
    }
}

/// The header extension ids the subscriber's answer negotiated (RFC 8285).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ExtIds {
    /// RFC 6464 client-to-mixer audio level.
    pub audio_level: Option<u8>,
    /// RFC 8843 MID.
    pub mid: Option<u8>,
}

/// The header extension ids the subscriber's video slot sections negotiated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct VideoExtIds {
    /// RFC 8843 MID.
    pub mid: Option<u8>,
    /// draft-holmer-rmcat-transport-wide-cc-extensions-01: transport-wide sequence
    /// number.
    pub twcc: Option<u8>,
}

/// One packet to write on a video slot: a publisher's payload and the fields the
/// slot rewrote.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VideoCopy<'a> {
    pub pt: u8,
    /// Extended sequence number on the slot.
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    /// VP8: the descriptor fields as the slot writes them, and the descriptor as read
    /// from the payload (`None`: read it here).
    pub vp8: Option<vp8::Rewrite>,
    pub descriptor: Option<vp8::Descriptor>,
    pub payload: &'a [u8],
    /// RFC 3550 §5.1 padding octets (a padding packet: no payload).
    pub padding: u8,
    /// A resend: the transport-wide sequence number and MID extension it first went
    /// out with (it must be the same bytes under the same SRTP nonce).
    pub again: Option<(Option<u16>, bool)>,
}

/// The header extensions a video packet was written with (what a resend repeats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VideoHeader {
    pub twcc: Option<u16>,
    pub with_mid: bool,
}

impl VideoCopy<'_> {
    /// A padding packet on a slot: `out` from the slot's rewriter, in payload type
    /// `pt` (probing for bandwidth, as libwebrtc pads without RTX).
    pub fn padding(pt: u8, out: Rewritten) -> VideoCopy<'static> {
        VideoCopy {
            pt,
            seq: out.seq,
            timestamp: out.timestamp,
            marker: false,
            vp8: None,
            descriptor: None,
            payload: &[],
            padding: PADDING_BYTES,
            again: None,
        }
    }
}

/// What the subscriber's RTCP asked of its video slots, for the shard to answer.
#[derive(Debug, Default)]
pub(crate) struct VideoFeedback {
    /// Packets to send again: (video slot, sequence number).
    pub nacks: Vec<(u8, u16)>,
    /// Video slots whose receiver asked for a keyframe (PLI or FIR), bit `i`: slot `i`.
    pub keyframes: u32,
    /// Transport-cc feedback came: the estimate may have changed.
    pub estimated: bool,
}

/// Why a copy was not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteError {
    /// DTLS has not exported keys yet (or str0m has not sent to the client yet).
    NotReady,
    /// The packet does not fit a datagram, or sealing failed.
    Seal,
}

/// A subscriber's send side.
#[repr(C)]
pub(crate) struct Egress {
    // What every copy reads and writes, together (declaration order).
    tx: Option<SrtpTx>,
    /// Where str0m last sent DTLS or RTCP to: the nominated candidate pair (its STUN
    /// answers go to every pair the client checks).
    pub remote: Option<Peer>,
    pub ext: ExtIds,
    /// Bytes of every datagram written here (str0m counts only its own).
    pub bytes_sent: u64,
    /// When the next sender report is due; `None` while no slot carries audio (the
    /// first copy after that starts the reports again: `Shard::fan_out`).
    pub next_report: Option<Instant>,
    /// Opens the subscriber's SRTCP, for its receiver reports on our slots.
    rtcp_rx: Option<SrtpRx>,
    /// The CNAME of the slots (`a=ssrc:… cname:`), chosen at the first answer.
    pub cname: String,
    /// Receiver reports on our slots since the last `quality` event.
    pub reports: ReportFigures,
    /// The keys `tx` is made from, until the first copy needs it: a listener in a room
    /// where nobody has spoken yet holds no sealing context (~1.2 KB of cipher state).
    unsealed: Option<Box<(DtlsSrtpKeys, bool)>>,
    /// Video slots only: their extension ids, the next transport-wide sequence
    /// number, the bandwidth estimate from the subscriber's transport-cc feedback
    /// (made with the first packet that carries a transport-wide number: without
    /// transport-cc there is none, and no padding), and what its RTCP asked of them.
    pub video_ext: VideoExtIds,
    twcc_seq: u16,
    pub estimator: Option<Box<Estimator>>,
    pub video_feedback: VideoFeedback,
    /// What the video slots should send, padding included, to probe for the next
    /// layer (bit/s; 0: no padding), and when that may exceed the estimate.
    pub pad_to: u64,
    pub probing: Probing,
    /// Bytes of padding owed (filled at `pad_to`, emptied by every video byte sent).
    padding: ByteBucket,
    /// Bytes that may be sent again for NACKs (filled at a share of the estimate).
    resend: ByteBucket,
}

/// A byte budget refilled with time (a token bucket); it may run below zero.
#[derive(Debug, Default)]
struct ByteBucket {
    credit: i64,
    filled_at: Option<Instant>,
}

impl ByteBucket {
    /// Adds what `bits_per_second` gives since the last refill (`first` bytes at the
    /// first one), up to `cap`; returns the credit.
    fn refill(&mut self, bits_per_second: u64, cap: i64, first: i64, now: Instant) -> i64 {
        let filled = match self.filled_at {
            Some(t) => {
                let micros = now.saturating_duration_since(t).as_micros();
                (u128::from(bits_per_second) * micros / 8_000_000) as i64
            }
            None => first,
        };
        self.filled_at = Some(now);
        self.credit = (self.credit + filled).min(cap);
        self.credit
    }
}

/// What one of the subscriber's RTCP packets held, besides reports on our slots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RtcpSeen {
    /// A sender report: the client's own report on its microphone's stream.
    pub sender_report: bool,
    /// RTCP packets in the compound.
    pub packets: usize,
}

/// What the subscriber's receiver reports said about our slots.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ReportFigures {
    pub loss_sum: f32,
    pub loss_count: u32,
    pub rtt: Option<Duration>,
}

impl Egress {
    pub fn new() -> Egress {
        Egress {
            tx: None,
            rtcp_rx: None,
            remote: None,
            ext: ExtIds::default(),
            cname: String::new(),
            next_report: None,
            reports: ReportFigures::default(),
            unsealed: None,
            bytes_sent: 0,
            video_ext: VideoExtIds::default(),
            twcc_seq: 0,
            estimator: None,
            video_feedback: VideoFeedback::default(),
            pad_to: 0,
            probing: Probing::default(),
            padding: ByteBucket::default(),
            resend: ByteBucket::default(),
        }
    }

    /// Whether a packet of `bytes` may be sent again for a NACK now: resends take at
    /// most [`RESEND_SHARE`] of the estimate (a link that loses packets because it
    /// is full would lose more to a flood of resends, voice with them).
    pub fn may_resend(&mut self, bytes: usize, estimate: u64, now: Instant) -> bool {
        let per_second = estimate / 8 / RESEND_SHARE;
        // At most a quarter second's worth saved up, and always room for one packet;
        // full at the first NACK.
        let cap = ((per_second / 4) as i64).max(BUFFER_CAPACITY as i64);
        let credit = self.resend.refill(per_second * 8, cap, cap, now);
        if credit < bytes as i64 {
            return false;
        }
        self.resend.credit -= bytes as i64;
        true
    }

    /// The most the padding bucket holds either way: 100 ms at `pad_to`.
    fn pad_burst(&self) -> i64 {
        (self.pad_to / 80) as i64
    }

    /// How many padding packets to send now, after a frame's last packet on a video
    /// slot, to make up what the slots send to `pad_to`.
    pub fn padding_due(&mut self, now: Instant) -> usize {
        if self.pad_to == 0 {
            self.padding = ByteBucket {
                credit: 0,
                filled_at: Some(now),
            };
            return 0;
        }
        let credit = self.padding.refill(self.pad_to, self.pad_burst(), 0, now);
        let packet = i64::from(PADDING_BYTES) + 40;
        ((credit / packet).max(0) as usize).min(MAX_PADDING_PER_FRAME)
    }

    /// Writes one packet on a video slot into `buf` (empty, with [`BUFFER_CAPACITY`]
    /// of room) and seals it: a forwarded copy, a padding packet, or a resend from the
    /// slot's history (byte for byte the first one). Returns where it goes and the
    /// header extensions it carries. Allocates nothing.
    pub fn write_video(
        &mut self,
        slot: &mut VideoSlot,
        copy: &VideoCopy<'_>,
        now: Instant,
        buf: &mut Vec<u8>,
    ) -> Result<(Peer, VideoHeader), WriteError> {
        let Some(remote) = self.remote else {
            return Err(WriteError::NotReady);
        };
        let ext = self.video_ext;
        let header = match copy.again {
            Some((twcc, with_mid)) => VideoHeader { twcc, with_mid },
            None => VideoHeader {
                twcc: ext.twcc.map(|_| self.twcc_seq),
                with_mid: ext.mid.is_some() && slot.send_mid,
            },
        };
        let Some(tx) = self.sealer() else {
            return Err(WriteError::NotReady);
        };
        let Some(mid) = slot.mid else {
            return Err(WriteError::NotReady);
        };
        let twcc = header.twcc.map(u16::to_be_bytes);
        let mut elements: [(u8, &[u8]); 2] = [(0, &[]); 2];
        let mut n = 0;
        if let (Some(id), true) = (ext.mid, header.with_mid) {
            elements[n] = (id, mid.as_bytes());
            n += 1;
        }
        if let (Some(id), Some(twcc)) = (ext.twcc, twcc.as_ref()) {
            elements[n] = (id, &twcc[..]);
            n += 1;
        }
        let writer = RtpWriter {
            marker: copy.marker,
            payload_type: copy.pt,
            sequence_number: SeqNo(copy.seq as u16),
            timestamp: copy.timestamp,
            ssrc: Ssrc(slot.ssrc),
            csrcs: &[],
            extension: if n == 0 {
                ExtensionSpec::None
            } else {
                ExtensionSpec::Elements(&elements[..n])
            },
            payload: copy.payload,
            padding: copy.padding,
        };
        let sealed = seal_rtp(tx, &writer, copy.seq, buf, |payload| {
            if let Some(rewrite) = &copy.vp8 {
                if let Some(d) = copy.descriptor.or_else(|| vp8::parse(copy.payload)) {
                    vp8::patch(&d, rewrite, payload);
                }
            }
        })?;
        self.bytes_sent += sealed as u64;
        self.padding.credit = (self.padding.credit - sealed as i64).max(-self.pad_burst());
        if let (None, Some(seq)) = (copy.again, header.twcc) {
            self.twcc_seq = seq.wrapping_add(1);
            // The estimate starts with the first packet it can measure.
            let estimator = self.estimator.get_or_insert_with(|| {
                Box::new(Estimator::new(INITIAL_ESTIMATE, MIN_ESTIMATE, MAX_ESTIMATE))
            });
            estimator.on_sent(seq, sealed, now);
        }
        slot.packets = slot.packets.wrapping_add(1);
        slot.octets = slot.octets.wrapping_add(copy.payload.len() as u32);
        Ok((remote, header))
    }

    /// Keys from the DTLS handshake; `dtls_client` says which half is ours. The
    /// SRTCP reader is made now (clients report from the start); the sealing context
    /// when the first copy or report needs it ([`Egress::sealer`]).
    pub fn set_keys(&mut self, keys: &DtlsSrtpKeys, dtls_client: bool) -> bool {
        match keys.rtcp_rx(dtls_client) {
            Ok(rx) => {
                self.rtcp_rx = Some(rx);
                self.tx = None;
                self.unsealed = Some(Box::new((keys.clone(), dtls_client)));
                true
            }
            Err(_) => false,
        }
    }

    pub fn has_keys(&self) -> bool {
        self.tx.is_some() || self.unsealed.is_some()
    }

    /// The sealing context, made from the keys on first use (once per session: the
    /// only allocation a subscriber's copies make).
    fn sealer(&mut self) -> Option<&mut SrtpTx> {
        if self.tx.is_none() {
            let (keys, dtls_client) = *self.unsealed.take()?;
            self.tx = keys
                .tx(dtls_client)
                .inspect_err(
                    |e| tracing::warn!(error = %e, "unusable SRTP keys: slots stay silent"),
                )
                .ok();
        }
        self.tx.as_mut()
    }

    /// Writes one speaker packet on `slot` into `buf` (empty, with
    /// [`BUFFER_CAPACITY`] of room) and seals it. Allocates nothing.
    pub fn write_rtp(
        &mut self,
        slot: &mut SlotTx,
        packet: &SpeakerPacket,
        out: Rewritten,
        buf: &mut Vec<u8>,
    ) -> Result<Peer, WriteError> {
        let Some(remote) = self.remote else {
            return Err(WriteError::NotReady);
        };
        let ext = self.ext;
        let Some(tx) = self.sealer() else {
            return Err(WriteError::NotReady);
        };
        // RFC 6464 §3: V bit, then the level as 0..=127 -dBov.
        let level = packet.audio_level.map(|l| {
            u8::from(packet.voice_activity.unwrap_or(false)) << 7 | l.unsigned_abs().min(127)
        });
        let level = level.map(|l| [l]);
        let mut elements: [(u8, &[u8]); 2] = [(0, &[]); 2];
        let mut n = 0;
        if let (Some(id), Some(l)) = (ext.audio_level, level.as_ref()) {
            elements[n] = (id, &l[..]);
            n += 1;
        }
        if let (Some(id), true) = (ext.mid, slot.send_mid) {
            elements[n] = (id, slot.mid.as_bytes());
            n += 1;
        }
        let csrc = [Ssrc(packet.csrc)];
        let writer = RtpWriter {
            marker: packet.marker || out.switched,
            payload_type: slot.pt,
            sequence_number: SeqNo(out.seq as u16),
            timestamp: out.timestamp,
            ssrc: Ssrc(slot.ssrc),
            csrcs: &csrc,
            extension: if n == 0 {
                ExtensionSpec::None
            } else {
                ExtensionSpec::Elements(&elements[..n])
            },
            payload: &packet.payload,
            padding: 0,
        };
        let sealed = seal_rtp(tx, &writer, out.seq, buf, |_| {})?;
        self.bytes_sent += sealed as u64;
        let stream = slot.stream();
        stream.packets = stream.packets.wrapping_add(1);
        stream.octets = stream.octets.wrapping_add(packet.payload.len() as u32);
        Ok(remote)
    }

    /// A sender report and SDES for every slot (audio and video) that sent lately,
    /// sealed into `buf` (empty, with [`BUFFER_CAPACITY`] of room). `Ok(None)`:
    /// nothing to report.
    pub fn write_report(
        &mut self,
        slots: &[SlotTx],
        video: &[VideoSlot],
        now: Instant,
        wallclock: SystemTime,
        buf: &mut Vec<u8>,
    ) -> Result<Option<Peer>, WriteError> {
        let (Some(tx), Some(remote)) = (&mut self.tx, self.remote) else {
            return Err(WriteError::NotReady);
        };
        // (SSRC, RTP timestamp now, packets, octets) of each slot that sent lately.
        let audio = slots.iter().filter_map(|s| {
            let stream = s.stream.as_deref()?;
            let ts = stream.rewriter.timestamp_at(now, SENDER_WINDOW)?;
            Some((s.ssrc, ts, stream.packets, stream.octets))
        });
        let video = video.iter().filter_map(|s| {
            let ts = s.timestamp_at(now, SENDER_WINDOW)?;
            Some((s.ssrc, ts, s.packets, s.octets))
        });
        let mut senders = audio.chain(video).take(MAX_REPORTED).peekable();
        // Most participants' slots are quiet: nothing to write, nothing to zero.
        if senders.peek().is_none() {
            return Ok(None);
        }
        let ntp = ntp_timestamp(wallclock);
        buf.resize(BUFFER_CAPACITY, 0);
        let mut len = 0;
        let mut ssrcs = [Ssrc(0); MAX_REPORTED];
        let mut count = 0;
        for (ssrc, rtp_timestamp, packets, octets) in senders {
            // RFC 3550 §6.4.1: the NTP and RTP timestamps name the same instant.
            let sr = SenderReportWriter {
                ssrc: Ssrc(ssrc),
                info: SenderInfo {
                    ntp_timestamp: ntp,
                    rtp_timestamp,
                    packet_count: packets,
                    octet_count: octets,
                },
                blocks: &[],
            };
            let rest = buf.get_mut(len..).ok_or(WriteError::Seal)?;
            len += sr.encode(rest).map_err(|_| WriteError::Seal)?;
            ssrcs[count] = Ssrc(ssrc);
            count += 1;
        }
        if count == 0 {
            buf.clear();
            return Ok(None);
        }
        let cname = if self.cname.is_empty() {
            &b"chorus"[..]
        } else {
            self.cname.as_bytes()
        };
        // RFC 3550 §6.1: every compound packet carries an SDES CNAME.
        let sdes = SdesCnameWriter {
            ssrcs: &ssrcs[..count],
            cname,
        };
        let rest = buf.get_mut(len..).ok_or(WriteError::Seal)?;
        len += sdes.encode(rest).map_err(|_| WriteError::Seal)?;
        let sealed = tx.protect_rtcp(buf, len).map_err(|_| WriteError::Seal)?;
        buf.truncate(sealed);
        self.bytes_sent += sealed as u64;
        Ok(Some(remote))
    }

    /// Reads the subscriber's SRTCP for reports on our slots: each one stops the MID
    /// extension on its slot and adds to the quality figures. Feedback on the video
    /// slots (NACK, PLI, FIR) is kept in [`Egress::video_feedback`] for the shard to
    /// answer, transport-cc feedback goes to the estimator. `scratch` is a reusable
    /// buffer. Returns what the packet held, or `None` if it could not be opened.
    pub fn read_rtcp(
        &mut self,
        slots: &mut [SlotTx],
        video: &mut [VideoSlot],
        datagram: &[u8],
        now: Instant,
        wallclock: SystemTime,
        scratch: &mut Vec<u8>,
    ) -> Option<RtcpSeen> {
        let rx = self.rtcp_rx.as_mut()?;
        scratch.clear();
        scratch.extend_from_slice(datagram);
        let len = rx.unprotect_rtcp(scratch, datagram.len()).ok()?;
        let arrival = (ntp_timestamp(wallclock) >> 16) as u32;
        let plain = scratch.get(..len)?;
        let mut seen = RtcpSeen::default();
        for packet in Compound::new(plain) {
            seen.packets += 1;
            let blocks = match packet {
                Ok(RtcpPacket::ReceiverReport(rr)) => rr.report_blocks(),
                Ok(RtcpPacket::SenderReport(sr)) => {
                    seen.sender_report = true;
                    sr.report_blocks()
                }
                Ok(RtcpPacket::Nack(nack)) => {
                    if let Some(i) = video_index(video, nack.media_ssrc()) {
                        let nacks = &mut self.video_feedback.nacks;
                        for seq in nack.lost() {
                            if nacks.len() >= MAX_NACKS {
                                break;
                            }
                            nacks.push((i as u8, seq.0));
                        }
                    }
                    continue;
                }
                Ok(RtcpPacket::Pli(pli)) => {
                    if let Some(i) = video_index(video, pli.media_ssrc) {
                        self.video_feedback.keyframes |= 1u32.checked_shl(i as u32).unwrap_or(0);
                    }
                    continue;
                }
                Ok(RtcpPacket::Fir(fir)) => {
                    for entry in fir.entries() {
                        if let Some(i) = video_index(video, entry.ssrc) {
                            self.video_feedback.keyframes |=
                                1u32.checked_shl(i as u32).unwrap_or(0);
                        }
                    }
                    continue;
                }
                Ok(RtcpPacket::Twcc(twcc)) => {
                    if let Some(e) = self.estimator.as_mut() {
                        // A few bytes of run-length chunks can claim 65,535 packets:
                        // no more than the estimator remembers are read.
                        // (The first ones: receive times add up from the first.)
                        let statuses = twcc
                            .statuses()
                            .take(Estimator::REMEMBERED)
                            .map(|(seq, delta)| (seq.0, delta));
                        e.on_feedback(twcc.reference_time_us(), statuses, now);
                        self.video_feedback.estimated = true;
                    }
                    continue;
                }
                Ok(_) => continue,
                Err(_) => break,
            };
            for block in blocks {
                let send_mid = match slots.iter_mut().find(|s| s.ssrc == block.ssrc.0) {
                    Some(slot) => &mut slot.send_mid,
                    None => match video_index(video, block.ssrc) {
                        Some(i) => &mut video[i].send_mid,
                        None => continue,
                    },
                };
                *send_mid = false;
                self.reports.loss_sum += f32::from(block.fraction_lost) / 256.0;
                self.reports.loss_count += 1;
                // RFC 3550 §6.4.1: round trip = arrival - LSR - DLSR, in 1/65536 s.
                if block.last_sr != 0 {
                    let rtt = arrival
                        .wrapping_sub(block.last_sr)
                        .wrapping_sub(block.delay_since_last_sr);
                    if rtt < 0x8000_0000 {
                        self.reports.rtt =
                            Some(Duration::from_micros(u64::from(rtt) * 1_000_000 / 65_536));
                    }
                }
            }
        }
        Some(seen)
    }
}

/// Writes `writer`'s packet into `buf` (only the bytes the datagram needs are zeroed:
/// the packet and the tag's room), lets `patch` change its payload in place, and seals
/// it; `seq` is its extended sequence number (RFC 3711 §3.3.1: the rollover counter
/// is the high bits). Returns the sealed length.
fn seal_rtp(
    tx: &mut SrtpTx,
    writer: &RtpWriter<'_>,
    seq: u64,
    buf: &mut Vec<u8>,
    patch: impl FnOnce(&mut [u8]),
) -> Result<usize, WriteError> {
    let len = writer.encoded_len().map_err(|_| WriteError::Seal)?;
    let sealed_len = len + tx.profile().rtp_overhead();
    if sealed_len > BUFFER_CAPACITY {
        return Err(WriteError::Seal);
    }
    buf.clear();
    buf.resize(sealed_len, 0);
    let len = writer.encode(buf).map_err(|_| WriteError::Seal)?;
    let header_len = len - writer.payload.len() - usize::from(writer.padding);
    if let Some(payload) = buf.get_mut(header_len..header_len + writer.payload.len()) {
        patch(payload);
    }
    let sealed = tx
        .protect_rtp(buf, len, header_len, (seq >> 16) as u32)
        .map_err(|_| WriteError::Seal)?;
    buf.truncate(sealed);
    Ok(sealed)
}

/// The index of the video slot sending on `ssrc`.
fn video_index(video: &[VideoSlot], ssrc: Ssrc) -> Option<usize> {
    video
        .iter()
        .position(|s| s.ssrc == ssrc.0 && s.mid.is_some())
}

/// RFC 5905 §6: seconds since 1900 in the high 32 bits, the fraction in the low.
pub(crate) fn ntp_timestamp(wallclock: SystemTime) -> u64 {
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let since = wallclock.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs().wrapping_add(NTP_UNIX_OFFSET);
    let frac = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    secs << 32 | frac
}

#[cfg(test)]
mod tests {
    use chorus_protocol::signal::ParticipantId;

    use super::*;

    #[test]
    fn ntp_of_the_unix_epoch_and_a_half_second() {
        assert_eq!(ntp_timestamp(UNIX_EPOCH), 2_208_988_800 << 32);
        let half = UNIX_EPOCH + Duration::from_millis(500);
        assert_eq!(ntp_timestamp(half) & 0xffff_ffff, 0x8000_0000);
    }

    /// A negotiated audio slot is one entry of the participant's `slots` (8 by
    /// default). Until it carries a speaker it is its mid, SSRC and starting numbers
    /// (176 B before the rewriter was packed, 128 B before its stream state came with
    /// its first speaker).
    #[test]
    fn an_audio_slot_that_never_carried_a_speaker_is_a_few_dozen_bytes() {
        assert!(std::mem::size_of::<SlotTx>() <= 40);
        let mid = SlotMid::new("3").unwrap_or_else(|| unreachable!());
        let mut slot = SlotTx::new(mid, 7, 111, 65_535, 1_000);
        assert!(slot.stream.is_none());
        let out = slot
            .stream()
            .rewriter
            .rewrite(ParticipantId(1), 10, 0, Instant::now());
        assert_eq!(out.map(|o| (o.seq, o.timestamp)), Some((65_535, 1_000)));
    }
}
