//! RTP packets (RFC 3550) as zero-copy views.
//!
//! - [`RtpPacket`]: a read-only view, validated once by [`RtpPacket::parse`]; every
//!   accessor after that is infallible.
//! - [`HeaderExtension`] and [`ExtensionElements`]: the RFC 8285 header extension
//!   (one-byte and two-byte forms), and [`AudioLevel`] (RFC 6464).
//! - [`RtpPacketMut`]: rewrites header fields and extension values in place.
//! - [`RtpWriter`]: builds a packet into a caller's buffer (see [`crate::encode::Encode`]).
//!   Changing the CSRC list changes the header length, so it is done by rebuilding:
//!   `RtpWriter { csrcs: &new, ..RtpWriter::from_packet(&packet) }`.

mod extension;
mod rewrite;
mod writer;

use std::fmt;

pub use extension::{AudioLevel, ExtensionElements, ExtensionProfile, HeaderExtension};
pub use rewrite::RtpPacketMut;
pub use writer::{ExtensionSpec, RtpWriter};

use crate::cursor::Reader;
use crate::error::ParseError;

/// The only RTP version there is (RFC 3550 §5.1).
pub const RTP_VERSION: u8 = 2;

/// Length of the fixed RTP header, before the CSRC list (RFC 3550 §5.1).
pub const FIXED_HEADER_LEN: usize = 12;

/// Most CSRCs a header can list: the CC field is 4 bits (RFC 3550 §5.1).
pub const MAX_CSRCS: usize = 15;

/// A synchronization source identifier (RFC 3550 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Ssrc(pub u32);

impl From<u32> for Ssrc {
    fn from(v: u32) -> Self {
        Self(v)
    }
}

impl From<Ssrc> for u32 {
    fn from(v: Ssrc) -> Self {
        v.0
    }
}

impl fmt::Display for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// A 16-bit RTP sequence number. It wraps, so it is deliberately not `Ord`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNo(pub u16);

impl SeqNo {
    /// `self + n`, wrapping at 2^16.
    #[must_use]
    pub fn wrapping_add(self, n: u16) -> Self {
        Self(self.0.wrapping_add(n))
    }

    /// How far `later` is ahead of `self`, wrapping at 2^16.
    #[must_use]
    pub fn distance_to(self, later: Self) -> u16 {
        later.0.wrapping_sub(self.0)
    }
}

impl From<u16> for SeqNo {
    fn from(v: u16) -> Self {
        Self(v)
    }
}

impl From<SeqNo> for u16 {
    fn from(v: SeqNo) -> Self {
        v.0
    }
}

impl fmt::Display for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A validated RTP packet borrowing its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    marker: bool,
    payload_type: u8,
    sequence_number: SeqNo,
    timestamp: u32,
    ssrc: Ssrc,
    csrcs: &'a [u8],
    extension: Option<HeaderExtension<'a>>,
    header_len: usize,
    payload: &'a [u8],
    padding_len: u8,
}

impl<'a> RtpPacket<'a> {
    /// Reads and validates a whole RTP packet: version, CSRC list, header extension
    /// (including every RFC 8285 element) and padding.
    pub fn parse(buf: &'a [u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(buf);
        // RFC 3550 §5.1: V(2) P(1) X(1) CC(4) | M(1) PT(7) | sequence number(16)
        //                | timestamp(32) | SSRC(32) | CSRC list (CC × 32).
        let b0 = r.u8()?;
        let version = b0 >> 6;
        if version != RTP_VERSION {
            return Err(ParseError::BadVersion(version));
        }
        let has_padding = b0 & 0x20 != 0;
        let has_extension = b0 & 0x10 != 0;
        let csrc_count = usize::from(b0 & 0x0f);
        let b1 = r.u8()?;
        let sequence_number = SeqNo(r.u16()?);
        let timestamp = r.u32()?;
        let ssrc = Ssrc(r.u32()?);
        let csrcs = r.take(4 * csrc_count)?;
        let extension = if has_extension {
            Some(HeaderExtension::read(&mut r)?)
        } else {
            None
        };
        let header_len = r.position();
        let body = r.rest();
        // RFC 3550 §5.1: with P set, the last octet counts the padding octets,
        // itself included, so it cannot be zero or exceed what follows the header.
        let (payload, padding_len) = if has_padding {
            let count = *body.last().ok_or(ParseError::Invalid("RTP padding"))?;
            let payload_len = body
                .len()
                .checked_sub(usize::from(count))
                .filter(|_| count > 0)
                .ok_or(ParseError::Invalid("RTP padding length"))?;
            let payload = body.get(..payload_len).unwrap_or_default();
            (payload, count)
        } else {
            (body, 0)
        };
        Ok(Self {
            marker: b1 & 0x80 != 0,
            payload_type: b1 & 0x7f,
            sequence_number,
            timestamp,
            ssrc,
            csrcs,
            extension,
            header_len,
            payload,
            padding_len,
        })
    }

