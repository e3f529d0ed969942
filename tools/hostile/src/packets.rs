//! Datagrams that look like what a WebRTC peer sends on the media port (RFC 7983:
//! STUN, DTLS, RTP, RTCP), built to be refused: wrong or missing credentials, cut
//! short, too long, or noise.
//!
//! Every builder appends to a caller's `Vec` (cleared first), so an attack reuses one
//! buffer for all its datagrams.

use chorus_protocol::encode::Encode;
use chorus_protocol::rtcp::{ReceiverReportWriter, ReportBlock, SenderInfo, SenderReportWriter};
use chorus_protocol::rtp::{ExtensionSpec, RtpWriter, SeqNo, Ssrc};
use chorus_protocol::stun::{attr, BINDING, MAGIC_COOKIE};

use crate::Rng;

/// The Opus payload type browsers (and the Chorus test clients) offer.
pub const OPUS_PT: u8 = 111;
/// The most a Chorus node reads of one datagram (`engine::socket::MAX_DATAGRAM`); longer
/// ones are cut to this and then refused.
pub const NODE_MAX_DATAGRAM: usize = 2048;
/// The longest datagram [`oversized`] builds (IPv4 UDP carries at most 65,507 bytes).
pub const OVERSIZED_MAX: usize = 65_000;
/// The longest datagram [`random_bytes`] builds: an Ethernet MTU's worth.
pub const RANDOM_MAX: usize = 1500;

/// RFC 8489 §14.7: FINGERPRINT is the CRC-32 of the message before it, XOR this.
const FINGERPRINT_XOR: u32 = 0x5354_554e;
/// RFC 8445 §5.3: the characters of an ICE ufrag or password.
const ICE_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `len` random ICE characters.
pub fn ice_token(rng: &mut Rng, len: usize) -> String {
    (0..len)
        .map(|_| ICE_CHARS[rng.below(ICE_CHARS.len() as u64) as usize] as char)
        .collect()
}

/// A node ufrag in the form Chorus gives its participants (`c<hex id>z<random>`), for
/// an id no participant has: the top bits are set, and real ids are a small serial
/// shifted by 8.
pub fn ufrag_naming_no_one(rng: &mut Rng) -> String {
    let id = rng.next_u64() | 1 << 62;
    format!("c{id:x}z{}", ice_token(rng, 6))
}

/// A ufrag that does not have the form of a Chorus one (it never starts with `c`).
pub fn ufrag_random(rng: &mut Rng) -> String {
    let len = 4 + rng.below(13) as usize;
    format!("x{}", ice_token(rng, len - 1))
}

/// A STUN Binding request as an ICE controlling agent sends it to `node_ufrag`
/// (USERNAME `node_ufrag:<random>`, PRIORITY, ICE-CONTROLLING, USE-CANDIDATE), with
/// `integrity` as its MESSAGE-INTEGRITY if given, and a correct FINGERPRINT.
pub fn stun_binding_request(
    rng: &mut Rng,
    node_ufrag: &str,
    integrity: Option<[u8; 20]>,
    out: &mut Vec<u8>,
) {
    let mut txid = [0u8; 12];
    rng.fill(&mut txid);
    let theirs = 4 + rng.below(5) as usize;
    let username = format!("{node_ufrag}:{}", ice_token(rng, theirs));
    let check = Check {
        txid,
        username: &username,
        priority: rng.next_u32(),
        tie_breaker: rng.next_u64(),
        nominates: true,
    };
    check.write_head(out);
    if let Some(mac) = integrity {
        stun_attribute(out, attr::MESSAGE_INTEGRITY, &mac);
    }
    finish_with_fingerprint(out);
}

