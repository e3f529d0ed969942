//! Hostile traffic for a Chorus node's media port (UDP), to check that what a stranger
//! sends there is dropped, counted by reason, and costs the participants nothing.
//!
//! One function per attack. Each sends to `target` at the [`Pace`]'s rate until its
//! duration or count is reached, from plain `std` UDP sockets, blocking the calling
//! thread, and returns what it sent ([`Sent`]):
//!
//! | attack | datagrams | what a node should do |
//! |---|---|---|
//! | [`random_bytes`] | 1..=1,500 random bytes | `malformed` (first byte no WebRTC protocol uses), else `unknown_source` |
//! | [`truncated`] | strict prefixes of STUN, DTLS, RTP and RTCP packets | `malformed` (too short for its kind), else `unknown_source` |
//! | [`oversized`] | 2,049..=65,000 bytes, starting as any of those | read cut to 2,048, then as the rest |
//! | [`stun_bad_integrity`] | Binding requests naming a real participant's ufrag, garbage MESSAGE-INTEGRITY | refused by the integrity check: `unknown_source` (or `bad_claim` when the participant's media is on another shard) |
//! | [`stun_unknown_ufrag`] | Binding requests naming no participant: `c<hex>z…` or random | `unknown_source` |
//! | [`rtp_unauthenticated`] | plain RTP, PT 111, the SSRC given | `unknown_source` from a stranger's address |
//! | [`rtcp_unauthenticated`] | plain RTCP SR/RR about the SSRC given | `unknown_source` from a stranger's address |
//! | [`flood`] | a mix of all the above (but not STUN naming a participant) from many source addresses (127.0.0.2, 127.0.0.3, …; several ports each) | per datagram as above; no state per source |
//!
//! Unauthenticated RTP and replayed SRTP *from a participant's own address* need that
//! participant's socket: see `tests/live.rs` (`LiveClient::send_raw`, `replay_sent`) and
//! `tests/hostile_media.rs`. The builders of every datagram are in [`packets`].
//!
//! Randomness is a seeded xorshift ([`Rng`]): the same seed sends the same datagrams.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chorus_protocol::demux::{classify, DatagramKind};

pub mod packets;

/// How fast and for how long an attack sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// Datagrams per second (0: as fast as the socket takes them).
    pub rate: u32,
    /// Stop after this long (`None`: only `count` stops it).
    pub duration: Option<Duration>,
    /// Stop after this many datagrams (`None`: only `duration` stops it).
    pub count: Option<u64>,
}

impl Pace {
    /// `rate` datagrams per second for `duration`.
    pub fn for_duration(rate: u32, duration: Duration) -> Pace {
        Pace {
            rate,
            duration: Some(duration),
            count: None,
        }
    }

    /// `count` datagrams at `rate` per second.
    pub fn count(rate: u32, count: u64) -> Pace {
        Pace {
            rate,
            duration: None,
            count: Some(count),
        }
    }
}

/// What an attack sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Datagrams the kernel took.
    pub datagrams: u64,
    pub bytes: u64,
    /// Sends that failed (e.g. `ECONNREFUSED` once nothing listens at the target).
    pub errors: u64,
    /// Of `datagrams`, those a node takes for no protocol WebRTC speaks on the port
    /// (`chorus_protocol::demux::classify` of the 2,048 bytes it reads is `Unknown`):
    /// what its `dropped_malformed` should count. Every other datagram of these attacks
    /// comes from an address no participant uses (or names no participant).
    pub malformed: u64,
    /// Distinct source addresses (IP and port) used.
    pub sources: usize,
}

impl Sent {
    pub fn add(&mut self, other: Sent) {
        self.datagrams += other.datagrams;
        self.bytes += other.bytes;
        self.errors += other.errors;
        self.malformed += other.malformed;
        self.sources += other.sources;
    }
}

