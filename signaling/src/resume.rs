//! Resuming a session whose WebSocket dropped while its media lives on.
//!
//! Every accepted join gets a secret `resume_token` (in `joined`). When a joined
//! client's socket ends without `leave` (no close frame, or a close other than 1000),
//! its session is *parked* for `--resume-window`: the engine keeps the participant, the
//! room sees nothing, and the engine's messages for it are dropped. A `resume` with the
//! participant id and the token, on a new socket, takes the session over (also from a
//! socket the node has not yet noticed is dead); at the end of the window it leaves
//! like any closed socket.

use std::collections::HashMap;

use chorus_protocol::signal::{ParticipantId, RoomId};
use parking_lot::Mutex;

/// Random bytes in a token (base64url: 32 characters).
const TOKEN_BYTES: usize = 24;

#[derive(Debug)]
enum State {
    /// A connection holds the session.
    Attached,
    /// No connection; `generation` tells this parking from a later one.
    Parked { generation: u64 },
}

#[derive(Debug)]
struct Entry {
    token: String,
    room: RoomId,
    state: State,
}

/// Sessions that can be resumed, by participant.
#[derive(Debug, Default)]
pub(crate) struct Resumes {
    entries: Mutex<HashMap<ParticipantId, Entry>>,
    generation: std::sync::atomic::AtomicU64,
}

/// Why a `resume` was refused (all look the same to the client).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NoSession;

impl Resumes {
    /// A fresh token for a participant that just joined `room`.
    pub fn issue(&self, participant: ParticipantId, room: RoomId) -> String {
        let mut bytes = [0u8; TOKEN_BYTES];
        // Without an OS random source the node cannot make secrets: no token then,
        // and the session simply cannot be resumed.
        if getrandom::fill(&mut bytes).is_err() {
            tracing::error!("no OS randomness: sessions cannot be resumed");
            return String::new();
        }
        use base64::Engine;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        self.entries.lock().insert(
            participant,
            Entry {
                token: token.clone(),
                room,
                state: State::Attached,
            },
        );
        token
    }

    /// The participant is gone for good.
    pub fn forget(&self, participant: ParticipantId) {
        self.entries.lock().remove(&participant);
    }

    /// The participant's connection dropped: returns the parking's generation, or
    /// `None` if it cannot be resumed.
    pub fn park(&self, participant: ParticipantId) -> Option<u64> {
        let mut entries = self.entries.lock();
        let entry = entries.get_mut(&participant)?;
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        entry.state = State::Parked { generation };
        Some(generation)
    }

    /// A `resume`: the session's room if the token is right (the session is then
    /// attached to the caller).
    pub fn claim(&self, participant: ParticipantId, token: &str) -> Result<RoomId, NoSession> {
        let mut entries = self.entries.lock();
        let entry = entries.get_mut(&participant).ok_or(NoSession)?;
        if entry.token.is_empty() || !constant_time_eq(entry.token.as_bytes(), token.as_bytes()) {
            return Err(NoSession);
        }
        entry.state = State::Attached;
        Ok(entry.room.clone())
    }

    /// The window of parking `generation` ended: true if the session is still parked
    /// by it (and is now forgotten), false if it was resumed meanwhile.
    pub fn expire(&self, participant: ParticipantId, generation: u64) -> bool {
        let mut entries = self.entries.lock();
        match entries.get(&participant) {
            Some(Entry {
                state: State::Parked { generation: g },
                ..
            }) if *g == generation => {
                entries.remove(&participant);
                true
            }
            _ => false,
        }
    }
}

/// Compares without stopping at the first difference (tokens are secrets).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_session_resumes_with_its_token_once_parked_and_expires_otherwise() {
        let r = Resumes::default();
        let p = ParticipantId(7);
        let room = RoomId::new("r").unwrap();
        let token = r.issue(p, room.clone());
        assert_eq!(token.len(), 32);
        assert_eq!(r.claim(p, "wrong"), Err(NoSession));
        assert_eq!(r.claim(ParticipantId(8), &token), Err(NoSession));
        let g = r.park(p).unwrap();
        assert_eq!(r.claim(p, &token), Ok(room.clone()));
        assert!(!r.expire(p, g), "resumed: the old window ends quietly");
        let g2 = r.park(p).unwrap();
        assert!(
            !r.expire(p, g),
            "an older parking does not expire a newer one"
        );
        assert!(r.expire(p, g2));
        assert_eq!(r.claim(p, &token), Err(NoSession), "gone after the window");
    }
}
