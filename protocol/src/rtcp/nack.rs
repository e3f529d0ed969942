//! Generic NACK (RFC 4585 §6.2.1): transport-layer feedback, FMT 1.

use super::{packet_len, pt, write_header, FeedbackSsrcs};
use crate::cursor::{Reader, Writer};
use crate::encode::Encode;
use crate::error::{ParseError, WriteError};
use crate::rtp::{SeqNo, Ssrc};

pub(super) const FMT: u8 = 1;

/// One FCI entry: a lost packet and a bitmask of the 16 after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NackPair {
    /// PID: a lost packet.
    pub pid: SeqNo,
    /// BLP: bit `i` set means `pid + i + 1` is lost too.
    pub blp: u16,
}

impl NackPair {
    /// The lost sequence numbers, `pid` first.
    pub fn lost(self) -> impl Iterator<Item = SeqNo> {
        let following = (0..16u16)
            .filter(move |i| self.blp >> i & 1 == 1)
            .map(move |i| self.pid.wrapping_add(i + 1));
        std::iter::once(self.pid).chain(following)
    }
}

/// A generic NACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nack<'a> {
    ssrcs: FeedbackSsrcs,
    fci: &'a [u8],
}

impl<'a> Nack<'a> {
    pub(super) fn read(r: &mut Reader<'a>) -> Result<Self, ParseError> {
        let ssrcs = FeedbackSsrcs::read(r)?;
        let fci = r.rest();
        if !fci.chunks_exact(4).remainder().is_empty() {
            return Err(ParseError::Invalid("NACK FCI length"));
        }
        Ok(Self { ssrcs, fci })
    }

    pub fn sender_ssrc(&self) -> Ssrc {
        self.ssrcs.sender
    }

    pub fn media_ssrc(&self) -> Ssrc {
        self.ssrcs.media
    }

    /// The FCI entries.
    pub fn pairs(&self) -> NackPairs<'a> {
        NackPairs(Reader::new(self.fci))
    }

    /// Every lost sequence number, in FCI order.
    pub fn lost(&self) -> impl Iterator<Item = SeqNo> + 'a {
        self.pairs().flat_map(NackPair::lost)
    }
}

/// Iterator over the FCI entries of a NACK.
#[derive(Debug, Clone)]
pub struct NackPairs<'a>(Reader<'a>);

impl Iterator for NackPairs<'_> {
    type Item = NackPair;

    fn next(&mut self) -> Option<NackPair> {
        // RFC 4585 §6.2.1: PID(16) | BLP(16).
        Some(NackPair {
            pid: SeqNo(self.0.u16().ok()?),
            blp: self.0.u16().ok()?,
        })
    }
}

/// Packs lost sequence numbers into FCI entries. Runs in `lost` order: every number
/// within 16 after the current entry's PID joins its bitmask, anything else starts a
/// new entry, so ascending input packs tightest.
fn pack(lost: &[SeqNo]) -> impl Iterator<Item = NackPair> + '_ {
    let mut rest = lost.iter().copied().peekable();
    std::iter::from_fn(move || {
        let pid = rest.next()?;
        let mut blp = 0u16;
        while let Some(d) = rest.peek().map(|&s| pid.distance_to(s)) {
            if !(1..=16).contains(&d) {
                break;
            }
            blp |= 1 << (d - 1);
            rest.next();
        }
        Some(NackPair { pid, blp })
    })
}

/// Writes a generic NACK for the `lost` sequence numbers (at least one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NackWriter<'a> {
    pub sender_ssrc: Ssrc,
    pub media_ssrc: Ssrc,
    pub lost: &'a [SeqNo],
}

impl Encode for NackWriter<'_> {
    fn encoded_len(&self) -> Result<usize, WriteError> {
        if self.lost.is_empty() {
            return Err(WriteError::Invalid("NACK without lost packets"));
        }
        packet_len(2 + pack(self.lost).count())
    }

    fn encode(&self, buf: &mut [u8]) -> Result<usize, WriteError> {
        let len = self.encoded_len()?;
        let mut w = Writer::with_room(buf, len)?;
        write_header(&mut w, FMT, pt::RTPFB, len)?;
        FeedbackSsrcs {
            sender: self.sender_ssrc,
            media: self.media_ssrc,
        }
        .write(&mut w)?;
        for pair in pack(self.lost) {
            w.u16(pair.pid.0)?;
            w.u16(pair.blp)?;
        }
        Ok(w.position())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::{Compound, RtcpPacket};
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn parses_a_nack() {
        let buf = [
            0x81, 0xcd, 0x00, 0x04, // RTPFB FMT 1, 5 words
            0, 0, 0, 1, 0x12, 0x34, 0x56, 0x78, // sender, media
            0xff, 0xfe, 0x80, 0x05, // PID 65534, BLP: +1, +3, +16
            0x00, 0x0a, 0x00, 0x00, // PID 10 alone
        ];
        let Some(Ok(RtcpPacket::Nack(n))) = Compound::new(&buf).next() else {
            panic!()
        };
        assert_eq!(n.sender_ssrc(), Ssrc(1));
        assert_eq!(n.media_ssrc(), Ssrc(0x1234_5678));
        let lost: Vec<u16> = n.lost().map(u16::from).collect();
        assert_eq!(lost, [65534, 65535, 1, 14, 10]);
    }

    #[test]
    fn packs_runs_into_pairs() {
        let lost = [SeqNo(100), SeqNo(101), SeqNo(116), SeqNo(117), SeqNo(5)];
        let pairs: Vec<_> = pack(&lost).collect();
        assert_eq!(
            pairs,
            [
                NackPair {
                    pid: SeqNo(100),
                    blp: 0x8001
                },
                NackPair {
                    pid: SeqNo(117),
                    blp: 0
                },
                NackPair {
                    pid: SeqNo(5),
                    blp: 0
                },
            ]
        );
        let empty = NackWriter {
            sender_ssrc: Ssrc(0),
            media_ssrc: Ssrc(0),
            lost: &[],
        };
        assert!(empty.encoded_len().is_err());
    }

    proptest! {
        #[test]
        fn round_trips(
            sender: u32, media: u32,
            lost in prop::collection::vec(any::<u16>().prop_map(SeqNo), 1..100),
        ) {
            let w = NackWriter { sender_ssrc: Ssrc(sender), media_ssrc: Ssrc(media), lost: &lost };
            let mut out = Vec::new();
            w.encode_vec(&mut out).unwrap();
            let Some(Ok(RtcpPacket::Nack(n))) = Compound::new(&out).next() else {
                return Err(TestCaseError::fail("not a NACK"));
            };
            prop_assert_eq!(n.sender_ssrc(), Ssrc(sender));
            prop_assert_eq!(n.media_ssrc(), Ssrc(media));
            let got: BTreeSet<u16> = n.lost().map(u16::from).collect();
            let want: BTreeSet<u16> = lost.iter().map(|s| s.0).collect();
            prop_assert_eq!(got, want);
        }
    }
}
