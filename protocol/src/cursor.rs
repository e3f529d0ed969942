//! Bounds-checked big-endian reading and writing: the only place that touches raw offsets.
//!
//! Every parser in this crate reads through [`Reader`] and every writer writes through
//! [`Writer`], so no input can make a parser index out of bounds: running short is a
//! [`ParseError::Truncated`] (or a [`WriteError::BufferTooSmall`]), never a panic.

use crate::error::{ParseError, WriteError};

/// A forward-only reader over a borrowed buffer.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        let truncated = ParseError::Truncated {
            needed: n,
            had: self.remaining(),
        };
        let end = self.pos.checked_add(n).ok_or(truncated)?;
        let out = self.buf.get(self.pos..end).ok_or(truncated)?;
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ParseError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn skip(&mut self, n: usize) -> Result<(), ParseError> {
        self.take(n).map(drop)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ParseError> {
        self.array::<1>().map(|[b]| b)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, ParseError> {
        self.array().map(u16::from_be_bytes)
    }

    /// A 24-bit unsigned big-endian integer.
    pub(crate) fn u24(&mut self) -> Result<u32, ParseError> {
        self.array::<3>()
            .map(|[a, b, c]| u32::from_be_bytes([0, a, b, c]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, ParseError> {
        self.array().map(u32::from_be_bytes)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, ParseError> {
        self.array().map(u64::from_be_bytes)
    }

    /// Everything not yet read.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let out = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        out
    }
}

/// Sign-extends the low 24 bits of `v`.
pub(crate) fn sign_extend_24(v: u32) -> i32 {
    ((v << 8) as i32) >> 8
}

/// A forward-only writer into a borrowed buffer.
#[derive(Debug)]
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// A writer for a packet of `needed` bytes; fails up front if `buf` is shorter.
    pub(crate) fn with_room(buf: &'a mut [u8], needed: usize) -> Result<Self, WriteError> {
        if buf.len() < needed {
            return Err(WriteError::BufferTooSmall {
                needed,
                had: buf.len(),
            });
        }
        Ok(Self { buf, pos: 0 })
    }

    /// Bytes written so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn put(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        let too_small = WriteError::BufferTooSmall {
            needed: self.pos.saturating_add(bytes.len()),
            had: self.buf.len(),
        };
        let end = self.pos.checked_add(bytes.len()).ok_or(too_small)?;
        self.buf
            .get_mut(self.pos..end)
            .ok_or(too_small)?
            .copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    pub(crate) fn u8(&mut self, v: u8) -> Result<(), WriteError> {
        self.put(&[v])
    }

    pub(crate) fn u16(&mut self, v: u16) -> Result<(), WriteError> {
        self.put(&v.to_be_bytes())
    }

    /// The low 24 bits of `v`, big-endian.
    pub(crate) fn u24(&mut self, v: u32) -> Result<(), WriteError> {
        let [_, a, b, c] = v.to_be_bytes();
        self.put(&[a, b, c])
    }

    pub(crate) fn u32(&mut self, v: u32) -> Result<(), WriteError> {
        self.put(&v.to_be_bytes())
    }

    pub(crate) fn u64(&mut self, v: u64) -> Result<(), WriteError> {
        self.put(&v.to_be_bytes())
    }

    pub(crate) fn zeros(&mut self, n: usize) -> Result<(), WriteError> {
        for _ in 0..n {
            self.u8(0)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_big_endian_and_reports_truncation() {
        let mut r = Reader::new(&[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.u16().unwrap(), 0x0203);
        assert_eq!(r.position(), 3);
        assert_eq!(r.u32().unwrap(), 0x0405_0607);
        assert_eq!(r.u8(), Err(ParseError::Truncated { needed: 1, had: 0 }));
        assert!(r.is_empty());
        assert_eq!(
            r.take(usize::MAX),
            Err(ParseError::Truncated {
                needed: usize::MAX,
                had: 0
            })
        );
    }

    #[test]
    fn sign_extends_24_bits() {
        assert_eq!(sign_extend_24(0x00_7f_ff_ff), 0x7f_ffff);
        assert_eq!(sign_extend_24(0x00_ff_ff_ff), -1);
        assert_eq!(sign_extend_24(0x00_80_00_00), -0x80_0000);
    }

    #[test]
    fn writer_refuses_short_buffers() {
        let mut buf = [0u8; 3];
        assert!(Writer::with_room(&mut buf, 4).is_err());
        let mut w = Writer::with_room(&mut buf, 3).unwrap();
        w.u24(0x0a0b0c).unwrap();
        assert!(w.u8(1).is_err());
        assert_eq!(buf, [0x0a, 0x0b, 0x0c]);
    }
}
