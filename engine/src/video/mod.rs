//! Building blocks of video forwarding (issue 12): what a video slot needs to decide,
//! rewrite and send per packet, as pure functions and small state machines the shard
//! drives (`shard/video.rs`); `egress.rs` writes and seals the copies.
//!
//! - [`vp8`]: the VP8 payload descriptor (RFC 7741 §4.2): keyframes, picture ids,
//!   temporal layers, and rewriting them so a slot stays one continuous VP8 stream
//!   across layer and publisher switches.
//! - [`h264`]: keyframes of H.264 (RFC 6184, packetization mode 1).
//! - [`layers`]: which simulcast layer a quality asks for, how a subscriber's bandwidth
//!   is shared among its video slots, and keyframe-gated switching with rate-limited
//!   keyframe requests.
//! - [`packet`], `publication`, `slot`: a publisher's packet as subscribers need it,
//!   a publication's layers, and a subscriber's video slot.
//! - `history`: what a slot sent lately, for NACKs.
//! - `estimator`: the bandwidth towards a subscriber, from its transport-cc feedback
//!   (Google Congestion Control).
//! - `probe`: when to pad a subscriber's video slots above that estimate.

pub(crate) mod estimator;
pub mod h264;
pub(crate) mod history;
pub mod layers;
pub mod packet;
pub(crate) mod probe;
pub(crate) mod publication;
pub(crate) mod slot;
pub mod vp8;