    /// Always [`RTP_VERSION`]: other versions do not parse.
    pub fn version(&self) -> u8 {
        RTP_VERSION
    }

    /// The P bit.
    pub fn has_padding(&self) -> bool {
        self.padding_len > 0
    }

    /// Padding octets after the payload, the count octet included; 0 without the P bit.
    pub fn padding_len(&self) -> u8 {
        self.padding_len
    }

    /// The X bit.
    pub fn has_extension(&self) -> bool {
        self.extension.is_some()
    }

    /// The CC field.
    pub fn csrc_count(&self) -> u8 {
        // At most 15 × 4 bytes were taken, so this fits.
        (self.csrcs.len() / 4) as u8
    }

    /// The contributing sources, in order.
    pub fn csrcs(&self) -> SsrcIter<'a> {
        SsrcIter::new(self.csrcs)
    }

    pub fn marker(&self) -> bool {
        self.marker
    }

    pub fn payload_type(&self) -> u8 {
        self.payload_type
    }

    pub fn sequence_number(&self) -> SeqNo {
        self.sequence_number
    }

    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    /// The header extension, if the X bit is set.
    pub fn extension(&self) -> Option<HeaderExtension<'a>> {
        self.extension
    }

    /// The RFC 8285 extension elements as `(id, value)`; empty without an extension
    /// or with a profile other than one-byte/two-byte.
    pub fn extension_elements(&self) -> ExtensionElements<'a> {
        self.extension
            .map(|e| e.elements())
            .unwrap_or_else(ExtensionElements::empty)
    }

    /// The value of the first extension element with this id.
    pub fn extension_element(&self, id: u8) -> Option<&'a [u8]> {
        self.extension_elements()
            .find(|&(i, _)| i == id)
            .map(|(_, v)| v)
    }

    /// The RFC 6464 client-to-mixer audio level, under the id negotiated for
    /// `urn:ietf:params:rtp-hdrext:ssrc-audio-level`.
    pub fn audio_level(&self, id: u8) -> Option<AudioLevel> {
        self.extension_element(id)
            .and_then(|v| v.first())
            .map(|&b| AudioLevel::from_byte(b))
    }

    /// Bytes before the payload: fixed header, CSRCs and header extension.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// The payload, without padding.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

/// Iterator over a list of 32-bit source identifiers (CSRCs here, SSRCs in RTCP).
#[derive(Debug, Clone)]
pub struct SsrcIter<'a>(Reader<'a>);

impl<'a> SsrcIter<'a> {
    /// Over `bytes`, 4 bytes an item; a short tail is ignored.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self(Reader::new(bytes))
    }
}

impl Iterator for SsrcIter<'_> {
    type Item = Ssrc;

    fn next(&mut self) -> Option<Ssrc> {
        self.0.u32().ok().map(Ssrc)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.0.remaining() / 4;
        (n, Some(n))
    }
}

