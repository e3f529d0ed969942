//! Goodbye packets (RFC 3550 §6.6).

use crate::cursor::Reader;
use crate::error::ParseError;
use crate::rtp::SsrcIter;

/// A BYE: the sources leaving, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bye<'a> {
    ssrcs: &'a [u8],
    reason: Option<&'a [u8]>,
}

impl<'a> Bye<'a> {
    pub(super) fn read(r: &mut Reader<'a>, count: u8) -> Result<Self, ParseError> {
        // RFC 3550 §6.6: SC SSRC/CSRCs, then optionally length(8) and a reason.
        let ssrcs = r.take(4 * usize::from(count))?;
        let reason = if r.is_empty() {
            None
        } else {
            let len = usize::from(r.u8()?);
            Some(r.take(len)?)
        };
        Ok(Self { ssrcs, reason })
    }

    pub fn ssrcs(&self) -> SsrcIter<'a> {
        SsrcIter::new(self.ssrcs)
    }

    /// The reason for leaving, as sent.
    pub fn reason_bytes(&self) -> Option<&'a [u8]> {
        self.reason
    }

    /// The reason for leaving, if present and UTF-8.
    pub fn reason(&self) -> Option<&'a str> {
        std::str::from_utf8(self.reason?).ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::rtp::Ssrc;

    #[test]
    fn reads_ssrcs_and_reason() {
        let body = [0, 0, 0, 1, 0, 0, 0, 2, 4, b'b', b'y', b'e', b'!', 0, 0, 0];
        let bye = Bye::read(&mut Reader::new(&body), 2).unwrap();
        assert_eq!(bye.ssrcs().collect::<Vec<_>>(), [Ssrc(1), Ssrc(2)]);
        assert_eq!(bye.reason(), Some("bye!"));
        let silent = Bye::read(&mut Reader::new(&body[..4]), 1).unwrap();
        assert_eq!(silent.reason(), None);
        assert!(Bye::read(&mut Reader::new(&body[..10]), 2).is_err());
        assert!(Bye::read(&mut Reader::new(&body), 3).is_err());
    }
}
