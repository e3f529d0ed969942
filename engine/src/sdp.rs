//! Reads a client's offer before str0m does and writes the slot sections of the
//! answer itself (the slot contract: `docs/protocol.md` §4).
//!
//! - At most one sending audio m-section, the microphone; str0m negotiates it (and
//!   any data channel, and rejects video), with ICE and DTLS for the whole bundle.
//! - Slot N is the N-th `recvonly` audio m-section. str0m never sees the slots:
//!   [`prepare_offer`] takes them out of the offer str0m reads, and [`answer`] writes
//!   their `sendonly` sections into str0m's answer (Chorus's SSRC, CNAME, the offer's
//!   Opus payload type and header extension ids, the bundle's ICE and DTLS
//!   attributes). A slot so costs str0m nothing: no media entry, no stream, no SDP.
//! - Audio sections beyond the room's slot count, and offered `inactive` ones, are
//!   answered `inactive` by Chorus too.
//! - An offer with nothing for str0m (a listener without a microphone) lends str0m
//!   its first slot section, made `inactive`, so that str0m still answers ICE and
//!   DTLS; Chorus writes that section of the answer itself.
//! - Video slot N is the N-th `recvonly` video m-section; Chorus answers it too
//!   (`sendonly`, its SSRC, the offer's VP8 and H.264 packetization-mode 1 payload
//!   types with their `nack`, `nack pli`, `ccm fir` and `transport-cc` feedback, the
//!   MID and transport-cc header extensions) and sends it itself (`egress.rs`). The
//!   camera and screen sections (`sendonly` from the client) are str0m's.

use std::fmt::Write as _;

use crate::client_event::VideoSource;
use crate::egress::{ExtIds, SlotMid, VideoExtIds};
use crate::video::packet::VideoCodec;

/// RFC 3264 §5.1 / RFC 8866 §6.7: the media direction of an m-section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

/// What the offer asks of one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlotOffer {
    pub mid: SlotMid,
    /// The Opus payload type the client offered on this section.
    pub pt: u8,
}

/// The result of [`prepare_offer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PreparedOffer {
    /// The offer as str0m should see it: without the sections Chorus answers.
    pub sdp: String,
    /// The microphone's mid, if the client sends audio.
    pub mic_mid: Option<String>,
    /// The microphone's section names no SSRC (`a=ssrc`): str0m can map its stream
    /// only by the MID header extension, which not every client sends (GStreamer's
    /// webrtcbin offers before its first buffer without either).
    pub mic_without_ssrc: bool,
    /// The slots, in slot order (at most `audio_slots`).
    pub slots: Vec<SlotOffer>,
    /// The header extension ids the first slot section offered (RFC 8843 §9.2: one
    /// mapping for the whole bundle).
    pub ext: ExtIds,
    /// The `sendonly` video sections (str0m negotiates them): camera and screen.
    pub publications: Vec<VideoOffer>,
    /// The video slots, in slot order (at most the room's count).
    pub video_slots: Vec<VideoSlotOffer>,
    /// The header extension ids the first video slot section offered.
    pub video_ext: VideoExtIds,
    /// Every offered section, in order, and who answers it.
    sections: Vec<Answerer>,
}

/// A `sendonly` video section of the offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VideoOffer {
    pub mid: String,
    pub source: VideoSource,
    /// Its `a=simulcast:send` rids in order, lowest resolution first (empty: no
    /// simulcast). Alternatives after the first of a layer are ignored.
    pub rids: Vec<String>,
}

/// What the offer asks of one video slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VideoSlotOffer {
    pub mid: SlotMid,
    /// The formats Chorus forwards, in the offer's order (never empty).
    pub formats: Vec<VideoFormat>,
}

/// A video format the client offered on a video slot, as Chorus answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VideoFormat {
    pub pt: u8,
    pub codec: VideoCodec,
    /// H.264's profile-level-id.
    pub profile: Option<u32>,
    /// The offer's `a=rtpmap` and `a=fmtp` values for it (after the payload type).
    rtpmap: String,
    fmtp: Option<String>,
    /// The offered `a=rtcp-fb` values for it that Chorus serves.
    feedback: Vec<String>,
}

/// The RTCP feedback a video slot answers (RFC 4585, RFC 5104, transport-cc).
const VIDEO_FEEDBACK: [&str; 4] = ["nack", "nack pli", "ccm fir", "transport-cc"];

/// Who writes the answer to one offered m-section.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answerer {
    /// str0m (the microphone, a data channel, rejected kinds).
    Str0m { mid: String },
    /// Chorus: slot `index`, `sendonly`.
    Slot { index: usize, proto: String },
    /// Chorus: video slot `index`, `sendonly`.
    VideoSlot { index: usize, proto: String },
    /// Chorus: `inactive` (beyond the slot count, or offered inactive).
    Inactive {
        /// `audio` or `video`.
        kind: String,
        mid: String,
        proto: String,
        /// The payload type answered (the offer's Opus, else its first format).
        pt: String,
        /// The offer's `a=rtpmap` value for `pt`, if any.
        rtpmap: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("offer has no m-sections")]
    NoMedia,
    #[error("m-section {0} has no a=mid (BUNDLE needs one per section)")]
    NoMid(usize),
    #[error("offer sends audio in more than one m-section; send the microphone in one")]
    SeveralMicrophones,
    #[error("offer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("m-section {0}: a mid is 1 to 16 visible ASCII characters (RFC 8843 §9.1)")]
    BadMid(usize),
    #[error("m-section {0}: malformed m= line")]
    BadMediaLine(usize),
    #[error("m-section {0}: payload type {1} is mapped more than once")]
    DuplicatePayloadType(usize, String),
    #[error("m-section {0}: payload type {1} repairs itself (apt={1})")]
    SelfRepair(usize, String),
    #[error("offer asks the node to be the DTLS client (a=setup:passive); offer a=setup:actpass or active")]
    PassiveSetup,
    #[error(
        "offer sends video in more than two m-sections; send the camera and the screen in one each"
    )]
    TooManyVideoSources,
    #[error(
        "payload type {0} is mapped to different codecs (or parameters) in different m-sections"
    )]
    ConflictingPayloadType(String),
    #[error("offer maps two sending video m-sections to {0}")]
    SourceTwice(&'static str),
    #[error("offer's sources name mid {0:?}, which is no sending video m-section")]
    UnknownSourceMid(String),
}

/// Why str0m's answer could not be completed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("the negotiated answer has no section for mid {0}")]
    MissingSection(String),
    #[error("the negotiated answer has no ICE and DTLS attributes")]
    NoTransport,
}

/// Why an offer got no answer: the text is what the client's `error` says.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NegotiateError {
    #[error("invalid offer: {0}")]
    Offer(#[from] OfferError),
    /// str0m's own text is logged, not sent: it names a memory address.
    #[error("invalid SDP: str0m could not parse it")]
    Sdp(str0m::error::SdpError),
    #[error("offer not accepted: {0}")]
    Refused(str0m::RtcError),
    #[error("offer has no Opus")]
    NoOpus,
    #[error("str0m answered without ICE credentials")]
    NoIceCredentials,
    #[error("offer not accepted: {0}")]
    Answer(#[from] AnswerError),
}

/// Largest offer accepted: room for well over a hundred m-sections.
pub(crate) const MAX_OFFER_BYTES: usize = 60 * 1024;

/// One m-section of the offer as read.
struct Section<'a> {
    kind: &'a str,
    port: &'a str,
    proto: &'a str,
    formats: Vec<&'a str>,
    /// Index of the `m=` line in `lines`, and one past the section's last line.
    start: usize,
    end: usize,
    mid: Option<&'a str>,
    direction: Direction,
    /// Index of the direction attribute line, if present.
    direction_line: Option<usize>,
    /// `a=bundle-only` (RFC 8843 §6): port 0 then means "only in the bundle", not
    /// closed. Clients with the `max-bundle` policy offer every section but the first
    /// so (GStreamer's webrtcbin does by default).
    bundle_only: bool,
}