/// An ICE connectivity check that passes: what a controlling agent sends on one of
/// its candidate pairs. USERNAME is `username` (the receiver's ufrag, a colon, the
/// sender's); USE-CANDIDATE is there if the check `nominates` its pair;
/// MESSAGE-INTEGRITY is `hmac_sha1` of what precedes it, with the length counting it
/// (RFC 8489 §14.5; the key is the receiver's ICE password); then FINGERPRINT.
pub fn stun_connectivity_check(
    txid: [u8; 12],
    username: &str,
    nominates: bool,
    hmac_sha1: impl FnOnce(&[u8]) -> [u8; 20],
    out: &mut Vec<u8>,
) {
    let check = Check {
        txid,
        username,
        priority: 0x6e7f_1eff,
        tie_breaker: 7,
        nominates,
    };
    check.write_head(out);
    let total = out.len() + 24;
    set_stun_length(out, total);
    let mac = hmac_sha1(out);
    stun_attribute(out, attr::MESSAGE_INTEGRITY, &mac);
    finish_with_fingerprint(out);
}

/// The part of a Binding request before its integrity.
struct Check<'a> {
    txid: [u8; 12],
    username: &'a str,
    priority: u32,
    tie_breaker: u64,
    nominates: bool,
}

impl Check<'_> {
    fn write_head(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&BINDING.to_be_bytes());
        out.extend_from_slice(&[0, 0]); // length, set as attributes are added
        out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        out.extend_from_slice(&self.txid);
        stun_attribute(out, attr::USERNAME, self.username.as_bytes());
        stun_attribute(out, attr::PRIORITY, &self.priority.to_be_bytes());
        stun_attribute(out, attr::ICE_CONTROLLING, &self.tie_breaker.to_be_bytes());
        if self.nominates {
            stun_attribute(out, attr::USE_CANDIDATE, &[]);
        }
    }
}

/// FINGERPRINT last: the length covers it when its CRC is computed.
fn finish_with_fingerprint(out: &mut Vec<u8>) {
    let total = out.len() + 8;
    set_stun_length(out, total);
    let crc = crc32(out) ^ FINGERPRINT_XOR;
    stun_attribute(out, attr::FINGERPRINT, &crc.to_be_bytes());
}

fn stun_attribute(out: &mut Vec<u8>, ty: u16, value: &[u8]) {
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
    let total = out.len();
    set_stun_length(out, total);
}

fn set_stun_length(out: &mut [u8], total: usize) {
    let len = (total.saturating_sub(20) as u16).to_be_bytes();
    out[2..4].copy_from_slice(&len);
}

/// CRC-32 (IEEE 802.3, reflected), as STUN's FINGERPRINT uses it.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A plain (not SRTP) RTP packet that looks like a browser's microphone: version 2,
/// payload type `pt`, an RFC 6464 audio level extension (loud, voice), `payload_len`
/// random bytes. Without SRTP's authentication tag no receiver may accept it.
pub fn rtp_packet(
    rng: &mut Rng,
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    pt: u8,
    payload_len: usize,
    out: &mut Vec<u8>,
) {
    out.clear();
    let mut payload = vec![0u8; payload_len];
    rng.fill(&mut payload);
    let level = [0x80 | 20];
    let elements = [(1u8, &level[..])];
    let writer = RtpWriter {
        marker: false,
        payload_type: pt & 0x7f,
        sequence_number: SeqNo(seq),
        timestamp,
        ssrc: Ssrc(ssrc),
        csrcs: &[],
        extension: ExtensionSpec::Elements(&elements),
        payload: &payload,
        padding: 0,
    };
    // The inputs are always valid (pt masked, no CSRCs, one short element).
    let _ = writer.encode_vec(out);
}

