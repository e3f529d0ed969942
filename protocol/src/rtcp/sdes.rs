//! Source description packets (RFC 3550 §6.5).

use super::{packet_len, pt, write_header, MAX_COUNT};
use crate::cursor::{Reader, Writer};
use crate::encode::Encode;
use crate::error::{ParseError, WriteError};
use crate::rtp::Ssrc;

/// The CNAME item type (RFC 3550 §6.5.1).
pub const CNAME: u8 = 1;

/// An SDES packet: one chunk of items per source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sdes<'a> {
    count: u8,
    body: &'a [u8],
}

impl<'a> Sdes<'a> {
    pub(super) fn read(r: &mut Reader<'a>, count: u8) -> Result<Self, ParseError> {
        let body = r.rest();
        let sdes = Self { count, body };
        let mut chunks = sdes.chunks();
        for _ in 0..count {
            read_chunk(&mut chunks.r)?;
        }
        Ok(sdes)
    }

    /// The chunks, as many as the SC field says.
    pub fn chunks(&self) -> SdesChunks<'a> {
        SdesChunks {
            r: Reader::new(self.body),
            left: self.count,
        }
    }
}

/// One source's items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesChunk<'a> {
    pub ssrc: Ssrc,
    items: &'a [u8],
}

impl<'a> SdesChunk<'a> {
    /// The items as `(type, value)`.
    pub fn items(&self) -> SdesItems<'a> {
        SdesItems(Reader::new(self.items))
    }

    /// The CNAME item, if present and UTF-8.
    pub fn cname(&self) -> Option<&'a str> {
        let (_, value) = self.items().find(|&(ty, _)| ty == CNAME)?;
        std::str::from_utf8(value).ok()
    }
}

/// Reads one chunk. `r` must start 32-bit aligned.
fn read_chunk<'a>(r: &mut Reader<'a>) -> Result<SdesChunk<'a>, ParseError> {
    // RFC 3550 §6.5: SSRC/CSRC, then items `type(8) length(8) text`, ended by a null
    // octet and padded with more nulls to the next 32-bit boundary.
    let ssrc = Ssrc(r.u32()?);
    let mut items = r.clone();
    let start = r.position();
    while r.u8()? != 0 {
        let len = usize::from(r.u8()?);
        r.skip(len)?;
    }
    let items = items.take(r.position() - 1 - start)?;
    r.skip(r.position().next_multiple_of(4) - r.position())?;
    Ok(SdesChunk { ssrc, items })
}

/// Iterator over SDES chunks.
#[derive(Debug, Clone)]
pub struct SdesChunks<'a> {
    r: Reader<'a>,
    left: u8,
}

impl<'a> Iterator for SdesChunks<'a> {
    type Item = SdesChunk<'a>;

    fn next(&mut self) -> Option<SdesChunk<'a>> {
        self.left = self.left.checked_sub(1)?;
        // Validated by `Sdes::read`, so this never errs.
        read_chunk(&mut self.r).ok()
    }
}

/// Iterator over a chunk's items as `(type, value)`.
#[derive(Debug, Clone)]
pub struct SdesItems<'a>(Reader<'a>);

impl<'a> Iterator for SdesItems<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let ty = self.0.u8().ok()?;
        let len = usize::from(self.0.u8().ok()?);
        Some((ty, self.0.take(len).ok()?))
    }
}

/// Writes an SDES packet with one CNAME item per source (RFC 3550 §6.5.1): what a
/// sender puts in every compound RTCP packet. All sources share one CNAME (they are
/// one endpoint's streams).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SdesCnameWriter<'a> {
    /// At most 31 sources.
    pub ssrcs: &'a [Ssrc],
    /// 1..=255 bytes.
    pub cname: &'a [u8],
}

impl SdesCnameWriter<'_> {
    /// Bytes of one chunk: SSRC, CNAME item, and the null octet(s) padding it to 32 bits.
    fn chunk_len(&self) -> usize {
        (4 + 2 + self.cname.len() + 1).next_multiple_of(4)
    }
}

