//! What nodes say to each other over the relay: room state as JSON frames on the
//! reliable stream ([`RelayMessage`]), and speaker packets as binary datagrams
//! ([`encode_audio`], [`decode_audio`]). Internal to a cluster (every node runs the
//! same build); `VERSION` guards against mixing.

use std::sync::Arc;
use std::time::Instant;

use chorus_engine::video::packet::{VideoCodec, VideoPacket, MAX_LAYERS};
use chorus_engine::{MemberInfo, Permissions, RemoteMember, Sources, SpeakerPacket, VideoSource};
use chorus_protocol::signal::{DisplayName, ParticipantId, RoomId};
use serde::{Deserialize, Serialize};

use crate::error::ClusterError;

/// The first byte of every datagram: format version and kind (audio).
pub const AUDIO_V1: u8 = 0xa1;
/// The first byte of a video datagram.
pub const VIDEO_V1: u8 = 0xa2;

/// A frame on the reliable stream between two nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum RelayMessage {
    /// The sender runs `room` now (`on`: its home, or a node with members there), or
    /// no more; `listeners`: it has members there (speaker packets go only to such
    /// nodes). A node answers the first `on` with a [`RelayMessage::Member`] for each
    /// member it holds there.
    Interest {
        room: String,
        on: bool,
        #[serde(default)]
        listeners: bool,
    },
    /// From the room's home: `room.update` ran with these params.
    Updated {
        room: String,
        params: serde_json::Value,
    },
    /// From the room's home: the room closed, with this reason.
    Closed { room: String, reason: String },
    /// From a draining home: take `room` over (create it with `params` if it does
    /// not run here, then become its home in the directory in place of `home`).
    Adopt {
        id: u64,
        room: String,
        params: serde_json::Value,
        home: String,
    },
    /// The answer: `error` when the room could not be taken over.
    Adopted { id: u64, error: Option<String> },
    /// A subscriber of the sender waits for a keyframe of `publisher` (held by the
    /// receiver): `source` 0 camera, 1 screen; `layer` the simulcast layer.
    Keyframe {
        publisher: u64,
        source: u8,
        layer: u8,
    },
    /// A member the sender holds joined `room`, or changed (the whole member).
    Member { room: String, member: WireMember },
    /// A member the sender holds left `room`.
    Left { room: String, participant: u64 },
    /// Members of a proximity room moved (positions the sender took).
    Moved {
        room: String,
        positions: Vec<(u64, [f64; 3])>,
    },
    /// Asks the receiver (the room's home node) for a room's policy, as
    /// `room.create` params.
    PolicyAsk { id: u64, room: String },
    /// The answer: the params, or `None` when the room is not there.
    Policy {
        id: u64,
        params: Option<serde_json::Value>,
    },
    /// A control-plane call forwarded to the node that can answer it (the room's
    /// home, or the node holding the participant).
    Call {
        id: u64,
        method: String,
        params: serde_json::Value,
    },
    /// Its answer: a JSON-RPC `result`, or an `error` object.
    CallReply {
        id: u64,
        result: Option<serde_json::Value>,
        error: Option<serde_json::Value>,
    },
}

impl RelayMessage {
    pub fn to_frame(&self) -> Vec<u8> {
        // A derived Serialize of plain data cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_frame(frame: &[u8]) -> Result<RelayMessage, ClusterError> {
        serde_json::from_slice(frame).map_err(|e| ClusterError::Frame(e.to_string()))
    }
}

/// A member as it crosses between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireMember {
    pub id: u64,
    pub name: String,
    pub muted: bool,
    pub server_muted: bool,
    pub deafened: bool,
    pub csrc: u32,
    pub camera: bool,
    pub screen: bool,
    pub identity: Option<String>,
    pub publish: bool,
    pub subscribe: bool,
    pub priority: bool,
    /// Microphone, camera, screen.
    pub sources: [bool; 3],
    pub whisper_to: Option<Vec<u64>>,
}

