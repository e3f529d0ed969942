//! What the node sends on slot streams, opened by an SRTP implementation we did not
//! write (webrtc-rs's `webrtc-srtp`), with the keys the listening client's DTLS
//! exported — for the default profile and for each profile the node can be held to.
//!
//! Chorus writes and seals the slot streams itself; str0m in the client decrypting
//! them proves it matches str0m, this proves it matches the RFCs as someone else read
//! them. The same run checks that a slot SSRC has exactly one sender (no sequence
//! number sent twice, also across an ICE restart, which renegotiates) and that the
//! sender reports are Chorus's: counts that match what was sent, and an RTP/NTP
//! timestamp pair that follows the stream's clock. Video slots (issue 12) the same.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use chorus_engine::SrtpProfile;
use chorus_protocol::demux::{classify, DatagramKind};
use chorus_protocol::rtcp::{Compound, RtcpPacket};
use chorus_protocol::rtp::RtpPacket;
use chorus_tests::sim::Sim;
use webrtc_srtp::context::Context;
use webrtc_srtp::protection_profile::ProtectionProfile;

fn theirs(profile: SrtpProfile) -> ProtectionProfile {
    match profile {
        SrtpProfile::Aes128CmSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        SrtpProfile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm => ProtectionProfile::AeadAes256Gcm,
    }
}

/// Sender report figures: (NTP timestamp, RTP timestamp, packets, octets).
type Report = (u64, u32, u32, u32);

/// webrtc-srtp's context for what the node sends to client `b`, from the keys its DTLS
/// exported (checked against `restrict`, or the default profile).
fn opener(
    sim: &mut Sim,
    b: usize,
    restrict: Option<SrtpProfile>,
) -> (Context, chorus_srtp::capture::CapturedKeys) {
    let keys = sim.clients[b]
        .keys
        .take()
        .expect("the client's DTLS exported keys");
    assert!(
        keys.dtls_client,
        "browsers and our clients offer actpass: the node answers passive"
    );
    if let Some(p) = restrict {
        assert_eq!(keys.profile, p, "the node held DTLS to {p}");
    } else {
        assert_eq!(
            keys.profile,
            SrtpProfile::AeadAes256Gcm,
            "str0m's default preference"
        );
    }
    let material =
        chorus_srtp::keys::DtlsSrtpKeys::from_exporter(keys.profile, &keys.material).unwrap();
    // The node is the DTLS server: it sends with the server's half.
    let server = material.server();
    let ctx = Context::new(
        server.key(),
        server.salt(),
        theirs(keys.profile),
        None,
        None,
    )
    .unwrap();
    (ctx, keys)
}

