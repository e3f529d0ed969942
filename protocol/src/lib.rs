//! Chorus wire formats. No I/O, no async, no allocation on the parse path.
//!
//! This crate sits at the bottom of the flow: the engine reads datagrams through the
//! views here (STUN for demultiplexing, RTP/RTCP for the forwarding pipeline), and the
//! signaling and control layers speak the serde types in [`signal`].
//!
//! - [`rtp`]: RTP packets (RFC 3550) with header extensions (RFC 8285) and the audio
//!   level extension (RFC 6464): a read-only view and an in-place rewriter.
//! - [`rtcp`]: RTCP compound packets (SR, RR, SDES, BYE, NACK, PLI, FIR, REMB, TWCC).
//! - [`stun`]: enough of STUN (RFC 8489) to demultiplex by USERNAME.
//! - [`demux`]: which protocol a datagram on the shared port holds (RFC 7983).
//! - [`encode`]: the [`encode::Encode`] trait every writer implements.
//! - [`signal`]: the client signaling protocol v1 (see `docs/protocol.md`).
//! - [`control`]: the control protocol, JSON-RPC 2.0 (see `docs/control.md`).
#![forbid(unsafe_code)]

pub mod control;
mod cursor;
pub mod demux;
pub mod encode;
pub mod error;
#[doc(hidden)]
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
pub mod rtcp;
pub mod rtp;
pub mod signal;
pub mod stun;

pub use error::ParseError;