impl ExactSizeIterator for SsrcIter<'_> {}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// An Opus packet as a browser sends it: one-byte extensions with audio level
    /// (id 1) and transport-wide sequence number (id 3), 3 payload bytes.
    pub(crate) const OPUS: [u8; 27] = [
        0x90, 0xef, 0x12, 0x34, // V=2 X=1, M=1 PT=111, seq 0x1234
        0x00, 0x01, 0xe2, 0x40, // timestamp 123456
        0xde, 0xad, 0xbe, 0xef, // SSRC
        0xbe, 0xde, 0x00, 0x02, // one-byte profile, 2 words
        0x10, 0xa5, // id 1 len 1: V=1, level 37
        0x31, 0x00, 0x07, // id 3 len 2: 7
        0x00, 0x00, 0x00, // padding
        0xf8, 0xff, 0xfe, // Opus payload
    ];

    #[test]
    fn parses_a_browser_opus_packet() {
        let p = RtpPacket::parse(&OPUS).unwrap();
        assert_eq!(p.version(), 2);
        assert!(p.marker());
        assert_eq!(p.payload_type(), 111);
        assert_eq!(p.sequence_number(), SeqNo(0x1234));
        assert_eq!(p.timestamp(), 123_456);
        assert_eq!(p.ssrc(), Ssrc(0xdead_beef));
        assert_eq!(p.csrc_count(), 0);
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.payload(), &[0xf8, 0xff, 0xfe]);
        assert!(!p.has_padding());
        let ext = p.extension().unwrap();
        assert_eq!(ext.profile(), ExtensionProfile::OneByte);
        let elements: Vec<_> = p.extension_elements().collect();
        assert_eq!(elements, [(1, &[0xa5][..]), (3, &[0x00, 0x07][..])]);
        let level = p.audio_level(1).unwrap();
        assert_eq!(
            level,
            AudioLevel {
                voice_activity: true,
                level_dbov: 37
            }
        );
        assert_eq!(p.audio_level(2), None);
    }

    #[test]
    fn reads_csrcs_and_padding() {
        let buf = [
            0xa2, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 9, // P=1 CC=2
            0, 0, 0, 1, 0, 0, 0, 2, // CSRCs
            0xaa, 0xbb, 0, 0, 3, // payload, 3 padding bytes
        ];
        let p = RtpPacket::parse(&buf).unwrap();
        assert_eq!(p.csrcs().collect::<Vec<_>>(), [Ssrc(1), Ssrc(2)]);
        assert_eq!(p.csrcs().len(), 2);
        assert_eq!(p.payload(), &[0xaa, 0xbb]);
        assert_eq!(p.padding_len(), 3);
        assert_eq!(p.header_len(), 20);
    }

    #[test]
    fn rejects_bad_packets() {
        let mut v1 = OPUS;
        v1[0] = 0x50;
        assert_eq!(RtpPacket::parse(&v1), Err(ParseError::BadVersion(1)));
        assert!(matches!(
            RtpPacket::parse(&OPUS[..11]),
            Err(ParseError::Truncated { .. })
        ));
        // Extension length runs past the end.
        assert!(RtpPacket::parse(&OPUS[..18]).is_err());
        // CC says 15 CSRCs, none there.
        let mut cc = OPUS;
        cc[0] = 0x8f;
        assert!(RtpPacket::parse(&cc[..20]).is_err());
        let header = [0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        // P set, zero padding count / count larger than the body / nothing after header.
        for tail in [&[1u8, 0][..], &[1, 3], &[]] {
            let buf = [&header[..], tail].concat();
            assert!(
                matches!(RtpPacket::parse(&buf), Err(ParseError::Invalid(_))),
                "{tail:?}"
            );
        }
    }

    #[test]
    fn padding_may_take_the_whole_body() {
        let buf = [0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let p = RtpPacket::parse(&buf).unwrap();
        assert!(p.payload().is_empty());
        assert_eq!(p.padding_len(), 2);
    }

    #[test]
    fn seq_no_wraps() {
        assert_eq!(SeqNo(65535).wrapping_add(2), SeqNo(1));
        assert_eq!(SeqNo(65535).distance_to(SeqNo(1)), 2);
    }
}