/// xorshift64*: small, seeded, good enough for noise.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Never zero (xorshift's fixed point); mix the seed so 1, 2, 3 differ at once.
        Rng((seed ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform enough in `0..n` (`n > 0`; 0 for `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        self.next_u64() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
}

/// Every attack of this crate, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attack {
    Random,
    Truncated,
    Oversized,
    StunBadIntegrity,
    StunUnknownUfrag,
    RtpUnauthenticated,
    RtcpUnauthenticated,
    Flood,
}

impl Attack {
    pub const ALL: [Attack; 8] = [
        Attack::Random,
        Attack::Truncated,
        Attack::Oversized,
        Attack::StunBadIntegrity,
        Attack::StunUnknownUfrag,
        Attack::RtpUnauthenticated,
        Attack::RtcpUnauthenticated,
        Attack::Flood,
    ];

    /// The name on the command line and in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            Attack::Random => "random",
            Attack::Truncated => "truncated",
            Attack::Oversized => "oversized",
            Attack::StunBadIntegrity => "stun-bad-integrity",
            Attack::StunUnknownUfrag => "stun-unknown-ufrag",
            Attack::RtpUnauthenticated => "rtp-unauthenticated",
            Attack::RtcpUnauthenticated => "rtcp-unauthenticated",
            Attack::Flood => "flood",
        }
    }

    pub fn from_name(name: &str) -> Option<Attack> {
        Attack::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// What the attacks that need more than a target take.
#[derive(Debug, Clone)]
pub struct Options {
    /// The node's ICE ufrag of a real participant (`a=ice-ufrag:` of its answer), for
    /// [`Attack::StunBadIntegrity`]; without it that attack is skipped by [`run`].
    pub ufrag: Option<String>,
    /// The SSRC unauthenticated RTP and RTCP claim (a real speaker's, if known).
    pub ssrc: Option<u32>,
    /// Source IP addresses of [`Attack::Flood`].
    pub sources: usize,
    /// Sockets (source ports) per source address of [`Attack::Flood`].
    pub ports_per_source: usize,
    pub seed: u64,
    /// Set to stop every attack early.
    pub stop: Option<std::sync::Arc<AtomicBool>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ufrag: None,
            ssrc: None,
            sources: 64,
            ports_per_source: 4,
            seed: 1,
            stop: None,
        }
    }
}

/// Runs one attack with `options`. `Ok(None)`: skipped, as the options lack what it
/// needs (a ufrag).
pub fn run(
    attack: Attack,
    target: SocketAddr,
    pace: Pace,
    options: &Options,
) -> io::Result<Option<Sent>> {
    let seed = options.seed ^ (attack as u64 + 1).wrapping_mul(0x1000_0000_01b3);
    let stop = options.stop.as_deref();
    let sent = match attack {
        Attack::Random => random_bytes_until(target, pace, seed, stop)?,
        Attack::Truncated => truncated_until(target, pace, seed, stop)?,
        Attack::Oversized => oversized_until(target, pace, seed, stop)?,
        Attack::StunBadIntegrity => match &options.ufrag {
            Some(u) => stun_bad_integrity_until(target, u, pace, seed, stop)?,
            None => return Ok(None),
        },
        Attack::StunUnknownUfrag => {
            stun_unknown_ufrag_until(target, UnknownUfrag::Alternate, pace, seed, stop)?
        }
        Attack::RtpUnauthenticated => {
            rtp_unauthenticated_until(target, options.ssrc, pace, seed, stop)?
        }
        Attack::RtcpUnauthenticated => {
            rtcp_unauthenticated_until(target, options.ssrc, pace, seed, stop)?
        }
        Attack::Flood => flood_until(
            target,
            options.sources,
            options.ports_per_source,
            pace,
            seed,
            stop,
        )?,
    };
    Ok(Some(sent))
}

/// 1..=1,500 random bytes per datagram.
pub fn random_bytes(target: SocketAddr, pace: Pace, seed: u64) -> io::Result<Sent> {
    random_bytes_until(target, pace, seed, None)
}

fn random_bytes_until(
    target: SocketAddr,
    pace: Pace,
    seed: u64,
    stop: Option<&AtomicBool>,
) -> io::Result<Sent> {
    let socket = [bind_for(target)?];
    Ok(blast(
        &socket,
        target,
        pace,
        seed,
        stop,
        packets::random_bytes,
    ))
}

/// Strict prefixes (0 bytes up to one short of whole) of valid-looking STUN, DTLS, RTP
/// and RTCP packets.
pub fn truncated(target: SocketAddr, pace: Pace, seed: u64) -> io::Result<Sent> {
    truncated_until(target, pace, seed, None)
}

fn truncated_until(
    target: SocketAddr,
    pace: Pace,
    seed: u64,
    stop: Option<&AtomicBool>,
) -> io::Result<Sent> {
    let socket = [bind_for(target)?];
    Ok(blast(&socket, target, pace, seed, stop, packets::truncated))
}

/// Datagrams of 2,049..=65,000 bytes that start as a valid-looking packet (or noise).
pub fn oversized(target: SocketAddr, pace: Pace, seed: u64) -> io::Result<Sent> {
    oversized_until(target, pace, seed, None)
}

fn oversized_until(
    target: SocketAddr,
    pace: Pace,
    seed: u64,
    stop: Option<&AtomicBool>,
) -> io::Result<Sent> {
    let socket = [bind_for(target)?];
    Ok(blast(&socket, target, pace, seed, stop, packets::oversized))
}

/// STUN Binding requests to the node's ufrag `node_ufrag` (a real participant's: the
/// `a=ice-ufrag:` of its answer) with a random MESSAGE-INTEGRITY, from a new address.
pub fn stun_bad_integrity(
    target: SocketAddr,
    node_ufrag: &str,
    pace: Pace,
    seed: u64,
) -> io::Result<Sent> {
    stun_bad_integrity_until(target, node_ufrag, pace, seed, None)
}

fn stun_bad_integrity_until(
    target: SocketAddr,
    node_ufrag: &str,
    pace: Pace,
    seed: u64,
    stop: Option<&AtomicBool>,
) -> io::Result<Sent> {
    let socket = [bind_for(target)?];
    Ok(blast(&socket, target, pace, seed, stop, |rng, out| {
        let mut mac = [0u8; 20];
        rng.fill(&mut mac);
        packets::stun_binding_request(rng, node_ufrag, Some(mac), out);
    }))
}

/// The ufrags [`stun_unknown_ufrag`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownUfrag {
    /// `c<hex>z<random>`: the form of a Chorus ufrag, for an id no participant has.
    NamingNoOne,
    /// Random ICE characters, not of the Chorus form.
    Random,
    /// One, then the other.
    Alternate,
}

/// STUN Binding requests (with a random MESSAGE-INTEGRITY) to a ufrag no participant
/// of the node has.
pub fn stun_unknown_ufrag(
    target: SocketAddr,
    kind: UnknownUfrag,
    pace: Pace,
    seed: u64,
) -> io::Result<Sent> {
    stun_unknown_ufrag_until(target, kind, pace, seed, None)
}

fn stun_unknown_ufrag_until(
    target: SocketAddr,
    kind: UnknownUfrag,
    pace: Pace,
    seed: u64,
    stop: Option<&AtomicBool>,
) -> io::Result<Sent> {
    let socket = [bind_for(target)?];
    let mut n = 0u64;
    Ok(blast(&socket, target, pace, seed, stop, |rng, out| {
        let named = match kind {
            UnknownUfrag::NamingNoOne => true,
            UnknownUfrag::Random => false,
            UnknownUfrag::Alternate => n % 2 == 0,
        };
        n += 1;
        let ufrag = if named {
            packets::ufrag_naming_no_one(rng)
        } else {
            packets::ufrag_random(rng)
        };
        let mut mac = [0u8; 20];
        rng.fill(&mut mac);
        packets::stun_binding_request(rng, &ufrag, Some(mac), out);
    }))
}

/// Plain RTP (not SRTP) that looks like a microphone: PT 111, consecutive sequence
/// numbers and 20 ms timestamps, `ssrc` (random if `None`), 40..=160 bytes of payload.
pub fn rtp_unauthenticated(
    target: SocketAddr,
    ssrc: Option<u32>,
    pace: Pace,
    seed: u64,
) -> io::Result<Sent> {
    rtp_unauthenticated_until(target, ssrc, pace, seed, None)
}

fn rtp_unauthenticated_until(
    target: SocketAddr,
    ssrc: Option<u32>,
    pace: Pace,
    seed: u64,
    stop: Option<&AtomicBool>,
) -> io::Result<Sent> {
    let socket = [bind_for(target)?];
    let mut stream = RtpStream::new(&mut Rng::new(seed ^ 1), ssrc);
    Ok(blast(&socket, target, pace, seed, stop, |rng, out| {
        stream.next(rng, out);
    }))
}

/// Plain RTCP (not SRTCP): sender reports from `ssrc` and receiver reports about it.
pub fn rtcp_unauthenticated(
    target: SocketAddr,
    ssrc: Option<u32>,
    pace: Pace,
    seed: u64,
) -> io::Result<Sent> {
    rtcp_unauthenticated_until(target, ssrc, pace, seed, None)
}

fn rtcp_unauthenticated_until(
    target: SocketAddr,
    ssrc: Option<u32>,
    pace: Pace,
    seed: u64,
    stop: Option<&AtomicBool>,
) -> io::Result<Sent> {
    let socket = [bind_for(target)?];
    let ssrc = ssrc.unwrap_or_else(|| Rng::new(seed ^ 2).next_u32());
    Ok(blast(&socket, target, pace, seed, stop, |rng, out| {
        packets::rtcp_packet(rng, ssrc, out);
    }))
}

/// A stream of plain RTP packets that follow one another like a real sender's.
#[derive(Debug, Clone)]
pub struct RtpStream {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
}

impl RtpStream {
    pub fn new(rng: &mut Rng, ssrc: Option<u32>) -> RtpStream {
        RtpStream {
            ssrc: ssrc.unwrap_or_else(|| rng.next_u32()),
            seq: rng.next_u32() as u16,
            timestamp: rng.next_u32(),
        }
    }

    /// The next packet: sequence number + 1, timestamp + 960 (20 ms of Opus).
    pub fn next(&mut self, rng: &mut Rng, out: &mut Vec<u8>) {
        let len = 40 + rng.below(121) as usize;
        packets::rtp_packet(
            rng,
            self.ssrc,
            self.seq,
            self.timestamp,
            packets::OPUS_PT,
            len,
            out,
        );
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(960);
    }
}

/// The `i`th flood source address: 127.0.0.2, 127.0.0.3, … (skipping addresses ending
/// in .0 and .255). All of 127.0.0.0/8 is local on Linux.
pub fn flood_source(i: usize) -> Ipv4Addr {
    let i = i as u32;
    // 254 usable addresses (.1 to .254) per /24, starting at 127.0.0.2.
    let n = i + 1;
    let (block, host) = (n / 254, n % 254 + 1);
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) + (block << 8) + host)
}

/// A mix of random, truncated and oversized datagrams, STUN with random ufrags,
/// DTLS ClientHellos and plain RTP and RTCP, round-robin from `sources` loopback
/// addresses ([`flood_source`]) with `ports_per_source` sockets each. `target` must be
/// a loopback IPv4 address.
pub fn flood(
    target: SocketAddr,
    sources: usize,
    ports_per_source: usize,
    pace: Pace,
    seed: u64,
) -> io::Result<Sent> {
    flood_until(target, sources, ports_per_source, pace, seed, None)
}

fn flood_until(
    target: SocketAddr,
    sources: usize,
    ports_per_source: usize,
    pace: Pace,
    seed: u64,
    stop: Option<&AtomicBool>,
) -> io::Result<Sent> {
    if !matches!(target.ip(), IpAddr::V4(ip) if ip.is_loopback()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a flood comes from 127.0.0.0/8 addresses: the target must be IPv4 loopback",
        ));
    }
    let mut sockets = Vec::with_capacity(sources * ports_per_source);
    for i in 0..sources.max(1) {
        let ip = flood_source(i);
        for _ in 0..ports_per_source.max(1) {
            sockets.push(UdpSocket::bind((ip, 0))?);
        }
    }
    Ok(blast(
        &sockets,
        target,
        pace,
        seed,
        stop,
        |rng, out| match rng.below(8) {
            0 => packets::random_bytes(rng, out),
            1 => packets::truncated(rng, out),
            2 => packets::oversized(rng, out),
            3 | 4 => packets::Template::Stun.build(rng, out),
            5 => packets::Template::Dtls.build(rng, out),
            6 => packets::Template::Rtp.build(rng, out),
            _ => packets::Template::Rtcp.build(rng, out),
        },
    ))
}

/// A socket of the target's address family, on any address and port.
fn bind_for(target: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    UdpSocket::bind(any)
}

/// Sends what `make` builds, round-robin over `sockets`, at the pace.
fn blast(
    sockets: &[UdpSocket],
    target: SocketAddr,
    pace: Pace,
    seed: u64,
    stop: Option<&AtomicBool>,
    mut make: impl FnMut(&mut Rng, &mut Vec<u8>),
) -> Sent {
    let mut rng = Rng::new(seed);
    let mut pacer = Pacer::new(pace);
    let mut buf = Vec::with_capacity(2048);
    let mut sent = Sent {
        sources: sockets.len(),
        ..Sent::default()
    };
    let mut next = 0;
    while pacer.wait(stop) {
        make(&mut rng, &mut buf);
        match sockets[next % sockets.len()].send_to(&buf, target) {
            Ok(n) => {
                sent.datagrams += 1;
                sent.bytes += n as u64;
                let read = &buf[..buf.len().min(packets::NODE_MAX_DATAGRAM)];
                if classify(read) == DatagramKind::Unknown {
                    sent.malformed += 1;
                }
            }
            Err(_) => sent.errors += 1,
        }
        next += 1;
    }
    sent
}

/// Spaces sends evenly at the pace's rate (catching up in a burst after a stall).
struct Pacer {
    pace: Pace,
    start: Instant,
    done: u64,
}

impl Pacer {
    fn new(pace: Pace) -> Pacer {
        Pacer {
            pace,
            start: Instant::now(),
            done: 0,
        }
    }

    /// Waits until the next datagram is due; false when the attack is over.
    fn wait(&mut self, stop: Option<&AtomicBool>) -> bool {
        if self.pace.count.is_some_and(|n| self.done >= n) {
            return false;
        }
        loop {
            if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                return false;
            }
            let elapsed = self.start.elapsed();
            if self.pace.duration.is_some_and(|d| elapsed >= d) {
                return false;
            }
            if self.pace.rate == 0 {
                break;
            }
            let due = Duration::from_secs_f64(self.done as f64 / f64::from(self.pace.rate));
            if due <= elapsed {
                break;
            }
            // Short naps so a stop is noticed within 50 ms.
            let mut nap = (due - elapsed).min(Duration::from_millis(50));
            if let Some(d) = self.pace.duration {
                nap = nap.min(d.saturating_sub(elapsed));
            }
            std::thread::sleep(nap);
        }
        self.done += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn flood_sources_skip_network_and_broadcast_addresses() {
        assert_eq!(flood_source(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(flood_source(252), Ipv4Addr::new(127, 0, 0, 254));
        assert_eq!(flood_source(253), Ipv4Addr::new(127, 0, 1, 1));
        let all: std::collections::HashSet<_> = (0..2000).map(flood_source).collect();
        assert_eq!(all.len(), 2000);
        assert!(all
            .iter()
            .all(|ip| ip.octets()[3] != 0 && ip.octets()[3] != 255));
    }

    #[test]
    fn attacks_send_what_they_say_at_their_pace() {
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = sink.local_addr().unwrap();
        let start = Instant::now();
        let sent = truncated(target, Pace::count(1000, 100), 7).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(95));
        assert_eq!((sent.datagrams, sent.errors, sent.sources), (100, 0, 1));
        let sent = flood(target, 5, 2, Pace::count(0, 40), 7).unwrap();
        assert_eq!((sent.datagrams, sent.sources), (40, 10));
        let sent = stun_bad_integrity(
            target,
            "c100zabcdef",
            Pace::for_duration(200, Duration::from_millis(100)),
            7,
        )
        .unwrap();
        assert!((15..=25).contains(&sent.datagrams), "{sent:?}");
    }

    #[test]
    fn every_attack_has_a_name() {
        for a in Attack::ALL {
            assert_eq!(Attack::from_name(a.name()), Some(a));
        }
    }
}