impl Section<'_> {
    /// Whether the client wants this section: a port other than 0, or bundle-only.
    fn open(&self) -> bool {
        self.port != "0" || self.bundle_only
    }

    /// Whether `line` is no payload-type attribute (`a=rtpmap`, `a=fmtp`,
    /// `a=rtcp-fb`) or one of a payload type the m= line lists (`a=rtcp-fb:*` too).
    fn lists_payload_type_of(&self, line: &str) -> bool {
        let value = ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"]
            .iter()
            .find_map(|p| line.strip_prefix(p));
        match value {
            None => true,
            Some(v) => {
                let pt = v.split(' ').next().unwrap_or_default();
                pt == "*" || self.formats.contains(&pt)
            }
        }
    }
    /// The section's attribute values named `name` (`a=name:value`).
    fn attributes<'l>(&self, lines: &'l [&str], name: &str) -> impl Iterator<Item = &'l str> {
        let prefix = format!("a={name}:");
        lines[self.start..self.end]
            .iter()
            .filter_map(move |l| l.strip_prefix(prefix.as_str()))
    }

    /// The offered Opus payload type, if the m= line lists it.
    fn opus(&self, lines: &[&str]) -> Option<u8> {
        self.attributes(lines, "rtpmap").find_map(|v| {
            let (pt, codec) = v.split_once(' ')?;
            let is_opus = codec
                .get(..10)
                .is_some_and(|c| c.eq_ignore_ascii_case("opus/48000"));
            (is_opus && self.formats.contains(&pt))
                .then(|| pt.parse::<u8>().ok())
                .flatten()
                .filter(|pt| *pt < 128)
        })
    }

    /// RFC 8285: the id offered for extension `uri`.
    fn extension(&self, lines: &[&str], uri: &str) -> Option<u8> {
        self.attributes(lines, "extmap").find_map(|v| {
            let (id, rest) = v.split_once(' ')?;
            let id = id.split('/').next()?;
            (rest.split(' ').next() == Some(uri))
                .then(|| id.parse::<u8>().ok())
                .flatten()
                .filter(|id| (1..=14).contains(id))
        })
    }
}

const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
const TWCC_URI: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// What the room allows and the client says of its video.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct VideoPolicy<'a> {
    /// Video slots the room gives each client (0: video sections are rejected).
    pub slots: usize,
    /// The offer's `sources`: each sending video mid's source.
    pub sources: &'a [(String, VideoSource)],
}

impl Section<'_> {
    /// The value of the section's attribute `name` for payload type `pt`
    /// (`a=rtpmap:96 VP8/90000` → `VP8/90000`).
    fn format_attribute<'l>(&self, lines: &'l [&str], name: &str, pt: &str) -> Option<&'l str> {
        self.attributes(lines, name)
            .find_map(|v| v.split_once(' ').filter(|(p, _)| *p == pt).map(|(_, v)| v))
    }

    /// Chorus's `inactive` answer to this section: the offer's Opus payload type (an
    /// audio section) or its first format.
    fn inactive(&self, lines: &[&str], mid: &str) -> Answerer {
        let pt = self
            .opus(lines)
            .map(|pt| pt.to_string())
            .or_else(|| self.formats.first().map(|f| (*f).to_owned()))
            .unwrap_or_else(|| "0".to_owned());
        let rtpmap = self
            .format_attribute(lines, "rtpmap", &pt)
            .map(str::to_owned);
        Answerer::Inactive {
            kind: self.kind.to_owned(),
            mid: mid.to_owned(),
            proto: self.proto.to_owned(),
            pt,
            rtpmap,
        }
    }

    /// The formats of a video slot section Chorus forwards, in the offer's order:
    /// VP8, and H.264 in packetization mode 1 (what browsers send).
    fn video_formats(&self, lines: &[&str]) -> Vec<VideoFormat> {
        let mut formats: Vec<VideoFormat> = Vec::new();
        for f in &self.formats {
            let Ok(pt) = f.parse::<u8>() else {
                continue;
            };
            if pt >= 128 || formats.iter().any(|x| x.pt == pt) {
                continue;
            }
            let Some(rtpmap) = self.format_attribute(lines, "rtpmap", f) else {
                continue;
            };
            let fmtp = self.format_attribute(lines, "fmtp", f);
            let param = |key: &str| {
                fmtp.into_iter()
                    .flat_map(|p| p.split(';'))
                    .find_map(|kv| kv.trim().split_once('=').filter(|(k, _)| *k == key))
                    .map(|(_, v)| v.trim())
            };
            let name = rtpmap.split('/').next().unwrap_or_default();
            let codec = if name.eq_ignore_ascii_case("VP8") {
                VideoCodec::Vp8
            } else if name.eq_ignore_ascii_case("H264") && param("packetization-mode") == Some("1")
            {
                VideoCodec::H264
            } else {
                continue;
            };
            let profile = (codec == VideoCodec::H264)
                .then(|| param("profile-level-id"))
                .flatten()
                .and_then(|v| u32::from_str_radix(v, 16).ok())
                .filter(|v| *v <= 0xff_ffff);
            let feedback = self
                .attributes(lines, "rtcp-fb")
                .filter_map(|v| v.split_once(' '))
                .filter(|(p, fb)| (*p == *f || *p == "*") && VIDEO_FEEDBACK.contains(&fb.trim()))
                .map(|(_, fb)| fb.trim().to_owned())
                .fold(Vec::new(), |mut all: Vec<String>, fb| {
                    if !all.contains(&fb) {
                        all.push(fb);
                    }
                    all
                });
            formats.push(VideoFormat {
                pt,
                codec,
                profile,
                rtpmap: rtpmap.to_owned(),
                fmtp: fmtp.map(str::to_owned),
                feedback,
            });
        }
        formats
    }

    /// The rids of `a=simulcast:send`, first alternative of each layer, in order.
    fn simulcast_send(&self, lines: &[&str]) -> Vec<String> {
        let Some(value) = self.attributes(lines, "simulcast").next() else {
            return Vec::new();
        };
        let mut parts = value.split_whitespace();
        let mut rids = Vec::new();
        while let (Some(dir), Some(list)) = (parts.next(), parts.next()) {
            if dir != "send" {
                continue;
            }
            for layer in list.split(';') {
                let first = layer.split(',').next().unwrap_or_default();
                let rid = first.trim_start_matches('~');
                if !rid.is_empty() && rid.len() <= 16 && !rids.iter().any(|r| r == rid) {
                    rids.push(rid.to_owned());
                }
            }
        }
        rids
    }
}

/// RFC 7587 writes Opus as `opus/48000/2`; some clients (GStreamer's webrtcbin when an
/// app builds caps without `encoding-params=2`) write `OPUS/48000`. That is Opus all
/// the same: such lines are rewritten as `opus/48000/2` (`None`: nothing to rewrite).
fn opus_with_channels(sdp: &str) -> Option<String> {
    let bare = |l: &str| {
        l.strip_prefix("a=rtpmap:")
            .and_then(|v| v.split_once(' '))
            .is_some_and(|(_, codec)| codec.trim_end().eq_ignore_ascii_case("opus/48000"))
    };
    if !sdp.lines().any(bare) {
        return None;
    }
    let mut out = String::with_capacity(sdp.len() + 16);
    for line in sdp.split_inclusive('\n') {
        let content = line.trim_end_matches(['\r', '\n']);
        if bare(content) {
            let pt = content.split_once(' ').map_or("", |(pt, _)| pt);
            out.push_str(pt);
            out.push_str(" opus/48000/2");
            out.push_str(&line[content.len()..]);
        } else {
            out.push_str(line);
        }
    }
    Some(out)
}

