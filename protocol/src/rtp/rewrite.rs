//! In-place rewriting of RTP header fields and extension values.
//!
//! Only changes that keep the packet's layout are offered here; anything that changes
//! a length (the CSRC list, adding an extension) goes through [`super::RtpWriter`].

use std::ops::Range;

use super::extension::{self, AudioLevel, ExtensionProfile};
use super::{RtpPacket, SeqNo, Ssrc, FIXED_HEADER_LEN};
use crate::error::{ParseError, WriteError};

/// A validated RTP packet whose header can be rewritten in place.
#[derive(Debug)]
pub struct RtpPacketMut<'a> {
    fixed: &'a mut [u8; FIXED_HEADER_LEN],
    /// Everything after the fixed header.
    rest: &'a mut [u8],
    /// The extension's profile and the range of its data within `rest`.
    extension: Option<(ExtensionProfile, Range<usize>)>,
    /// The payload's range within `rest`.
    payload: Range<usize>,
}

impl<'a> RtpPacketMut<'a> {
    /// Validates `buf` exactly as [`RtpPacket::parse`] does.
    pub fn parse(buf: &'a mut [u8]) -> Result<Self, ParseError> {
        let packet = RtpPacket::parse(buf)?;
        let header_rest = packet.header_len() - FIXED_HEADER_LEN;
        let extension = packet.extension().map(|e| {
            let start = header_rest - e.data().len();
            (e.profile(), start..header_rest)
        });
        let payload = header_rest..header_rest + packet.payload().len();
        let (fixed, rest) =
            buf.split_first_chunk_mut::<FIXED_HEADER_LEN>()
                .ok_or(ParseError::Truncated {
                    needed: FIXED_HEADER_LEN,
                    had: 0,
                })?;
        Ok(Self {
            fixed,
            rest,
            extension,
            payload,
        })
    }

    pub fn marker(&self) -> bool {
        self.fixed[1] & 0x80 != 0
    }

    pub fn set_marker(&mut self, marker: bool) {
        self.fixed[1] = self.fixed[1] & 0x7f | u8::from(marker) << 7;
    }

    pub fn payload_type(&self) -> u8 {
        self.fixed[1] & 0x7f
    }

    /// Fails for a payload type above 127.
    pub fn set_payload_type(&mut self, pt: u8) -> Result<(), WriteError> {
        if pt > 0x7f {
            return Err(WriteError::Invalid("payload type"));
        }
        self.fixed[1] = self.fixed[1] & 0x80 | pt;
        Ok(())
    }

    pub fn sequence_number(&self) -> SeqNo {
        SeqNo(u16::from_be_bytes([self.fixed[2], self.fixed[3]]))
    }

    pub fn set_sequence_number(&mut self, seq: SeqNo) {
        [self.fixed[2], self.fixed[3]] = seq.0.to_be_bytes();
    }

    pub fn timestamp(&self) -> u32 {
        let f = &self.fixed;
        u32::from_be_bytes([f[4], f[5], f[6], f[7]])
    }

    pub fn set_timestamp(&mut self, ts: u32) {
        let f = &mut self.fixed;
        [f[4], f[5], f[6], f[7]] = ts.to_be_bytes();
    }

    pub fn ssrc(&self) -> Ssrc {
        let f = &self.fixed;
        Ssrc(u32::from_be_bytes([f[8], f[9], f[10], f[11]]))
    }

    pub fn set_ssrc(&mut self, ssrc: Ssrc) {
        let f = &mut self.fixed;
        [f[8], f[9], f[10], f[11]] = ssrc.0.to_be_bytes();
    }

    /// The value of the first extension element with `id`, writable in place.
    pub fn extension_element_mut(&mut self, id: u8) -> Option<&mut [u8]> {
        let (profile, range) = self.extension.clone()?;
        let data = self.rest.get(range.clone())?;
        let e = extension::find(profile, data, id)?;
        let start = range.start + e.offset;
        let end = start + e.value.len();
        self.rest.get_mut(start..end)
    }

    /// Overwrites the value of the element `id`; `value` must have its current length.
    pub fn set_extension_element(&mut self, id: u8, value: &[u8]) -> Result<(), WriteError> {
        let slot = self
            .extension_element_mut(id)
            .ok_or(WriteError::NotPresent("extension element"))?;
        if slot.len() != value.len() {
            return Err(WriteError::Invalid("extension element length"));
        }
        slot.copy_from_slice(value);
        Ok(())
    }

    /// Rewrites the RFC 6464 audio level byte (the first byte of element `id`).
    pub fn set_audio_level(&mut self, id: u8, level: AudioLevel) -> Result<(), WriteError> {
        let slot = self
            .extension_element_mut(id)
            .and_then(|v| v.first_mut())
            .ok_or(WriteError::NotPresent("audio level"))?;
        *slot = level.to_byte();
        Ok(())
    }

    /// The payload, writable in place.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.rest.get_mut(self.payload.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::tests::OPUS;
    use super::*;

    #[test]
    fn rewrites_fields_in_place() {
        let mut buf = OPUS;
        let mut p = RtpPacketMut::parse(&mut buf).unwrap();
        assert_eq!(p.ssrc(), Ssrc(0xdead_beef));
        p.set_ssrc(Ssrc(7));
        p.set_sequence_number(SeqNo(9));
        p.set_timestamp(11);
        p.set_marker(false);
        p.set_payload_type(96).unwrap();
        assert!(p.set_payload_type(128).is_err());
        let loud = AudioLevel {
            voice_activity: false,
            level_dbov: 3,
        };
        p.set_audio_level(1, loud).unwrap();
        p.set_extension_element(3, &[0xab, 0xcd]).unwrap();
        assert!(p.set_extension_element(3, &[1]).is_err());
        assert!(p.set_audio_level(4, loud).is_err());
        p.payload_mut()[0] = 0x00;

        let q = RtpPacket::parse(&buf).unwrap();
        assert_eq!(q.ssrc(), Ssrc(7));
        assert_eq!(q.sequence_number(), SeqNo(9));
        assert_eq!(q.timestamp(), 11);
        assert!(!q.marker());
        assert_eq!(q.payload_type(), 96);
        assert_eq!(q.audio_level(1), Some(loud));
        assert_eq!(q.extension_element(3), Some(&[0xab, 0xcd][..]));
        assert_eq!(q.payload(), &[0x00, 0xff, 0xfe]);
    }

    #[test]
    fn refuses_what_parse_refuses() {
        let mut short = [0x80u8; 11];
        assert!(RtpPacketMut::parse(&mut short).is_err());
    }
}
