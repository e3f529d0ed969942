//! Peer-to-peer mode: which tier carries a small room's audio.
//!
//! A room whose policy allows it (`p2p_max` > 0) is in mode [`RoomMode::P2p`] while it
//! has at most `p2p_max` members, every one of them able to connect directly (`join`
//! with `p2p`) and none whom the node would have to police on the way (a server mute,
//! a missing `publish` or `subscribe` grant, video, a whisper). Its members then send each other
//! their audio directly; the node relays their connection set-up (`p2p_signal`) and
//! takes their own speaking reports in place of the levels it would read from their
//! packets. The first thing that breaks a condition moves the room to
//! [`RoomMode::Sfu`] at once; it goes back only after it met every condition for the
//! room's `p2p_downgrade_s`, and never after a member's peer connection failed.
//!
//! The state machine lives here, fed by the home shard (`shard/p2p.rs`) with the
//! room's roster and the time; it decides, the shard tells the clients.

use std::time::{Duration, Instant};

use chorus_protocol::signal::ParticipantId;

use chorus_protocol::control::DEFAULT_P2P_DOWNGRADE_S;

use crate::room::{Room, RoomPolicy};

/// Which tier carries a room's audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoomMode {
    /// Members send to each other directly; the node signals and announces speakers.
    P2p,
    /// Through the node.
    Sfu,
}

/// Why a room's mode changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModeReason {
    /// More members than `p2p_max`.
    Capacity,
    /// A member that cannot connect directly.
    NotP2p,
    /// A member muted by the server: a direct path cannot enforce it.
    ServerMuted,
    /// A member without `publish` (of its microphone) or `subscribe`.
    Grants,
    /// A member publishes camera or screen.
    Video,
    /// A member whispers: only the node can keep its audio from the others.
    Whisper,
    /// A member's peer connection failed: no way back for the room.
    P2pFailed,
    /// The policy no longer allows it (`p2p_max` lowered, proximity turned on).
    Policy,
    /// Back to p2p after `p2p_downgrade_s` within the conditions.
    WithinLimit,
}

/// A room's mode and what it needs to go back to p2p.
#[derive(Debug, Clone)]
pub(crate) struct ModeState {
    pub mode: RoomMode,
    /// A peer connection failed: the room stays `Sfu`.
    pub failed: bool,
    /// Since when a room in `Sfu` has met every condition for p2p.
    pub eligible_since: Option<Instant>,
}

/// A change of mode, for the shard to announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ModeChange {
    pub mode: RoomMode,
    pub reason: ModeReason,
}

impl ModeState {
    /// A new room: p2p if its policy allows it at all (an empty room meets every
    /// other condition), so the first members start directly.
    pub fn new(policy: &RoomPolicy) -> Self {
        ModeState {
            mode: if policy_allows(policy) {
                RoomMode::P2p
            } else {
                RoomMode::Sfu
            },
            failed: false,
            eligible_since: None,
        }
    }
}

/// Whether a room's policy lets it be p2p at all: a `p2p_max`, no proximity (the
/// node places voices by distance).
fn policy_allows(policy: &RoomPolicy) -> bool {
    policy.p2p_max > 0 && policy.proximity.is_none()
}

/// `p2p_downgrade_s` as a delay, the default when not given.
pub(crate) fn downgrade_delay(seconds: Option<u32>) -> Duration {
    Duration::from_secs(u64::from(seconds.unwrap_or(DEFAULT_P2P_DOWNGRADE_S)))
}

/// What keeps `room` from being p2p now, if anything (the first reason found, in the
/// order of [`ModeReason`]).
pub(crate) fn blocker(room: &Room) -> Option<ModeReason> {
    let policy = &room.policy;
    if !policy_allows(policy) {
        return Some(ModeReason::Policy);
    }
    if room.mode.failed {
        return Some(ModeReason::P2pFailed);
    }
    if room.order.len() > usize::from(policy.p2p_max) {
        return Some(ModeReason::Capacity);
    }
    let members = || room.members.values();
    if members().any(|m| !m.p2p) {
        return Some(ModeReason::NotP2p);
    }
    if members().any(|m| m.info.server_muted) {
        return Some(ModeReason::ServerMuted);
    }
    if members().any(|m| !m.permissions.publishes_microphone() || !m.permissions.subscribe) {
        return Some(ModeReason::Grants);
    }
    if members().any(|m| m.info.camera || m.info.screen) {
        return Some(ModeReason::Video);
    }
    if members().any(|m| m.whisper_to.is_some()) {
        return Some(ModeReason::Whisper);
    }
    None
}

/// Looks at `room` after something changed in it, or as time passes: leaves p2p at
/// once when a condition breaks, goes back after `p2p_downgrade` within them.
pub(crate) fn reconsider(room: &mut Room, now: Instant) -> Option<ModeChange> {
    let blocked = blocker(room);
    let state = &mut room.mode;
    match (state.mode, blocked) {
        (RoomMode::P2p, Some(reason)) => {
            state.mode = RoomMode::Sfu;
            state.eligible_since = None;
            Some(ModeChange {
                mode: RoomMode::Sfu,
                reason,
            })
        }
        (RoomMode::P2p, None) => None,
        (RoomMode::Sfu, Some(_)) => {
            state.eligible_since = None;
            None
        }
        (RoomMode::Sfu, None) => {
            state.eligible_since.get_or_insert(now);
            if downgrade_due(room).is_some_and(|at| at <= now) {
                room.mode.mode = RoomMode::P2p;
                room.mode.eligible_since = None;
                Some(ModeChange {
                    mode: RoomMode::P2p,
                    reason: ModeReason::WithinLimit,
                })
            } else {
                None
            }
        }
    }
}

/// When a room in `Sfu` that meets the conditions goes back to p2p (for the tick).
pub(crate) fn downgrade_due(room: &Room) -> Option<Instant> {
    let since = room.mode.eligible_since?;
    (room.mode.mode == RoomMode::Sfu).then(|| since + room.policy.p2p_downgrade)
}

/// Most `p2p_signal`s a client may send per second, and in a burst.
pub const SIGNAL_RATE: u32 = 20;
pub const SIGNAL_BURST: u32 = 60;
/// Most `speaking` reports a client may send per second, and in a burst.
pub const SPEAKING_RATE: u32 = 10;
pub const SPEAKING_BURST: u32 = 20;
/// A speaking report counts for this long (clients report every 200 ms while they
/// make sound).
pub const REPORT_STALE: Duration = Duration::from_millis(600);

/// Whether `to` may be sent a `p2p_signal` by `from` in `room`: both members, not
/// the same, the receiver able to connect directly, the room in p2p mode.
pub(crate) fn signal_refusal(
    room: &Room,
    from: ParticipantId,
    to: ParticipantId,
) -> Option<String> {
    if room.mode.mode != RoomMode::P2p {
        return Some("p2p_signal: the room is not in p2p mode".to_owned());
    }
    match room.members.get(&to) {
        Some(m) if m.p2p && to != from => None,
        _ => Some(format!("p2p_signal: {to} is not a p2p member of the room")),
    }
}
