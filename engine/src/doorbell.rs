//! A shard thread's doorbell: how other threads (other shards, the ICE-TCP thread,
//! signaling) tell it that its inbox holds something, waking it only when it sleeps.
//!
//! A shard at work looks at its inbox before it sleeps again, so a producer that
//! finds it awake only marks the inbox and saves the `eventfd` write (a system
//! call), and the shard saves the wake-up that write would have cost it. Under load
//! a shard is often awake when another shard hands it a speaker packet.
//!
//! One atomic word holds both facts, so every ring and every "going to sleep" is
//! ordered against the others: either the shard sees the mark before it sleeps, or
//! the producer sees it asleep and wakes it. A ring that comes after the poll returned
//! but before the shard took the mark still writes the eventfd: the next poll returns
//! at once, one empty turn (the eventfd is edge-triggered: no more than that).

use std::io;
use std::sync::atomic::{AtomicU8, Ordering};

use mio::{Registry, Token, Waker};

/// Something was put in the inbox since the shard last took the mark.
const PENDING: u8 = 1;
/// The shard may block in a poll: set before such a poll, cleared when the shard takes
/// the mark after it.
const SLEEPING: u8 = 2;

/// See the module documentation.
#[derive(Debug)]
pub struct Doorbell {
    state: AtomicU8,
    waker: Waker,
}

impl Doorbell {
    /// A doorbell whose wake-ups reach `registry`'s poll as `token`. It starts rung,
    /// so that the shard's first turn looks at its inbox.
    pub fn new(registry: &Registry, token: Token) -> io::Result<Doorbell> {
        Ok(Doorbell {
            state: AtomicU8::new(PENDING),
            waker: Waker::new(registry, token)?,
        })
    }

    /// Called after putting something in the inbox: marks it, and wakes the shard if
    /// it may be asleep and no one rang since it last took the mark. Returns whether
    /// this ring wrote the eventfd.
    pub fn ring(&self) -> bool {
        if self.state.fetch_or(PENDING, Ordering::AcqRel) != SLEEPING {
            return false;
        }
        // The eventfd lives as long as the doorbell (mio reads it back when its
        // counter would overflow): a failed write is an error of the system, and
        // the shard's own timeouts still bring it to the inbox.
        let _ = self.waker.wake();
        true
    }

    /// Called by the shard before a poll that may block. False if the inbox was
    /// marked meanwhile: the shard must not block (and is not marked asleep).
    pub fn may_sleep(&self) -> bool {
        if self.state.fetch_or(SLEEPING, Ordering::AcqRel) & PENDING == 0 {
            return true;
        }
        self.state.fetch_and(!SLEEPING, Ordering::AcqRel);
        false
    }

    /// Called by the shard after every poll: it is awake, and takes the mark (true
    /// if the inbox was rung since the mark was last taken). What is rung after this
    /// marks the inbox again, for the next turn.
    pub fn take(&self) -> bool {
        self.state.swap(0, Ordering::AcqRel) & PENDING != 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mio::{Events, Poll};
    use std::time::Duration;

    const BELL: Token = Token(7);

    /// `poll.poll`, again after a signal (mio hands EINTR back; the driver retries too).
    fn poll_once(poll: &mut Poll, events: &mut Events, timeout: Duration) {
        loop {
            match poll.poll(events, Some(timeout)) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => return other.unwrap(),
            }
        }
    }

    fn woken(poll: &mut Poll) -> bool {
        let mut events = Events::with_capacity(4);
        poll_once(poll, &mut events, Duration::ZERO);
        events.iter().any(|e| e.token() == BELL)
    }

    #[test]
    fn a_ring_wakes_only_a_sleeping_shard_and_marks_the_inbox_either_way() {
        let mut poll = Poll::new().unwrap();
        let bell = Doorbell::new(poll.registry(), BELL).unwrap();
        // New: marked, so that the first turn looks at the inbox.
        assert!(bell.take());
        assert!(!bell.take());

        // Awake: marked, not woken.
        assert!(!bell.ring());
        assert!(!woken(&mut poll));
        assert!(!bell.may_sleep(), "a marked inbox keeps the shard awake");
        assert!(bell.take());

        // Asleep: the first ring wakes it, the second only marks.
        assert!(bell.may_sleep());
        assert!(bell.ring(), "the first ring writes the eventfd");
        assert!(!bell.ring(), "the second only marks");
        assert!(woken(&mut poll));
        assert!(bell.take());

        // Awake again after take: a ring does not wake.
        assert!(!bell.ring());
        assert!(!woken(&mut poll));
        assert!(bell.take());
    }

    #[test]
    fn no_ring_is_lost_between_threads() {
        // A consumer that sleeps only through may_sleep and takes the mark after each
        // poll sees every one of many rings from two producers, without a timeout.
        let mut poll = Poll::new().unwrap();
        let bell = std::sync::Arc::new(Doorbell::new(poll.registry(), BELL).unwrap());
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        const RINGS: u64 = 20_000;
        let producers: Vec<_> = (0..2)
            .map(|_| {
                let (bell, sent) = (bell.clone(), sent.clone());
                std::thread::spawn(move || {
                    for _ in 0..RINGS {
                        sent.fetch_add(1, Ordering::AcqRel);
                        bell.ring();
                    }
                })
            })
            .collect();
        let mut events = Events::with_capacity(4);
        let mut seen = 0;
        while seen < 2 * RINGS {
            let sleeps = bell.may_sleep();
            let timeout = if sleeps {
                Duration::from_secs(10)
            } else {
                Duration::ZERO
            };
            poll_once(&mut poll, &mut events, timeout);
            // A sleep that ends with nothing is a ring lost: the producers ring
            // until the last one, which must wake this poll.
            assert!(!(sleeps && events.is_empty()), "a ring was lost at {seen}");
            // Everything sent before the mark was taken is seen in this turn.
            if bell.take() {
                seen = sent.load(Ordering::Acquire);
            }
        }
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(seen, 2 * RINGS);
    }
}
