//! Enough of STUN (RFC 8489, formerly RFC 5389) to demultiplex ICE traffic.
//!
//! [`is_stun`] is the cheap first-packet test; [`StunMessage`] is a validated view of a
//! message with its attributes, the ICE USERNAME split into ufrags
//! ([`StunMessage::ice_ufrags`]), and FINGERPRINT checking. Nothing here checks
//! MESSAGE-INTEGRITY: that needs the ICE password and an HMAC, which live elsewhere.

use crate::cursor::Reader;
use crate::error::ParseError;

/// RFC 8489 §5: the fixed value at bytes 4..8 of every STUN message.
pub const MAGIC_COOKIE: u32 = 0x2112_a442;

/// Length of the STUN header.
pub const HEADER_LEN: usize = 20;

/// The Binding method (RFC 8489 §18.2), the only one ICE uses.
pub const BINDING: u16 = 0x001;

/// Attribute types (RFC 8489 §18.3, RFC 8445 §16.1).
pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001c;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
    pub const ICE_CONTROLLED: u16 = 0x8029;
    pub const ICE_CONTROLLING: u16 = 0x802a;
}

/// RFC 8489 §14.7: FINGERPRINT is the CRC-32 of the message before it, XOR this.
const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// Whether `buf` looks like STUN on a port shared with DTLS and RTP: first byte
/// 0..=3 (RFC 7983 §7), the magic cookie, and a length that is a multiple of 4 and
/// fits the buffer (RFC 8489 §5). Narrower than [`StunMessage::parse`], which takes
/// any 14-bit message type: first bytes 4..=63 are not STUN on a muxed port.
pub fn is_stun(buf: &[u8]) -> bool {
    let mut r = Reader::new(buf);
    let (Ok(ty), Ok(len), Ok(cookie)) = (r.u16(), r.u16(), r.u32()) else {
        return false;
    };
    ty >> 8 <= 3
        && cookie == MAGIC_COOKIE
        && len % 4 == 0
        && buf.len() >= HEADER_LEN + usize::from(len)
}

/// The class of a message (RFC 8489 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StunClass {
    Request,
    Indication,
    SuccessResponse,
    ErrorResponse,
}

/// A message type: class and 12-bit method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageType {
    pub class: StunClass,
    pub method: u16,
}

impl MessageType {
    pub const BINDING_REQUEST: Self = Self {
        class: StunClass::Request,
        method: BINDING,
    };

    /// RFC 8489 §5: the class bits C1 C0 sit at bits 8 and 4, between the method's
    /// bits M11..M7, M6..M4 and M3..M0.
    pub fn from_u16(t: u16) -> Self {
        let class = match (t >> 7 & 0b10) | (t >> 4 & 0b01) {
            0b00 => StunClass::Request,
            0b01 => StunClass::Indication,
            0b10 => StunClass::SuccessResponse,
            _ => StunClass::ErrorResponse,
        };
        let method = (t & 0x000f) | (t >> 1 & 0x0070) | (t >> 2 & 0x0f80);
        Self { class, method }
    }

    pub fn to_u16(self) -> u16 {
        let c: u16 = match self.class {
            StunClass::Request => 0b00,
            StunClass::Indication => 0b01,
            StunClass::SuccessResponse => 0b10,
            StunClass::ErrorResponse => 0b11,
        };
        let m = self.method;
        (m & 0x000f) | (m & 0x0070) << 1 | (m & 0x0f80) << 2 | (c & 0b01) << 4 | (c & 0b10) << 7
    }
}

/// A validated STUN message borrowing its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StunMessage<'a> {
    /// Header and attributes; bytes after the declared length are not part of it.
    message: &'a [u8],
    message_type: MessageType,
    transaction_id: &'a [u8; 12],
    attributes: &'a [u8],
}

