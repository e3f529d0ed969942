//! Payload-specific feedback (RFC 4585 §6.3): PLI, FIR (RFC 5104) and REMB
//! (draft-alvestrand-rmcat-remb).

use super::{packet_len, pt, write_header, FeedbackSsrcs};
use crate::cursor::{Reader, Writer};
use crate::encode::Encode;
use crate::error::{ParseError, WriteError};
use crate::rtp::{Ssrc, SsrcIter};

pub(super) const PLI_FMT: u8 = 1;
pub(super) const FIR_FMT: u8 = 4;
/// Application layer feedback (RFC 4585 §6.4), which REMB rides on.
pub(super) const AFB_FMT: u8 = 15;

const REMB_ID: &[u8; 4] = b"REMB";

/// A Picture Loss Indication (RFC 4585 §6.3.1): no FCI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pli {
    pub sender_ssrc: Ssrc,
    pub media_ssrc: Ssrc,
}

impl Pli {
    pub(super) fn read(r: &mut Reader<'_>) -> Result<Self, ParseError> {
        let ssrcs = FeedbackSsrcs::read(r)?;
        Ok(Self {
            sender_ssrc: ssrcs.sender,
            media_ssrc: ssrcs.media,
        })
    }
}

/// Writes a PLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PliWriter {
    pub sender_ssrc: Ssrc,
    pub media_ssrc: Ssrc,
}

impl Encode for PliWriter {
    fn encoded_len(&self) -> Result<usize, WriteError> {
        packet_len(2)
    }

    fn encode(&self, buf: &mut [u8]) -> Result<usize, WriteError> {
        let len = self.encoded_len()?;
        let mut w = Writer::with_room(buf, len)?;
        write_header(&mut w, PLI_FMT, pt::PSFB, len)?;
        FeedbackSsrcs {
            sender: self.sender_ssrc,
            media: self.media_ssrc,
        }
        .write(&mut w)?;
        Ok(w.position())
    }
}

/// One FIR request: the source to refresh and the command sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FirEntry {
    pub ssrc: Ssrc,
    /// Incremented by one for each new request to the same source (RFC 5104 §4.3.1.2).
    pub seq: u8,
}

/// A Full Intra Request (RFC 5104 §4.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fir<'a> {
    sender_ssrc: Ssrc,
    fci: &'a [u8],
}

impl<'a> Fir<'a> {
    pub(super) fn read(r: &mut Reader<'a>) -> Result<Self, ParseError> {
        // RFC 5104 §4.3.1.2: the media source SSRC is unused (0); the sources are in
        // the FCI.
        let ssrcs = FeedbackSsrcs::read(r)?;
        let fci = r.rest();
        if !fci.chunks_exact(8).remainder().is_empty() {
            return Err(ParseError::Invalid("FIR FCI length"));
        }
        Ok(Self {
            sender_ssrc: ssrcs.sender,
            fci,
        })
    }

    pub fn sender_ssrc(&self) -> Ssrc {
        self.sender_ssrc
    }

    pub fn entries(&self) -> FirEntries<'a> {
        FirEntries(Reader::new(self.fci))
    }
}

/// Iterator over FIR entries.
#[derive(Debug, Clone)]
pub struct FirEntries<'a>(Reader<'a>);

impl Iterator for FirEntries<'_> {
    type Item = FirEntry;

    fn next(&mut self) -> Option<FirEntry> {
        // RFC 5104 §4.3.1.1: SSRC(32) | seq nr(8) | reserved(24).
        let ssrc = Ssrc(self.0.u32().ok()?);
        let seq = self.0.u8().ok()?;
        self.0.skip(3).ok()?;
        Some(FirEntry { ssrc, seq })
    }
}

/// Writes a FIR with at least one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirWriter<'a> {
    pub sender_ssrc: Ssrc,
    pub entries: &'a [FirEntry],
}