impl From<&RemoteMember> for WireMember {
    fn from(m: &RemoteMember) -> Self {
        WireMember {
            id: m.info.id.0,
            name: m.info.name.as_str().to_owned(),
            muted: m.info.muted,
            server_muted: m.info.server_muted,
            deafened: m.info.deafened,
            csrc: m.info.csrc,
            camera: m.info.camera,
            screen: m.info.screen,
            identity: m.identity.clone(),
            publish: m.permissions.publish,
            subscribe: m.permissions.subscribe,
            priority: m.permissions.priority,
            sources: [
                m.permissions.sources.microphone,
                m.permissions.sources.camera,
                m.permissions.sources.screen,
            ],
            whisper_to: m
                .whisper_to
                .as_ref()
                .map(|w| w.iter().map(|p| p.0).collect()),
        }
    }
}

impl TryFrom<WireMember> for RemoteMember {
    type Error = ClusterError;

    fn try_from(m: WireMember) -> Result<Self, ClusterError> {
        let name = DisplayName::new(&m.name)
            .map_err(|e| ClusterError::Frame(format!("member name: {e}")))?;
        Ok(RemoteMember {
            info: MemberInfo {
                id: ParticipantId(m.id),
                name,
                muted: m.muted,
                server_muted: m.server_muted,
                deafened: m.deafened,
                csrc: m.csrc,
                camera: m.camera,
                screen: m.screen,
            },
            identity: m.identity,
            permissions: Permissions {
                publish: m.publish,
                subscribe: m.subscribe,
                priority: m.priority,
                sources: Sources {
                    microphone: m.sources[0],
                    camera: m.sources[1],
                    screen: m.sources[2],
                },
            },
            whisper_to: m
                .whisper_to
                .map(|w| w.into_iter().map(ParticipantId).collect()),
        })
    }
}

const MARKER: u8 = 1;
const LEVEL: u8 = 2;
const VAD: u8 = 4;
const VOICE: u8 = 8;
const PRIORITY: u8 = 16;
const AUDIENCE: u8 = 32;

/// Writes a speaker's packet as one datagram into `out` (cleared first):
/// `AUDIO_V1, room len, room, speaker, csrc, seq, timestamp, flags, level,
/// [audience count, ids], payload` (big-endian).
pub fn encode_audio(room: &RoomId, p: &SpeakerPacket, out: &mut Vec<u8>) {
    out.clear();
    out.push(AUDIO_V1);
    let name = room.as_str().as_bytes();
    // Room names are at most 64 bytes (RoomId checks).
    out.push(name.len().min(255) as u8);
    out.extend_from_slice(&name[..name.len().min(255)]);
    out.extend_from_slice(&p.speaker.0.to_be_bytes());
    out.extend_from_slice(&p.csrc.to_be_bytes());
    out.extend_from_slice(&p.seq.to_be_bytes());
    out.extend_from_slice(&p.timestamp.to_be_bytes());
    let mut flags = 0;
    if p.marker {
        flags |= MARKER;
    }
    if p.audio_level.is_some() {
        flags |= LEVEL;
    }
    if let Some(v) = p.voice_activity {
        flags |= VAD;
        if v {
            flags |= VOICE;
        }
    }
    if p.priority {
        flags |= PRIORITY;
    }
    if p.audience.is_some() {
        flags |= AUDIENCE;
    }
    out.push(flags);
    out.push(p.audio_level.unwrap_or(0) as u8);
    if let Some(audience) = &p.audience {
        let n = audience.len().min(255);
        out.push(n as u8);
        for id in &audience[..n] {
            out.extend_from_slice(&id.0.to_be_bytes());
        }
    }
    out.extend_from_slice(&p.payload);
}

