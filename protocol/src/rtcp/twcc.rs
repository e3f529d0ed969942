//! Transport-wide congestion control feedback
//! (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1): RTPFB, FMT 15.

use super::FeedbackSsrcs;
use crate::cursor::{sign_extend_24, Reader};
use crate::error::ParseError;
use crate::rtp::{SeqNo, Ssrc};

pub(super) const FMT: u8 = 15;

/// Receive deltas and the reference time tick in these units (§3.1.5, §3.1).
const DELTA_TICK_US: i64 = 250;
const REFERENCE_TICK_US: i64 = 64_000;

/// A transport-wide feedback message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Twcc<'a> {
    ssrcs: FeedbackSsrcs,
    base_seq: SeqNo,
    status_count: u16,
    reference_time: i32,
    fb_pkt_count: u8,
    chunks: &'a [u8],
    deltas: &'a [u8],
}

impl<'a> Twcc<'a> {
    pub(super) fn read(r: &mut Reader<'a>) -> Result<Self, ParseError> {
        // §3.1: base sequence number(16) | packet status count(16) |
        //       reference time(24, signed) | feedback packet count(8) |
        //       packet chunks... | receive deltas... | padding.
        let ssrcs = FeedbackSsrcs::read(r)?;
        let base_seq = SeqNo(r.u16()?);
        let status_count = r.u16()?;
        let reference_time = sign_extend_24(r.u24()?);
        let fb_pkt_count = r.u8()?;
        // The chunks end once they cover `status_count` packets; the deltas follow.
        // Checked chunk by chunk, so the cost follows the message's size, not the up
        // to 65535 statuses a few run length chunks can claim.
        let mut chunks = r.clone();
        let mut left = status_count;
        let mut delta_bytes = 0;
        while left > 0 {
            let chunk = Chunk::new(r.u16()?);
            let n = chunk.len.min(left);
            delta_bytes += chunk.delta_bytes(n)?;
            left -= n;
        }
        let chunks = chunks.take(r.position() - chunks.position())?;
        let deltas = r.rest();
        if deltas.len() < delta_bytes {
            return Err(ParseError::Truncated {
                needed: delta_bytes,
                had: deltas.len(),
            });
        }
        Ok(Self {
            ssrcs,
            base_seq,
            status_count,
            reference_time,
            fb_pkt_count,
            chunks,
            deltas,
        })
    }

    pub fn sender_ssrc(&self) -> Ssrc {
        self.ssrcs.sender
    }

    pub fn media_ssrc(&self) -> Ssrc {
        self.ssrcs.media
    }

    /// Transport-wide sequence number of the first packet reported on.
    pub fn base_seq(&self) -> SeqNo {
        self.base_seq
    }

    /// How many packets this message reports on.
    pub fn status_count(&self) -> u16 {
        self.status_count
    }

    /// The reference time in multiples of 64 ms, in the sender's time base.
    pub fn reference_time(&self) -> i32 {
        self.reference_time
    }

    /// The reference time in microseconds.
    pub fn reference_time_us(&self) -> i64 {
        i64::from(self.reference_time) * REFERENCE_TICK_US
    }

    /// Counts feedback messages, wrapping at 256, to detect lost feedback.
    pub fn fb_pkt_count(&self) -> u8 {
        self.fb_pkt_count
    }

    /// One `(seq, delta_us)` per packet from [`Self::base_seq`] on: `None` for a packet
    /// not received, else its receive delta in microseconds. The first delta is from
    /// the reference time, each later one from the previous received packet.
    pub fn statuses(&self) -> TwccStatuses<'a> {
        TwccStatuses {
            chunks: Reader::new(self.chunks),
            deltas: Reader::new(self.deltas),
            chunk: Chunk::EMPTY,
            seq: self.base_seq,
            left: self.status_count,
        }
    }
}

/// A decoded packet status chunk (§3.1.1).
#[derive(Debug, Clone, Copy)]
struct Chunk {
    raw: u16,
    /// Statuses it holds.
    len: u16,
    /// Statuses already read.
    used: u16,
}

impl Chunk {
    const EMPTY: Self = Self {
        raw: 0,
        len: 0,
        used: 0,
    };

    fn new(raw: u16) -> Self {
        let len = match raw >> 14 {
            // §3.1.3 run length chunk: 0 | symbol(2) | run length(13).
            0b00 | 0b01 => raw & 0x1fff,
            // §3.1.4 status vector chunk: 1 | S | symbols: 14 of 1 bit (S=0) or 7 of 2.
            0b10 => 14,
            _ => 7,
        };
        Self { raw, len, used: 0 }
    }

    /// Status symbol `i` (< `len`): 0 not received, 1 small delta, 2 large or
    /// negative delta, 3 reserved (§3.1.1).
    fn symbol(&self, i: u16) -> u16 {
        match self.raw >> 14 {
            0b00 | 0b01 => self.raw >> 13 & 0b11,
            0b10 => self.raw >> (13 - i) & 0b1,
            _ => self.raw >> (12 - 2 * i) & 0b11,
        }
    }

    fn next_symbol(&mut self) -> Option<u16> {
        if self.used == self.len {
            return None;
        }
        self.used += 1;
        Some(self.symbol(self.used - 1))
    }

    /// Bytes of receive deltas the first `n` statuses need.
    fn delta_bytes(&self, n: u16) -> Result<usize, ParseError> {
        let size = |symbol| match symbol {
            0 => Ok(0),
            1 => Ok(1),
            2 => Ok(2),
            _ => Err(ParseError::Invalid("TWCC reserved status symbol")),
        };
        if self.raw >> 15 == 0 {
            Ok(size(self.symbol(0))? * usize::from(n))
        } else {
            (0..n).map(|i| size(self.symbol(i))).sum()
        }
    }
}

