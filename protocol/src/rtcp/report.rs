//! Sender and receiver reports (RFC 3550 §6.4).

use super::{packet_len, pt, write_header, MAX_COUNT};
use crate::cursor::{sign_extend_24, Reader, Writer};
use crate::encode::Encode;
use crate::error::{ParseError, WriteError};
use crate::rtp::Ssrc;

/// Bytes in one report block.
const BLOCK_LEN: usize = 24;
const BLOCK_WORDS: usize = BLOCK_LEN / 4;

/// The sender information of an SR (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SenderInfo {
    /// NTP timestamp, 32.32 fixed point.
    pub ntp_timestamp: u64,
    pub rtp_timestamp: u32,
    pub packet_count: u32,
    pub octet_count: u32,
}

impl SenderInfo {
    fn read(r: &mut Reader<'_>) -> Result<Self, ParseError> {
        Ok(Self {
            ntp_timestamp: r.u64()?,
            rtp_timestamp: r.u32()?,
            packet_count: r.u32()?,
            octet_count: r.u32()?,
        })
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<(), WriteError> {
        w.u64(self.ntp_timestamp)?;
        w.u32(self.rtp_timestamp)?;
        w.u32(self.packet_count)?;
        w.u32(self.octet_count)
    }
}

/// A reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: Ssrc,
    /// Fraction lost since the last report, in 1/256ths.
    pub fraction_lost: u8,
    /// Cumulative number of packets lost: 24 bits signed on the wire, so written
    /// clamped to `-0x80_0000..=0x7f_ffff`.
    pub cumulative_lost: i32,
    pub extended_highest_seq: u32,
    /// Interarrival jitter, in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received (LSR).
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 seconds (DLSR).
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    /// Smallest and largest cumulative loss the 24-bit field holds.
    pub const CUMULATIVE_LOST_RANGE: (i32, i32) = (-0x80_0000, 0x7f_ffff);

    fn read(r: &mut Reader<'_>) -> Result<Self, ParseError> {
        Ok(Self {
            ssrc: Ssrc(r.u32()?),
            fraction_lost: r.u8()?,
            cumulative_lost: sign_extend_24(r.u24()?),
            extended_highest_seq: r.u32()?,
            jitter: r.u32()?,
            last_sr: r.u32()?,
            delay_since_last_sr: r.u32()?,
        })
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<(), WriteError> {
        let (min, max) = Self::CUMULATIVE_LOST_RANGE;
        w.u32(self.ssrc.0)?;
        w.u8(self.fraction_lost)?;
        w.u24(self.cumulative_lost.clamp(min, max) as u32)?;
        w.u32(self.extended_highest_seq)?;
        w.u32(self.jitter)?;
        w.u32(self.last_sr)?;
        w.u32(self.delay_since_last_sr)
    }
}

/// Iterator over report blocks.
#[derive(Debug, Clone)]
pub struct ReportBlocks<'a>(Reader<'a>);

impl Iterator for ReportBlocks<'_> {
    type Item = ReportBlock;

    fn next(&mut self) -> Option<ReportBlock> {
        ReportBlock::read(&mut self.0).ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.0.remaining() / BLOCK_LEN;
        (n, Some(n))
    }
}

impl ExactSizeIterator for ReportBlocks<'_> {}

/// An SR: sender information and reception report blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReport<'a> {
    ssrc: Ssrc,
    info: SenderInfo,
    blocks: &'a [u8],
    extension: &'a [u8],
}

impl<'a> SenderReport<'a> {
    pub(super) fn read(r: &mut Reader<'a>, count: u8) -> Result<Self, ParseError> {
        // RFC 3550 §6.4.1: SSRC, 20 bytes of sender info, RC blocks, extensions.
        Ok(Self {
            ssrc: Ssrc(r.u32()?),
            info: SenderInfo::read(r)?,
            blocks: r.take(BLOCK_LEN * usize::from(count))?,
            extension: r.rest(),
        })
    }

    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    pub fn info(&self) -> SenderInfo {
        self.info
    }

    pub fn report_blocks(&self) -> ReportBlocks<'a> {
        ReportBlocks(Reader::new(self.blocks))
    }

    /// Profile-specific extensions after the blocks (RFC 3550 §6.4.1).
    pub fn extension(&self) -> &'a [u8] {
        self.extension
    }
}

/// An RR: reception report blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverReport<'a> {
    ssrc: Ssrc,
    blocks: &'a [u8],
    extension: &'a [u8],
}

impl<'a> ReceiverReport<'a> {
    pub(super) fn read(r: &mut Reader<'a>, count: u8) -> Result<Self, ParseError> {
        // RFC 3550 §6.4.2: SSRC, RC blocks, extensions.
        Ok(Self {
            ssrc: Ssrc(r.u32()?),
            blocks: r.take(BLOCK_LEN * usize::from(count))?,
            extension: r.rest(),
        })
    }

    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    pub fn report_blocks(&self) -> ReportBlocks<'a> {
        ReportBlocks(Reader::new(self.blocks))
    }

    /// Profile-specific extensions after the blocks (RFC 3550 §6.4.2).
    pub fn extension(&self) -> &'a [u8] {
        self.extension
    }
}