impl Encode for FirWriter<'_> {
    fn encoded_len(&self) -> Result<usize, WriteError> {
        if self.entries.is_empty() {
            return Err(WriteError::Invalid("FIR without entries"));
        }
        packet_len(2 + 2 * self.entries.len())
    }

    fn encode(&self, buf: &mut [u8]) -> Result<usize, WriteError> {
        let len = self.encoded_len()?;
        let mut w = Writer::with_room(buf, len)?;
        write_header(&mut w, FIR_FMT, pt::PSFB, len)?;
        FeedbackSsrcs {
            sender: self.sender_ssrc,
            media: Ssrc(0),
        }
        .write(&mut w)?;
        for entry in self.entries {
            w.u32(entry.ssrc.0)?;
            w.u8(entry.seq)?;
            w.zeros(3)?;
        }
        Ok(w.position())
    }
}

/// A Receiver Estimated Maximum Bitrate message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remb<'a> {
    sender_ssrc: Ssrc,
    bitrate_bps: u64,
    ssrcs: &'a [u8],
}

impl<'a> Remb<'a> {
    /// Whether an application layer feedback body carries the "REMB" identifier.
    pub(super) fn is_remb(body: &[u8]) -> bool {
        body.get(8..12) == Some(REMB_ID)
    }

    pub(super) fn read(r: &mut Reader<'a>) -> Result<Self, ParseError> {
        // draft-alvestrand-rmcat-remb-03 §2.2: sender SSRC, media SSRC (0), "REMB",
        // Num SSRC(8) | BR Exp(6) | BR Mantissa(18), then the SSRC feedback list.
        let ssrcs = FeedbackSsrcs::read(r)?;
        r.skip(REMB_ID.len())?;
        let count = usize::from(r.u8()?);
        let exp_mantissa = r.u24()?;
        let (exp, mantissa) = (exp_mantissa >> 18, u64::from(exp_mantissa & 0x3_ffff));
        // Exponents past 46 would overflow 64 bits: saturate.
        let bitrate_bps = mantissa
            .checked_shl(exp)
            .filter(|b| b >> exp == mantissa)
            .unwrap_or(u64::MAX);
        Ok(Self {
            sender_ssrc: ssrcs.sender,
            bitrate_bps,
            ssrcs: r.take(4 * count)?,
        })
    }

    pub fn sender_ssrc(&self) -> Ssrc {
        self.sender_ssrc
    }

    /// The estimate, `mantissa << exp` in bits per second.
    pub fn bitrate_bps(&self) -> u64 {
        self.bitrate_bps
    }

    /// The sources the estimate covers.
    pub fn ssrcs(&self) -> SsrcIter<'a> {
        SsrcIter::new(self.ssrcs)
    }
}

/// Writes a REMB. The bitrate is rounded down to 18 significant bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RembWriter<'a> {
    pub sender_ssrc: Ssrc,
    pub bitrate_bps: u64,
    /// At most 255.
    pub ssrcs: &'a [Ssrc],
}

