//! Two str0m `Rtc`s connect over a tiny simulated network, as a browser and Chorus do:
//! the client offers (full ICE, `a=setup:actpass`), the ICE-lite server answers
//! (`a=setup:passive`); both built through `capture::build_rtc_with`, so both sides
//! report the DTLS-SRTP keys they exported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_srtp::capture::{
    build_rtc_with, CapturedKeys, KeyCapture, DTLS_CLIENT_RETIRE_AFTER, DTLS_RETIRE_AFTER,
};
use chorus_srtp::SrtpProfile;
use str0m::change::SdpOffer;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
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
        self.drain_counting(net, &mut 0);
    }

    /// Drains the `Rtc`, queueing what it transmits and counting the RTP it receives.
    fn drain_counting(
        &mut self,
        net: &mut VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
        rtp: &mut usize,
    ) {
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
                Output::Event(Event::RtpPacket(_)) => *rtp += 1,
                Output::Event(_) => {}
            }
        }
    }
}

/// A client and a server on a simulated network, with a simulated clock.
struct Pair {
    client: Peer,
    server: Peer,
    net: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    now: Instant,
    /// Every datagram the client sent, in order.
    client_sent: Vec<Vec<u8>>,
    /// RTP packets the server received.
    server_rtp: usize,
    /// The client's audio mid.
    mid: Mid,
    /// A time the driver wants to act at (the client's next audio frame).
    wake: Option<Instant>,
    /// The client's next RTP sequence number.
    seq: u64,
    /// Drop the server's DTLS datagrams once it has its keys, until it retires: its
    /// final flight is lost.
    lose_final_flight: bool,
    /// Datagrams dropped by `lose_final_flight`.
    lost: usize,
    /// When the server last received a DTLS record (its quiet time starts there).
    server_dtls_rx: Option<Instant>,
    /// When the server was first seen retired.
    server_retired_at: Option<Instant>,
}

impl Pair {
    /// Delivers one queued datagram, or advances the clock to the next timeout.
    fn step(&mut self) {
        if self.server_retired_at.is_none() && self.server.capture.dtls_retired() {
            self.server_retired_at = Some(self.now);
        }
        self.client.drain(&mut self.net);
        self.server
            .drain_counting(&mut self.net, &mut self.server_rtp);
        if let Some((source, destination, contents)) = self.net.pop_front() {
            if self.lose_final_flight
                && source == self.server.addr
                && (20..=63).contains(&contents[0])
                && self.server.capture.exported()
                && !self.server.capture.dtls_retired()
            {
                self.lost += 1;
                return;
            }
            let peer = if destination == self.server.addr {
                if (20..=63).contains(&contents[0]) {
                    self.server_dtls_rx = Some(self.now);
                }
                self.client_sent.push(contents.clone());
                &mut self.server
            } else {
                &mut self.client
            };
            assert_eq!(destination, peer.addr);
            let receive = Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents: contents.as_slice().try_into().unwrap(),
            };
            peer.rtc
                .handle_input(Input::Receive(self.now, receive))
                .unwrap();
        } else {
            let mut next = self.client.timeout.min(self.server.timeout);
            if let Some(wake) = self.wake {
                next = next.min(wake);
            }
            self.now = self.now.max(next) + Duration::from_micros(1);
            self.client
                .rtc
                .handle_input(Input::Timeout(self.now))
                .unwrap();
            self.server
                .rtc
                .handle_input(Input::Timeout(self.now))
                .unwrap();
        }
    }

    /// Runs until `until` (simulated), the client sending an audio packet every 20 ms.
    fn talk_until(&mut self, until: Instant) {
        let mut next_frame = self.now;
        while self.now < until {
            if self.now >= next_frame {
                let write = RtpWrite::new(
                    Pt::new_with_value(111),
                    self.seq.into(),
                    960 * self.seq as u32,
                    self.now,
                    Arc::<[u8]>::from(vec![0xC5u8; 40]),
                );
                let mut api = self.client.rtc.direct_api();
                let tx = api.stream_tx_by_mid(self.mid, None);
                tx.expect("the client's audio stream").write_rtp(write);
                self.seq += 1;
                next_frame = self.now + Duration::from_millis(20);
            }
            self.wake = Some(next_frame);
            self.step();
        }
        self.wake = None;
    }
}

/// Connects a client (`profiles` for neither side unless given) and returns both
/// sides' keys: (client, server).
fn connect(server_profiles: Option<&[SrtpProfile]>) -> (CapturedKeys, CapturedKeys) {
    let pair = connected_pair(server_profiles);
    let keys = (
        pair.client.capture.take().expect("client keys"),
        pair.server.capture.take().expect("server keys"),
    );
    assert!(pair.client.capture.take().is_none(), "take-once");
    assert!(pair.client.capture.exported());
    keys
}

/// A client and server that completed ICE and DTLS.
fn connected_pair(server_profiles: Option<&[SrtpProfile]>) -> Pair {
    pair_with(server_profiles, false)
}

/// A client and server that completed ICE and DTLS, the client offering a data
/// channel too if `channel`.
fn pair_with(server_profiles: Option<&[SrtpProfile]>, channel: bool) -> Pair {
    let mut pair = negotiated_pair(server_profiles, channel);
    pair.connect();
    pair
}

