//! Enough of STUN (RFC 8489, formerly RFC 5389) to demultiplex ICE traffic.
//!
//! [`is_stun`] is the cheap first-packet test; [`StunMessage`] is a validated view of a
//! message with its attributes, the ICE USERNAME split into ufrags
//! ([`StunMessage::ice_ufrags`]), and FINGERPRINT checking.
//! [`StunMessage::integrity_valid`] checks MESSAGE-INTEGRITY and
//! [`write_binding_success`] writes an ICE agent's answer to a Binding request; both
//! take the HMAC-SHA1 as a function already keyed with the agent's ICE password (this
//! crate has no cryptography of its own; the caller keeps the key its own way).

use std::net::{IpAddr, SocketAddr};

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

/// RFC 8489 §14.5: MESSAGE-INTEGRITY holds an HMAC-SHA1, 20 bytes.
pub const INTEGRITY_LEN: usize = 20;

/// The largest answer [`write_binding_success`] writes (IPv6): header, then
/// XOR-MAPPED-ADDRESS (4 + 20), MESSAGE-INTEGRITY (4 + 20) and FINGERPRINT (4 + 4).
pub const BINDING_SUCCESS_MAX_LEN: usize = HEADER_LEN + 24 + 24 + 8;

/// An HMAC-SHA1 over the concatenation of `parts`, keyed with a short-term
/// credential's password (in ICE, the answering agent's own).
pub trait HmacSha1: FnOnce(&[&[u8]]) -> [u8; INTEGRITY_LEN] {}
impl<F: FnOnce(&[&[u8]]) -> [u8; INTEGRITY_LEN]> HmacSha1 for F {}

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

    /// Checks MESSAGE-INTEGRITY (RFC 8489 §14.5) with `hmac_sha1`, keyed with a
    /// short-term credential's password (in ICE, the answering agent's own): `None`
    /// without one, else whether the HMAC of the message up to the attribute matches
    /// it — the header's length counting up to the end of MESSAGE-INTEGRITY, whatever
    /// follows it (FINGERPRINT) left out. Compared in constant time.
    pub fn integrity_valid(&self, hmac_sha1: impl HmacSha1) -> Option<bool> {
        let (offset, value) = self.attribute_at(attr::MESSAGE_INTEGRITY)?;
        if value.len() != INTEGRITY_LEN {
            return Some(false);
        }
        let mut header: [u8; HEADER_LEN] = self.message.get(..HEADER_LEN)?.try_into().ok()?;
        let covered = u16::try_from(offset + 4 + INTEGRITY_LEN).ok()?;
        header[2..4].copy_from_slice(&covered.to_be_bytes());
        let before = self.attributes.get(..offset)?;
        let mac = hmac_sha1(&[&header, before]);
        let differ = mac.iter().zip(value).fold(0u8, |d, (a, b)| d | (a ^ b));
        Some(differ == 0)
    }

    /// Checks FINGERPRINT (RFC 8489 §14.7): `None` without one, else whether it matches
    /// the CRC-32 of the message before it, XOR `0x5354554e`.
    pub fn fingerprint_valid(&self) -> Option<bool> {
        let (offset, value) = self.attribute_at(attr::FINGERPRINT)?;
        let covered = self.message.get(..HEADER_LEN + offset)?;
        let expected = Reader::new(value).u32().ok()?;
        Some(crc32(covered) ^ FINGERPRINT_XOR == expected)
    }

    /// The first attribute of type `ty`: where it starts among the attributes, and
    /// its value (what an integrity or fingerprint check covers is what precedes it).
    fn attribute_at(&self, ty: u16) -> Option<(usize, &'a [u8])> {
        let mut walk = Attributes(Reader::new(self.attributes));
        loop {
            let offset = walk.0.position();
            let (t, value) = walk.step().ok()??;
            if t == ty {
                return Some((offset, value));
            }
        }
    }
}