impl<'a> StunMessage<'a> {
    /// Reads the header and checks every attribute fits the declared length.
    pub fn parse(buf: &'a [u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(buf);
        // RFC 8489 §5: 00 | type(14) | length(16) | cookie(32) | transaction id(96).
        let ty = r.u16()?;
        if ty >> 14 != 0 {
            return Err(ParseError::Invalid("STUN leading bits"));
        }
        let len = usize::from(r.u16()?);
        if len % 4 != 0 {
            return Err(ParseError::Invalid("STUN length"));
        }
        if r.u32()? != MAGIC_COOKIE {
            return Err(ParseError::Invalid("STUN magic cookie"));
        }
        let transaction_id = r
            .take(12)?
            .try_into()
            .map_err(|_| ParseError::Invalid("STUN transaction id"))?;
        let attributes = r.take(len)?;
        let message = buf.get(..r.position()).unwrap_or_default();
        let msg = Self {
            message,
            message_type: MessageType::from_u16(ty),
            transaction_id,
            attributes,
        };
        let mut walk = Attributes(Reader::new(attributes));
        while walk.step()?.is_some() {}
        Ok(msg)
    }

    pub fn message_type(&self) -> MessageType {
        self.message_type
    }

    pub fn class(&self) -> StunClass {
        self.message_type.class
    }

    pub fn method(&self) -> u16 {
        self.message_type.method
    }

    pub fn is_binding_request(&self) -> bool {
        self.message_type == MessageType::BINDING_REQUEST
    }

    pub fn transaction_id(&self) -> &'a [u8; 12] {
        self.transaction_id
    }

    /// Header plus attributes, as covered by the length field.
    pub fn len(&self) -> usize {
        self.message.len()
    }

    /// Never true: a message has at least its header. Here for the `len` convention.
    pub fn is_empty(&self) -> bool {
        self.message.is_empty()
    }

    /// The attributes as `(type, value)`, value without padding.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes(Reader::new(self.attributes))
    }

    /// The value of the first attribute of type `ty`.
    pub fn attribute(&self, ty: u16) -> Option<&'a [u8]> {
        self.attributes().find(|&(t, _)| t == ty).map(|(_, v)| v)
    }

    /// USERNAME (RFC 8489 §14.3), if present and UTF-8.
    pub fn username(&self) -> Option<&'a str> {
        std::str::from_utf8(self.attribute(attr::USERNAME)?).ok()
    }

    /// The ICE USERNAME split as `(local_ufrag, remote_ufrag)`, from the point of view
    /// of the agent receiving a request (see [`split_ice_username`]).
    pub fn ice_ufrags(&self) -> Option<(&'a str, &'a str)> {
        split_ice_username(self.username()?)
    }

    /// Whether MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 is present.
    pub fn has_message_integrity(&self) -> bool {
        self.attributes()
            .any(|(t, _)| t == attr::MESSAGE_INTEGRITY || t == attr::MESSAGE_INTEGRITY_SHA256)
    }

    pub fn has_fingerprint(&self) -> bool {
        self.attribute(attr::FINGERPRINT).is_some()
    }

    /// Checks FINGERPRINT (RFC 8489 §14.7): `None` without one, else whether it matches
    /// the CRC-32 of the message before it, XOR `0x5354554e`.
    pub fn fingerprint_valid(&self) -> Option<bool> {
        let mut walk = Attributes(Reader::new(self.attributes));
        loop {
            let offset = walk.0.position();
            let (ty, value) = walk.step().ok()??;
            if ty == attr::FINGERPRINT {
                let covered = self.message.get(..HEADER_LEN + offset)?;
                let expected = Reader::new(value).u32().ok()?;
                return Some(crc32(covered) ^ FINGERPRINT_XOR == expected);
            }
        }
    }
}