fn check(restrict: Option<SrtpProfile>) {
    let mut sim = Sim::with_config(|c| c.srtp_profiles = restrict.map(|p| vec![p]));
    let a = sim.connect("a", "interop");
    let b = sim.connect("b", "interop");
    sim.clients[b].tap = Some(Vec::new());
    sim.clients[a].speaking = Some(20);
    sim.run_for(Duration::from_secs(3));
    // A renegotiation (str0m re-creates send streams on every offer it accepts).
    let moved: SocketAddr = "192.0.2.200:50000".parse().unwrap();
    sim.restart_ice(b, moved, 0);
    sim.run_for(Duration::from_secs(3));

    let (mut ctx, keys) = opener(&mut sim, b, restrict);

    let slot_ssrcs: HashSet<u32> = sim.clients[b].from(a).map(|r| r.ssrc).collect();
    assert_eq!(slot_ssrcs.len(), 1, "a is heard on one slot");
    let tap = sim.clients[b].tap.take().unwrap();
    let mut seen = HashSet::new();
    let mut rtp = 0;
    let mut reports: HashMap<u32, Vec<Report>> = HashMap::new();
    for datagram in &tap {
        match classify(datagram) {
            DatagramKind::Rtp => {
                let plain = ctx
                    .decrypt_rtp(datagram)
                    .unwrap_or_else(|e| panic!("{:?}: RTP #{rtp}: {e}", keys.profile));
                let packet = RtpPacket::parse(&plain).unwrap();
                let ssrc = packet.ssrc().0;
                assert!(slot_ssrcs.contains(&ssrc), "only slot streams carry RTP");
                assert!(
                    seen.insert((ssrc, packet.sequence_number().0)),
                    "sequence number {} sent twice on SSRC {ssrc:#x}: two senders",
                    packet.sequence_number().0
                );
                assert_eq!(&packet.payload()[..2], &[0xC5, a as u8], "a's payload");
                let csrcs: Vec<u32> = packet.csrcs().map(|c| c.0).collect();
                assert_eq!(csrcs, [sim.clients[a].csrc], "the speaker's CSRC");
                rtp += 1;
            }
            DatagramKind::Rtcp => {
                let plain = ctx
                    .decrypt_rtcp(datagram)
                    .unwrap_or_else(|e| panic!("{:?}: SRTCP: {e}", keys.profile));
                for packet in Compound::new(&plain) {
                    if let Ok(RtcpPacket::SenderReport(sr)) = packet {
                        let i = sr.info();
                        reports.entry(sr.ssrc().0).or_default().push((
                            i.ntp_timestamp,
                            i.rtp_timestamp,
                            i.packet_count,
                            i.octet_count,
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    let received = sim.clients[b].from(a).count();
    assert!(rtp >= 250, "{rtp} RTP datagrams in 6 s of speech");
    assert_eq!(
        rtp, received,
        "str0m in the client took every packet we opened"
    );

    // Sender reports: Chorus's own, about once a second, for the slot that carries a.
    let ssrc = *slot_ssrcs.iter().next().unwrap();
    let srs = reports.get(&ssrc).expect("sender reports for the slot");
    assert!(srs.len() >= 4, "{} sender reports in 6 s", srs.len());
    assert!(
        reports.keys().all(|s| slot_ssrcs.contains(s)),
        "reports only for slots that carried audio"
    );
    let last = srs.last().unwrap();
    assert!(
        last.2 as usize <= rtp && last.2 as usize + 60 >= rtp,
        "packet count {} against {rtp} sent",
        last.2
    );
    assert_eq!(last.3, last.2 * 46, "octets: 46-byte payloads");
    // Give or take a frame.
    assert_reports_follow(srs, 48_000, 0.021);
}

/// RFC 3550 §6.4.1: a sender report's NTP and RTP timestamps name the same instant,
/// so from one report to the next they advance together (the stream's clock,
/// `clock_hz`, against NTP's 2^-32 s), within `tolerance` seconds; counts never go
/// back.
fn assert_reports_follow(reports: &[Report], clock_hz: u32, tolerance: f64) {
    for pair in reports.windows(2) {
        let ((ntp0, rtp0, n0, _), (ntp1, rtp1, n1, _)) = (pair[0], pair[1]);
        assert!(n1 >= n0, "counts never go back");
        let wall = (ntp1 - ntp0) as f64 / 4_294_967_296.0;
        let media = f64::from(rtp1.wrapping_sub(rtp0)) / f64::from(clock_hz);
        assert!(
            (wall - media).abs() < tolerance,
            "NTP {wall:.3} s against RTP {media:.3} s"
        );
    }
}

#[test]
fn the_browsers_default_profile_aes_256_gcm() {
    check(None);
}

#[test]
fn held_to_aes_cm_128_hmac_sha1_80() {
    check(Some(SrtpProfile::Aes128CmSha1_80));
}

#[test]
fn held_to_aes_128_gcm() {
    check(Some(SrtpProfile::AeadAes128Gcm));
}

#[test]
fn video_slots_are_opened_by_webrtc_srtp_and_reported_at_90_khz() {
    // A video slot is Chorus's too (issue 12): sealed per the RFCs, one sender, and
    // sender reports whose RTP timestamps follow the 90 kHz clock.
    let mut sim = Sim::with_config(|c| c.srtp_profiles = Some(vec![SrtpProfile::AeadAes128Gcm]));
    let a = sim.connect_video("a", "interop-video", Some(&["q", "h", "f"]));
    let b = sim.connect_video("b", "interop-video", None);
    sim.clients[b].tap = Some(Vec::new());
    sim.publish(a, true);
    sim.subscribe(b, 0, Some(a), chorus_engine::VideoQuality::High);
    sim.run_for(Duration::from_secs(6));
    let (mut ctx, keys) = opener(&mut sim, b, Some(SrtpProfile::AeadAes128Gcm));
    let slot_ssrcs: HashSet<u32> = sim.video_from(b, 0, a).iter().map(|r| r.ssrc).collect();
    assert_eq!(slot_ssrcs.len(), 1, "one SSRC for the slot");
    let ssrc = *slot_ssrcs.iter().next().unwrap();
    let tap = sim.clients[b].tap.take().unwrap();
    let (mut video, mut seen) = (0, HashSet::new());
    let mut reports: Vec<Report> = Vec::new();
    for datagram in &tap {
        match classify(datagram) {
            DatagramKind::Rtp => {
                let plain = ctx
                    .decrypt_rtp(datagram)
                    .unwrap_or_else(|e| panic!("{:?}: RTP: {e}", keys.profile));
                let packet = RtpPacket::parse(&plain).unwrap();
                if packet.ssrc().0 == ssrc {
                    assert!(
                        seen.insert(packet.sequence_number().0),
                        "sequence number {} sent twice",
                        packet.sequence_number().0
                    );
                    video += 1;
                }
            }
            DatagramKind::Rtcp => {
                let plain = ctx.decrypt_rtcp(datagram).unwrap();
                for packet in Compound::new(&plain) {
                    if let Ok(RtcpPacket::SenderReport(sr)) = packet {
                        if sr.ssrc().0 == ssrc {
                            let i = sr.info();
                            reports.push((
                                i.ntp_timestamp,
                                i.rtp_timestamp,
                                i.packet_count,
                                i.octet_count,
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    assert!(video >= 150, "{video} video packets opened in 6 s");
    assert!(
        reports.len() >= 3,
        "{} sender reports in 6 s",
        reports.len()
    );
    let last = reports.last().unwrap();
    assert!(
        last.2 as usize <= video,
        "packet count {} against {video}",
        last.2
    );
    // Give or take a frame (30 fps) of jitter, a frame more where the slot switched
    // layers between the two reports (a new source continues at least a frame on:
    // `rewriter.rs`), and the sim camera's clock, 1 % fast (3,000 ticks per 33 ms
    // frame). A wrong clock rate (48 kHz) would be off by 0.9 s per s.
    assert_reports_follow(&reports, 90_000, 0.08);
}
