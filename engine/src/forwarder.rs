//! The forwarding pipeline's subscriber side: one speaker's packet, one subscriber.
//!
//! The shard calls `forward_to` for every subscriber in the speaker's room that is
//! connected and not deafened. The slot table picks the slot (or none), the slot's
//! rewriter maps sequence number and timestamp, and `egress.rs` writes the
//! packet, in the subscriber's Opus payload type with the speaker's CSRC and audio
//! level, into a pooled buffer, seals it and queues it for the socket. The payload is
//! shared (`Arc<[u8]>`) between subscribers and shards until that one copy into the
//! datagram, which is sealed in place: no allocation per copy.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use chorus_protocol::signal::ParticipantId;

use crate::config::ShardConfig;
use crate::egress::WriteError;
use crate::io::Transmit;
use crate::participant::Participant;
use crate::pool::BufferPool;
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
    /// The speaker has the `priority` grant.
    pub priority: bool,
    /// While the speaker whispers: the only participants the packet goes to.
    pub audience: Option<Arc<[ParticipantId]>>,
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
    /// No slot stream there (should not happen once negotiated).
    NoStream,
    /// The subscriber's slot streams have no keys or address yet.
    NotReady,
    /// The copy could not be written or sealed.
    Failed,
}

/// Where forwarded copies go: the shard's buffers and send queue.
pub(crate) struct Sink<'a> {
    /// The node's addresses (a copy leaves from the one its subscriber's pair
    /// uses, [`ShardConfig::local_for`]).
    pub config: &'a ShardConfig,
    pub pool: &'a mut BufferPool,
    pub transmits: &'a mut VecDeque<Transmit>,
}

pub(crate) fn forward_to(
    sub: &mut Participant,
    pkt: &SpeakerPacket,
    now: Instant,
    loudness: impl Fn(ParticipantId) -> Loudness,
    sink: &mut Sink<'_>,
) -> Outcome {
    if !sub.egress.has_keys() {
        return Outcome::NotReady;
    }
    let slot = match sub.table.route(pkt.speaker, now, loudness) {
        Route::Keep(i) | Route::Took(i) => i,
        Route::NoSlot => return Outcome::NoSlot,
    };
    let Some(tx) = sub.slots.get_mut(slot) else {
        return Outcome::NoStream;
    };
    let Some(out) = tx
        .stream()
        .rewriter
        .rewrite(pkt.speaker, pkt.seq, pkt.timestamp, now)
    else {
        return Outcome::Late;
    };
    let mut buf = sink.pool.take();
    match sub.egress.write_rtp(tx, pkt, out, &mut buf) {
        Ok(to) => {
            let local = sink.config.local_for(to);
            sink.transmits.push_back(Transmit::to(to, local, buf));
            Outcome::Sent
        }
        Err(e) => {
            sink.pool.give(buf);
            match e {
                WriteError::NotReady => Outcome::NotReady,
                WriteError::Seal => Outcome::Failed,
            }
        }
    }
}