/// Splits an ICE USERNAME at its colon (RFC 8445 §7.2.2). A request carries
/// `"<receiver's ufrag>:<sender's ufrag>"`, so the agent receiving a request reads it
/// as `(local, remote)`. Both halves must be non-empty.
pub fn split_ice_username(username: &str) -> Option<(&str, &str)> {
    username
        .split_once(':')
        .filter(|(l, r)| !l.is_empty() && !r.is_empty())
}

/// Iterator over a message's attributes as `(type, value)`.
#[derive(Debug, Clone)]
pub struct Attributes<'a>(Reader<'a>);

impl<'a> Attributes<'a> {
    fn step(&mut self) -> Result<Option<(u16, &'a [u8])>, ParseError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        // RFC 8489 §14: type(16) | length(16) | value, padded to a multiple of 4.
        let ty = self.0.u16()?;
        let len = usize::from(self.0.u16()?);
        let value = self.0.take(len)?;
        self.0.skip(len.next_multiple_of(4) - len)?;
        Ok(Some((ty, value)))
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        // The message was validated by `StunMessage::parse`, so this never errs.
        self.step().ok().flatten()
    }
}

/// CRC-32 (ISO-HDLC, as in zlib), bitwise: STUN messages are short.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// RFC 5769 §2.1: the sample Binding request (USERNAME "evtj:h6vY").
    pub(crate) const RFC5769_REQUEST: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74,
        0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e,
        0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36,
        0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20,
        0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
        0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5,
        0x7a, 0x3b, 0xcf,
    ];

    /// A browser-style ICE Binding request, built field by field.
    pub(crate) fn binding_request(username: &str) -> Vec<u8> {
        fn attribute(out: &mut Vec<u8>, ty: u16, value: &[u8]) {
            out.extend(ty.to_be_bytes());
            out.extend((value.len() as u16).to_be_bytes());
            out.extend(value);
            out.resize(out.len().next_multiple_of(4), 0);
        }
        let mut m = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        m.extend(*b"0123456789ab");
        attribute(&mut m, attr::USERNAME, username.as_bytes());
        attribute(&mut m, attr::ICE_CONTROLLING, &7u64.to_be_bytes());
        attribute(&mut m, attr::USE_CANDIDATE, &[]);
        attribute(&mut m, attr::PRIORITY, &0x6e7f_1effu32.to_be_bytes());
        attribute(&mut m, attr::MESSAGE_INTEGRITY, &[0x55; 20]);
        // The length covers FINGERPRINT before its CRC is computed (RFC 8489 §14.7).
        let len = (m.len() - HEADER_LEN + 8) as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        let fp = crc32(&m) ^ FINGERPRINT_XOR;
        attribute(&mut m, attr::FINGERPRINT, &fp.to_be_bytes());
        m
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn parses_the_rfc_5769_request() {
        assert!(is_stun(&RFC5769_REQUEST));
        let m = StunMessage::parse(&RFC5769_REQUEST).unwrap();
        assert!(m.is_binding_request());
        assert_eq!(m.len(), 108);
        assert_eq!(m.transaction_id()[..2], [0xb7, 0xe7]);
        assert_eq!(m.attribute(attr::SOFTWARE), Some(&b"STUN test client"[..]));
        assert_eq!(m.username(), Some("evtj:h6vY"));
        assert_eq!(m.ice_ufrags(), Some(("evtj", "h6vY")));
        assert!(m.has_message_integrity());
        assert!(m.has_fingerprint());
        assert_eq!(m.fingerprint_valid(), Some(true));
        assert_eq!(m.attributes().count(), 6);
    }

    #[test]
    fn parses_a_built_binding_request() {
        let buf = binding_request("sfu1:Ab+/");
        assert!(is_stun(&buf));
        let m = StunMessage::parse(&buf).unwrap();
        assert_eq!(m.class(), StunClass::Request);
        assert_eq!(m.method(), BINDING);
        assert_eq!(m.transaction_id(), b"0123456789ab");
        assert_eq!(m.ice_ufrags(), Some(("sfu1", "Ab+/")));
        assert_eq!(m.attribute(attr::USE_CANDIDATE), Some(&[][..]));
        assert_eq!(m.fingerprint_valid(), Some(true));

        let mut corrupt = buf.clone();
        corrupt[HEADER_LEN + 4] ^= 1;
        let m = StunMessage::parse(&corrupt).unwrap();
        assert_eq!(m.fingerprint_valid(), Some(false));
    }

    #[test]
    fn message_types_round_trip() {
        for (raw, class) in [
            (0x0001, StunClass::Request),
            (0x0011, StunClass::Indication),
            (0x0101, StunClass::SuccessResponse),
            (0x0111, StunClass::ErrorResponse),
        ] {
            let t = MessageType::from_u16(raw);
            assert_eq!(
                t,
                MessageType {
                    class,
                    method: BINDING
                }
            );
            assert_eq!(t.to_u16(), raw);
        }
        let t = MessageType::from_u16(0x3eef);
        assert_eq!(MessageType::from_u16(t.to_u16()), t);
        assert_eq!(t.to_u16(), 0x3eef);
    }

    #[test]
    fn ufrag_split_needs_two_halves() {
        assert_eq!(split_ice_username("a:b"), Some(("a", "b")));
        assert_eq!(split_ice_username("ab"), None);
        assert_eq!(split_ice_username(":b"), None);
        assert_eq!(split_ice_username("a:"), None);
        let m = StunMessage::parse(&RFC5769_REQUEST[..20]);
        assert!(m.is_err()); // length says 88 more bytes
    }

    #[test]
    fn rejects_what_is_not_stun() {
        assert!(!is_stun(&RFC5769_REQUEST[..19]));
        let mut rtp = RFC5769_REQUEST;
        rtp[0] = 0x80;
        assert!(!is_stun(&rtp));
        assert!(StunMessage::parse(&rtp).is_err());
        let mut cookie = RFC5769_REQUEST;
        cookie[4] = 0;
        assert!(!is_stun(&cookie));
        assert!(StunMessage::parse(&cookie).is_err());
        // An attribute whose length runs past the message.
        let mut overrun = RFC5769_REQUEST;
        overrun[23] = 0x60;
        assert!(StunMessage::parse(&overrun).is_err());
        // A message without fingerprint.
        let mut header = RFC5769_REQUEST[..20].to_vec();
        header[3] = 0;
        let m = StunMessage::parse(&header).unwrap();
        assert_eq!(m.fingerprint_valid(), None);
        assert_eq!(m.username(), None);
    }

    /// Fuzz regression: a message type with a first byte of 0x28 parses as STUN but
    /// is DTLS on a muxed port, so `is_stun` (and `demux::classify`) must say no.
    #[test]
    fn first_bytes_past_3_are_not_muxed_stun() {
        let mut m = RFC5769_REQUEST;
        m[0] = 0x28;
        assert!(StunMessage::parse(&m).is_ok());
        assert!(!is_stun(&m));
        crate::fuzzing::stun(&m);
    }

    proptest! {
        #[test]
        fn parse_is_total(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
            let _ = is_stun(&bytes);
            if let Ok(m) = StunMessage::parse(&bytes) {
                let _ = (m.attributes().count(), m.ice_ufrags(), m.fingerprint_valid());
            }
        }

        #[test]
        fn parse_is_total_on_stun_shaped_bytes(
            len in 0u16..64,
            body in prop::collection::vec(any::<u8>(), 0..80),
        ) {
            let mut bytes = vec![0, 1];
            bytes.extend((len * 4).to_be_bytes());
            bytes.extend(MAGIC_COOKIE.to_be_bytes());
            bytes.extend([0; 12]);
            bytes.extend(body);
            if let Ok(m) = StunMessage::parse(&bytes) {
                prop_assert!(is_stun(&bytes));
                let _ = (m.attributes().count(), m.ice_ufrags(), m.fingerprint_valid());
            }
        }
    }
}
