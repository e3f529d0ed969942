//! RTCP compound packets (RFC 3550 §6) as zero-copy views, and writers for what an
//! SFU sends.
//!
//! [`Compound`] walks a compound packet and yields one typed [`RtcpPacket`] per
//! individual packet, each validated as it is read (length field, version, padding,
//! and the packet's own structure), so the accessors of the views cannot fail.
//!
//! | packet | view | writer |
//! | --- | --- | --- |
//! | SR, RR (RFC 3550 §6.4) | [`SenderReport`], [`ReceiverReport`] | [`SenderReportWriter`], [`ReceiverReportWriter`] |
//! | SDES, BYE (RFC 3550 §6.5, §6.6) | [`Sdes`], [`Bye`] | [`SdesCnameWriter`] |
//! | Generic NACK (RFC 4585 §6.2.1) | [`Nack`] | [`NackWriter`] |
//! | PLI (RFC 4585 §6.3.1), FIR (RFC 5104 §4.3.1) | [`Pli`], [`Fir`] | [`PliWriter`], [`FirWriter`] |
//! | REMB (draft-alvestrand-rmcat-remb) | [`Remb`] | [`RembWriter`] |
//! | Transport-wide CC (draft-holmer-rmcat-transport-wide-cc-extensions-01) | [`Twcc`] | |
//!
//! Writers implement [`crate::encode::Encode`]; a compound packet is several of them
//! encoded one after another into one buffer.

mod bye;
mod nack;
mod psfb;
mod report;
mod sdes;
mod twcc;

pub use bye::Bye;
pub use nack::{Nack, NackPair, NackWriter};
pub use psfb::{Fir, FirEntry, FirWriter, Pli, PliWriter, Remb, RembWriter};
pub use report::{
    ReceiverReport, ReceiverReportWriter, ReportBlock, SenderInfo, SenderReport, SenderReportWriter,
};
pub use sdes::{Sdes, SdesChunk, SdesCnameWriter, SdesItems};
pub use twcc::{Twcc, TwccStatuses};

use crate::cursor::{Reader, Writer};
use crate::error::{ParseError, WriteError};
use crate::rtp::Ssrc;

/// Packet types (RFC 3550 §12.1, RFC 4585 §6.1).
pub mod pt {
    pub const SR: u8 = 200;
    pub const RR: u8 = 201;
    pub const SDES: u8 = 202;
    pub const BYE: u8 = 203;
    pub const APP: u8 = 204;
    /// Transport-layer feedback: NACK (FMT 1), TWCC (FMT 15).
    pub const RTPFB: u8 = 205;
    /// Payload-specific feedback: PLI (FMT 1), FIR (FMT 4), REMB (FMT 15).
    pub const PSFB: u8 = 206;
}

/// Most report blocks, SDES chunks or BYE SSRCs a packet can carry: the count is 5 bits.
pub const MAX_COUNT: usize = 31;

const RTCP_VERSION: u8 = 2;

