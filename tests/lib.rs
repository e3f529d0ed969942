//! Cross-crate test support.
//!
//! [`sim`] drives a real [`chorus_engine::Shard`] against real str0m `Rtc` clients
//! (ICE, DTLS, SRTP and all) over a simulated network and a simulated clock: no
//! sockets, no sleeps, and a bound on steps so a livelock fails instead of hanging.
//! The test files beside this one each check one behaviour.

pub mod sim;
pub mod ws;