/// Splits the offer into what str0m negotiates and what Chorus answers.
pub(crate) fn prepare_offer(
    sdp: &str,
    audio_slots: usize,
    video: VideoPolicy<'_>,
) -> Result<PreparedOffer, OfferError> {
    if sdp.len() > MAX_OFFER_BYTES {
        return Err(OfferError::TooLarge(MAX_OFFER_BYTES));
    }
    let normalized = opus_with_channels(sdp);
    let sdp = normalized.as_deref().unwrap_or(sdp);
    let lines: Vec<&str> = sdp.lines().map(str::trim_end).collect();
    let sections = read_sections(&lines)?;
    let Some(first) = sections.first() else {
        return Err(OfferError::NoMedia);
    };
    let session = &lines[..first.start];

    let mut answerers = Vec::with_capacity(sections.len());
    // Per section given to str0m: its index, and the direction and port it should see.
    let mut for_str0m: Vec<(usize, Option<&str>, bool)> = Vec::new();
    let mut mic_mid = None;
    let mut mic_without_ssrc = false;
    let mut slots: Vec<SlotOffer> = Vec::new();
    let mut ext = ExtIds::default();
    let mut publications: Vec<VideoOffer> = Vec::new();
    let mut video_slots: Vec<VideoSlotOffer> = Vec::new();
    let mut video_ext = VideoExtIds::default();
    for (named, _) in video.sources {
        let sends_video = sections.iter().any(|s| {
            s.kind == "video"
                && s.mid == Some(named.as_str())
                && matches!(s.direction, Direction::SendRecv | Direction::SendOnly)
        });
        if !sends_video {
            return Err(OfferError::UnknownSourceMid(named.clone()));
        }
    }
    for (n, s) in sections.iter().enumerate() {
        let mid = s.mid.ok_or(OfferError::NoMid(n))?;
        if mid.is_empty() || mid.trim() != mid {
            return Err(OfferError::BadMid(n));
        }
        let open = s.open();
        match (s.kind, s.direction) {
            ("audio", Direction::SendRecv | Direction::SendOnly) if open => {
                if mic_mid.is_some() {
                    return Err(OfferError::SeveralMicrophones);
                }
                mic_mid = Some(mid.to_owned());
                mic_without_ssrc = s.attributes(&lines, "ssrc").next().is_none();
                // We never send on the microphone's section: answer recvonly.
                let direction = (s.direction == Direction::SendRecv).then_some("a=sendonly");
                for_str0m.push((n, direction, false));
                answerers.push(Answerer::Str0m {
                    mid: mid.to_owned(),
                });
            }
            ("audio", Direction::RecvOnly | Direction::Inactive) if open => {
                let slot_mid = SlotMid::new(mid).ok_or(OfferError::BadMid(n))?;
                let opus = s.opus(&lines);
                match opus {
                    Some(pt) if s.direction == Direction::RecvOnly && slots.len() < audio_slots => {
                        if slots.is_empty() {
                            ext = ExtIds {
                                audio_level: s.extension(&lines, AUDIO_LEVEL_URI),
                                mid: s.extension(&lines, MID_URI),
                            };
                        }
                        answerers.push(Answerer::Slot {
                            index: slots.len(),
                            proto: s.proto.to_owned(),
                        });
                        slots.push(SlotOffer { mid: slot_mid, pt });
                    }
                    _ => answerers.push(s.inactive(&lines, mid)),
                }
            }
            ("video", Direction::SendRecv | Direction::SendOnly) if open && video.slots > 0 => {
                if publications.len() == 2 {
                    return Err(OfferError::TooManyVideoSources);
                }
                let named = video
                    .sources
                    .iter()
                    .find(|(m, _)| m == mid)
                    .map(|(_, source)| *source);
                // Unnamed: the first free of camera, then screen.
                let taken = |src: VideoSource| publications.iter().any(|p| p.source == src);
                let source = match named {
                    Some(src) if taken(src) => {
                        return Err(OfferError::SourceTwice(match src {
                            VideoSource::Camera => "camera",
                            VideoSource::Screen => "screen",
                        }))
                    }
                    Some(src) => src,
                    None if taken(VideoSource::Camera) => VideoSource::Screen,
                    None => VideoSource::Camera,
                };
                publications.push(VideoOffer {
                    mid: mid.to_owned(),
                    source,
                    rids: s.simulcast_send(&lines),
                });
                // We never send on a publishing section: answer recvonly.
                let direction = (s.direction == Direction::SendRecv).then_some("a=sendonly");
                for_str0m.push((n, direction, false));
                answerers.push(Answerer::Str0m {
                    mid: mid.to_owned(),
                });
            }
            ("video", Direction::RecvOnly) if open && video_slots.len() < video.slots => {
                let slot_mid = SlotMid::new(mid).ok_or(OfferError::BadMid(n))?;
                let formats = s.video_formats(&lines);
                if formats.is_empty() {
                    // Nothing Chorus forwards (VP9 or AV1 only): not a slot.
                    answerers.push(s.inactive(&lines, mid));
                    continue;
                }
                if video_slots.is_empty() {
                    video_ext = VideoExtIds {
                        mid: s.extension(&lines, MID_URI),
                        twcc: s.extension(&lines, TWCC_URI),
                    };
                }
                answerers.push(Answerer::VideoSlot {
                    index: video_slots.len(),
                    proto: s.proto.to_owned(),
                });
                video_slots.push(VideoSlotOffer {
                    mid: slot_mid,
                    formats,
                });
            }
            // An audio section the client closed (port 0), a data channel (v1 has
            // no use for one: refused rather than leave str0m's SCTP to clients), video
            // (not yet) and anything else: rejected, RFC 3264 §6, port 0, and out of
            // the bundle str0m sees (str0m would take a port-0 section it finds in
            // the BUNDLE group for open).
            _ => {
                for_str0m.push((n, Some("a=inactive"), true));
                answerers.push(Answerer::Str0m {
                    mid: mid.to_owned(),
                });
            }
        }
    }
    // A listener without a microphone: str0m still needs a section to answer ICE and
    // DTLS in. It gets the first one Chorus answers, made inactive.
    if for_str0m.iter().all(|(_, _, reject)| *reject) {
        if let Some(n) = answerers
            .iter()
            .position(|a| !matches!(a, Answerer::Str0m { .. }))
        {
            for_str0m.push((n, Some("a=inactive"), false));
        }
    }

    // The offer str0m reads: the session lines (its bundle narrowed to the sections
    // it sees) and its sections.
    let str0m_mids: Vec<&str> = for_str0m
        .iter()
        .filter(|(_, _, reject)| !reject)
        .filter_map(|(n, _, _)| sections[*n].mid)
        .collect();
    // str0m holds one payload-type table for the whole session: a number mapped to
    // one codec (or one codec's parameters) in a section and another in the next
    // trips the same assertion.
    let mut session_pts: Vec<(&str, &str, &str)> = Vec::new();
    for (n, _, reject) in &for_str0m {
        if !reject {
            let s = &sections[*n];
            check_for_str0m(s, &lines, *n)?;
            for v in s.attributes(&lines, "rtpmap") {
                let (pt, codec) = v.split_once(' ').unwrap_or((v, ""));
                if !s.formats.contains(&pt) {
                    continue;
                }
                let params = s.format_attribute(&lines, "fmtp", pt).unwrap_or("");
                match session_pts.iter().find(|(p, _, _)| *p == pt) {
                    Some((_, c, f)) if !c.eq_ignore_ascii_case(codec) || *f != params => {
                        return Err(OfferError::ConflictingPayloadType(pt.to_owned()));
                    }
                    Some(_) => {}
                    None => session_pts.push((pt, codec, params)),
                }
            }
        }
    }
    let mut out = String::with_capacity(sdp.len());
    for line in session {
        match line.strip_prefix("a=group:BUNDLE") {
            Some(group) => {
                let kept: Vec<&str> = group
                    .split_whitespace()
                    .filter(|m| str0m_mids.contains(m))
                    .collect();
                if !kept.is_empty() {
                    push_line(&mut out, &format!("a=group:BUNDLE {}", kept.join(" ")));
                }
            }
            None => push_line(&mut out, line),
        }
    }
    for (n, direction, reject) in &for_str0m {
        let s = &sections[*n];
        for (i, line) in lines[s.start..s.end].iter().enumerate() {
            let i = s.start + i;
            // Attributes of payload types the m= line does not list: str0m 0.25 takes
            // them in anyway, and one mapped twice (Opus and RTX on one number) trips
            // an assertion in it (`Pt locked multiple times`).
            if i != s.start && !s.lists_payload_type_of(line) {
                continue;
            }
            // Audio stays lean: transport-wide congestion control is for video (its
            // per-packet records would cost every voice participant).
            let twcc = line
                .strip_prefix("a=extmap:")
                .is_some_and(|v| v.split_whitespace().nth(1) == Some(TWCC_URI))
                || (line.starts_with("a=rtcp-fb:") && line.ends_with(" transport-cc"));
            if s.kind == "audio" && twcc {
                continue;
            }
            if i == s.start {
                // Rejected: port 0. Bundle-only: str0m takes port 0 for closed, so it
                // gets the discard port browsers write for bundled sections.
                let port = match (*reject, s.bundle_only && s.port == "0") {
                    (true, _) => Some("0"),
                    (false, true) => Some("9"),
                    (false, false) => None,
                };
                match port {
                    Some(port) => {
                        let formats = s.formats.join(" ");
                        push_line(
                            &mut out,
                            &format!("m={} {port} {} {formats}", s.kind, s.proto),
                        );
                    }
                    None => push_line(&mut out, line),
                }
                if let (Some(d), None) = (direction, s.direction_line) {
                    push_line(&mut out, d);
                }
            } else if Some(i) == s.direction_line {
                push_line(&mut out, direction.unwrap_or(line));
            } else {
                push_line(&mut out, line);
            }
        }
    }
    Ok(PreparedOffer {
        sdp: out,
        mic_mid,
        mic_without_ssrc,
        slots,
        ext,
        publications,
        video_slots,
        video_ext,
        sections: answerers,
    })
}