/// Reads a datagram [`encode_audio`] wrote. `received` is when it arrived here.
pub fn decode_audio(
    data: &[u8],
    received: Instant,
) -> Result<(RoomId, SpeakerPacket), ClusterError> {
    let mut r = Reader { data, at: 0 };
    if r.u8()? != AUDIO_V1 {
        return Err(ClusterError::Frame(
            "not an audio datagram of this version".into(),
        ));
    }
    let len = usize::from(r.u8()?);
    let name = std::str::from_utf8(r.take(len)?)
        .map_err(|_| ClusterError::Frame("room name is not UTF-8".into()))?;
    let room = RoomId::new(name).map_err(|e| ClusterError::Frame(format!("room: {e}")))?;
    let speaker = ParticipantId(r.u64()?);
    let csrc = r.u32()?;
    let seq = r.u64()?;
    let timestamp = r.u32()?;
    let flags = r.u8()?;
    let level = r.u8()? as i8;
    let audience = if flags & AUDIENCE != 0 {
        let n = usize::from(r.u8()?);
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(ParticipantId(r.u64()?));
        }
        Some(Arc::from(ids))
    } else {
        None
    };
    let payload: Arc<[u8]> = Arc::from(r.rest());
    Ok((
        room,
        SpeakerPacket {
            speaker,
            csrc,
            seq,
            timestamp,
            marker: flags & MARKER != 0,
            audio_level: (flags & LEVEL != 0).then_some(level),
            voice_activity: (flags & VAD != 0).then_some(flags & VOICE != 0),
            priority: flags & PRIORITY != 0,
            audience,
            payload,
            received,
        },
    ))
}

/// Writes a publisher's video packet as one datagram into `out` (cleared first):
/// `VIDEO_V1, room len, room, publisher, source, codec, profile flag + profile,
/// layer, layers, active, bitrates × MAX_LAYERS, ssrc, seq, timestamp, marker,
/// payload` (big-endian). Keyframe and VP8 descriptor are read again from the payload
/// where it arrives.
pub fn encode_video(room: &RoomId, p: &VideoPacket, out: &mut Vec<u8>) {
    out.clear();
    out.push(VIDEO_V1);
    let name = room.as_str().as_bytes();
    out.push(name.len().min(255) as u8);
    out.extend_from_slice(&name[..name.len().min(255)]);
    out.extend_from_slice(&p.publisher.0.to_be_bytes());
    out.push(source_byte(p.source));
    out.push(match p.codec {
        VideoCodec::Vp8 => 0,
        VideoCodec::H264 => 1,
    });
    out.push(u8::from(p.profile.is_some()));
    out.extend_from_slice(&p.profile.unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&[p.layer, p.layers, p.active]);
    for b in p.bitrates {
        out.extend_from_slice(&b.to_be_bytes());
    }
    out.extend_from_slice(&p.ssrc.to_be_bytes());
    out.extend_from_slice(&p.seq.to_be_bytes());
    out.extend_from_slice(&p.timestamp.to_be_bytes());
    out.push(u8::from(p.marker));
    out.extend_from_slice(&p.payload);
}

/// Reads a datagram [`encode_video`] wrote; its `origin` is
/// [`chorus_engine::cluster::REMOTE_ORIGIN`].
pub fn decode_video(data: &[u8], received: Instant) -> Result<(RoomId, VideoPacket), ClusterError> {
    let mut r = Reader { data, at: 0 };
    if r.u8()? != VIDEO_V1 {
        return Err(ClusterError::Frame(
            "not a video datagram of this version".into(),
        ));
    }
    let len = usize::from(r.u8()?);
    let name = std::str::from_utf8(r.take(len)?)
        .map_err(|_| ClusterError::Frame("room name is not UTF-8".into()))?;
    let room = RoomId::new(name).map_err(|e| ClusterError::Frame(format!("room: {e}")))?;
    let publisher = ParticipantId(r.u64()?);
    let source = source_of(r.u8()?)?;
    let codec = match r.u8()? {
        0 => VideoCodec::Vp8,
        1 => VideoCodec::H264,
        other => return Err(ClusterError::Frame(format!("video codec {other}"))),
    };
    let has_profile = r.u8()? != 0;
    let profile = r.u32()?;
    let (layer, layers, active) = (r.u8()?, r.u8()?, r.u8()?);
    if usize::from(layer) >= MAX_LAYERS || usize::from(layers) > MAX_LAYERS || layer >= layers {
        return Err(ClusterError::Frame(format!(
            "video layer {layer} of {layers}"
        )));
    }
    let mut bitrates = [0u32; MAX_LAYERS];
    for b in &mut bitrates {
        *b = r.u32()?;
    }
    let ssrc = r.u32()?;
    let seq = r.u64()?;
    let timestamp = r.u32()?;
    let marker = r.u8()? != 0;
    let payload: Arc<[u8]> = Arc::from(r.rest());
    let (keyframe, vp8) = chorus_engine::video::packet::inspect(codec, &payload);
    Ok((
        room,
        VideoPacket {
            publisher,
            source,
            profile: has_profile.then_some(profile),
            origin: chorus_engine::cluster::REMOTE_ORIGIN,
            layer,
            layers,
            active,
            bitrates,
            codec,
            ssrc,
            seq,
            timestamp,
            marker,
            keyframe,
            vp8,
            payload,
            received,
        },
    ))
}