/// A client and server that agreed on SDP, before ICE and DTLS.
fn negotiated_pair(server_profiles: Option<&[SrtpProfile]>, channel: bool) -> Pair {
    let now = Instant::now();
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
    let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    if channel {
        api.add_channel("chat".into());
    }
    let (offer, pending) = api.apply().expect("an offer");
    let offer = SdpOffer::from_sdp_string(&offer.to_sdp_string()).unwrap();
    let answer = server.rtc.sdp_api().accept_offer(offer).expect("an answer");
    assert!(answer.to_sdp_string().contains("a=setup:passive"));
    client
        .rtc
        .sdp_api()
        .accept_answer(pending, answer)
        .expect("answer accepted");

    Pair {
        client,
        server,
        net: VecDeque::new(),
        now,
        client_sent: Vec::new(),
        server_rtp: 0,
        mid,
        wake: None,
        seq: 0,
        lose_final_flight: false,
        lost: 0,
        server_dtls_rx: None,
        server_retired_at: None,
    }
}

impl Pair {
    /// Runs ICE and DTLS until both sides are connected.
    fn connect(&mut self) {
        for _ in 0..MAX_STEPS {
            if self.client.connected && self.server.connected {
                break;
            }
            self.step();
        }
        assert!(
            self.client.connected && self.server.connected,
            "no connection"
        );
    }
}

/// Once the handshake is over and quiet for `DTLS_RETIRE_AFTER` (the server) or
/// `DTLS_CLIENT_RETIRE_AFTER` (the client), each side lets go of dimpl's state; media
/// keeps flowing, and a DTLS flight the client retransmits late is answered with the
/// server's final flight again, without an error.
#[test]
fn dtls_state_is_let_go_after_the_handshake() {
    let mut pair = connected_pair(None);
    let start = pair.now;
    pair.talk_until(start + DTLS_RETIRE_AFTER * 2);
    assert!(pair.server_rtp > 0, "media flows");
    assert!(pair.server.capture.dtls_retired(), "server retired");
    // Not before the quiet time, which runs from the client's last DTLS record.
    let quiet_from = pair.server_dtls_rx.expect("the client's handshake");
    let retired_at = pair.server_retired_at.expect("seen retired");
    assert!(
        retired_at >= quiet_from + DTLS_RETIRE_AFTER,
        "retired {:?} after the last DTLS record",
        retired_at - quiet_from
    );
    assert!(!pair.client.capture.dtls_retired(), "client not yet");
    pair.talk_until(start + DTLS_CLIENT_RETIRE_AFTER * 2);
    assert!(pair.client.capture.dtls_retired(), "client retired");
    let before = pair.server_rtp;
    pair.talk_until(pair.now + Duration::from_secs(10));
    assert!(
        pair.server_rtp >= before + 400,
        "media keeps flowing: {} then {}",
        before,
        pair.server_rtp
    );

    // The client's handshake datagrams, replayed after retirement: no error.
    let handshake: Vec<Vec<u8>> = pair
        .client_sent
        .iter()
        .filter(|d| (20..=63).contains(&d[0]))
        .cloned()
        .collect();
    assert!(!handshake.is_empty());
    for contents in handshake {
        let receive = Receive {
            proto: Protocol::Udp,
            source: pair.client.addr,
            destination: pair.server.addr,
            contents: contents.as_slice().try_into().unwrap(),
        };
        pair.server
            .rtc
            .handle_input(Input::Receive(pair.now, receive))
            .expect("a late DTLS record is dropped quietly");
    }
    let before = pair.server_rtp;
    pair.talk_until(pair.now + Duration::from_secs(2));
    assert!(pair.server_rtp >= before + 90, "still flowing");

    // Closing a retired session works and sends no DTLS.
    pair.server.rtc.disconnect();
    assert!(!pair.server.rtc.is_alive());
}

/// A client that lost the server's final flight retransmits its own; the server, its
/// DTLS state let go by then, sends its final flight again and the client connects.
#[test]
fn a_lost_final_flight_is_sent_again_after_retiring() {
    let mut pair = negotiated_pair(None, false);
    pair.lose_final_flight = true;
    pair.connect();
    assert!(pair.lost > 0, "the server's final flight was lost");
    assert!(
        pair.server.capture.dtls_retired(),
        "the client connected through the retired server's copy"
    );
    let before = pair.server_rtp;
    pair.talk_until(pair.now + Duration::from_secs(2));
    assert!(pair.server_rtp >= before + 90, "media flows");
}

/// A session told it has a data channel keeps DTLS before any SCTP crossed it.
#[test]
fn dtls_state_stays_when_told_to_keep_it() {
    let mut pair = negotiated_pair(None, false);
    pair.server.capture.keep_dtls();
    pair.connect();
    let start = pair.now;
    pair.talk_until(start + DTLS_RETIRE_AFTER * 5);
    assert!(pair.server_rtp > 0);
    assert!(!pair.server.capture.dtls_retired());
}

/// A session that carries a data channel (SCTP over DTLS) keeps its DTLS state.
#[test]
fn dtls_state_stays_with_a_data_channel() {
    let mut pair = pair_with(None, true);
    let start = pair.now;
    pair.talk_until(start + DTLS_CLIENT_RETIRE_AFTER * 3);
    assert!(pair.server_rtp > 0);
    assert!(!pair.server.capture.dtls_retired());
    assert!(!pair.client.capture.dtls_retired());
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