/// What str0m must not be given in a section it negotiates: a payload type mapped
/// twice, an RTX payload type repairing itself, or `a=setup:passive` (the node is the
/// DTLS server; as client it would open dimpl's client-side parsers to the peer).
fn check_for_str0m(s: &Section<'_>, lines: &[&str], n: usize) -> Result<(), OfferError> {
    let mut mapped: Vec<&str> = Vec::new();
    for v in s.attributes(lines, "rtpmap") {
        let pt = v.split(' ').next().unwrap_or_default();
        if !s.formats.contains(&pt) {
            continue;
        }
        if mapped.contains(&pt) {
            return Err(OfferError::DuplicatePayloadType(n, pt.to_owned()));
        }
        mapped.push(pt);
    }
    for v in s.attributes(lines, "fmtp") {
        let (pt, params) = v.split_once(' ').unwrap_or((v, ""));
        let repairs_itself = params
            .split(';')
            .filter_map(|p| p.trim().strip_prefix("apt="))
            .any(|apt| apt == pt);
        if repairs_itself && s.formats.contains(&pt) {
            return Err(OfferError::SelfRepair(n, pt.to_owned()));
        }
    }
    if s.attributes(lines, "setup").any(|v| v.trim() == "passive") {
        return Err(OfferError::PassiveSetup);
    }
    Ok(())
}

fn read_sections<'a>(lines: &[&'a str]) -> Result<Vec<Section<'a>>, OfferError> {
    let mut sections: Vec<Section<'a>> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(rest) = line.strip_prefix("m=") {
            if let Some(last) = sections.last_mut() {
                last.end = i;
            }
            let mut parts = rest.split(' ').filter(|p| !p.is_empty());
            let (Some(kind), Some(port), Some(proto)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(OfferError::BadMediaLine(sections.len()));
            };
            sections.push(Section {
                kind,
                port,
                proto,
                formats: parts.collect(),
                start: i,
                end: lines.len(),
                mid: None,
                direction: Direction::SendRecv,
                direction_line: None,
                bundle_only: false,
            });
            continue;
        }
        let Some(section) = sections.last_mut() else {
            continue;
        };
        if let Some(mid) = line.strip_prefix("a=mid:") {
            // Kept as written: str0m reads the same line (a mid with spaces around
            // it is refused below rather than read two ways).
            section.mid = Some(mid);
        }
        if *line == "a=bundle-only" {
            section.bundle_only = true;
        }
        let direction = match *line {
            "a=sendrecv" => Some(Direction::SendRecv),
            "a=sendonly" => Some(Direction::SendOnly),
            "a=recvonly" => Some(Direction::RecvOnly),
            "a=inactive" => Some(Direction::Inactive),
            _ => None,
        };
        if let Some(d) = direction {
            section.direction = d;
            section.direction_line = Some(i);
        }
    }
    Ok(sections)
}

/// The bundle's ICE and DTLS attributes, copied from str0m's answer into the
/// sections Chorus writes (candidates too: str0m writes them in its first section
/// only, which may be one Chorus answers instead).
const TRANSPORT: [&str; 7] = [
    "a=candidate:",
    "a=end-of-candidates",
    "a=ice-ufrag:",
    "a=ice-pwd:",
    "a=ice-options:",
    "a=fingerprint:",
    "a=setup:",
];