/// Writes an ICE agent's answer to a Binding request (RFC 8489 §6.3.1, RFC 8445
/// §7.3.1) into `out`, replacing what it held: a success response with the request's
/// `transaction_id`, XOR-MAPPED-ADDRESS `mapped` (where the request came from),
/// MESSAGE-INTEGRITY (`hmac_sha1`, keyed with the agent's own ICE password), and
/// FINGERPRINT. At most [`BINDING_SUCCESS_MAX_LEN`] bytes; `out` does not grow when it
/// has that capacity.
pub fn write_binding_success(
    out: &mut Vec<u8>,
    transaction_id: &[u8; 12],
    mapped: SocketAddr,
    hmac_sha1: impl HmacSha1,
) {
    fn attribute_header(out: &mut Vec<u8>, ty: u16, len: u16) {
        out.extend_from_slice(&ty.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
    }
    fn set_length(out: &mut [u8], length: usize) {
        // Never over 16 bits: the message is at most BINDING_SUCCESS_MAX_LEN bytes.
        let length = u16::try_from(length).unwrap_or(u16::MAX);
        out[2..4].copy_from_slice(&length.to_be_bytes());
    }
    let success = MessageType {
        class: StunClass::SuccessResponse,
        method: BINDING,
    };
    out.clear();
    out.extend_from_slice(&success.to_u16().to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(transaction_id);
    // RFC 8489 §14.2: the port XOR the cookie's top half; an IPv4 address XOR the
    // cookie, an IPv6 one XOR the cookie and the transaction id.
    let port = mapped.port() ^ (MAGIC_COOKIE >> 16) as u16;
    match mapped.ip() {
        IpAddr::V4(ip) => {
            attribute_header(out, attr::XOR_MAPPED_ADDRESS, 8);
            out.extend_from_slice(&[0, 0x01]);
            out.extend_from_slice(&port.to_be_bytes());
            out.extend_from_slice(&(u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes());
        }
        IpAddr::V6(ip) => {
            attribute_header(out, attr::XOR_MAPPED_ADDRESS, 20);
            out.extend_from_slice(&[0, 0x02]);
            out.extend_from_slice(&port.to_be_bytes());
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            mask[4..].copy_from_slice(transaction_id);
            for (b, m) in ip.octets().iter().zip(mask) {
                out.push(b ^ m);
            }
        }
    }
    // MESSAGE-INTEGRITY covers what precedes it, the length counting itself.
    let length = out.len() - HEADER_LEN + 4 + INTEGRITY_LEN;
    set_length(out, length);
    let mac = hmac_sha1(&[out.as_slice()]);
    attribute_header(out, attr::MESSAGE_INTEGRITY, INTEGRITY_LEN as u16);
    out.extend_from_slice(&mac);
    // FINGERPRINT likewise, over everything before it.
    let length = out.len() - HEADER_LEN + 8;
    set_length(out, length);
    let fingerprint = crc32(out) ^ FINGERPRINT_XOR;
    attribute_header(out, attr::FINGERPRINT, 4);
    out.extend_from_slice(&fingerprint.to_be_bytes());
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

/// CRC-32 (ISO-HDLC, as in zlib), a byte at a time from a table built at compile
/// time: every consent check answered runs it once.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = (crc >> 8) ^ TABLE[usize::from((crc as u8) ^ b)];
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

    /// RFC 2104 HMAC over SHA-1 (the `sha1` crate), for checking what this module does
    /// with the function it is given.
    pub(crate) fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; INTEGRITY_LEN] {
        use sha1::{Digest, Sha1};
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..20].copy_from_slice(&Sha1::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let mut inner = Sha1::new();
        inner.update(block.map(|b| b ^ 0x36));
        for part in parts {
            inner.update(part);
        }
        let mut outer = Sha1::new();
        outer.update(block.map(|b| b ^ 0x5c));
        outer.update(inner.finalize());
        outer.finalize().into()
    }

    /// [`hmac_sha1`] keyed with `key`, as the functions take it.
    fn keyed(key: &'static [u8]) -> impl HmacSha1 {
        move |parts: &[&[u8]]| hmac_sha1(key, parts)
    }

    /// RFC 5769 §2.1's password for its sample request.
    const RFC5769_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

    #[test]
    fn checks_the_rfc_5769_requests_integrity() {
        let m = StunMessage::parse(&RFC5769_REQUEST).unwrap();
        assert_eq!(m.integrity_valid(keyed(RFC5769_PASSWORD)), Some(true));
        assert_eq!(
            m.integrity_valid(keyed(b"VOkJxbRl1RmTxUk/WvJxBu")),
            Some(false)
        );
        // A byte it covers (in PRIORITY), then the HMAC itself.
        for at in [44, 90] {
            let mut forged = RFC5769_REQUEST;
            forged[at] ^= 1;
            let m = StunMessage::parse(&forged).unwrap();
            assert_eq!(
                m.integrity_valid(keyed(RFC5769_PASSWORD)),
                Some(false),
                "byte {at}"
            );
        }
        // FINGERPRINT follows MESSAGE-INTEGRITY and is not covered by it.
        let mut refingered = RFC5769_REQUEST;
        refingered[107] ^= 1;
        let m = StunMessage::parse(&refingered).unwrap();
        assert_eq!(m.integrity_valid(keyed(RFC5769_PASSWORD)), Some(true));
        assert_eq!(m.fingerprint_valid(), Some(false));
        // Without the attribute there is nothing to check.
        let bare = binding_request("a:b");
        let cut = &bare[..bare.len() - 32];
        let mut cut = cut.to_vec();
        let len = (cut.len() - HEADER_LEN) as u16;
        cut[2..4].copy_from_slice(&len.to_be_bytes());
        let m = StunMessage::parse(&cut).unwrap();
        assert!(!m.has_message_integrity());
        assert_eq!(m.integrity_valid(keyed(b"x")), None);
    }

    #[test]
    fn writes_binding_answers_rfc_5769_would_accept() {
        let tid: [u8; 12] = RFC5769_REQUEST[8..20].try_into().unwrap();
        // RFC 5769 §2.2 and §2.3: the same transaction and port, IPv4 then IPv6; the
        // XOR-MAPPED-ADDRESS values are the samples' (their SOFTWARE we leave out).
        let cases: [(SocketAddr, &[u8]); 2] = [
            (
                "192.0.2.1:32853".parse().unwrap(),
                &[0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43],
            ),
            (
                "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                    .parse()
                    .unwrap(),
                &[
                    0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc,
                    0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9,
                ],
            ),
        ];
        let mut out = Vec::with_capacity(BINDING_SUCCESS_MAX_LEN);
        for (mapped, xor_mapped) in cases {
            write_binding_success(&mut out, &tid, mapped, keyed(RFC5769_PASSWORD));
            assert!(out.len() <= BINDING_SUCCESS_MAX_LEN);
            assert_eq!(out.capacity(), BINDING_SUCCESS_MAX_LEN, "no growth");
            assert!(is_stun(&out));
            let m = StunMessage::parse(&out).unwrap();
            assert_eq!(m.class(), StunClass::SuccessResponse);
            assert_eq!(m.method(), BINDING);
            assert_eq!(m.transaction_id(), &tid);
            assert_eq!(m.len(), out.len());
            assert_eq!(m.attribute(attr::XOR_MAPPED_ADDRESS), Some(xor_mapped));
            assert_eq!(m.integrity_valid(keyed(RFC5769_PASSWORD)), Some(true));
            assert_eq!(m.integrity_valid(keyed(b"other")), Some(false));
            assert_eq!(m.fingerprint_valid(), Some(true));
            let types: Vec<u16> = m.attributes().map(|(t, _)| t).collect();
            assert_eq!(
                types,
                [
                    attr::XOR_MAPPED_ADDRESS,
                    attr::MESSAGE_INTEGRITY,
                    attr::FINGERPRINT
                ]
            );
        }
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