impl Encode for SdesCnameWriter<'_> {
    fn encoded_len(&self) -> Result<usize, WriteError> {
        if self.ssrcs.len() > MAX_COUNT {
            return Err(WriteError::Invalid("SDES chunk count"));
        }
        if self.cname.is_empty() || self.cname.len() > 255 {
            return Err(WriteError::Invalid("CNAME length"));
        }
        packet_len(self.ssrcs.len() * self.chunk_len() / 4)
    }

    fn encode(&self, buf: &mut [u8]) -> Result<usize, WriteError> {
        let len = self.encoded_len()?;
        let mut w = Writer::with_room(buf, len)?;
        // The count was checked against MAX_COUNT (31) above.
        write_header(&mut w, self.ssrcs.len() as u8, pt::SDES, len)?;
        let nulls = self.chunk_len() - (4 + 2 + self.cname.len());
        for ssrc in self.ssrcs {
            w.u32(ssrc.0)?;
            w.u8(CNAME)?;
            w.u8(self.cname.len() as u8)?;
            w.put(self.cname)?;
            w.zeros(nulls)?;
        }
        Ok(w.position())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    type Chunks = Vec<(Ssrc, Vec<(u8, Vec<u8>)>)>;

    fn sdes(count: u8, body: &[u8]) -> Result<Chunks, ParseError> {
        let s = Sdes::read(&mut Reader::new(body), count)?;
        Ok(s.chunks()
            .map(|c| (c.ssrc, c.items().map(|(t, v)| (t, v.to_vec())).collect()))
            .collect())
    }

    #[test]
    fn reads_several_chunks_and_items() {
        let body = [
            0, 0, 0, 1, 1, 2, b'a', b'b', 6, 1, b'x', 0, // CNAME "ab", TOOL "x", null
            0, 0, 0, 2, 0, 0, 0, 0, // no items
        ];
        assert_eq!(
            sdes(2, &body).unwrap(),
            [
                (Ssrc(1), vec![(1, b"ab".to_vec()), (6, b"x".to_vec())]),
                (Ssrc(2), vec![])
            ]
        );
    }

    #[test]
    fn cname_writer_round_trips() {
        use super::super::{Compound, RtcpPacket};
        for cname in [&b"a"[..], b"abc", b"abcd", b"chorus-node"] {
            let w = SdesCnameWriter {
                ssrcs: &[Ssrc(7), Ssrc(9)],
                cname,
            };
            let mut buf = [0u8; 128];
            let n = w.encode(&mut buf).unwrap();
            assert_eq!(n % 4, 0);
            let packets: Vec<_> = Compound::new(&buf[..n]).collect();
            let Some(Ok(RtcpPacket::Sdes(s))) = packets.first() else {
                panic!("{packets:?}");
            };
            let got: Vec<_> = s.chunks().map(|c| (c.ssrc, c.cname())).collect();
            let name = std::str::from_utf8(cname).ok();
            assert_eq!(got, [(Ssrc(7), name), (Ssrc(9), name)]);
        }
        let empty = SdesCnameWriter {
            ssrcs: &[Ssrc(1)],
            cname: b"",
        };
        assert!(empty.encode(&mut [0u8; 64]).is_err());
    }

    #[test]
    fn rejects_unterminated_or_short_chunks() {
        assert!(sdes(1, &[0, 0, 0, 1, 1, 2, b'a', b'b']).is_err());
        assert!(sdes(1, &[0, 0, 0, 1, 1, 9, b'a', 0]).is_err());
        assert!(sdes(2, &[0, 0, 0, 1, 0, 0, 0, 0]).is_err());
        // Terminated, but the padding to 32 bits is missing.
        assert!(sdes(1, &[0, 0, 0, 1, 1, 2, b'a', b'b', 0]).is_err());
    }
}
