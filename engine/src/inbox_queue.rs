//! A bounded queue into a shard's inbox that takes memory only for what it holds:
//! the commands (from signaling) and control messages (from other shards) a shard
//! reads at the start of its turns.
//!
//! `crossbeam_channel::bounded` allocates and writes its whole capacity when made:
//! 16,384 slots of a control message are 3.3 MB per shard, touched at start, whether
//! or not a message ever comes. These queues are mostly empty and their bound is a
//! guard against a burst, so they are unbounded channels (blocks of 31 slots, allocated
//! as they fill and freed as they are read) with the bound checked on send. Two
//! producers racing past the check can put the queue over its bound by one message
//! each, which the guard allows.

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// The sending side: [`InboxSender::try_send`] refuses above the bound.
#[derive(Debug)]
pub(crate) struct InboxSender<T> {
    tx: Sender<T>,
    bound: usize,
}

/// A queue that refuses messages once `bound` wait in it.
pub(crate) fn inbox_queue<T>(bound: usize) -> (InboxSender<T>, Receiver<T>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (InboxSender { tx, bound }, rx)
}

impl<T> InboxSender<T> {
    /// Queues `message`, or hands it back: `Full` when `bound` messages wait,
    /// `Disconnected` when the shard is gone.
    pub fn try_send(&self, message: T) -> Result<(), TrySendError<T>> {
        if self.tx.len() >= self.bound {
            return Err(TrySendError::Full(message));
        }
        self.tx.try_send(message)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn refuses_at_the_bound_and_takes_again_once_read() {
        let (tx, rx) = inbox_queue(3);
        for i in 0..3 {
            tx.try_send(i).unwrap();
        }
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!(rx.try_recv().unwrap(), 0);
        tx.try_send(4).unwrap();
        assert!(matches!(tx.try_send(5), Err(TrySendError::Full(5))));
        let rest: Vec<i32> = rx.try_iter().collect();
        assert_eq!(rest, vec![1, 2, 4]);
        drop(rx);
        assert!(matches!(tx.try_send(6), Err(TrySendError::Disconnected(6))));
    }
}