/// A video source on the wire.
pub fn source_byte(source: VideoSource) -> u8 {
    match source {
        VideoSource::Camera => 0,
        VideoSource::Screen => 1,
    }
}

/// A video source from the wire.
pub fn source_of(b: u8) -> Result<VideoSource, ClusterError> {
    match b {
        0 => Ok(VideoSource::Camera),
        1 => Ok(VideoSource::Screen),
        other => Err(ClusterError::Frame(format!("video source {other}"))),
    }
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ClusterError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or_else(|| ClusterError::Frame("datagram too short".into()))?;
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, ClusterError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, ClusterError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, ClusterError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }

    fn rest(&mut self) -> &'a [u8] {
        let s = &self.data[self.at..];
        self.at = self.data.len();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(audience: Option<Vec<u64>>) -> SpeakerPacket {
        SpeakerPacket {
            speaker: ParticipantId(0x0000_1234_5678_9a00),
            csrc: 0x0200_0007,
            seq: 70_000,
            timestamp: 123_456,
            marker: true,
            audio_level: Some(-30),
            voice_activity: Some(true),
            priority: true,
            audience: audience
                .map(|a| Arc::from(a.into_iter().map(ParticipantId).collect::<Vec<_>>())),
            payload: Arc::from(&b"opus frame"[..]),
            received: Instant::now(),
        }
    }

    #[test]
    fn audio_round_trips() {
        let room = RoomId::new("raid-1").expect("valid");
        for audience in [None, Some(vec![1, 2, 3])] {
            let p = packet(audience);
            let mut out = Vec::new();
            encode_audio(&room, &p, &mut out);
            let (r, q) = decode_audio(&out, p.received).expect("decodes");
            assert_eq!(r, room);
            assert_eq!(
                (
                    q.speaker,
                    q.csrc,
                    q.seq,
                    q.timestamp,
                    q.marker,
                    q.audio_level
                ),
                (
                    p.speaker,
                    p.csrc,
                    p.seq,
                    p.timestamp,
                    p.marker,
                    p.audio_level
                )
            );
            assert_eq!(
                (q.voice_activity, q.priority),
                (p.voice_activity, p.priority)
            );
            assert_eq!(q.audience.as_deref(), p.audience.as_deref());
            assert_eq!(&*q.payload, &*p.payload);
        }
    }

    fn video(payload: &[u8]) -> VideoPacket {
        VideoPacket {
            publisher: ParticipantId(0x0000_2000_0000_0301),
            source: VideoSource::Screen,
            profile: Some(0x42e01f),
            origin: 0,
            layer: 1,
            layers: 3,
            active: 0b111,
            bitrates: [150_000, 500_000, 1_500_000, 0],
            codec: VideoCodec::Vp8,
            ssrc: 0xdead_beef,
            seq: 65_600,
            timestamp: 90_000,
            marker: true,
            keyframe: false,
            vp8: None,
            payload: Arc::from(payload),
            received: Instant::now(),
        }
    }

    #[test]
    fn video_round_trips_and_is_read_again() {
        let room = RoomId::new("raid-1").expect("valid");
        // A VP8 keyframe start: descriptor S=1, PID 0; payload header P=0.
        let p = video(&[0x10, 0x00, 0x9d, 0x01, 0x2a]);
        let mut out = Vec::new();
        encode_video(&room, &p, &mut out);
        let (r, q) = decode_video(&out, p.received).expect("decodes");
        assert_eq!(r, room);
        assert_eq!(
            (q.publisher, q.source, q.profile),
            (p.publisher, p.source, p.profile)
        );
        assert_eq!(
            (q.layer, q.layers, q.active, q.bitrates),
            (p.layer, p.layers, p.active, p.bitrates)
        );
        assert_eq!(
            (q.ssrc, q.seq, q.timestamp, q.marker),
            (p.ssrc, p.seq, p.timestamp, p.marker)
        );
        assert_eq!(&*q.payload, &*p.payload);
        assert_eq!(q.origin, chorus_engine::cluster::REMOTE_ORIGIN);
        assert!(q.keyframe && q.vp8.is_some(), "read again from the payload");
        let mut bad = out.clone();
        bad[1 + 1 + 6 + 8 + 2 + 5] = 7; // layer 7
        assert!(decode_video(&bad, Instant::now()).is_err());
    }

    #[test]
    fn truncated_datagrams_are_errors_not_panics() {
        let room = RoomId::new("r").expect("valid");
        let mut out = Vec::new();
        encode_audio(&room, &packet(Some(vec![9; 4])), &mut out);
        for n in 0..40 {
            let _ = decode_audio(&out[..n.min(out.len())], Instant::now());
        }
        assert!(decode_audio(&[0xa1, 200], Instant::now()).is_err());
        assert!(decode_audio(&[], Instant::now()).is_err());
    }

    /// Mutations of valid datagrams and frames, and random bytes: errors, never a
    /// panic (a seeded xorshift, so a failure repeats).
    #[test]
    fn mangled_input_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let room = RoomId::new("raid-1").expect("valid");
        let mut audio = Vec::new();
        encode_audio(&room, &packet(Some(vec![1, 2, 3])), &mut audio);
        let mut video_dgram = Vec::new();
        encode_video(&room, &video(&[0x90, 0x80, 0x05, 0x9d]), &mut video_dgram);
        let member = RelayMessage::Member {
            room: "raid-1".into(),
            member: WireMember {
                id: 0x1000_0000_0101,
                name: "ann".into(),
                muted: false,
                server_muted: false,
                deafened: false,
                csrc: 0x0100_0001,
                camera: false,
                screen: false,
                identity: None,
                publish: true,
                subscribe: true,
                priority: false,
                sources: [true, false, false],
                whisper_to: Some(vec![1]),
            },
        }
        .to_frame();
        for _ in 0..20_000 {
            for base in [&audio, &member, &video_dgram] {
                let mut m = base.clone();
                for _ in 0..(next() % 4 + 1) {
                    let at = (next() as usize) % m.len();
                    match next() % 3 {
                        0 => m[at] = next() as u8,
                        1 => m.truncate(at),
                        _ => m.insert(at, next() as u8),
                    }
                    if m.is_empty() {
                        break;
                    }
                }
                let _ = decode_audio(&m, Instant::now());
                let _ = decode_video(&m, Instant::now());
                if let Ok(RelayMessage::Member { member, .. }) = RelayMessage::from_frame(&m) {
                    let _ = RemoteMember::try_from(member);
                }
            }
            let len = (next() % 64) as usize;
            let random: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = decode_audio(&random, Instant::now());
            let _ = RelayMessage::from_frame(&random);
        }
    }

    #[test]
    fn messages_round_trip() {
        let m = RelayMessage::Interest {
            room: "r".into(),
            on: true,
            listeners: false,
        };
        assert_eq!(RelayMessage::from_frame(&m.to_frame()).expect("parses"), m);
        assert!(RelayMessage::from_frame(b"{\"t\":\"nope\"}").is_err());
    }
}
