//! Which signaling connection hears which participant's events.
//!
//! The engine thread calls [`Routes::deliver`] for every event; it never blocks. Each
//! connection has a bounded queue: a client too slow to drain it is disconnected
//! rather than let the node's memory grow. A connection holds no sender of its own,
//! so removing its entry here closes its queue.

use std::collections::HashMap;

use chorus_engine::{ClientEvent, CloseReason, Event};
use chorus_protocol::signal::ParticipantId;
use parking_lot::Mutex;
use tokio::sync::mpsc;

/// Messages one connection may have queued before it counts as stuck.
pub(crate) const CONNECTION_QUEUE: usize = 1024;

/// One entry of a connection's queue.
///
/// Small on purpose: a tokio channel allocates its slots 32 at a time, the first
/// block when it is created, so a `ServerMessage` inline (~120 bytes) would cost every
/// connection ~4 KB before it queued anything.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Something to tell the client (the session writes it as protocol v1).
    Event(Box<ClientEvent>),
    Close(CloseReason),
    /// Another connection resumed this participant's session.
    Superseded,
}

#[derive(Default)]
pub(crate) struct Routes {
    connections: Mutex<HashMap<ParticipantId, mpsc::Sender<Outbound>>>,
}

impl Routes {
    pub fn register(&self, participant: ParticipantId, tx: mpsc::Sender<Outbound>) {
        self.connections.lock().insert(participant, tx);
    }

    /// Points the participant's events at a new connection (a resume); the one that
    /// had them is told it was superseded.
    pub fn supersede(&self, participant: ParticipantId, tx: mpsc::Sender<Outbound>) {
        if let Some(old) = self.connections.lock().insert(participant, tx) {
            let _ = old.try_send(Outbound::Superseded);
        }
    }

    /// Participants with a connection (joined, or joining).
    pub fn len(&self) -> usize {
        self.connections.lock().len()
    }

    pub fn unregister(&self, participant: ParticipantId) {
        self.connections.lock().remove(&participant);
    }

    pub fn deliver(&self, event: Event) {
        let (to, out) = match event {
            Event::ToClient { to, event } => (to, Outbound::Event(Box::new(event))),
            Event::Closed {
                participant,
                reason,
            } => (participant, Outbound::Close(reason)),
            // The control plane's and the cluster's (the node's sink routes them).
            Event::Reply { .. } | Event::Notify(_) | Event::Roster { .. } => return,
        };
        let mut connections = self.connections.lock();
        let Some(tx) = connections.get(&to) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(out) {
            // Dropping the only sender ends the connection once it drains its queue;
            // it then leaves the room like any closed connection.
            tracing::warn!(participant = %to, "signaling queue full; disconnecting");
            connections.remove(&to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_entry_is_two_words() {
        assert!(std::mem::size_of::<Outbound>() <= 16);
    }
}
