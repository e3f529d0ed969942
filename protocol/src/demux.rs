//! Telling apart the protocols that share one UDP port in WebRTC (RFC 7983).

use crate::stun;

/// What a datagram on a bundled WebRTC port holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatagramKind {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
    /// Too short for its kind, or a first byte no WebRTC peer sends (ZRTP, TURN
    /// channels, ...).
    Unknown,
}

/// Classifies a datagram by its first byte (RFC 7983 §7), then RTP against RTCP by
/// the second byte (RFC 5761 §4: RTCP packet types 192..=223 are never RTP payload
/// types 64..=95 with the marker bit set).
pub fn classify(buf: &[u8]) -> DatagramKind {
    match buf.first() {
        Some(0..=3) if stun::is_stun(buf) => DatagramKind::Stun,
        // A DTLS record header is 13 bytes (RFC 6347 §4.1).
        Some(20..=63) if buf.len() >= 13 => DatagramKind::Dtls,
        Some(128..=191) => match buf.get(1) {
            // The RTCP common header is 4 bytes (RFC 3550 §6.4.1).
            Some(192..=223) if buf.len() >= 4 => DatagramKind::Rtcp,
            Some(0..=191 | 224..=255) if buf.len() >= 12 => DatagramKind::Rtp,
            _ => DatagramKind::Unknown,
        },
        _ => DatagramKind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_each_kind() {
        let stun = crate::stun::tests::binding_request("a:b");
        assert_eq!(classify(&stun), DatagramKind::Stun);
        let dtls_hello = [22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 1];
        assert_eq!(classify(&dtls_hello), DatagramKind::Dtls);
        let rtp = [0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xf8];
        assert_eq!(classify(&rtp), DatagramKind::Rtp);
        let rtp_marker = [0x80, 0x80 | 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(classify(&rtp_marker), DatagramKind::Rtp);
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        assert_eq!(classify(&rr), DatagramKind::Rtcp);
    }

    #[test]
    fn unknown_for_short_or_foreign_datagrams() {
        for buf in [
            &[][..],
            &[0x00, 0x01, 0x00],
            &[0x80, 111, 0, 1],
            &[0x80],
            &[22, 0xfe],
            &[0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[16, 0, 0, 0],
        ] {
            assert_eq!(classify(buf), DatagramKind::Unknown, "{buf:?}");
        }
    }
}
