//! Building RTP packets into a caller's buffer.

use super::extension::{ExtensionProfile, ONE_BYTE_PROFILE, TWO_BYTE_PROFILE};
use super::{RtpPacket, SeqNo, Ssrc, FIXED_HEADER_LEN, MAX_CSRCS, RTP_VERSION};
use crate::cursor::Writer;
use crate::encode::Encode;
use crate::error::WriteError;

/// The header extension to write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExtensionSpec<'a> {
    /// No extension; the X bit is clear.
    #[default]
    None,
    /// RFC 8285 elements as `(id, value)`. The one-byte form is used when every id is
    /// in 1..=14 and every value is 1..=16 bytes long, the two-byte form otherwise
    /// (ids 1..=255, values 0..=255 bytes). The block is zero-padded to 4 bytes.
    Elements(&'a [(u8, &'a [u8])]),
    /// A block copied verbatim; `data` must be a whole number of 32-bit words.
    Raw { profile: u16, data: &'a [u8] },
}

/// The fields of an RTP packet to write (see [`Encode`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtpWriter<'a> {
    pub marker: bool,
    /// 0..=127.
    pub payload_type: u8,
    pub sequence_number: SeqNo,
    pub timestamp: u32,
    pub ssrc: Ssrc,
    /// At most [`MAX_CSRCS`].
    pub csrcs: &'a [Ssrc],
    pub extension: ExtensionSpec<'a>,
    pub payload: &'a [u8],
    /// RTP padding after the payload, count octet included (RFC 3550 §5.1); 0 for none.
    pub padding: u8,
}

impl<'a> RtpWriter<'a> {
    /// Everything of `packet` but its CSRC list, which is `csrcs`: the way to rewrite
    /// a CSRC list. The extension block is copied verbatim.
    pub fn from_packet(packet: &RtpPacket<'a>, csrcs: &'a [Ssrc]) -> Self {
        Self {
            marker: packet.marker(),
            payload_type: packet.payload_type(),
            sequence_number: packet.sequence_number(),
            timestamp: packet.timestamp(),
            ssrc: packet.ssrc(),
            csrcs,
            extension: packet
                .extension()
                .map_or(ExtensionSpec::None, |e| ExtensionSpec::Raw {
                    profile: e.profile().to_u16(),
                    data: e.data(),
                }),
            payload: packet.payload(),
            padding: packet.padding_len(),
        }
    }

    /// The extension's profile and data length (before padding), if any.
    fn extension_layout(&self) -> Result<Option<(u16, usize)>, WriteError> {
        let layout = match self.extension {
            ExtensionSpec::None => return Ok(None),
            ExtensionSpec::Raw { profile, data } => {
                if data.len() % 4 != 0 {
                    return Err(WriteError::Invalid("raw extension length"));
                }
                (profile, data.len())
            }
            ExtensionSpec::Elements(elements) => {
                let one_byte = elements
                    .iter()
                    .all(|(id, v)| (1..=14).contains(id) && (1..=16).contains(&v.len()));
                if !one_byte && elements.iter().any(|(id, v)| *id == 0 || v.len() > 255) {
                    return Err(WriteError::Invalid("extension element id or length"));
                }
                let per_element = if one_byte { 1 } else { 2 };
                let len = elements.iter().map(|(_, v)| per_element + v.len()).sum();
                let profile = if one_byte {
                    ONE_BYTE_PROFILE
                } else {
                    TWO_BYTE_PROFILE
                };
                (profile, len)
            }
        };
        if layout.1.div_ceil(4) > usize::from(u16::MAX) {
            return Err(WriteError::Invalid("extension too long"));
        }
        Ok(Some(layout))
    }
}

