//! The forwarding pipeline's subscriber side: one speaker's packet, one subscriber.
//!
//! The shard calls `forward_to` for every subscriber in the speaker's room that is
//! connected and not deafened. The slot table picks the slot (or none), the slot's
//! rewriter maps sequence number and timestamp, and the packet is written to str0m's
//! send stream for the slot's mid with the speaker's CSRC as the only CSRC and the
//! speaker's audio level, in the subscriber's Opus payload type. The payload is shared
//! (`Arc<[u8]>`), never copied per subscriber.

use std::sync::Arc;
use std::time::Instant;

use chorus_protocol::signal::ParticipantId;
use str0m::rtp::{ExtensionValues, RtpWrite};

use crate::participant::Participant;
use crate::slots::{Loudness, Route};

/// One audio packet of a speaker, as the subscribers' side needs it. This is also the
/// unit a shard will hand to another shard.
#[derive(Debug, Clone)]
pub struct SpeakerPacket {
    pub speaker: ParticipantId,
    pub csrc: u32,
    /// Extended sequence number of the speaker's stream.
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    /// RFC 6464 level as str0m gives it: -dBov (0 loudest, -127 silence).
    pub audio_level: Option<i8>,
    pub voice_activity: Option<bool>,
    pub payload: Arc<[u8]>,
    /// When the speaker's datagram was received (for the latency histogram).
    pub received: Instant,
}

/// What happened to a packet for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Sent,
    /// All of the subscriber's slots carry others.
    NoSlot,
    /// Older than the speaker's switch onto the slot.
    Late,
    /// str0m has no send stream for the slot (should not happen once negotiated).
    NoStream,
}

pub(crate) fn forward_to(
    sub: &mut Participant,
    pkt: &SpeakerPacket,
    now: Instant,
    loudness: impl Fn(ParticipantId) -> Loudness,
) -> Outcome {
    let slot = match sub.table.route(pkt.speaker, now, loudness) {
        Route::Keep(i) | Route::Took(i) => i,
        Route::NoSlot => return Outcome::NoSlot,
    };
    let Some(tx) = sub.slots.get_mut(slot) else {
        return Outcome::NoStream;
    };
    let Some(out) = tx
        .rewriter
        .rewrite(pkt.speaker, pkt.seq, pkt.timestamp, now)
    else {
        return Outcome::Late;
    };
    let ext = ExtensionValues {
        audio_level: pkt.audio_level,
        voice_activity: pkt.voice_activity,
        ..Default::default()
    };
    let write = RtpWrite::new(
        tx.pt,
        out.seq.into(),
        out.timestamp,
        now,
        pkt.payload.clone(),
    )
    .marker(pkt.marker || out.switched)
    .csrc(&[pkt.csrc])
    .ext_vals(ext);
    let mid = tx.mid;
    let mut api = sub.rtc.direct_api();
    let Some(stream) = api.stream_tx_by_mid(mid, None) else {
        return Outcome::NoStream;
    };
    stream.write_rtp(write);
    sub.needs_flush = true;
    Outcome::Sent
}