/// One individual RTCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtcpPacket<'a> {
    SenderReport(SenderReport<'a>),
    ReceiverReport(ReceiverReport<'a>),
    Sdes(Sdes<'a>),
    Bye(Bye<'a>),
    Nack(Nack<'a>),
    Pli(Pli),
    Fir(Fir<'a>),
    Remb(Remb<'a>),
    Twcc(Twcc<'a>),
    /// Any other packet type or feedback format; `body` follows the 4-byte common
    /// header, without padding.
    Unknown {
        pt: u8,
        fmt: u8,
        body: &'a [u8],
    },
}

/// Iterator over the packets of a compound RTCP packet.
///
/// Yields `Err` once for the first packet that does not parse and stops there: the
/// length of anything after it cannot be trusted.
#[derive(Debug, Clone)]
pub struct Compound<'a> {
    r: Reader<'a>,
    failed: bool,
}

impl<'a> Compound<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            r: Reader::new(buf),
            failed: false,
        }
    }
}

impl<'a> Iterator for Compound<'a> {
    type Item = Result<RtcpPacket<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.is_empty() {
            return None;
        }
        let packet = read_packet(&mut self.r);
        self.failed = packet.is_err();
        Some(packet)
    }
}

/// Reads one individual packet.
fn read_packet<'a>(r: &mut Reader<'a>) -> Result<RtcpPacket<'a>, ParseError> {
    // RFC 3550 §6.4.1: V(2) P(1) count/FMT(5) | PT(8) | length(16), the length being
    // the packet's size in 32-bit words minus one, header and padding included.
    let b0 = r.u8()?;
    let version = b0 >> 6;
    if version != RTCP_VERSION {
        return Err(ParseError::BadVersion(version));
    }
    let count = b0 & 0x1f;
    let pt = r.u8()?;
    let words = usize::from(r.u16()?);
    let body = r.take(4 * words)?;
    // RFC 3550 §6.4.1: with P set, the last octet counts the padding, itself included.
    // The RFC puts padding only on the last packet of a compound; a padded packet
    // elsewhere is accepted all the same, as its length field still delimits it.
    let body = if b0 & 0x20 != 0 {
        let pad = usize::from(*body.last().ok_or(ParseError::Invalid("RTCP padding"))?);
        body.len()
            .checked_sub(pad)
            .filter(|_| pad > 0)
            .and_then(|len| body.get(..len))
            .ok_or(ParseError::Invalid("RTCP padding length"))?
    } else {
        body
    };
    let mut b = Reader::new(body);
    Ok(match (pt, count) {
        (pt::SR, _) => RtcpPacket::SenderReport(SenderReport::read(&mut b, count)?),
        (pt::RR, _) => RtcpPacket::ReceiverReport(ReceiverReport::read(&mut b, count)?),
        (pt::SDES, _) => RtcpPacket::Sdes(Sdes::read(&mut b, count)?),
        (pt::BYE, _) => RtcpPacket::Bye(Bye::read(&mut b, count)?),
        (pt::RTPFB, nack::FMT) => RtcpPacket::Nack(Nack::read(&mut b)?),
        (pt::RTPFB, twcc::FMT) => RtcpPacket::Twcc(Twcc::read(&mut b)?),
        (pt::PSFB, psfb::PLI_FMT) => RtcpPacket::Pli(Pli::read(&mut b)?),
        (pt::PSFB, psfb::FIR_FMT) => RtcpPacket::Fir(Fir::read(&mut b)?),
        (pt::PSFB, psfb::AFB_FMT) if Remb::is_remb(body) => RtcpPacket::Remb(Remb::read(&mut b)?),
        (pt, fmt) => RtcpPacket::Unknown { pt, fmt, body },
    })
}

/// RFC 4585 §6.1: the two SSRCs that open every feedback message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FeedbackSsrcs {
    /// Who sends the feedback.
    pub(crate) sender: Ssrc,
    /// The media source it is about (0 where the FCI names the sources, as in FIR).
    pub(crate) media: Ssrc,
}