/// The whole answer: str0m's `negotiated` answer with the sections Chorus answers
/// put back in the offer's order, slot `i` sending on `ssrcs[i]` with `cname`.
pub(crate) fn answer(
    prepared: &PreparedOffer,
    negotiated: &str,
    ssrcs: &[u32],
    video_ssrcs: &[u32],
    cname: &str,
) -> Result<String, AnswerError> {
    let lines: Vec<&str> = negotiated.lines().map(str::trim_end).collect();
    let first = lines
        .iter()
        .position(|l| l.starts_with("m="))
        .unwrap_or(lines.len());
    let mut theirs: Vec<(&str, &[&str])> = Vec::new();
    let mut start = first;
    for i in first + 1..=lines.len() {
        if i == lines.len() || lines[i].starts_with("m=") {
            let section = &lines[start..i];
            let mid = section
                .iter()
                .find_map(|l| l.strip_prefix("a=mid:"))
                .unwrap_or_default()
                .trim();
            theirs.push((mid, section));
            start = i;
        }
    }
    let transport: Vec<&str> = theirs
        .iter()
        .find(|(_, s)| s.first().and_then(|m| m.split(' ').nth(1)) != Some("0"))
        .map(|(_, s)| {
            s.iter()
                .copied()
                .filter(|l| TRANSPORT.iter().any(|p| l.starts_with(p)))
                .collect()
        })
        .unwrap_or_default();
    let ours = prepared
        .sections
        .iter()
        .any(|a| !matches!(a, Answerer::Str0m { .. }));
    if ours && transport.is_empty() {
        return Err(AnswerError::NoTransport);
    }
    let their_bundle: Vec<&str> = lines[..first]
        .iter()
        .find_map(|l| l.strip_prefix("a=group:BUNDLE"))
        .map(|g| g.split_whitespace().collect())
        .unwrap_or_default();

    let mut out = String::with_capacity(negotiated.len() + prepared.sections.len() * 700);
    for line in &lines[..first] {
        if line.starts_with("a=group:BUNDLE") {
            let mut group = String::from("a=group:BUNDLE");
            for a in &prepared.sections {
                let mid = match a {
                    Answerer::Str0m { mid } if their_bundle.contains(&mid.as_str()) => mid.as_str(),
                    Answerer::Str0m { .. } => continue,
                    Answerer::Slot { index, .. } => prepared.slots[*index].mid.as_str(),
                    Answerer::VideoSlot { index, .. } => prepared.video_slots[*index].mid.as_str(),
                    Answerer::Inactive { mid, .. } => mid.as_str(),
                };
                group.push(' ');
                group.push_str(mid);
            }
            push_line(&mut out, &group);
        } else {
            push_line(&mut out, line);
        }
    }
    for a in &prepared.sections {
        match a {
            Answerer::Str0m { mid } => {
                let (_, section) = theirs
                    .iter()
                    .find(|(m, _)| m == mid)
                    .ok_or_else(|| AnswerError::MissingSection(mid.clone()))?;
                let offered = offered_formats(&prepared.sdp, mid);
                for line in *section {
                    match line.strip_prefix("m=") {
                        // The client's order of preference, not str0m's: a client
                        // sends the first codec of the answer (`videoCodec: 'h264'`).
                        Some(m) if !offered.is_empty() => {
                            push_line(&mut out, &format!("m={}", in_offered_order(m, &offered)));
                        }
                        _ => push_line(&mut out, line),
                    }
                }
            }
            Answerer::Slot { index, proto } => {
                let slot = &prepared.slots[*index];
                let ssrc = ssrcs.get(*index).copied().unwrap_or_default();
                let pt = slot.pt;
                section_head(
                    &mut out,
                    "audio",
                    proto,
                    [pt],
                    &transport,
                    slot.mid.as_str(),
                );
                if let Some(id) = prepared.ext.audio_level {
                    let _ = write!(out, "a=extmap:{id} {AUDIO_LEVEL_URI}\r\n");
                }
                if let Some(id) = prepared.ext.mid {
                    let _ = write!(out, "a=extmap:{id} {MID_URI}\r\n");
                }
                let _ = write!(
                    out,
                    "a=sendonly\r\na=msid:{cname} slot{index}\r\na=rtcp-mux\r\n\
                     a=rtpmap:{pt} opus/48000/2\r\na=fmtp:{pt} minptime=10;useinbandfec=1\r\n\
                     a=ssrc:{ssrc} cname:{cname}\r\na=ssrc:{ssrc} msid:{cname} slot{index}\r\n"
                );
            }
            Answerer::VideoSlot { index, proto } => {
                let slot = &prepared.video_slots[*index];
                let ssrc = video_ssrcs.get(*index).copied().unwrap_or_default();
                let pts = slot.formats.iter().map(|f| f.pt);
                section_head(&mut out, "video", proto, pts, &transport, slot.mid.as_str());
                if let Some(id) = prepared.video_ext.mid {
                    let _ = write!(out, "a=extmap:{id} {MID_URI}\r\n");
                }
                if let Some(id) = prepared.video_ext.twcc {
                    let _ = write!(out, "a=extmap:{id} {TWCC_URI}\r\n");
                }
                let _ = write!(
                    out,
                    "a=sendonly\r\na=msid:{cname} video{index}\r\na=rtcp-mux\r\n"
                );
                for f in &slot.formats {
                    let pt = f.pt;
                    let _ = write!(out, "a=rtpmap:{pt} {}\r\n", f.rtpmap);
                    for fb in &f.feedback {
                        // Transport-cc feedback only where the extension is answered.
                        if fb == "transport-cc" && prepared.video_ext.twcc.is_none() {
                            continue;
                        }
                        let _ = write!(out, "a=rtcp-fb:{pt} {fb}\r\n");
                    }
                    if let Some(fmtp) = &f.fmtp {
                        let _ = write!(out, "a=fmtp:{pt} {fmtp}\r\n");
                    }
                }
                let _ = write!(
                    out,
                    "a=ssrc:{ssrc} cname:{cname}\r\na=ssrc:{ssrc} msid:{cname} video{index}\r\n"
                );
            }
            Answerer::Inactive {
                kind,
                mid,
                proto,
                pt,
                rtpmap,
            } => {
                section_head(&mut out, kind, proto, [pt], &transport, mid);
                out.push_str("a=inactive\r\na=rtcp-mux\r\n");
                if let Some(codec) = rtpmap {
                    let _ = write!(out, "a=rtpmap:{pt} {codec}\r\n");
                }
            }
        }
    }
    Ok(candidates_in_every_section(&out))
}

/// The start of a section Chorus answers: its `m=` line (port 9, `formats`), the
/// connection line, the bundle's transport attributes and its mid.
fn section_head<F: std::fmt::Display>(
    out: &mut String,
    kind: &str,
    proto: &str,
    formats: impl IntoIterator<Item = F>,
    transport: &[&str],
    mid: &str,
) {
    let _ = write!(out, "m={kind} 9 {proto}");
    for f in formats {
        let _ = write!(out, " {f}");
    }
    out.push_str("\r\nc=IN IP4 0.0.0.0\r\n");
    for line in transport {
        push_line(out, line);
    }
    let _ = write!(out, "a=mid:{mid}\r\n");
}

/// Whether `sdp` has a video section that is not rejected (port 0).
pub(crate) fn offers_video(sdp: &str) -> bool {
    sdp.lines()
        .any(|l| l.starts_with("m=video ") && !l.starts_with("m=video 0 "))
}

/// The payload types of section `mid`'s `m=` line in `sdp`, in the offer's order.
fn offered_formats<'a>(sdp: &'a str, mid: &str) -> Vec<&'a str> {
    let mut current: Option<&str> = None;
    for line in sdp.lines().map(str::trim_end) {
        if line.starts_with("m=") {
            current = Some(line);
        } else if line.strip_prefix("a=mid:").map(str::trim) == Some(mid) {
            return current
                .map(|m| m.split(' ').skip(3).collect())
                .unwrap_or_default();
        }
    }
    Vec::new()
}

/// An `m=` line's value (`video 9 UDP/TLS/RTP/SAVPF 96 98 …`) with its payload types
/// ordered as `offered` lists them (any it does not list last, as they were).
fn in_offered_order(m: &str, offered: &[&str]) -> String {
    let parts: Vec<&str> = m.split(' ').collect();
    let (head, formats) = parts.split_at(parts.len().min(3));
    let mut formats = formats.to_vec();
    formats.sort_by_key(|f| offered.iter().position(|o| o == f).unwrap_or(usize::MAX));
    let mut out = head.join(" ");
    for f in formats {
        out.push(' ');
        out.push_str(f);
    }
    out
}

fn push_line(out: &mut String, line: &str) {
    out.push_str(line);
    out.push_str("\r\n");
}

