//! What a video slot sent lately, for the subscriber's NACKs (RFC 4585 §6.2.1).
//!
//! Chorus sends the video slot streams itself (`egress.rs`), so it answers their
//! NACKs itself: each entry keeps what is needed to write the packet again exactly
//! as it went out (the shared payload, `Arc<[u8]>`, the slot's rewritten fields, its
//! transport-wide sequence number and whether it carried the MID), not the datagram,
//! so a slot's history holds references into its publisher's packets rather than a
//! copy of each. A retransmission goes out on the slot's own SSRC with its original
//! sequence number (no RTX stream): the receiver's SRTP never saw that index, it was
//! lost. It is byte for byte the packet first sent: under AES-GCM one nonce (SSRC and
//! index) must never seal two different packets. Padding packets are kept too (a
//! receiver waits for every sequence number). Entries are found by sequence number
//! modulo the history's length: no hashing, no allocation once the slot has sent its
//! first packet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::vp8;

/// Packets kept per slot: ~0.7 s of a 1.5 Mbit/s layer (~180 packets a second),
/// about what a NACK can still repair in time for the jitter buffer. The payloads
/// they hold are shared with the publisher's other subscribers, but a slot keeps
/// them alive: this is most of a video participant's memory.
pub(crate) const HISTORY_LEN: usize = 128;
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
    /// `None`: a padding packet, of `padding` octets (RFC 3550 §5.1).
    pub payload: Option<Arc<[u8]>>,
    pub padding: u8,
    /// What its header carried besides: its transport-wide sequence number, and the
    /// MID extension or not.
    pub twcc: Option<u16>,
    pub with_mid: bool,
    pub sent_at: Instant,
    pub resent_at: Option<Instant>,
}

impl Sent {
    /// About the bytes it takes on the wire.
    pub fn wire_len(&self) -> usize {
        self.payload.as_ref().map_or(0, |p| p.len()) + usize::from(self.padding) + 40
    }
}

/// Padding packets kept per slot, apart from the media packets: while probing a slot
/// may carry more padding than media, which would push the media out.
pub(crate) const PADDING_LEN: usize = 64;

/// A slot's send history ([`HISTORY_LEN`] media packets and [`PADDING_LEN`] padding
/// packets, allocated with its first packet of each).
#[derive(Debug, Clone, Default)]
pub(crate) struct SendHistory {
    entries: Option<Box<[Option<Sent>]>>,
    padding: Option<Box<[Option<Sent>]>>,
}

impl SendHistory {
    /// Keeps a packet just sent (the one `HISTORY_LEN` packets older goes; a late
    /// packet never pushes out a newer one).
    pub fn record(&mut self, sent: Sent) {
        let (ring, len) = match sent.payload {
            Some(_) => (&mut self.entries, HISTORY_LEN),
            None => (&mut self.padding, PADDING_LEN),
        };
        let entries = ring.get_or_insert_with(|| vec![None; len].into_boxed_slice());
        if let Some(e) = entries.get_mut(sent.seq as usize % len) {
            if e.as_ref().is_none_or(|old| old.seq < sent.seq) {
                *e = Some(sent);
            }
        }
    }

    /// The entry for `seq` (16 bits, as a NACK names it), media or padding.
    fn find(&self, seq: u16) -> Option<&Sent> {
        [(&self.entries, HISTORY_LEN), (&self.padding, PADDING_LEN)]
            .into_iter()
            .filter_map(|(ring, len)| ring.as_ref()?.get(usize::from(seq) % len)?.as_ref())
            .find(|e| e.seq as u16 == seq)
    }

    /// The packet sent with sequence number `seq`, if it is still kept and may be sent
    /// again now (not too old, not resent a moment ago).
    pub fn resendable(&self, seq: u16, now: Instant) -> Option<&Sent> {
        let e = self.find(seq)?;
        let fresh = now.saturating_duration_since(e.sent_at) <= MAX_AGE;
        let rested = e
            .resent_at
            .is_none_or(|t| now.saturating_duration_since(t) >= RESEND_INTERVAL);
        (fresh && rested).then_some(e)
    }

    /// The packet `seq` was sent again at `now`.
    pub fn resent(&mut self, seq: u16, now: Instant) {
        for (ring, len) in [
            (&mut self.entries, HISTORY_LEN),
            (&mut self.padding, PADDING_LEN),
        ] {
            let entry = ring
                .as_mut()
                .and_then(|e| e.get_mut(usize::from(seq) % len))
                .and_then(Option::as_mut)
                .filter(|e| e.seq as u16 == seq);
            if let Some(e) = entry {
                e.resent_at = Some(now);
            }
        }
    }

    /// Forgets everything (the slot's stream restarts, is cleared or stopped): the
    /// payloads go back to their publisher's packets' owners.
    pub fn clear(&mut self) {
        self.entries = None;
        self.padding = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(seq: u64, payload: &Arc<[u8]>, now: Instant) -> Sent {
        Sent {
            seq,
            timestamp: 90 * seq as u32,
            marker: false,
            pt: 96,
            vp8: None,
            payload: Some(Arc::clone(payload)),
            padding: 0,
            twcc: Some(seq as u16),
            with_mid: false,
            sent_at: now,
            resent_at: None,
        }
    }

    #[test]
    fn a_nacked_packet_is_found_once_per_interval_and_not_when_overwritten_or_old() {
        let t0 = Instant::now();
        let payload: Arc<[u8]> = Arc::from(&[1u8, 2, 3][..]);
        let mut h = SendHistory::default();
        assert!(h.resendable(5, t0).is_none(), "nothing sent yet");
        let first = 0x1_fffe_u64; // the 16-bit number wraps in the history
        for i in 0..4 {
            h.record(sent(first + i, &payload, t0));
        }
        let found = h.resendable(0xffff, t0).map(|s| (s.seq, s.twcc));
        assert_eq!(found, Some((0x1_ffff, Some(0xffff))));
        h.resent(0xffff, t0);
        assert!(h
            .resendable(0xffff, t0 + Duration::from_millis(10))
            .is_none());
        assert!(h
            .resendable(0xffff, t0 + Duration::from_millis(40))
            .is_some());
        assert!(
            h.resendable(1, t0 + Duration::from_millis(1_500)).is_none(),
            "too old"
        );
        // HISTORY_LEN packets later the slot holds another packet.
        let later = first + HISTORY_LEN as u64;
        h.record(sent(later, &payload, t0));
        assert!(h.resendable(first as u16, t0).is_none());
        assert_eq!(h.resendable(later as u16, t0).map(|s| s.seq), Some(later));
        // A late packet does not push out a newer one.
        h.record(sent(first, &payload, t0));
        assert_eq!(h.resendable(later as u16, t0).map(|s| s.seq), Some(later));
        // Padding has its own ring: it pushes no media out.
        let mut pad = sent(later + 1, &payload, t0);
        (pad.payload, pad.padding) = (None, 255);
        for i in 0..PADDING_LEN as u64 * 2 {
            pad.seq = later + 1 + i;
            h.record(pad.clone());
        }
        assert_eq!(h.resendable(later as u16, t0).map(|s| s.seq), Some(later));
        let last_pad = later + PADDING_LEN as u64 * 2;
        let found = h
            .resendable(last_pad as u16, t0)
            .map(|s| s.payload.is_none());
        assert_eq!(found, Some(true));
        h.clear();
        assert!(h.resendable(later as u16, t0).is_none());
    }
}