/// A plain (not SRTCP) RTCP packet about `ssrc`: a sender report from it, or a
/// receiver report with a block on it. Without SRTCP's index and tag no receiver may
/// accept it.
pub fn rtcp_packet(rng: &mut Rng, ssrc: u32, out: &mut Vec<u8>) {
    out.clear();
    let block = ReportBlock {
        ssrc: Ssrc(ssrc),
        fraction_lost: rng.next_u32() as u8,
        cumulative_lost: (rng.next_u32() & 0xffff) as i32,
        extended_highest_seq: rng.next_u32(),
        jitter: rng.next_u32() & 0xffff,
        last_sr: rng.next_u32(),
        delay_since_last_sr: rng.next_u32() & 0xffff,
    };
    let blocks = [block];
    // Both writers take these inputs (one block of at most 31).
    let _ = if rng.below(2) == 0 {
        SenderReportWriter {
            ssrc: Ssrc(ssrc),
            info: SenderInfo {
                ntp_timestamp: rng.next_u64(),
                rtp_timestamp: rng.next_u32(),
                packet_count: rng.next_u32() & 0xffff,
                octet_count: rng.next_u32() & 0xff_ffff,
            },
            blocks: &[],
        }
        .encode_vec(out)
    } else {
        ReceiverReportWriter {
            ssrc: Ssrc(rng.next_u32()),
            blocks: &blocks,
        }
        .encode_vec(out)
    };
}

/// A DTLS 1.2 record holding the start of a ClientHello (RFC 6347 §4.1, §4.2.2).
pub fn dtls_client_hello(rng: &mut Rng, out: &mut Vec<u8>) {
    out.clear();
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(&[0xfe, 0xfd]); // client_version DTLS 1.2
    let mut random = [0u8; 32];
    rng.fill(&mut random);
    body.extend_from_slice(&random);
    body.push(0); // session id
    body.push(0); // cookie
    body.extend_from_slice(&[0, 2, 0xc0, 0x2b]); // one cipher suite
    body.extend_from_slice(&[1, 0]); // null compression
    let len = body.len() as u32;
    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&len.to_be_bytes()[1..]);
    handshake.extend_from_slice(&[0, 0]); // message_seq
    handshake.extend_from_slice(&[0, 0, 0]); // fragment_offset
    handshake.extend_from_slice(&len.to_be_bytes()[1..]); // fragment_length
    handshake.extend_from_slice(&body);
    out.push(22); // handshake
    out.extend_from_slice(&[0xfe, 0xfd]);
    out.extend_from_slice(&[0, 0]); // epoch
    out.extend_from_slice(&[0, 0, 0, 0, 0, rng.below(256) as u8]); // sequence number
    out.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    out.extend_from_slice(&handshake);
}

/// Which valid-looking packet a truncated or oversized datagram starts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
}

impl Template {
    pub const ALL: [Template; 4] = [
        Template::Stun,
        Template::Dtls,
        Template::Rtp,
        Template::Rtcp,
    ];

    /// A whole packet of this kind (random credentials, SSRC and payload).
    pub fn build(self, rng: &mut Rng, out: &mut Vec<u8>) {
        match self {
            Template::Stun => {
                let ufrag = ufrag_random(rng);
                let mut mac = [0u8; 20];
                rng.fill(&mut mac);
                stun_binding_request(rng, &ufrag, Some(mac), out);
            }
            Template::Dtls => dtls_client_hello(rng, out),
            Template::Rtp => {
                let (ssrc, seq, ts) = (rng.next_u32(), rng.next_u32() as u16, rng.next_u32());
                let len = 40 + rng.below(120) as usize;
                rtp_packet(rng, ssrc, seq, ts, OPUS_PT, len, out);
            }
            Template::Rtcp => {
                let ssrc = rng.next_u32();
                rtcp_packet(rng, ssrc, out);
            }
        }
    }
}

/// 1..=[`RANDOM_MAX`] random bytes.
pub fn random_bytes(rng: &mut Rng, out: &mut Vec<u8>) {
    let len = 1 + rng.below(RANDOM_MAX as u64) as usize;
    out.clear();
    out.resize(len, 0);
    rng.fill(out);
}

/// A strict prefix (0 bytes up to one short of whole) of a valid-looking STUN, DTLS,
/// RTP or RTCP packet.
pub fn truncated(rng: &mut Rng, out: &mut Vec<u8>) {
    let template = Template::ALL[rng.below(4) as usize];
    template.build(rng, out);
    let keep = rng.below(out.len() as u64) as usize;
    out.truncate(keep);
}

