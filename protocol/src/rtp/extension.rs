//! The RTP header extension (RFC 3550 §5.3.1), its RFC 8285 element forms, and the
//! RFC 6464 audio level element.

use crate::cursor::Reader;
use crate::error::ParseError;

/// The "defined by profile" value of the one-byte form (RFC 8285 §4.2).
pub(crate) const ONE_BYTE_PROFILE: u16 = 0xbede;
/// The two-byte form: 0x100 in the top 12 bits, 4 application bits (RFC 8285 §4.3).
pub(crate) const TWO_BYTE_PROFILE: u16 = 0x1000;

/// How the extension block is laid out, from its 16-bit profile value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtensionProfile {
    /// RFC 8285 §4.2, `0xBEDE`: ids 1..=14, values of 1..=16 bytes.
    OneByte,
    /// RFC 8285 §4.3, `0x100X`: ids 1..=255, values of 0..=255 bytes.
    TwoByte { app_bits: u8 },
    /// Any other profile: the block is opaque, see [`HeaderExtension::data`].
    Other(u16),
}

impl ExtensionProfile {
    pub fn from_u16(v: u16) -> Self {
        match v {
            ONE_BYTE_PROFILE => Self::OneByte,
            _ if v & 0xfff0 == TWO_BYTE_PROFILE => Self::TwoByte {
                app_bits: (v & 0x0f) as u8,
            },
            _ => Self::Other(v),
        }
    }

    pub fn to_u16(self) -> u16 {
        match self {
            Self::OneByte => ONE_BYTE_PROFILE,
            Self::TwoByte { app_bits } => TWO_BYTE_PROFILE | u16::from(app_bits & 0x0f),
            Self::Other(v) => v,
        }
    }
}

/// A validated header extension block borrowing the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderExtension<'a> {
    profile: ExtensionProfile,
    data: &'a [u8],
}

impl<'a> HeaderExtension<'a> {
    /// Reads the block and, for the RFC 8285 forms, checks every element fits it.
    pub(crate) fn read(r: &mut Reader<'a>) -> Result<Self, ParseError> {
        // RFC 3550 §5.3.1: profile-defined(16) | length in 32-bit words(16) | data.
        let profile = ExtensionProfile::from_u16(r.u16()?);
        let words = usize::from(r.u16()?);
        let ext = Self {
            profile,
            data: r.take(4 * words)?,
        };
        let mut walk = Walk::new(ext.profile, ext.data);
        while walk.step()?.is_some() {}
        Ok(ext)
    }

    pub fn profile(&self) -> ExtensionProfile {
        self.profile
    }

    /// The block after its 4-byte header, element padding included.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The elements as `(id, value)`; empty for [`ExtensionProfile::Other`].
    pub fn elements(&self) -> ExtensionElements<'a> {
        ExtensionElements(Walk::new(self.profile, self.data))
    }
}

/// Iterator over RFC 8285 extension elements as `(id, value)`.
#[derive(Debug, Clone)]
pub struct ExtensionElements<'a>(Walk<'a>);

impl<'a> ExtensionElements<'a> {
    pub(crate) fn empty() -> Self {
        Self(Walk::new(ExtensionProfile::Other(0), &[]))
    }
}

impl<'a> Iterator for ExtensionElements<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        // The block was validated by `HeaderExtension::read`, so this never errs.
        self.0.step().ok().flatten().map(|e| (e.id, e.value))
    }
}

/// One element, with the offset of its value inside the extension data.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Element<'a> {
    pub(crate) id: u8,
    pub(crate) offset: usize,
    pub(crate) value: &'a [u8],
}

/// The element walk shared by validation, iteration and in-place rewriting.
#[derive(Debug, Clone)]
pub(crate) struct Walk<'a> {
    r: Reader<'a>,
    two_byte: bool,
    done: bool,
}

impl<'a> Walk<'a> {
    pub(crate) fn new(profile: ExtensionProfile, data: &'a [u8]) -> Self {
        Self {
            r: Reader::new(data),
            two_byte: matches!(profile, ExtensionProfile::TwoByte { .. }),
            done: matches!(profile, ExtensionProfile::Other(_)),
        }
    }