impl FeedbackSsrcs {
    fn read(r: &mut Reader<'_>) -> Result<Self, ParseError> {
        Ok(Self {
            sender: Ssrc(r.u32()?),
            media: Ssrc(r.u32()?),
        })
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<(), WriteError> {
        w.u32(self.sender.0)?;
        w.u32(self.media.0)
    }
}

/// The length in bytes of a packet whose body after the common header is `body_words`
/// 32-bit words, if its length field can say it.
fn packet_len(body_words: usize) -> Result<usize, WriteError> {
    if body_words > usize::from(u16::MAX) {
        return Err(WriteError::Invalid("RTCP packet length"));
    }
    Ok(4 + 4 * body_words)
}

/// Writes the common header of a `len`-byte packet (see [`packet_len`]).
fn write_header(w: &mut Writer<'_>, count: u8, pt: u8, len: usize) -> Result<(), WriteError> {
    let words = u16::try_from(len / 4 - 1).map_err(|_| WriteError::Invalid("RTCP length"))?;
    w.u8(RTCP_VERSION << 6 | count & 0x1f)?;
    w.u8(pt)?;
    w.u16(words)
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// A browser's compound report: SR with one report block, then SDES CNAME.
    pub(crate) const SR_SDES: [u8; 84] = [
        0x81, 0xc8, 0x00, 0x0c, // SR, 1 block, 13 words
        0x11, 0x22, 0x33, 0x44, // SSRC
        0xe9, 0x3c, 0x5e, 0x4a, 0x80, 0x00, 0x00, 0x00, // NTP
        0x00, 0x01, 0xe2, 0x40, // RTP timestamp
        0x00, 0x00, 0x00, 0x64, // packets
        0x00, 0x00, 0x3e, 0x80, // octets
        0x55, 0x66, 0x77, 0x88, // block: SSRC
        0x40, 0xff, 0xff, 0xfe, // fraction 64/256, cumulative -2
        0x00, 0x01, 0x10, 0x00, // extended highest seq
        0x00, 0x00, 0x00, 0x2a, // jitter
        0x5e, 0x4a, 0x80, 0x00, // LSR
        0x00, 0x01, 0x00, 0x00, // DLSR
        0x81, 0xca, 0x00, 0x06, // SDES, 1 chunk, 7 words
        0x11, 0x22, 0x33, 0x44, // SSRC
        0x01, 0x10, b'p', b'Q', b'8', b'x', b'm', b'J', b'a', b'f', b'u', b'r', b'5', b'z', b'V',
        b'4', b'3', b'w', 0x00, 0x00, // CNAME (16), null, pad
        0x80, 0xcb, 0x00, 0x00, // an empty BYE
    ];

    /// Packets 100..=103: received (+1 ms), lost, received (+0.5 ms), received
    /// (-0.25 ms), in one two-bit status vector, then padding.
    pub(crate) const TWCC: [u8; 28] = [
        0xaf, 0xcd, 0x00, 0x06, // P=1, RTPFB FMT 15, 7 words
        0, 0, 0, 1, 0x11, 0x22, 0x33, 0x44, // sender, media
        0x00, 0x64, 0x00, 0x04, // base seq 100, 4 statuses
        0xff, 0xff, 0xfe, 0x05, // reference time -2, feedback #5
        0xd1, 0x80, // 2-bit vector: 01 00 01 10 00 00 00
        0x04, 0x02, 0xff, 0xff, // deltas: 4, 2, -1 ticks
        0x00, 0x02, // padding
    ];

    #[test]
    fn walks_a_browser_compound() {
        let packets: Vec<_> = Compound::new(&SR_SDES).collect::<Result<_, _>>().unwrap();
        let [RtcpPacket::SenderReport(sr), RtcpPacket::Sdes(sdes), RtcpPacket::Bye(bye)] =
            packets[..]
        else {
            panic!("{packets:?}");
        };
        assert_eq!(sr.ssrc(), Ssrc(0x1122_3344));
        assert_eq!(sr.info().ntp_timestamp, 0xe93c_5e4a_8000_0000);
        assert_eq!(sr.info().packet_count, 100);
        let block = sr.report_blocks().next().unwrap();
        assert_eq!(block.cumulative_lost, -2);
        assert_eq!(block.fraction_lost, 64);
        assert_eq!(block.delay_since_last_sr, 0x10000);
        let chunk = sdes.chunks().next().unwrap();
        assert_eq!(chunk.ssrc, Ssrc(0x1122_3344));
        assert_eq!(chunk.cname(), Some("pQ8xmJafur5zV43w"));
        assert_eq!(bye.ssrcs().count(), 0);
    }

    #[test]
    fn rejects_bad_headers() {
        let mut v1 = SR_SDES;
        v1[0] = 0x41;
        assert_eq!(
            Compound::new(&v1).next(),
            Some(Err(ParseError::BadVersion(1)))
        );
        // Length one word longer than the buffer: the first packet errs, then nothing.
        let mut long = SR_SDES;
        long[3] = 0x15;
        let mut c = Compound::new(&long);
        assert!(matches!(c.next(), Some(Err(ParseError::Truncated { .. }))));
        assert_eq!(c.next(), None);
        // Truncated mid-packet.
        assert!(Compound::new(&SR_SDES[..30]).any(|p| p.is_err()));
    }

    #[test]
    fn handles_padding_on_the_last_packet() {
        // An RR with no blocks, padded by 4 bytes.
        let rr = [0xa0, 0xc9, 0x00, 0x02, 0, 0, 0, 9, 0, 0, 0, 4];
        let p = Compound::new(&rr).next().unwrap().unwrap();
        let RtcpPacket::ReceiverReport(rr_view) = p else {
            panic!("{p:?}")
        };
        assert_eq!(rr_view.ssrc(), Ssrc(9));
        for bad_pad in [0, 9] {
            let mut bad = rr;
            bad[11] = bad_pad;
            assert!(matches!(
                Compound::new(&bad).next(),
                Some(Err(ParseError::Invalid(_)))
            ));
        }
    }

    #[test]
    fn unknown_types_pass_through() {
        let app = [0x81, 0xcc, 0x00, 0x02, 0, 0, 0, 1, b'n', b'a', b'm', b'e'];
        assert_eq!(
            Compound::new(&app).next(),
            Some(Ok(RtcpPacket::Unknown {
                pt: pt::APP,
                fmt: 1,
                body: &app[4..]
            }))
        );
    }

    proptest! {
        #[test]
        fn parse_is_total(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            crate::fuzzing::rtcp(&bytes);
        }

        #[test]
        fn parse_is_total_on_rtcp_shaped_bytes(
            b0 in 0x80u8..=0xbf,
            pt in 200u8..=207,
            words in 0u16..40,
            body in prop::collection::vec(any::<u8>(), 0..160),
        ) {
            let mut bytes = vec![b0, pt];
            bytes.extend(words.to_be_bytes());
            bytes.extend(body);
            crate::fuzzing::rtcp(&bytes);
        }
    }
}