impl Encode for RembWriter<'_> {
    fn encoded_len(&self) -> Result<usize, WriteError> {
        if self.ssrcs.len() > usize::from(u8::MAX) {
            return Err(WriteError::Invalid("REMB SSRC count"));
        }
        packet_len(4 + self.ssrcs.len())
    }

    fn encode(&self, buf: &mut [u8]) -> Result<usize, WriteError> {
        let len = self.encoded_len()?;
        let mut w = Writer::with_room(buf, len)?;
        write_header(&mut w, AFB_FMT, pt::PSFB, len)?;
        FeedbackSsrcs {
            sender: self.sender_ssrc,
            media: Ssrc(0),
        }
        .write(&mut w)?;
        w.put(REMB_ID)?;
        w.u8(self.ssrcs.len() as u8)?;
        let exp = (u64::BITS - self.bitrate_bps.leading_zeros()).saturating_sub(18);
        let mantissa = (self.bitrate_bps >> exp) as u32;
        w.u24(exp << 18 | mantissa)?;
        for ssrc in self.ssrcs {
            w.u32(ssrc.0)?;
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

    #[test]
    fn parses_pli_fir_and_remb() {
        let buf = [
            0x81, 0xce, 0x00, 0x02, 0, 0, 0, 1, 0, 0, 0, 2, // PLI 1 -> 2
            0x84, 0xce, 0x00, 0x04, 0, 0, 0, 1, 0, 0, 0, 0, // FIR from 1
            0, 0, 0, 2, 7, 0, 0, 0, // entry: SSRC 2, seq 7
            0x8f, 0xce, 0x00, 0x05, 0, 0, 0, 1, 0, 0, 0, 0, // REMB from 1
            b'R', b'E', b'M', b'B', 1, 0x0a, 0x47, 0x8c, // 1 SSRC, exp 2 mantissa 0x2478c
            0, 0, 0, 2,
        ];
        let packets: Vec<_> = Compound::new(&buf).collect::<Result<_, _>>().unwrap();
        let [RtcpPacket::Pli(pli), RtcpPacket::Fir(fir), RtcpPacket::Remb(remb)] = packets[..]
        else {
            panic!("{packets:?}")
        };
        assert_eq!(
            pli,
            Pli {
                sender_ssrc: Ssrc(1),
                media_ssrc: Ssrc(2)
            }
        );
        assert_eq!(fir.sender_ssrc(), Ssrc(1));
        let entries: Vec<_> = fir.entries().collect();
        assert_eq!(
            entries,
            [FirEntry {
                ssrc: Ssrc(2),
                seq: 7
            }]
        );
        assert_eq!(remb.bitrate_bps(), 0x2478c << 2);
        assert_eq!(remb.ssrcs().collect::<Vec<_>>(), [Ssrc(2)]);
    }

    #[test]
    fn remb_saturates_and_needs_its_identifier() {
        let huge = [
            0x8f, 0xce, 0x00, 0x04, 0, 0, 0, 1, 0, 0, 0, 0, b'R', b'E', b'M', b'B', 0, 0xff, 0xff,
            0xff,
        ];
        let Some(Ok(RtcpPacket::Remb(r))) = Compound::new(&huge).next() else {
            panic!()
        };
        assert_eq!(r.bitrate_bps(), u64::MAX);
        let mut other = huge;
        other[12] = b'X';
        assert!(matches!(
            Compound::new(&other).next(),
            Some(Ok(RtcpPacket::Unknown {
                pt: 206,
                fmt: 15,
                ..
            }))
        ));
    }

    proptest! {
        #[test]
        fn pli_round_trips(sender: u32, media: u32) {
            let mut out = Vec::new();
            PliWriter { sender_ssrc: Ssrc(sender), media_ssrc: Ssrc(media) }
                .encode_vec(&mut out)
                .unwrap();
            let p = Compound::new(&out).next();
            let want = RtcpPacket::Pli(Pli { sender_ssrc: Ssrc(sender), media_ssrc: Ssrc(media) });
            prop_assert_eq!(p, Some(Ok(want)));
        }

        #[test]
        fn fir_round_trips(
            sender: u32,
            entries in prop::collection::vec(
                (any::<u32>(), any::<u8>()).prop_map(|(s, seq)| FirEntry { ssrc: Ssrc(s), seq }),
                1..20,
            ),
        ) {
            let mut out = Vec::new();
            FirWriter { sender_ssrc: Ssrc(sender), entries: &entries }
                .encode_vec(&mut out)
                .unwrap();
            let Some(Ok(RtcpPacket::Fir(fir))) = Compound::new(&out).next() else {
                return Err(TestCaseError::fail("not a FIR"));
            };
            prop_assert_eq!(fir.sender_ssrc(), Ssrc(sender));
            prop_assert_eq!(fir.entries().collect::<Vec<_>>(), entries);
        }

        #[test]
        fn remb_round_trips(
            sender: u32,
            bitrate: u64,
            ssrcs in prop::collection::vec(any::<u32>().prop_map(Ssrc), 0..10),
        ) {
            let mut out = Vec::new();
            RembWriter { sender_ssrc: Ssrc(sender), bitrate_bps: bitrate, ssrcs: &ssrcs }
                .encode_vec(&mut out)
                .unwrap();
            let Some(Ok(RtcpPacket::Remb(remb))) = Compound::new(&out).next() else {
                return Err(TestCaseError::fail("not a REMB"));
            };
            prop_assert_eq!(remb.sender_ssrc(), Ssrc(sender));
            prop_assert_eq!(remb.ssrcs().collect::<Vec<_>>(), ssrcs);
            // Rounded down to 18 significant bits.
            let got = remb.bitrate_bps();
            prop_assert!(got <= bitrate);
            prop_assert!(bitrate - got < (bitrate >> 17).max(1));
        }
    }
}
