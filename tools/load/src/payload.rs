//! The test payload every sender puts in its Opus-sized RTP packets.
//!
//! ```text
//!  0               4               8               12                              20
//! +---------------+---------------+---------------+-------------------------------+-----
//! | magic "CHLG"  | sender (BE)   | seq (BE)      | send time, ns since start (BE)| zeros
//! +---------------+---------------+---------------+-------------------------------+-----
//! ```
//!
//! The node forwards the payload unchanged (docs/protocol.md §8.4), so a receiver
//! reads back who sent the packet, which of its packets it is, and when it was sent.
//! Sender and receivers live in one process and share one monotonic clock.

/// Marks a load-test payload.
pub const MAGIC: [u8; 4] = *b"CHLG";
/// Bytes the stamp takes; payloads are at least this long.
pub const STAMP_LEN: usize = 20;

/// What a sender writes into each payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Global index of the sending participant.
    pub sender: u32,
    /// The sender's packet counter, 0 for its first packet.
    pub seq: u32,
    /// Monotonic nanoseconds since the tool started, taken just before the packet is
    /// handed to the client's WebRTC stack.
    pub send_ns: u64,
}

impl Stamp {
    /// A payload of `len` bytes (at least [`STAMP_LEN`]) carrying this stamp.
    pub fn encode(&self, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len.max(STAMP_LEN)];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..8].copy_from_slice(&self.sender.to_be_bytes());
        out[8..12].copy_from_slice(&self.seq.to_be_bytes());
        out[12..20].copy_from_slice(&self.send_ns.to_be_bytes());
        out
    }

    /// Reads a stamp back; `None` for anything that is not a load-test payload.
    pub fn decode(payload: &[u8]) -> Option<Stamp> {
        let (magic, rest) = payload.split_first_chunk::<4>()?;
        if *magic != MAGIC {
            return None;
        }
        let (sender, rest) = rest.split_first_chunk::<4>()?;
        let (seq, rest) = rest.split_first_chunk::<4>()?;
        let (send_ns, _) = rest.split_first_chunk::<8>()?;
        Some(Stamp {
            sender: u32::from_be_bytes(*sender),
            seq: u32::from_be_bytes(*seq),
            send_ns: u64::from_be_bytes(*send_ns),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips() {
        let s = Stamp {
            sender: 4_999,
            seq: 0xdead_beef,
            send_ns: 61_000_000_123,
        };
        let p = s.encode(80);
        assert_eq!(p.len(), 80);
        assert_eq!(&p[..4], b"CHLG");
        assert!(p[STAMP_LEN..].iter().all(|&b| b == 0));
        assert_eq!(Stamp::decode(&p), Some(s));
    }

    #[test]
    fn short_sizes_grow_to_the_stamp() {
        let s = Stamp {
            sender: 1,
            seq: 2,
            send_ns: 3,
        };
        assert_eq!(s.encode(4).len(), STAMP_LEN);
        assert_eq!(Stamp::decode(&s.encode(0)), Some(s));
    }

    #[test]
    fn rejects_foreign_payloads() {
        assert_eq!(Stamp::decode(&[]), None);
        assert_eq!(Stamp::decode(b"CHLG"), None);
        let mut p = Stamp {
            sender: 1,
            seq: 2,
            send_ns: 3,
        }
        .encode(20);
        assert_eq!(Stamp::decode(&p[..19]), None);
        p[0] = b'X';
        assert_eq!(Stamp::decode(&p), None);
    }
}