/// Iterator over a TWCC message's packet statuses as `(seq, Option<delta_us>)`.
#[derive(Debug, Clone)]
pub struct TwccStatuses<'a> {
    chunks: Reader<'a>,
    deltas: Reader<'a>,
    chunk: Chunk,
    seq: SeqNo,
    left: u16,
}

impl TwccStatuses<'_> {
    fn step(&mut self) -> Result<Option<(SeqNo, Option<i64>)>, ParseError> {
        if self.left == 0 {
            return Ok(None);
        }
        let symbol = loop {
            match self.chunk.next_symbol() {
                Some(s) => break s,
                None => self.chunk = Chunk::new(self.chunks.u16()?),
            }
        };
        // §3.1.5: a small delta is 1 byte unsigned, a large one 2 bytes signed, both
        // in 250 µs ticks.
        let delta = match symbol {
            0 => None,
            1 => Some(i64::from(self.deltas.u8()?)),
            2 => Some(i64::from(self.deltas.u16()? as i16)),
            _ => return Err(ParseError::Invalid("TWCC reserved status symbol")),
        };
        let seq = self.seq;
        self.seq = seq.wrapping_add(1);
        self.left -= 1;
        Ok(Some((seq, delta.map(|ticks| ticks * DELTA_TICK_US))))
    }
}

impl Iterator for TwccStatuses<'_> {
    type Item = (SeqNo, Option<i64>);

    fn next(&mut self) -> Option<Self::Item> {
        // Validated by `Twcc::read`, so this never errs.
        self.step().unwrap_or_else(|_| {
            self.left = 0;
            None
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::from(self.left), Some(usize::from(self.left)))
    }
}

impl ExactSizeIterator for TwccStatuses<'_> {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::tests::TWCC;
    use super::super::{Compound, RtcpPacket};
    use super::*;

    fn twcc(buf: &[u8]) -> Twcc<'_> {
        match Compound::new(buf).next() {
            Some(Ok(RtcpPacket::Twcc(t))) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decodes_a_two_bit_status_vector() {
        let t = twcc(&TWCC);
        assert_eq!(t.media_ssrc(), Ssrc(0x1122_3344));
        assert_eq!(t.base_seq(), SeqNo(100));
        assert_eq!(t.status_count(), 4);
        assert_eq!(t.reference_time(), -2);
        assert_eq!(t.reference_time_us(), -128_000);
        assert_eq!(t.fb_pkt_count(), 5);
        let statuses: Vec<_> = t.statuses().collect();
        assert_eq!(
            statuses,
            [
                (SeqNo(100), Some(1000)),
                (SeqNo(101), None),
                (SeqNo(102), Some(500)),
                (SeqNo(103), Some(-250)),
            ]
        );
    }

    #[test]
    fn decodes_run_length_and_one_bit_chunks() {
        let buf = [
            0x8f, 0xcd, 0x00, 0x07, 0, 0, 0, 1, 0, 0, 0, 2, // RTPFB FMT 15
            0xff, 0xfe, 0x00, 0x11, // base seq 65534, 17 statuses
            0x00, 0x00, 0x01, 0x00, // reference time 1, feedback #0
            0x20, 0x03, // run: 3 × small delta
            0xa0, 0x01, // 1-bit vector: received, 12 lost, received
            0x01, 0x02, 0x03, 0x04, 0x05, 0, 0, 0, // 5 deltas, zero pad
        ];
        let t = twcc(&buf);
        let statuses: Vec<_> = t.statuses().collect();
        assert_eq!(statuses.len(), 17);
        assert_eq!(statuses[0], (SeqNo(65534), Some(250)));
        assert_eq!(statuses[2], (SeqNo(0), Some(750)));
        assert_eq!(statuses[3], (SeqNo(1), Some(1000)));
        assert!(statuses[4..16].iter().all(|(_, d)| d.is_none()));
        assert_eq!(statuses[16], (SeqNo(14), Some(1250)));
    }

    #[test]
    fn long_runs_cost_nothing_to_parse() {
        let buf = [
            0x8f, 0xcd, 0x00, 0x09, 0, 0, 0, 1, 0, 0, 0, 2, // RTPFB FMT 15
            0x00, 0x00, 0xff, 0xff, 0, 0, 0, 0, // 65535 statuses
            0x1f, 0xff, 0x1f, 0xff, 0x1f, 0xff, 0x1f, 0xff, // 4 runs of 8191 lost
            0x1f, 0xff, 0x1f, 0xff, 0x1f, 0xff, 0x1f, 0xff, // and 4 more
            0xc0, 0x00, 0x00, 0x00, // 2-bit vector for the last 7, zero pad
        ];
        let t = twcc(&buf);
        assert_eq!(t.statuses().len(), 65535);
        assert!(t.statuses().all(|(_, d)| d.is_none()));
        assert_eq!(t.statuses().last().map(|(s, _)| s), Some(SeqNo(65534)));
    }

    #[test]
    fn rejects_missing_deltas_and_reserved_symbols() {
        let mut short = TWCC;
        short[3] = 0x05; // drop the last word: padding and two delta bytes
        short[0] = 0x8f;
        assert!(Compound::new(&short[..24]).next().unwrap().is_err());
        let mut reserved = TWCC;
        reserved[20] = 0x60; // run length chunk of symbol 3
        assert_eq!(
            Compound::new(&reserved).next(),
            Some(Err(ParseError::Invalid("TWCC reserved status symbol")))
        );
    }
}
