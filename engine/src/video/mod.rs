//! Building blocks of video forwarding (issue 12): what a video slot needs to decide
//! and rewrite per packet, as pure functions and small state machines the shard will
//! drive. Not wired into the shard yet: rooms carry voice only until video slots,
//! `subscribe` and the SDP side land.
//!
//! - [`vp8`]: the VP8 payload descriptor (RFC 7741 §4.2): keyframes, picture ids,
//!   temporal layers, and rewriting them so a slot stays one continuous VP8 stream
//!   across layer and publisher switches.
//! - [`h264`]: keyframes of H.264 (RFC 6184, packetization mode 1).
//! - [`layers`]: which simulcast layer a quality asks for, how a subscriber's bandwidth
//!   is shared among its video slots, and keyframe-gated switching with rate-limited
//!   keyframe requests.

pub(crate) mod estimator;
pub mod h264;
pub(crate) mod history;
pub mod layers;
pub mod packet;
pub(crate) mod probe;
pub(crate) mod publication;
pub(crate) mod slot;
pub mod vp8;
