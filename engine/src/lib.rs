//! The Chorus media engine.
//!
//! Signaling hands it [`Command`]s, the network hands it datagrams, the clock hands it
//! `Instant`s; it hands back [`Transmit`]s, [`Event`]s and the time it next needs to be
//! woken. The core, [`Shard`], is a deterministic state machine in the style of
//! `quinn-proto` and str0m: it never reads the clock, never touches a socket, and its
//! randomness is seeded. [`driver`] is the thin thread that runs it on a UDP socket.
//!
//! # Run loop
//! After any `handle_*` call, drain [`Shard::poll_transmit`] and [`Shard::poll_event`],
//! then read [`Shard::poll_timeout`] and call [`Shard::handle_timeout`] no later than
//! that.
//!
//! ```no_run
//! # use std::time::Instant;
//! # use chorus_engine::{Shard, ShardConfig};
//! # let socket = std::net::UdpSocket::bind("127.0.0.1:7882").unwrap();
//! let mut shard = Shard::new(ShardConfig::new(socket.local_addr().unwrap()), Instant::now()).unwrap();
//! let mut buf = [0u8; 2048];
//! loop {
//!     if let Ok((n, from)) = socket.recv_from(&mut buf) {
//!         shard.handle_datagram(Instant::now(), from, &buf[..n]);
//!     }
//!     shard.handle_timeout(Instant::now());
//!     while let Some(t) = shard.poll_transmit() {
//!         let _ = socket.send_to(&t.contents, t.destination);
//!     }
//!     while let Some(_event) = shard.poll_event() { /* to signaling */ }
//! }
//! ```
//!
//! # Design
//! - One str0m `Rtc` per participant: ICE-lite, `rtp_mode`, Opus only, one DTLS
//!   certificate per shard. Datagrams are demultiplexed by source address first and by
//!   the STUN USERNAME's ufrag second ([`chorus_protocol::stun`]), never by asking each
//!   `Rtc` in turn.
//! - The control plane asks about rooms and participants with [`Request`]s, answered
//!   by [`Event::Reply`]; what happens is reported as [`Event::Notify`].
//! - The forwarding pipeline is ours: `room.rs` tracks members and speaker
//!   levels, each subscriber's slot table (`slots.rs`) picks which speaker it
//!   hears on which of its fixed audio slots, and a per-slot rewriter keeps every slot
//!   one continuous RTP stream. Joins and leaves never renegotiate SDP, so a
//!   subscriber's cost stays flat however large the room.
//! - A speaker's packet reaches subscribers as a [`SpeakerPacket`] sharing one payload
//!   buffer; it is also the unit a shard will hand to other shards when a room spans
//!   several cores.

pub mod config;
pub mod driver;
pub mod error;
pub mod forwarder;
#[doc(hidden)]
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
pub mod io;
pub mod latency;
pub mod level;
pub mod mesh;
mod participant;
mod quality;
mod rewriter;
mod room;
mod sdp;
pub mod shard;
mod slots;
pub mod socket;
mod view;

pub use config::ShardConfig;
pub use driver::{CommandSender, Driver, DriverStats, ShardSnapshot};
pub use error::EngineError;
pub use forwarder::SpeakerPacket;
pub use io::{
    CloseReason, Command, Event, Permissions, Reply, Request, RequestError, RequestId, Transmit,
};
pub use mesh::{home_of, participant_id, room_home, ShardMessage};
pub use participant::Participant;
pub use sdp::OfferError;
pub use shard::{generate_certificate, Shard, ShardStats};
