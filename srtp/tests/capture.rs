//! Two str0m `Rtc`s connect over a tiny simulated network, as a browser and Chorus do:
//! the client offers (full ICE, `a=setup:actpass`), the ICE-lite server answers
//! (`a=setup:passive`); both built through `capture::build_rtc_with`, so both sides
//! report the DTLS-SRTP keys they exported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chorus_srtp::capture::{build_rtc_with, CapturedKeys, KeyCapture};
use chorus_srtp::SrtpProfile;
use str0m::change::SdpOffer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// Steps before the handshake is declared stuck.
const MAX_STEPS: usize = 10_000;

struct Peer {
    rtc: Rtc,
    addr: SocketAddr,
    capture: KeyCapture,
    timeout: Instant,
    connected: bool,
}

impl Peer {
    /// Drains the `Rtc`, queueing what it transmits.
    fn drain(&mut self, net: &mut VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>) {
        loop {
            match self.rtc.poll_output().expect("poll_output") {
                Output::Timeout(t) => {
                    self.timeout = t;
                    return;
                }
                Output::Transmit(t) => {
                    net.push_back((t.source, t.destination, t.contents.to_vec()))
                }
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(_) => {}
            }
        }
    }
}

/// Connects a client (`profiles` for neither side unless given) and returns both
/// sides' keys: (client, server).
fn connect(server_profiles: Option<&[SrtpProfile]>) -> (CapturedKeys, CapturedKeys) {
    let mut now = Instant::now();
    let server_addr: SocketAddr = "10.0.0.1:7882".parse().unwrap();
    let client_addr: SocketAddr = "192.0.2.1:40000".parse().unwrap();

    let config = Rtc::builder().set_rtp_mode(true).set_ice_lite(true);
    let (mut rtc, capture) = build_rtc_with(config, now, server_profiles);
    rtc.add_local_candidate(Candidate::host(server_addr, "udp").unwrap());
    let mut server = Peer {
        rtc,
        addr: server_addr,
        capture,
        timeout: now,
        connected: false,
    };

    let config = Rtc::builder().set_rtp_mode(true);
    let (mut rtc, capture) = build_rtc_with(config, now, None);
    rtc.add_local_candidate(Candidate::host(client_addr, "udp").unwrap());
    let mut client = Peer {
        rtc,
        addr: client_addr,
        capture,
        timeout: now,
        connected: false,
    };

    let mut api = client.rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, pending) = api.apply().expect("an offer");
    let offer = SdpOffer::from_sdp_string(&offer.to_sdp_string()).unwrap();
    let answer = server.rtc.sdp_api().accept_offer(offer).expect("an answer");
    assert!(answer.to_sdp_string().contains("a=setup:passive"));
    client
        .rtc
        .sdp_api()
        .accept_answer(pending, answer)
        .expect("answer accepted");

    let mut net = VecDeque::new();
    for _ in 0..MAX_STEPS {
        client.drain(&mut net);
        server.drain(&mut net);
        if client.connected && server.connected {
            break;
        }
        if let Some((source, destination, contents)) = net.pop_front() {
            let peer = if destination == server.addr {
                &mut server
            } else {
                &mut client
            };
            assert_eq!(destination, peer.addr);
            let receive = Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents: contents.as_slice().try_into().unwrap(),
            };
            peer.rtc.handle_input(Input::Receive(now, receive)).unwrap();
        } else {
            now = now.max(client.timeout.min(server.timeout)) + Duration::from_micros(1);
            client.rtc.handle_input(Input::Timeout(now)).unwrap();
            server.rtc.handle_input(Input::Timeout(now)).unwrap();
        }
    }
    assert!(client.connected && server.connected, "no connection");
    let keys = (
        client.capture.take().expect("client keys"),
        server.capture.take().expect("server keys"),
    );
    assert!(client.capture.take().is_none(), "take-once");
    assert!(client.capture.exported());
    keys
}

#[test]
fn both_sides_capture_the_same_keys() {
    let (client, server) = connect(None);
    assert_eq!(client.material, server.material);
    assert_eq!(client.profile, server.profile);
    // dimpl's preference (both sides are dimpl).
    assert_eq!(server.profile, SrtpProfile::AeadAes256Gcm);
    assert_eq!(server.material.len(), server.profile.keying_material_len());
    assert!(
        client.dtls_client,
        "the offerer (actpass) is the DTLS client"
    );
    assert!(
        !server.dtls_client,
        "the answerer (passive) is the DTLS server"
    );
}

#[test]
fn server_restricts_to_aes_cm() {
    let (client, server) = connect(Some(&[SrtpProfile::Aes128CmSha1_80]));
    assert_eq!(server.profile, SrtpProfile::Aes128CmSha1_80);
    assert_eq!(client.profile, SrtpProfile::Aes128CmSha1_80);
    assert_eq!(client.material, server.material);
    assert_eq!(server.material.len(), 60);
}

#[test]
fn server_preference_order_is_honoured() {
    let (client, server) = connect(Some(&[
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm,
    ]));
    assert_eq!(server.profile, SrtpProfile::AeadAes128Gcm);
    assert_eq!(client.material, server.material);
}

/// Rtc creation cost, str0m's default provider vs `build_rtc` (both with one shared
/// certificate, as Chorus does). `cargo test -p chorus-srtp --release --test capture -- --ignored --nocapture`
#[test]
#[ignore]
fn creation_cost() {
    let now = Instant::now();
    let cert = str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate()
        .unwrap();
    let config = || {
        Rtc::builder()
            .set_rtp_mode(true)
            .set_ice_lite(true)
            .set_dtls_cert(cert.clone())
    };
    let n = 300;
    // Warm both paths (the cached dimpl config is built on first use).
    drop(config().build(now));
    drop(chorus_srtp::capture::build_rtc(config(), now));
    let t = Instant::now();
    for _ in 0..n {
        drop(config().build(now));
    }
    let default = t.elapsed() / n;
    let t = Instant::now();
    for _ in 0..n {
        drop(chorus_srtp::capture::build_rtc(config(), now));
    }
    let captured = t.elapsed() / n;
    let t = Instant::now();
    for _ in 0..20 {
        connect(None);
    }
    let connect_cost = t.elapsed() / 20;
    println!("Rtc creation: default provider {default:?}, build_rtc {captured:?}; client+server connect via build_rtc {connect_cost:?}");
}