    pub(crate) fn step(&mut self) -> Result<Option<Element<'a>>, ParseError> {
        let out = self.step_inner();
        if !matches!(out, Ok(Some(_))) {
            self.done = true;
        }
        out
    }

    fn step_inner(&mut self) -> Result<Option<Element<'a>>, ParseError> {
        while !self.done && !self.r.is_empty() {
            let b = self.r.u8()?;
            let (id, len) = if self.two_byte {
                // RFC 8285 §4.3: ID(8) L(8) data(L); a zero byte is padding.
                if b == 0 {
                    continue;
                }
                (b, usize::from(self.r.u8()?))
            } else {
                // RFC 8285 §4.2: ID(4) L(4) data(L+1). ID 0 is a padding byte; ID 15
                // ends the walk, and only the elements before it count.
                match b >> 4 {
                    0 => continue,
                    15 => return Ok(None),
                    id => (id, usize::from(b & 0x0f) + 1),
                }
            };
            let offset = self.r.position();
            let value = self.r.take(len)?;
            return Ok(Some(Element { id, offset, value }));
        }
        Ok(None)
    }
}

/// Finds the first element with `id`.
pub(crate) fn find(profile: ExtensionProfile, data: &[u8], id: u8) -> Option<Element<'_>> {
    let mut walk = Walk::new(profile, data);
    while let Ok(Some(e)) = walk.step() {
        if e.id == id {
            return Some(e);
        }
    }
    None
}

/// The RFC 6464 client-to-mixer audio level: one byte, `V(1) level(7)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioLevel {
    /// The V bit: the sender's voice activity detection says this packet holds speech.
    pub voice_activity: bool,
    /// The level in -dBov, 0..=127: 0 is the loudest, 127 silence.
    pub level_dbov: u8,
}

impl AudioLevel {
    /// RFC 6464 §3: V is the most significant bit, the level the low 7 bits.
    pub fn from_byte(b: u8) -> Self {
        Self {
            voice_activity: b & 0x80 != 0,
            level_dbov: b & 0x7f,
        }
    }

    /// The wire byte; a level above 127 is clamped to 127.
    pub fn to_byte(self) -> u8 {
        u8::from(self.voice_activity) << 7 | self.level_dbov.min(127)
    }

    /// The level as a linear amplitude in `0.0..=1.0`: `10^(-dBov/20)`.
    pub fn linear(&self) -> f32 {
        10f32.powf(-f32::from(self.level_dbov) / 20.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn elements(profile: u16, data: &[u8]) -> Result<Vec<(u8, Vec<u8>)>, ParseError> {
        let words = u16::try_from(data.len() / 4).unwrap();
        let buf = [&profile.to_be_bytes()[..], &words.to_be_bytes(), data].concat();
        let ext = HeaderExtension::read(&mut Reader::new(&buf))?;
        Ok(ext.elements().map(|(id, v)| (id, v.to_vec())).collect())
    }

    #[test]
    fn one_byte_form_skips_padding_and_stops_at_id_15() {
        let data = [0x00, 0x10, 0x7f, 0x00, 0x21, 1, 2, 0xf0, 0x30, 0xff, 0, 0];
        assert_eq!(
            elements(0xbede, &data).unwrap(),
            [(1, vec![0x7f]), (2, vec![1, 2])]
        );
    }

    #[test]
    fn two_byte_form_allows_empty_values_and_large_ids() {
        let data = [0xff, 0x00, 0x00, 0x05, 0x02, 9, 9, 0];
        assert_eq!(
            elements(0x1003, &data).unwrap(),
            [(255, vec![]), (5, vec![9, 9])]
        );
        assert_eq!(
            ExtensionProfile::from_u16(0x1003),
            ExtensionProfile::TwoByte { app_bits: 3 }
        );
    }

    #[test]
    fn other_profiles_are_opaque() {
        assert!(elements(0xabac, &[1, 2, 3, 4]).unwrap().is_empty());
    }

    #[test]
    fn overrunning_elements_are_rejected() {
        assert!(elements(0xbede, &[0x13, 1, 2, 3]).is_err()); // wants 4 bytes, has 3
        assert!(elements(0x1000, &[0, 0, 0, 7]).is_err()); // id 7 with no length byte
        assert!(elements(0x1000, &[0, 0, 7, 9]).is_err());
    }

    #[test]
    fn audio_level_converts() {
        let l = AudioLevel::from_byte(0x80 | 20);
        assert!(l.voice_activity);
        assert_eq!(l.level_dbov, 20);
        assert_eq!(l.to_byte(), 0x94);
        assert!((l.linear() - 0.1).abs() < 1e-6);
        assert_eq!(AudioLevel::from_byte(0).linear(), 1.0);
        let clamped = AudioLevel {
            voice_activity: false,
            level_dbov: 200,
        };
        assert_eq!(clamped.to_byte(), 127);
    }
}