impl Encode for RtpWriter<'_> {
    fn encoded_len(&self) -> Result<usize, WriteError> {
        if self.payload_type > 0x7f {
            return Err(WriteError::Invalid("payload type"));
        }
        if self.csrcs.len() > MAX_CSRCS {
            return Err(WriteError::Invalid("CSRC count"));
        }
        let ext = self
            .extension_layout()?
            .map_or(0, |(_, len)| 4 + len.next_multiple_of(4));
        Ok(FIXED_HEADER_LEN
            + 4 * self.csrcs.len()
            + ext
            + self.payload.len()
            + usize::from(self.padding))
    }

    fn encode(&self, buf: &mut [u8]) -> Result<usize, WriteError> {
        let len = self.encoded_len()?;
        let ext = self.extension_layout()?;
        let mut w = Writer::with_room(buf, len)?;
        // RFC 3550 §5.1: the fixed header.
        w.u8(RTP_VERSION << 6
            | u8::from(self.padding > 0) << 5
            | u8::from(ext.is_some()) << 4
            | self.csrcs.len() as u8)?;
        w.u8(u8::from(self.marker) << 7 | self.payload_type)?;
        w.u16(self.sequence_number.0)?;
        w.u32(self.timestamp)?;
        w.u32(self.ssrc.0)?;
        for csrc in self.csrcs {
            w.u32(csrc.0)?;
        }
        if let Some((profile, data_len)) = ext {
            // RFC 3550 §5.3.1: profile, length in words, data.
            let padded = data_len.next_multiple_of(4);
            w.u16(profile)?;
            w.u16((padded / 4) as u16)?;
            match self.extension {
                ExtensionSpec::Raw { data, .. } => w.put(data)?,
                ExtensionSpec::Elements(elements) => {
                    let one_byte = ExtensionProfile::from_u16(profile) == ExtensionProfile::OneByte;
                    for &(id, value) in elements {
                        if one_byte {
                            // RFC 8285 §4.2: ID(4) | length-1 (4).
                            w.u8(id << 4 | (value.len() - 1) as u8)?;
                        } else {
                            // RFC 8285 §4.3: ID(8) | length(8).
                            w.u8(id)?;
                            w.u8(value.len() as u8)?;
                        }
                        w.put(value)?;
                    }
                }
                ExtensionSpec::None => {}
            }
            w.zeros(padded - data_len)?;
        }
        w.put(self.payload)?;
        if self.padding > 0 {
            w.zeros(usize::from(self.padding) - 1)?;
            w.u8(self.padding)?;
        }
        Ok(w.position())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::tests::OPUS;
    use super::super::{AudioLevel, RtpPacketMut};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn writes_the_browser_packet_byte_for_byte() {
        let w = RtpWriter {
            marker: true,
            payload_type: 111,
            sequence_number: SeqNo(0x1234),
            timestamp: 123_456,
            ssrc: Ssrc(0xdead_beef),
            extension: ExtensionSpec::Elements(&[(1, &[0xa5]), (3, &[0, 7])]),
            payload: &[0xf8, 0xff, 0xfe],
            ..RtpWriter::default()
        };
        let mut out = vec![0xaa];
        assert_eq!(w.encode_vec(&mut out).unwrap(), OPUS.len());
        assert_eq!(out[1..], OPUS);
    }

    #[test]
    fn rewrites_a_csrc_list_by_rebuilding() {
        let p = RtpPacket::parse(&OPUS).unwrap();
        let csrcs = [Ssrc(1), Ssrc(2)];
        let mut out = Vec::new();
        RtpWriter::from_packet(&p, &csrcs)
            .encode_vec(&mut out)
            .unwrap();
        let q = RtpPacket::parse(&out).unwrap();
        assert_eq!(q.csrcs().collect::<Vec<_>>(), csrcs);
        assert_eq!(q.extension(), p.extension());
        assert_eq!(q.payload(), p.payload());
        assert_eq!(q.header_len(), p.header_len() + 8);
    }

    #[test]
    fn refuses_invalid_inputs_and_short_buffers() {
        let csrcs = [Ssrc(0); 16];
        let bad = [
            RtpWriter {
                csrcs: &csrcs,
                ..RtpWriter::default()
            },
            RtpWriter {
                payload_type: 128,
                ..RtpWriter::default()
            },
            RtpWriter {
                extension: ExtensionSpec::Elements(&[(0, &[1])]),
                ..RtpWriter::default()
            },
            RtpWriter {
                extension: ExtensionSpec::Elements(&[(1, &[0; 256])]),
                ..RtpWriter::default()
            },
            RtpWriter {
                extension: ExtensionSpec::Raw {
                    profile: 1,
                    data: &[1, 2],
                },
                ..RtpWriter::default()
            },
        ];
        for w in bad {
            assert!(
                matches!(w.encoded_len(), Err(WriteError::Invalid(_))),
                "{w:?}"
            );
        }
        let mut small = [0u8; 11];
        assert_eq!(
            RtpWriter::default().encode(&mut small),
            Err(WriteError::BufferTooSmall {
                needed: 12,
                had: 11
            })
        );
    }

    #[test]
    fn chooses_the_two_byte_form_when_needed() {
        for elements in [&[(15u8, &[1u8][..])][..], &[(1, &[])], &[(1, &[0; 17])]] {
            let w = RtpWriter {
                extension: ExtensionSpec::Elements(elements),
                ..RtpWriter::default()
            };
            let mut out = Vec::new();
            w.encode_vec(&mut out).unwrap();
            let p = RtpPacket::parse(&out).unwrap();
            assert_eq!(
                p.extension().unwrap().profile(),
                ExtensionProfile::TwoByte { app_bits: 0 }
            );
            assert_eq!(p.extension_elements().collect::<Vec<_>>(), elements);
        }
    }

    fn element() -> impl Strategy<Value = (u8, Vec<u8>)> {
        prop_oneof![
            (1u8..=14, prop::collection::vec(any::<u8>(), 1..=16)),
            (1u8..=255, prop::collection::vec(any::<u8>(), 0..=40)),
        ]
    }

    prop_compose! {
        fn header()(
            marker: bool,
            payload_type in 0u8..=127,
            seq: u16,
            timestamp: u32,
            ssrc: u32,
            csrcs in prop::collection::vec(any::<u32>(), 0..=15),
            elements in prop::collection::vec(element(), 0..6),
            payload in prop::collection::vec(any::<u8>(), 0..64),
            padding: u8,
        ) -> (RtpWriter<'static>, Vec<Ssrc>, Vec<(u8, Vec<u8>)>, Vec<u8>) {
            let w = RtpWriter {
                marker,
                payload_type,
                sequence_number: SeqNo(seq),
                timestamp,
                ssrc: Ssrc(ssrc),
                padding,
                ..RtpWriter::default()
            };
            (w, csrcs.into_iter().map(Ssrc).collect(), elements, payload)
        }
    }

    proptest! {
        #[test]
        fn writer_round_trips((base, csrcs, elements, payload) in header()) {
            let refs: Vec<(u8, &[u8])> = elements.iter().map(|(i, v)| (*i, &v[..])).collect();
            let w = RtpWriter {
                csrcs: &csrcs,
                extension: if refs.is_empty() {
                    ExtensionSpec::None
                } else {
                    ExtensionSpec::Elements(&refs)
                },
                payload: &payload,
                ..base
            };
            let mut out = Vec::new();
            let n = w.encode_vec(&mut out).unwrap();
            prop_assert_eq!(n, out.len());
            prop_assert_eq!(n, w.encoded_len().unwrap());
            let p = RtpPacket::parse(&out).unwrap();
            prop_assert_eq!(p.marker(), w.marker);
            prop_assert_eq!(p.payload_type(), w.payload_type);
            prop_assert_eq!(p.sequence_number(), w.sequence_number);
            prop_assert_eq!(p.timestamp(), w.timestamp);
            prop_assert_eq!(p.ssrc(), w.ssrc);
            prop_assert_eq!(p.csrcs().collect::<Vec<_>>(), csrcs.clone());
            prop_assert_eq!(p.extension_elements().collect::<Vec<_>>(), refs.clone());
            prop_assert_eq!(p.payload(), &payload[..]);
            prop_assert_eq!(p.padding_len(), w.padding);
            // Rebuilding from the view reproduces the bytes exactly.
            let mut again = Vec::new();
            RtpWriter::from_packet(&p, &csrcs).encode_vec(&mut again).unwrap();
            prop_assert_eq!(again, out);
        }

        #[test]
        fn rewriter_changes_only_what_it_is_asked(
            (base, csrcs, _, payload) in header(),
            new_seq: u16, new_ts: u32, new_ssrc: u32, new_pt in 0u8..=127, new_marker: bool,
            level in 0u8..=127, vad: bool,
        ) {
            let w = RtpWriter {
                csrcs: &csrcs,
                extension: ExtensionSpec::Elements(&[(1, &[0x7f]), (2, &[1, 2, 3])]),
                payload: &payload,
                ..base
            };
            let mut original = Vec::new();
            w.encode_vec(&mut original).unwrap();
            let mut buf = original.clone();
            let mut m = RtpPacketMut::parse(&mut buf).unwrap();
            m.set_sequence_number(SeqNo(new_seq));
            m.set_timestamp(new_ts);
            m.set_ssrc(Ssrc(new_ssrc));
            m.set_payload_type(new_pt).unwrap();
            m.set_marker(new_marker);
            let new_level = AudioLevel { voice_activity: vad, level_dbov: level };
            m.set_audio_level(1, new_level).unwrap();
            let expected = RtpWriter {
                sequence_number: SeqNo(new_seq),
                timestamp: new_ts,
                ssrc: Ssrc(new_ssrc),
                payload_type: new_pt,
                marker: new_marker,
                extension: ExtensionSpec::Elements(&[(1, &[new_level.to_byte()]), (2, &[1, 2, 3])]),
                ..w
            };
            let mut want = Vec::new();
            expected.encode_vec(&mut want).unwrap();
            prop_assert_eq!(buf, want);
        }

        #[test]
        fn parse_is_total(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
            if let Ok(p) = RtpPacket::parse(&bytes) {
                let _ = p.extension_elements().count() + p.csrcs().count();
            }
        }

        #[test]
        fn parse_is_total_on_rtp_shaped_bytes(
            b0 in 0x80u8..=0xbf,
            rest in prop::collection::vec(any::<u8>(), 0..96),
        ) {
            let bytes = [&[b0][..], &rest].concat();
            if let Ok(p) = RtpPacket::parse(&bytes) {
                prop_assert!(p.header_len() + p.payload().len() + usize::from(p.padding_len()) == bytes.len());
                let _ = p.extension_elements().count();
            }
        }
    }
}
