//! The Chorus media engine.
//!
//! Signaling hands it [`Command`]s, the network hands it datagrams, the clock hands it
//! `Instant`s; it hands back [`Transmit`]s, [`Event`]s and the time it next needs to be
//! woken. The core, [`Shard`], is a deterministic state machine in the style of
//! `quinn-proto` and str0m: it never reads the clock, never touches a socket, and its
//! randomness is seeded. [`driver`] is the thin thread that runs it, and [`socket`]
//! owns the syscalls (`recvmmsg`/`sendmmsg` and a `setsockopt`, the only `unsafe`
//! code).
//!
//! # Run loop
//! After any `handle_*` call, drain [`Shard::poll_transmit`] (handing each buffer back
//! with [`Shard::recycle`] once sent) and [`Shard::poll_event`], then read
//! [`Shard::poll_timeout`] and call [`Shard::handle_timeout`] no later than that.
//!
//! ```no_run
//! # use std::time::Instant;
//! # use chorus_engine::{Datagram, Protocol, Shard, ShardConfig};
//! # let socket = std::net::UdpSocket::bind("127.0.0.1:7882").unwrap();
//! let local = socket.local_addr().unwrap();
//! let mut shard = Shard::new(ShardConfig::new(local), Instant::now()).unwrap();
//! let mut buf = [0u8; 2048];
//! loop {
//!     if let Ok((n, source)) = socket.recv_from(&mut buf) {
//!         let d = Datagram { proto: Protocol::Udp, source, contents: &buf[..n] };
//!         shard.handle_batch(Instant::now(), [d]);
//!     }
//!     shard.handle_timeout(Instant::now());
//!     while let Some(t) = shard.poll_transmit() {
//!         let _ = socket.send_to(&t.contents, t.destination);
//!         shard.recycle(t.contents);
//!     }
//!     while let Some(_event) = shard.poll_event() { /* to signaling */ }
//! }
//! ```
//!
//! # The way of a datagram
//! socket batch (`recvmmsg`) → [`Shard::handle_batch`] (one `now` per batch) →
//! demultiplexed by source address, else by STUN ufrag → the sender's str0m `Rtc`
//! (ICE, DTLS, SRTP decryption; drained at once: in rtp mode it holds one packet) → a
//! speaker's packet goes to the room's view: handed once to every other shard of the
//! room, and to each local subscriber (found by slab index) → slot table, rewriter,
//! and Chorus's own RTP header + SRTP seal into a pooled buffer (`egress.rs`) → the
//! shard's transmits → `sendmmsg`. No subscriber's `Rtc` is touched on the way, and no
//! copy allocates.
//!
//! # Design
//! - One str0m `Rtc` per participant: ICE-lite, `rtp_mode`, Opus (and in rooms with
//!   video, VP8 and H.264 for what a client publishes), one DTLS certificate per node.
//!   str0m keeps ICE, DTLS, the SRTP of what clients send and the feedback to them; it
//!   is polled when its own timeout is due (a timing wheel on a 20 ms grid,
//!   `shard/timers.rs`), never per forwarded packet; a quiet voice participant's at
//!   most every 5 s. Once a client has nominated a pair, the shard answers its consent
//!   checks there itself (`consent.rs`), letting str0m see one every few seconds.
//! - The slot streams a subscriber receives, audio and video, are Chorus's: Chorus
//!   answers their SDP sections (`sdp.rs`; str0m never sees them), writes each
//!   packet's header, seals it with the session's SRTP keys (captured from str0m's
//!   DTLS by `chorus_srtp::capture`; AES-GCM per RFC 7714 or AES-CM/HMAC-SHA1 per RFC
//!   3711, whichever was negotiated), sends the slots' sender reports and SDES, and
//!   reads the subscriber's reports and feedback on them (for video: NACKs, keyframe
//!   requests and transport-cc, for its own bandwidth estimate).
//! - The control plane asks about rooms and participants with [`Request`]s, answered
//!   by [`Event::Reply`]; what happens is reported as [`Event::Notify`].
//! - `room.rs` tracks members and speaker levels, each subscriber's slot table
//!   (`slots.rs`) picks which speaker it hears on which of its fixed audio slots, and a
//!   per-slot rewriter keeps every slot one continuous RTP stream. Joins and leaves
//!   never renegotiate SDP, so a subscriber's cost stays flat however large the room.
//! - A speaker's packet reaches subscribers as a [`SpeakerPacket`] sharing one payload
//!   buffer; it is also the unit a shard hands to other shards when a room spans
//!   several cores.

mod client_event;
pub mod cluster;
pub mod config;
mod consent;
mod doorbell;
pub mod driver;
mod egress;
pub mod error;
pub mod forwarder;
#[doc(hidden)]
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
mod inbox_queue;
pub mod io;
pub mod latency;
pub mod level;
pub mod mesh;
pub mod p2p;
mod participant;
mod participants;
mod pool;
pub mod proximity;
mod quality;
pub mod report;
mod rewriter;
mod room;
mod sdp;
pub mod shard;
mod slots;
pub mod socket;
mod spam;
pub mod tcp;
pub mod video;
mod view;

pub use chorus_srtp::SrtpProfile;
pub use client_event::{
    ClientEvent, Joined, MemberInfo, Refusal, Speaker, VideoQuality, VideoSlotState, VideoSource,
};
pub use cluster::{NodeIndex, RelayOut, RemoteMember, RosterChange};
pub use config::ShardConfig;
pub use driver::{CommandSender, Driver, DriverStats, RelaySink, ShardSnapshot};
pub use error::EngineError;
pub use forwarder::SpeakerPacket;
pub use io::{
    CloseReason, Command, Datagram, Event, Permissions, Protocol, Reply, Request, RequestError,
    RequestId, Sources, Transmit,
};
pub use mesh::{home_of, participant_id, room_home, ShardMessage};
pub use participant::Participant;
pub use pool::BUFFER_CAPACITY;
pub use sdp::OfferError;
pub use shard::{generate_certificate, Shard, ShardStats};