/// A datagram longer than a node reads ([`NODE_MAX_DATAGRAM`] + 1 up to
/// [`OVERSIZED_MAX`] bytes) that starts as a valid-looking packet of any kind (or as
/// noise), padded with random bytes.
pub fn oversized(rng: &mut Rng, out: &mut Vec<u8>) {
    let len =
        NODE_MAX_DATAGRAM + 1 + rng.below((OVERSIZED_MAX - NODE_MAX_DATAGRAM) as u64) as usize;
    match rng.below(5) {
        4 => out.clear(),
        k => Template::ALL[k as usize].build(rng, out),
    }
    let start = out.len().min(len);
    out.resize(len, 0);
    rng.fill(&mut out[start..]);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chorus_protocol::demux::{classify, DatagramKind};
    use chorus_protocol::rtcp::{Compound, RtcpPacket};
    use chorus_protocol::rtp::RtpPacket;
    use chorus_protocol::stun::StunMessage;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn stun_requests_parse_and_name_the_ufrag() {
        let mut rng = Rng::new(1);
        let mut out = Vec::new();
        stun_binding_request(&mut rng, "c100zAbCdEf", Some([7; 20]), &mut out);
        assert_eq!(classify(&out), DatagramKind::Stun);
        let m = StunMessage::parse(&out).unwrap();
        assert!(m.is_binding_request());
        assert_eq!(m.ice_ufrags().unwrap().0, "c100zAbCdEf");
        assert!(m.has_message_integrity());
        assert_eq!(m.fingerprint_valid(), Some(true));
        stun_binding_request(&mut rng, "nobody", None, &mut out);
        let m = StunMessage::parse(&out).unwrap();
        assert!(!m.has_message_integrity());
        assert_eq!(m.fingerprint_valid(), Some(true));
    }

    #[test]
    fn ufrags_naming_no_one_have_the_chorus_form() {
        let mut rng = Rng::new(2);
        for _ in 0..100 {
            let u = ufrag_naming_no_one(&mut rng);
            let hex = u.strip_prefix('c').unwrap().split('z').next().unwrap();
            assert!(u64::from_str_radix(hex, 16).unwrap() >= 1 << 62, "{u}");
            let r = ufrag_random(&mut rng);
            assert!(!r.starts_with('c') && (4..=16).contains(&r.len()), "{r}");
        }
    }

    #[test]
    fn rtp_and_rtcp_look_valid() {
        let mut rng = Rng::new(3);
        let mut out = Vec::new();
        rtp_packet(&mut rng, 0x1234, 7, 960, OPUS_PT, 40, &mut out);
        assert_eq!(classify(&out), DatagramKind::Rtp);
        let p = RtpPacket::parse(&out).unwrap();
        assert_eq!(
            (p.payload_type(), p.ssrc().0, p.sequence_number().0),
            (111, 0x1234, 7)
        );
        for _ in 0..10 {
            rtcp_packet(&mut rng, 0x1234, &mut out);
            assert_eq!(classify(&out), DatagramKind::Rtcp);
            let first = Compound::new(&out).next().unwrap().unwrap();
            assert!(matches!(
                first,
                RtcpPacket::SenderReport(_) | RtcpPacket::ReceiverReport(_)
            ));
        }
        dtls_client_hello(&mut rng, &mut out);
        assert_eq!(classify(&out), DatagramKind::Dtls);
    }

    #[test]
    fn truncated_and_oversized_stay_in_their_bounds() {
        let mut rng = Rng::new(4);
        let mut out = Vec::new();
        for _ in 0..1000 {
            truncated(&mut rng, &mut out);
            assert!(out.len() < 200, "{}", out.len());
            oversized(&mut rng, &mut out);
            assert!((NODE_MAX_DATAGRAM + 1..=OVERSIZED_MAX).contains(&out.len()));
            random_bytes(&mut rng, &mut out);
            assert!((1..=RANDOM_MAX).contains(&out.len()));
        }
    }
}
