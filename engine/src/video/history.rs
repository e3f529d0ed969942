//! What a video slot sent lately, for the subscriber's NACKs (RFC 4585 §6.2.1).
//!
//! Chorus sends the video slot streams itself (`egress.rs`), so it answers their
//! NACKs itself: each entry keeps what is needed to write the packet again (the
//! shared payload, `Arc<[u8]>`, and the slot's rewritten fields), not the datagram,
//! so a slot's history holds references into its publisher's packets rather than a
//! copy of each. A retransmission goes out on the slot's own SSRC with its original
//! sequence number (no RTX stream): the receiver's SRTP never saw that index, it was
//! lost. Entries are found by sequence number modulo the history's length: no
//! hashing, no allocation once the slot has sent its first packet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::vp8;

/// Packets kept per slot: more than a second of a 1.5 Mbit/s layer (~150 packets a
/// second), about what a NACK can still repair in time for the jitter buffer.
pub(crate) const HISTORY_LEN: usize = 256;
/// A packet sent longer ago than this is not sent again: the frame is past use.
const MAX_AGE: Duration = Duration::from_millis(1_000);
/// A packet is sent again at most this often (a NACK repeated before the resend
/// could have arrived).
const RESEND_INTERVAL: Duration = Duration::from_millis(30);

/// One packet as a slot sent it.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    /// The extended sequence number it went out with.
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    pub pt: u8,
    pub vp8: Option<vp8::Rewrite>,
    pub payload: Arc<[u8]>,
    pub sent_at: Instant,
    resent_at: Option<Instant>,
}

/// A slot's send history ([`HISTORY_LEN`] entries, allocated with its first packet).
#[derive(Debug, Clone, Default)]
pub(crate) struct SendHistory {
    entries: Option<Box<[Option<Sent>]>>,
}

impl SendHistory {
    /// Keeps a packet just sent (the one `HISTORY_LEN` packets older goes).
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        seq: u64,
        timestamp: u32,
        marker: bool,
        pt: u8,
        vp8: Option<vp8::Rewrite>,
        payload: &Arc<[u8]>,
        now: Instant,
    ) {
        let entries = self
            .entries
            .get_or_insert_with(|| vec![None; HISTORY_LEN].into_boxed_slice());
        let at = seq as usize % HISTORY_LEN;
        let sent = Sent {
            seq,
            timestamp,
            marker,
            pt,
            vp8,
            payload: Arc::clone(payload),
            sent_at: now,
            resent_at: None,
        };
        if let Some(e) = entries.get_mut(at) {
            *e = Some(sent);
        }
    }

    /// The packet sent with sequence number `seq` (as a NACK names it, 16 bits), if it
    /// is still kept and may be sent again now (not too old, not resent a moment ago);
    /// marks it resent.
    pub fn resend(&mut self, seq: u16, now: Instant) -> Option<&Sent> {
        let entries = self.entries.as_mut()?;
        let e = entries.get_mut(usize::from(seq) % HISTORY_LEN)?.as_mut()?;
        if e.seq as u16 != seq || now.saturating_duration_since(e.sent_at) > MAX_AGE {
            return None;
        }
        if e.resent_at
            .is_some_and(|t| now.saturating_duration_since(t) < RESEND_INTERVAL)
        {
            return None;
        }
        e.resent_at = Some(now);
        Some(e)
    }

    /// Forgets everything (the slot's stream restarts, or the slot is cleared): the
    /// payloads go back to their publisher's packets' owners.
    pub fn clear(&mut self) {
        self.entries = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nacked_packet_is_found_once_per_interval_and_not_when_overwritten_or_old() {
        let t0 = Instant::now();
        let payload: Arc<[u8]> = Arc::from(&[1u8, 2, 3][..]);
        let mut h = SendHistory::default();
        assert!(h.resend(5, t0).is_none(), "nothing sent yet");
        let first = 0x1_fffe_u64; // the 16-bit number wraps in the history
        for i in 0..4 {
            h.record(first + i, 90 * i as u32, i == 3, 96, None, &payload, t0);
        }
        let sent = h.resend(0xffff, t0).map(|s| (s.seq, s.timestamp));
        assert_eq!(sent, Some((0x1_ffff, 90)));
        assert!(h.resend(0xffff, t0 + Duration::from_millis(10)).is_none());
        assert!(h.resend(0xffff, t0 + Duration::from_millis(40)).is_some());
        assert!(
            h.resend(1, t0 + Duration::from_millis(1_500)).is_none(),
            "too old"
        );
        // HISTORY_LEN packets later the slot holds another packet.
        let later = first + HISTORY_LEN as u64;
        h.record(later, 0, false, 96, None, &payload, t0);
        assert!(h.resend(first as u16, t0).is_none());
        assert_eq!(h.resend(later as u16, t0).map(|s| s.seq), Some(later));
        h.clear();
        assert!(h.resend(later as u16, t0).is_none());
    }
}