/// Copies the answer's ICE candidates into every m-section that has none.
///
/// str0m writes them into the first section only, which is enough under BUNDLE, but
/// some clients (aiortc) read them from the last one: the protocol promises them in
/// every section.
pub(crate) fn candidates_in_every_section(answer: &str) -> String {
    let lines: Vec<&str> = answer.lines().map(str::trim_end).collect();
    let candidates: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("a=candidate:") || *l == "a=end-of-candidates")
        .collect();
    // Only the first section's set: later sections would repeat them.
    let mut seen = std::collections::HashSet::new();
    let candidates: Vec<&str> = candidates.into_iter().filter(|c| seen.insert(*c)).collect();
    let mut out: Vec<&str> = Vec::with_capacity(lines.len() + candidates.len() * 8);
    let mut in_section = false;
    let mut section_has = false;
    for line in lines {
        if line.starts_with("m=") {
            if in_section && !section_has {
                out.extend(&candidates);
            }
            in_section = true;
            section_has = false;
        }
        if line.starts_with("a=candidate:") {
            section_has = true;
        }
        out.push(line);
    }
    if in_section && !section_has {
        out.extend(&candidates);
    }
    let mut s = out.join("\r\n");
    s.push_str("\r\n");
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn offer(sections: &[(&str, &str, Option<&str>)]) -> String {
        let mut s = String::from("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
        for (kind, mid, dir) in sections {
            s +=
                &format!("m={kind} 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:{mid}\r\n");
            if let Some(d) = dir {
                s += &format!("a={d}\r\n");
            }
            s += "a=rtpmap:111 opus/48000/2\r\n";
        }
        s
    }

    fn mids(p: &PreparedOffer) -> Vec<String> {
        p.slots.iter().map(|s| s.mid.to_string()).collect()
    }

    /// The sections of `sdp` as (mid, text) in order.
    fn sections(sdp: &str) -> Vec<(String, String)> {
        sdp.split("m=")
            .skip(1)
            .map(|s| {
                let mid = s
                    .lines()
                    .find_map(|l| l.strip_prefix("a=mid:"))
                    .unwrap_or_default()
                    .to_owned();
                (mid, format!("m={s}"))
            })
            .collect()
    }

    #[test]
    fn str0m_sees_the_microphone_and_chorus_keeps_the_slots() {
        let mut sdp = offer(&[
            ("audio", "0", Some("sendonly")),
            ("audio", "1", Some("recvonly")),
            ("audio", "2", Some("recvonly")),
            ("audio", "3", Some("recvonly")),
        ]);
        sdp = sdp.replace("t=0 0\r\n", "t=0 0\r\na=group:BUNDLE 0 1 2 3\r\n");
        let p = prepare_offer(&sdp, 2, VideoPolicy::default()).unwrap();
        assert_eq!(p.mic_mid.as_deref(), Some("0"));
        assert_eq!(mids(&p), vec!["1", "2"]);
        assert_eq!(p.slots[0].pt, 111);
        let seen: Vec<String> = sections(&p.sdp).into_iter().map(|(m, _)| m).collect();
        assert_eq!(seen, vec!["0"], "{}", p.sdp);
        assert!(p.sdp.contains("a=group:BUNDLE 0\r\n"), "{}", p.sdp);
        assert_eq!(
            p.sections[3],
            Answerer::Inactive {
                kind: "audio".into(),
                mid: "3".into(),
                proto: "UDP/TLS/RTP/SAVPF".into(),
                pt: "111".into(),
                rtpmap: Some("opus/48000/2".into()),
            }
        );
    }

    #[test]
    fn what_str0m_must_not_see_is_refused_or_left_out() {
        // A data channel and a closed audio section: rejected, out of str0m's bundle.
        let mut sdp = offer(&[
            ("audio", "m", Some("sendonly")),
            ("audio", "1", Some("recvonly")),
            ("audio", "x", Some("recvonly")),
        ]);
        sdp = sdp.replace("t=0 0\r\n", "t=0 0\r\na=group:BUNDLE m 1 x d\r\n");
        sdp = sdp.replace(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:x\r\n",
            "m=audio 0 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:x\r\n",
        );
        sdp += "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:d\r\n";
        // Attributes of a payload type off the m= line.
        sdp = sdp.replacen(
            "a=rtpmap:111 opus/48000/2\r\n",
            "a=rtpmap:111 opus/48000/2\r\na=rtpmap:96 rtx/48000\r\na=fmtp:96 apt=111\r\n",
            1,
        );
        let p = prepare_offer(&sdp, 8, VideoPolicy::default()).unwrap();
        assert!(p.sdp.contains("a=group:BUNDLE m\r\n"), "{}", p.sdp);
        assert!(p.sdp.contains("m=application 0 "), "{}", p.sdp);
        assert!(p.sdp.contains("m=audio 0 "), "{}", p.sdp);
        assert!(!p.sdp.contains(":96 "), "{}", p.sdp);
        // Mapped twice; RTX repairing itself; the node as DTLS client.
        let mic = offer(&[("audio", "m", Some("sendonly"))]);
        let twice = mic.replace(
            "a=rtpmap:111 opus/48000/2\r\n",
            "a=rtpmap:111 opus/48000/2\r\na=rtpmap:111 rtx/48000\r\n",
        );
        assert_eq!(
            prepare_offer(&twice, 8, VideoPolicy::default()),
            Err(OfferError::DuplicatePayloadType(0, "111".into()))
        );
        let selfish = mic.replace("SAVPF 111", "SAVPF 111 97").replace(
            "a=rtpmap:111 opus/48000/2\r\n",
            "a=rtpmap:111 opus/48000/2\r\na=rtpmap:97 rtx/48000\r\na=fmtp:97 apt=97\r\n",
        );
        assert_eq!(
            prepare_offer(&selfish, 8, VideoPolicy::default()),
            Err(OfferError::SelfRepair(0, "97".into()))
        );
        // One number, two codecs, in two sections str0m negotiates.
        let across = offer(&[
            ("audio", "m", Some("sendonly")),
            ("video", "v", Some("sendonly")),
        ])
        .replacen("a=rtpmap:111 opus/48000/2", "a=rtpmap:111 VP8/90000", 2)
        .replacen("a=rtpmap:111 VP8/90000", "a=rtpmap:111 opus/48000/2", 1);
        let video = VideoPolicy {
            slots: 1,
            sources: &[],
        };
        assert_eq!(
            prepare_offer(&across, 8, video),
            Err(OfferError::ConflictingPayloadType("111".into()))
        );
        let passive = mic.replace("a=mid:m\r\n", "a=mid:m\r\na=setup:passive\r\n");
        assert_eq!(
            prepare_offer(&passive, 8, VideoPolicy::default()),
            Err(OfferError::PassiveSetup)
        );
        let active = mic.replace("a=mid:m\r\n", "a=mid:m\r\na=setup:active\r\n");
        assert!(prepare_offer(&active, 8, VideoPolicy::default()).is_ok());
    }

    #[test]
    fn a_mid_with_spaces_around_it_is_refused() {
        // str0m would read `a=mid: x` as `_x`, Chorus as `x`: one offer, two mids.
        let sdp = offer(&[("audio", "m", Some("sendonly"))]).replace("a=mid:m", "a=mid: m");
        assert_eq!(
            prepare_offer(&sdp, 8, VideoPolicy::default()),
            Err(OfferError::BadMid(0))
        );
    }

    #[test]
    fn bundle_only_sections_are_open() {
        // webrtcbin's max-bundle offer: the first section carries the transport, the
        // others port 0 and a=bundle-only (RFC 8843 §6). Closed sections stay closed.
        let mut sdp = offer(&[
            ("audio", "0", Some("sendonly")),
            ("audio", "1", Some("recvonly")),
            ("audio", "2", Some("recvonly")),
            ("audio", "3", Some("recvonly")),
        ]);
        sdp = sdp.replace("t=0 0\r\n", "t=0 0\r\na=group:BUNDLE 0 1 2\r\n");
        for mid in ["1", "2", "3"] {
            sdp = sdp.replace(
                &format!("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:{mid}\r\n"),
                &format!(
                    "m=audio 0 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:{mid}\r\n{}",
                    if mid == "3" { "" } else { "a=bundle-only\r\n" }
                ),
            );
        }
        let p = prepare_offer(&sdp, 8, VideoPolicy::default()).unwrap();
        assert_eq!(mids(&p), vec!["1", "2"], "{sdp}");
        assert!(matches!(&p.sections[3], Answerer::Str0m { mid } if mid == "3"));
        // A bundle-only microphone reaches str0m with a port it takes for open.
        let mic_later = offer(&[
            ("audio", "1", Some("recvonly")),
            ("audio", "0", Some("sendonly")),
        ])
        .replacen(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n",
            "m=audio 0 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=bundle-only\r\n",
            1,
        );
        let p = prepare_offer(&mic_later, 8, VideoPolicy::default()).unwrap();
        assert_eq!(p.mic_mid.as_deref(), Some("0"));
        assert!(
            p.sdp.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111"),
            "{}",
            p.sdp
        );
    }

    #[test]
    fn sendrecv_microphone_is_answered_as_receive_only() {
        let sdp = offer(&[("audio", "a", None), ("audio", "b", Some("recvonly"))]);
        let p = prepare_offer(&sdp, 8, VideoPolicy::default()).unwrap();
        assert_eq!(p.mic_mid.as_deref(), Some("a"));
        assert_eq!(mids(&p), vec!["b"]);
        let mic = p.sdp.split("m=audio").nth(1).unwrap_or_default();
        assert!(
            mic.contains("a=sendonly\r\n") && mic.contains("a=mid:a"),
            "{}",
            p.sdp
        );
    }

    #[test]
    fn video_is_rejected_with_port_zero() {
        let sdp = offer(&[
            ("video", "v", Some("sendrecv")),
            ("audio", "1", Some("recvonly")),
        ]);
        let p = prepare_offer(&sdp, 8, VideoPolicy::default()).unwrap();
        assert!(
            p.sdp.contains(
                "m=video 0 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:v\r\na=inactive"
            ),
            "{}",
            p.sdp
        );
        assert_eq!(mids(&p), vec!["1"]);
    }

    #[test]
    fn video_sections_are_publications_and_slots() {
        let mut sdp = offer(&[
            ("audio", "m", Some("sendonly")),
            ("audio", "s", Some("recvonly")),
            ("video", "cam", Some("sendonly")),
            ("video", "scr", Some("sendonly")),
            ("video", "v0", Some("recvonly")),
            ("video", "v1", Some("recvonly")),
            ("video", "v2", Some("recvonly")),
        ]);
        sdp = sdp.replace(
            "a=mid:cam\r\n",
            "a=mid:cam\r\na=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\na=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;~h,x;f\r\n",
        );
        sdp = sdp.replace(
            "a=mid:m\r\n",
            "a=mid:m\r\na=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\na=rtcp-fb:111 transport-cc\r\n",
        );
        for slot in ["v0", "v1", "v2"] {
            sdp = sdp.replace(
                &format!("m=video 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:{slot}\r\n"),
                &format!(
                    "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 98 111\r\nc=IN IP4 0.0.0.0\r\na=mid:{slot}\r\n\
                     a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
                     a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
                     a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 goog-remb\r\na=rtcp-fb:96 transport-cc\r\n\
                     a=rtcp-fb:96 ccm fir\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n\
                     a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
                     a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 nack\r\n\
                     a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
                     a=rtpmap:98 H264/90000\r\na=fmtp:98 packetization-mode=0;profile-level-id=42e01f\r\n"
                ),
            );
        }
        let sources = [("scr".to_owned(), VideoSource::Screen)];
        let video = VideoPolicy {
            slots: 2,
            sources: &sources,
        };
        let p = prepare_offer(&sdp, 8, video).unwrap();
        let slot_mids: Vec<&str> = p.video_slots.iter().map(|s| s.mid.as_str()).collect();
        assert_eq!(slot_mids, vec!["v0", "v1"], "only the room's count");
        // VP8 and H.264 in packetization mode 1, with the feedback Chorus serves.
        let formats: Vec<(u8, VideoCodec, Option<u32>)> = p.video_slots[0]
            .formats
            .iter()
            .map(|f| (f.pt, f.codec, f.profile))
            .collect();
        assert_eq!(
            formats,
            vec![
                (96, VideoCodec::Vp8, None),
                (102, VideoCodec::H264, Some(0x42e01f))
            ]
        );
        assert_eq!(
            p.video_slots[0].formats[0].feedback,
            vec!["transport-cc", "ccm fir", "nack", "nack pli"]
        );
        assert_eq!(
            p.video_ext,
            VideoExtIds {
                mid: Some(4),
                twcc: Some(3)
            }
        );
        // Chorus answers the slots: sendonly, its SSRC, the formats and extensions.
        let negotiated = "v=0\r\na=group:BUNDLE m cam scr\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:m\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\na=fingerprint:sha-256 AA\r\na=setup:passive\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:cam\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:scr\r\nm=video 0 UDP/TLS/RTP/SAVPF 111\r\na=mid:v2\r\n";
        let full = answer(&p, negotiated, &[5], &[70, 71], "cn").unwrap();
        let v1 = sections(&full)
            .into_iter()
            .find(|(m, _)| m == "v1")
            .unwrap()
            .1;
        for line in [
            "m=video 9 UDP/TLS/RTP/SAVPF 96 102",
            "a=sendonly",
            "a=ice-ufrag:u",
            "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
            "a=rtcp-fb:96 nack pli",
            "a=rtcp-fb:96 transport-cc",
            "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            "a=ssrc:71 cname:cn",
        ] {
            assert!(v1.contains(line), "{line} missing: {v1}");
        }
        assert!(!v1.contains("goog-remb") && !v1.contains("rtx"), "{v1}");
        assert!(
            full.contains("a=group:BUNDLE m s cam scr v0 v1\r\n"),
            "{full}"
        );
        assert_eq!(p.publications.len(), 2);
        // The unnamed one is the camera (the named one took the screen).
        assert_eq!(p.publications[0].source, VideoSource::Camera);
        assert_eq!(p.publications[0].rids, vec!["q", "h", "f"]);
        assert_eq!(p.publications[1].source, VideoSource::Screen);
        assert!(p.publications[1].rids.is_empty());
        // str0m sees the publishing sections; the slots are Chorus's, the extra
        // slot is rejected.
        assert!(p.sdp.contains("a=mid:cam") && !p.sdp.contains("a=mid:v1"));
        assert!(p.sdp.contains("m=video 0 "), "v2 rejected: {}", p.sdp);
        // transport-cc stays on video, off audio.
        let mic = sections(&p.sdp)
            .into_iter()
            .find(|(m, _)| m == "m")
            .unwrap()
            .1;
        assert!(!mic.contains("transport-cc"), "{mic}");
        assert!(p.sdp.contains("transport-wide-cc"), "{}", p.sdp);

        // A room without video rejects all of it.
        let p = prepare_offer(&sdp, 8, VideoPolicy::default()).unwrap();
        assert!(p.publications.is_empty() && p.video_slots.is_empty());

        // Three sending sections; two named alike; a name for no such section.
        let three = offer(&[
            ("video", "a", Some("sendonly")),
            ("video", "b", Some("sendonly")),
            ("video", "c", Some("sendonly")),
        ]);
        let some = VideoPolicy {
            slots: 1,
            sources: &[],
        };
        assert_eq!(
            prepare_offer(&three, 8, some),
            Err(OfferError::TooManyVideoSources)
        );
        let twice = [
            ("a".to_owned(), VideoSource::Camera),
            ("b".to_owned(), VideoSource::Camera),
        ];
        let named = VideoPolicy {
            slots: 1,
            sources: &twice,
        };
        assert_eq!(
            prepare_offer(&three, 8, named),
            Err(OfferError::SourceTwice("camera"))
        );
        let stranger = [("zz".to_owned(), VideoSource::Camera)];
        let unknown = VideoPolicy {
            slots: 1,
            sources: &stranger,
        };
        assert_eq!(
            prepare_offer(&three, 8, unknown),
            Err(OfferError::UnknownSourceMid("zz".into()))
        );
    }

    #[test]
    fn a_listener_lends_str0m_its_first_slot_made_inactive() {
        let sdp = offer(&[
            ("audio", "x", Some("recvonly")),
            ("audio", "y", Some("recvonly")),
        ]);
        let p = prepare_offer(&sdp, 8, VideoPolicy::default()).unwrap();
        assert_eq!(p.mic_mid, None);
        assert_eq!(mids(&p), vec!["x", "y"]);
        let seen = sections(&p.sdp);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, "x");
        assert!(seen[0].1.contains("a=inactive") && !seen[0].1.contains("a=recvonly"));
    }

    #[test]
    fn the_answer_puts_chorus_sections_back_in_order() {
        let mut sdp = offer(&[
            ("audio", "s0", Some("recvonly")),
            ("audio", "mic", Some("sendrecv")),
            ("audio", "s1", Some("recvonly")),
            ("audio", "extra", Some("recvonly")),
        ]);
        sdp = sdp.replace("t=0 0\r\n", "t=0 0\r\na=group:BUNDLE s0 mic s1 extra\r\n");
        sdp = sdp.replace(
            "a=mid:s0\r\n",
            "a=mid:s0\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=extmap:4/recvonly urn:ietf:params:rtp-hdrext:sdes:mid\r\n",
        );
        let p = prepare_offer(&sdp, 2, VideoPolicy::default()).unwrap();
        assert_eq!(
            p.ext,
            ExtIds {
                audio_level: Some(1),
                mid: Some(4)
            }
        );
        // What str0m answers for the microphone alone.
        let negotiated = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE mic\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n\
            a=candidate:1 1 udp 9 1.2.3.4 5 typ host\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\n\
            a=fingerprint:sha-256 AA\r\na=setup:passive\r\na=mid:mic\r\na=recvonly\r\n";
        let full = answer(&p, negotiated, &[7, 8], &[], "cn").unwrap();
        assert!(
            full.contains("a=group:BUNDLE s0 mic s1 extra\r\n"),
            "{full}"
        );
        let got = sections(&full);
        let order: Vec<&str> = got.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(order, vec!["s0", "mic", "s1", "extra"]);
        for (mid, text) in &got {
            for attr in [
                "a=ice-ufrag:u",
                "a=ice-pwd:p",
                "a=fingerprint:sha-256 AA",
                "a=setup:passive",
                "a=candidate:1 1 udp 9",
            ] {
                assert!(text.contains(attr), "{mid}: {attr} in {text}");
            }
        }
        let s0 = &got[0].1;
        for line in [
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
            "a=sendonly\r\n",
            "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n",
            "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n",
            "a=ssrc:7 cname:cn\r\n",
            "a=rtpmap:111 opus/48000/2\r\n",
        ] {
            assert!(s0.contains(line), "{line} in {s0}");
        }
        assert!(got[2].1.contains("a=ssrc:8 cname:cn\r\n"), "{}", got[2].1);
        assert!(got[3].1.contains("a=inactive\r\n") && !got[3].1.contains("a=ssrc"));
        assert_eq!(got[1].1.matches("a=recvonly").count(), 1);
    }

    #[test]
    fn an_answer_without_transport_or_a_section_is_an_error() {
        let sdp = offer(&[
            ("audio", "m", Some("sendonly")),
            ("audio", "s", Some("recvonly")),
        ]);
        let p = prepare_offer(&sdp, 8, VideoPolicy::default()).unwrap();
        let bare = "v=0\r\nm=audio 9 X 111\r\na=mid:m\r\n";
        assert_eq!(
            answer(&p, bare, &[1], &[], "c"),
            Err(AnswerError::NoTransport)
        );
        let other = "v=0\r\nm=audio 9 X 111\r\na=mid:q\r\na=ice-ufrag:u\r\n";
        assert_eq!(
            answer(&p, other, &[1], &[], "c"),
            Err(AnswerError::MissingSection("m".into()))
        );
    }

    #[test]
    fn opus_without_channels_is_read_as_opus() {
        let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=sendrecv\r\na=rtpmap:96 OPUS/48000\r\n";
        let fixed = opus_with_channels(offer).expect("rewritten");
        assert_eq!(
            fixed,
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=sendrecv\r\na=rtpmap:96 opus/48000/2\r\n"
        );
        assert_eq!(opus_with_channels(&fixed), None, "already right");
        assert_eq!(opus_with_channels("a=rtpmap:0 PCMU/8000\r\n"), None);
    }

    #[test]
    fn candidates_are_copied_to_every_section() {
        let answer = "v=0\r\nm=audio 9 X 111\r\na=mid:0\r\na=candidate:1 1 udp 9 1.2.3.4 5 typ host\r\na=end-of-candidates\r\nm=audio 9 X 111\r\na=mid:1\r\nm=audio 0 X 111\r\na=mid:2\r\n";
        let out = candidates_in_every_section(answer);
        let sections: Vec<&str> = out.split("m=audio").skip(1).collect();
        assert_eq!(sections.len(), 3);
        for s in sections {
            assert_eq!(
                s.matches("a=candidate:1 1 udp 9 1.2.3.4 5 typ host\r\n")
                    .count(),
                1,
                "{s}"
            );
            assert_eq!(s.matches("a=end-of-candidates").count(), 1, "{s}");
        }
    }

    #[test]
    fn rejects_what_breaks_the_contract() {
        assert_eq!(
            prepare_offer("v=0\r\n", 8, VideoPolicy::default()),
            Err(OfferError::NoMedia)
        );
        assert_eq!(
            prepare_offer("garbage", 8, VideoPolicy::default()),
            Err(OfferError::NoMedia)
        );
        let two = offer(&[("audio", "0", Some("sendonly")), ("audio", "1", None)]);
        assert_eq!(
            prepare_offer(&two, 8, VideoPolicy::default()),
            Err(OfferError::SeveralMicrophones)
        );
        let nomid = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        assert_eq!(
            prepare_offer(nomid, 8, VideoPolicy::default()),
            Err(OfferError::NoMid(0))
        );
        let long = offer(&[("audio", "abcdefghijklmnopq", Some("recvonly"))]);
        assert_eq!(
            prepare_offer(&long, 8, VideoPolicy::default()),
            Err(OfferError::BadMid(0))
        );
        let short = "v=0\r\nm=audio 9\r\na=mid:0\r\n";
        assert_eq!(
            prepare_offer(short, 8, VideoPolicy::default()),
            Err(OfferError::BadMediaLine(0))
        );
        let huge = "a".repeat(MAX_OFFER_BYTES + 1);
        assert!(matches!(
            prepare_offer(&huge, 8, VideoPolicy::default()),
            Err(OfferError::TooLarge(_))
        ));
    }

    #[test]
    fn answers_keep_the_clients_codec_order() {
        let sdp = "v=0\r\nm=audio 9 X 111\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102 103 96 97\r\na=mid:3\r\n";
        let offered = offered_formats(sdp, "3");
        assert_eq!(offered, ["102", "103", "96", "97"]);
        assert_eq!(offered_formats(sdp, "0"), ["111"]);
        assert!(offered_formats(sdp, "9").is_empty());
        // str0m put VP8 (96) first; the client offered H.264 (102) first.
        assert_eq!(
            in_offered_order("video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 127", &offered),
            "video 9 UDP/TLS/RTP/SAVPF 102 103 96 97 127"
        );
        assert_eq!(in_offered_order("video 9", &offered), "video 9");
    }
}