fn block_count(blocks: &[ReportBlock]) -> Result<u8, WriteError> {
    u8::try_from(blocks.len())
        .ok()
        .filter(|&n| usize::from(n) <= MAX_COUNT)
        .ok_or(WriteError::Invalid("report block count"))
}

/// Writes an SR with up to 31 report blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderReportWriter<'a> {
    pub ssrc: Ssrc,
    pub info: SenderInfo,
    pub blocks: &'a [ReportBlock],
}

impl Encode for SenderReportWriter<'_> {
    fn encoded_len(&self) -> Result<usize, WriteError> {
        block_count(self.blocks)?;
        packet_len(6 + BLOCK_WORDS * self.blocks.len())
    }

    fn encode(&self, buf: &mut [u8]) -> Result<usize, WriteError> {
        let len = self.encoded_len()?;
        let mut w = Writer::with_room(buf, len)?;
        write_header(&mut w, block_count(self.blocks)?, pt::SR, len)?;
        w.u32(self.ssrc.0)?;
        self.info.write(&mut w)?;
        for block in self.blocks {
            block.write(&mut w)?;
        }
        Ok(w.position())
    }
}

/// Writes an RR with up to 31 report blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReceiverReportWriter<'a> {
    pub ssrc: Ssrc,
    pub blocks: &'a [ReportBlock],
}

impl Encode for ReceiverReportWriter<'_> {
    fn encoded_len(&self) -> Result<usize, WriteError> {
        block_count(self.blocks)?;
        packet_len(1 + BLOCK_WORDS * self.blocks.len())
    }

    fn encode(&self, buf: &mut [u8]) -> Result<usize, WriteError> {
        let len = self.encoded_len()?;
        let mut w = Writer::with_room(buf, len)?;
        write_header(&mut w, block_count(self.blocks)?, pt::RR, len)?;
        w.u32(self.ssrc.0)?;
        for block in self.blocks {
            block.write(&mut w)?;
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

    prop_compose! {
        fn block()(
            ssrc: u32, fraction_lost: u8, cumulative_lost in -0x80_0000i32..=0x7f_ffff,
            extended_highest_seq: u32, jitter: u32, last_sr: u32, delay_since_last_sr: u32,
        ) -> ReportBlock {
            ReportBlock {
                ssrc: Ssrc(ssrc), fraction_lost, cumulative_lost, extended_highest_seq,
                jitter, last_sr, delay_since_last_sr,
            }
        }
    }

    #[test]
    fn clamps_cumulative_loss_and_limits_blocks() {
        let blocks = [ReportBlock {
            cumulative_lost: i32::MIN,
            ..ReportBlock::default()
        }];
        let mut out = Vec::new();
        ReceiverReportWriter {
            ssrc: Ssrc(1),
            blocks: &blocks,
        }
        .encode_vec(&mut out)
        .unwrap();
        let Some(Ok(RtcpPacket::ReceiverReport(rr))) = Compound::new(&out).next() else {
            panic!()
        };
        assert_eq!(
            rr.report_blocks().next().unwrap().cumulative_lost,
            -0x80_0000
        );

        let many = [ReportBlock::default(); 32];
        let w = SenderReportWriter {
            blocks: &many,
            ..SenderReportWriter::default()
        };
        assert_eq!(
            w.encoded_len(),
            Err(WriteError::Invalid("report block count"))
        );
    }

    proptest! {
        #[test]
        fn sr_round_trips(
            ssrc: u32, ntp: u64, rtp: u32, packets: u32, octets: u32,
            blocks in prop::collection::vec(block(), 0..=31),
        ) {
            let info = SenderInfo {
                ntp_timestamp: ntp, rtp_timestamp: rtp, packet_count: packets, octet_count: octets,
            };
            let w = SenderReportWriter { ssrc: Ssrc(ssrc), info, blocks: &blocks };
            let mut out = Vec::new();
            prop_assert_eq!(w.encode_vec(&mut out).unwrap(), out.len());
            let mut packets = Compound::new(&out);
            let Some(Ok(RtcpPacket::SenderReport(sr))) = packets.next() else {
                return Err(TestCaseError::fail("not an SR"));
            };
            prop_assert!(packets.next().is_none());
            prop_assert_eq!(sr.ssrc(), Ssrc(ssrc));
            prop_assert_eq!(sr.info(), info);
            prop_assert_eq!(sr.report_blocks().collect::<Vec<_>>(), blocks);
            prop_assert!(sr.extension().is_empty());
        }

        #[test]
        fn rr_round_trips(ssrc: u32, blocks in prop::collection::vec(block(), 0..=31)) {
            let w = ReceiverReportWriter { ssrc: Ssrc(ssrc), blocks: &blocks };
            let mut out = Vec::new();
            w.encode_vec(&mut out).unwrap();
            let Some(Ok(RtcpPacket::ReceiverReport(rr))) = Compound::new(&out).next() else {
                return Err(TestCaseError::fail("not an RR"));
            };
            prop_assert_eq!(rr.ssrc(), Ssrc(ssrc));
            prop_assert_eq!(rr.report_blocks().collect::<Vec<_>>(), blocks);
        }
    }
}
