//! ICE-TCP for the driver (RFC 6544, passive): one thread accepts connections on the
//! node's TCP port, reads and writes datagrams framed per RFC 4571 (a 2-byte length
//! before each), binds a connection to the participant its first STUN request names
//! (the USERNAME's ufrag, which names its participant: see `Shard`), and hands the
//! connection's datagrams to that participant's home shard, which passes them on to
//! wherever its media is. The shards' TCP transmits come back here and are written,
//! framed, to their connection.
//!
//! Nothing here blocks a shard: datagrams in go through a bounded queue per shard,
//! transmits out through one bounded queue, and a connection's unsent bytes are
//! bounded; what does not fit is dropped and counted. Limits: connections per address
//! and in total, a deadline for the first STUN request, a largest frame, an idle
//! timeout. A connection that breaks one is closed: to the client that is an ICE
//! failure like any other (it restarts ICE, or times out).

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_protocol::demux::{classify, DatagramKind};
use chorus_protocol::signal::ParticipantId;
use chorus_protocol::stun;
use crossbeam_queue::ArrayQueue;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::doorbell::Doorbell;

/// What a per-address limit counts by ([`TcpLimits::per_ip`], and signaling's limits
/// per client address): the IPv4 address (an IPv4-mapped one as IPv4), or the IPv6 /64
/// (one subscriber's network: a host picks addresses within it at will, RFC 4941).
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        ip @ IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// What a TCP connection may do.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Connections one IP address (one IPv6 /64) may hold at once.
    pub per_ip: usize,
    /// Connections in total.
    pub total: usize,
    /// A connection must send a STUN request naming a participant, and the node must
    /// have answered one (its integrity checked), this soon.
    pub first_stun: Duration,
    /// A connection with nothing received this long is closed (clients send consent
    /// checks every few seconds).
    pub idle: Duration,
    /// Largest frame taken (RFC 4571 allows 65,535; WebRTC datagrams fit in 1,500).
    pub max_frame: usize,
    /// Unsent bytes a connection may have; more is dropped.
    pub write_buffer: usize,
    /// Of `write_buffer`, what only small datagrams (up to [`SMALL_DATAGRAM`] bytes:
    /// audio, RTCP, ICE) may fill: a connection backed up with video still takes its
    /// audio (voice is never dropped for video). A connection that never carried a
    /// large datagram (a voice client) holds this much at most: late audio is dropped,
    /// not queued.
    pub small_reserve: usize,
    /// Datagrams a connection may send per second (a voice client sends ~60: audio,
    /// RTCP, consent checks; a simulcast camera ~300 more); more are dropped, and a
    /// connection that keeps at it is closed.
    pub frames_per_second: u32,
}

/// The largest datagram [`TcpLimits::small_reserve`] is kept for: an Opus packet with
/// its headers, RTCP and STUN fit; video packets (~1,200 bytes) do not.
pub const SMALL_DATAGRAM: usize = 400;

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            per_ip: 16,
            total: 20_000,
            first_stun: Duration::from_secs(5),
            idle: Duration::from_secs(30),
            max_frame: 4096,
            // A camera's three layers and a screen share, audio, RTCP.
            frames_per_second: 1_500,
            // ~0.2 s of two video slots at 1.5 Mbit/s; past it, video is dropped (the
            // bandwidth estimate, measured over this connection, brings the layers
            // down). The last 16 KB (~1 s of three slots' audio) are audio's.
            write_buffer: 64 * 1024,
            small_reserve: 16 * 1024,
        }
    }
}

/// Counters of the TCP side, per node.
#[derive(Debug, Default)]
pub struct TcpStats {
    pub accepted: AtomicU64,
    /// Connections refused at once: over the per-address or total cap.
    pub refused: AtomicU64,
    /// Connections closed for breaking a limit: no STUN in time, an oversized frame,
    /// something other than a STUN request naming a participant first, idle.
    pub closed_limit: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    /// Datagrams from connections dropped because their shard's queue was full.
    pub dropped_in: AtomicU64,
    /// Datagrams for connections dropped: the connection is gone, or its unsent
    /// bytes are at the limit, or the queue to this thread was full.
    pub dropped_out: AtomicU64,
}

impl TcpStats {
    /// Every counter by its name (as `node.stats` and `/metrics` show them).
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        [
            ("tcp_accepted", &self.accepted),
            ("tcp_refused", &self.refused),
            ("tcp_closed_limit", &self.closed_limit),
            ("tcp_frames_in", &self.frames_in),
            ("tcp_frames_out", &self.frames_out),
            ("tcp_dropped_in", &self.dropped_in),
            ("tcp_dropped_out", &self.dropped_out),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.load(Ordering::Relaxed)))
        .collect()
    }
}

/// A datagram from a connection, for a shard; empty `data`: the connection closed
/// (frames are never empty).
#[derive(Debug)]
pub(crate) struct TcpIn {
    pub participant: ParticipantId,
    pub source: SocketAddr,
    pub data: Vec<u8>,
}

/// A datagram for a connection, from shard `shard` (its buffer goes back there).
pub(crate) struct TcpOut {
    pub shard: usize,
    pub destination: SocketAddr,
    pub data: Vec<u8>,
}

/// Where the TCP thread delivers datagrams: per shard, a queue, a doorbell, and the
/// queue buffers go back to (pooled, so no datagram allocates).
pub(crate) struct ShardPort {
    pub inbound: Arc<ArrayQueue<TcpIn>>,
    pub returned: Arc<ArrayQueue<Vec<u8>>>,
    pub bell: Arc<Doorbell>,
}

/// The shard side's handle on the TCP thread.
pub(crate) struct TcpSide {
    pub outbound: Arc<ArrayQueue<TcpOut>>,
    pub waker: Arc<Waker>,
}

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;
/// Datagrams waiting for the TCP thread, from all shards.
pub(crate) const OUT_QUEUE: usize = 16_384;
/// Datagrams waiting for one shard, from all connections.
pub(crate) const IN_QUEUE: usize = 8192;
/// Datagrams a connection may send before the node has answered one of its STUN
/// requests (its integrity checked by the participant's `Rtc`).
const UNVERIFIED_FRAMES: u32 = 50;
/// Bytes read from one connection before the others get a turn.
const READ_BUDGET: usize = 64 * 1024;

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    /// Bytes read and not yet a whole frame.
    read: Vec<u8>,
    /// Framed bytes not yet written.
    write: VecDeque<u8>,
    bound: Option<ParticipantId>,
    /// The node has written to it: the participant's shard answered its STUN
    /// request, so that request passed the participant's integrity check.
    verified: bool,
    /// Datagrams taken before it was verified.
    unverified_frames: u32,
    opened: Instant,
    last_in: Instant,
    /// Registered for WRITABLE too (some bytes are waiting).
    wants_write: bool,
    /// Frames taken in the current second, and when it started.
    frames_this_second: u32,
    second_began: Instant,
    /// Seconds in a row it went over the rate.
    over_rate: u32,
    /// A large datagram (video) was queued on it once: see [`write_room`].
    carries_video: bool,
}

/// Why a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// The peer closed it, or it broke.
    Gone,
    /// It broke a limit.
    Limit,
}

pub(crate) struct TcpThread {
    poll: Poll,
    listener: TcpListener,
    limits: TcpLimits,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    by_peer: HashMap<SocketAddr, usize>,
    per_ip: HashMap<IpAddr, usize>,
    shards: Vec<ShardPort>,
    outbound: Arc<ArrayQueue<TcpOut>>,
    stats: Arc<TcpStats>,
    stop: Arc<AtomicBool>,
    /// Which shards were handed datagrams this turn (woken once each).
    touched: Vec<bool>,
    /// Connections left with bytes unread when their turn's budget ran out: mio is
    /// edge-triggered, so no event comes for them again; they are read next turn.
    again: Vec<usize>,
    /// `accept` failed for want of resources: retried at the next sweep.
    accept_later: bool,
}

impl TcpThread {
    pub(crate) fn new(
        listener: std::net::TcpListener,
        limits: TcpLimits,
        shards: Vec<ShardPort>,
        stats: Arc<TcpStats>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<(TcpThread, TcpSide)> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let outbound = Arc::new(ArrayQueue::new(OUT_QUEUE));
        let touched = vec![false; shards.len()];
        Ok((
            TcpThread {
                poll,
                listener,
                limits,
                conns: Vec::new(),
                free: Vec::new(),
                by_peer: HashMap::new(),
                per_ip: HashMap::new(),
                shards,
                outbound: outbound.clone(),
                stats,
                stop,
                touched,
                again: Vec::new(),
                accept_later: false,
            },
            TcpSide { outbound, waker },
        ))
    }

    pub(crate) fn run(mut self) {
        let span = tracing::info_span!("tcp");
        let _enter = span.enter();
        let mut events = Events::with_capacity(256);
        let mut swept = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            let wait = if self.again.is_empty() {
                Duration::from_millis(500)
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != ErrorKind::Interrupted {
                    tracing::error!(error = %e, "poll failed; ICE-TCP stops");
                    return;
                }
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
                    WAKER => {}
                    Token(t) => {
                        let i = t - FIRST_CONN;
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            match self.read(i, now) {
                                Ok(true) => self.again.push(i),
                                Ok(false) => {}
                                Err(why) => {
                                    self.close(i, why);
                                    continue;
                                }
                            }
                        }
                        if event.is_writable() {
                            if let Err(why) = self.flush(i) {
                                self.close(i, why);
                            }
                        }
                    }
                }
            }
            for i in std::mem::take(&mut self.again) {
                match self.read(i, now) {
                    Ok(true) => self.again.push(i),
                    Ok(false) => {}
                    Err(why) => self.close(i, why),
                }
            }
            self.send_out();
            if now.saturating_duration_since(swept) >= Duration::from_millis(500) {
                swept = now;
                self.sweep(now);
                if std::mem::take(&mut self.accept_later) {
                    self.accept(now);
                }
            }
            // After the sweep: its closes reach the shards now, not a poll later.
            self.wake_shards();
        }
    }

    fn accept(&mut self, now: Instant) {
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // The peer gave up before we took it: the next one may be there.
                Err(e) if e.kind() == ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // Out of descriptors, say: the sweep tries again in 500 ms.
                    tracing::debug!(error = %e, "accept");
                    self.accept_later = true;
                    return;
                }
            };
            // An IPv4 client of a dual-stack (`[::]`) listener arrives IPv4-mapped.
            let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
            let from_ip = self.per_ip.get(&limit_key(peer.ip())).copied().unwrap_or(0);
            if from_ip >= self.limits.per_ip || self.by_peer.len() >= self.limits.total {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                continue; // dropped: closed
            }
            let i = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(i + FIRST_CONN),
                Interest::READABLE,
            ) {
                tracing::debug!(error = %e, "register");
                self.free.push(i);
                continue;
            }
            let _ = stream.set_nodelay(true);
            self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            *self.per_ip.entry(limit_key(peer.ip())).or_default() += 1;
            self.by_peer.insert(peer, i);
            self.conns[i] = Some(Conn {
                stream,
                peer,
                read: Vec::with_capacity(2 + self.limits.max_frame),
                write: VecDeque::new(),
                bound: None,
                verified: false,
                unverified_frames: 0,
                opened: now,
                last_in: now,
                wants_write: false,
                frames_this_second: 0,
                second_began: now,
                over_rate: 0,
                carries_video: false,
            });
        }
    }

    /// Reads what the connection has and hands its whole frames on. `Ok(true)`: the
    /// budget ran out with bytes left (read again next turn).
    fn read(&mut self, i: usize, now: Instant) -> Result<bool, Close> {
        let TcpThread {
            conns,
            shards,
            stats,
            touched,
            limits,
            ..
        } = self;
        let Some(Some(conn)) = conns.get_mut(i) else {
            return Ok(false);
        };
        let mut chunk = [0u8; 4096];
        let mut frames: Vec<(usize, usize)> = Vec::new();
        let mut budget = READ_BUDGET;
        loop {
            let n = match conn.stream.read(&mut chunk) {
                Ok(0) => return Err(Close::Gone),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Err(Close::Gone),
            };
            conn.last_in = now;
            conn.read.extend_from_slice(&chunk[..n]);
            frames.clear();
            let used = split_frames(&conn.read, limits.max_frame, &mut frames)
                .map_err(|_| Close::Limit)?;
            for &(start, end) in &frames {
                if now.saturating_duration_since(conn.second_began) >= Duration::from_secs(1) {
                    let over = conn.frames_this_second > limits.frames_per_second;
                    conn.over_rate = if over { conn.over_rate + 1 } else { 0 };
                    if conn.over_rate >= 3 {
                        return Err(Close::Limit); // a flood, not a client
                    }
                    conn.frames_this_second = 0;
                    conn.second_began = now;
                }
                if !conn.verified {
                    // Until the node has answered a STUN request on it, a connection
                    // is anyone's: a few datagrams (ICE checks, retransmissions).
                    conn.unverified_frames += 1;
                    if conn.unverified_frames > UNVERIFIED_FRAMES {
                        return Err(Close::Limit);
                    }
                }
                conn.frames_this_second += 1;
                if conn.frames_this_second > limits.frames_per_second {
                    stats.dropped_in.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                deliver(conn, start, end, shards, stats, touched)?;
            }
            conn.read.drain(..used);
            budget = budget.saturating_sub(n);
            if budget == 0 {
                return Ok(true);
            }
        }
    }

    /// Frames the shards' transmits into their connections' buffers and writes.
    fn send_out(&mut self) {
        let mut pending: Vec<usize> = Vec::new();
        while let Some(out) = self.outbound.pop() {
            let mut conn = self
                .by_peer
                .get(&out.destination)
                .copied()
                .and_then(|i| Some((i, self.conns.get_mut(i)?.as_mut()?)));
            let len = out.data.len();
            let fits = conn.as_mut().is_some_and(|(_, c)| {
                len <= u16::MAX as usize
                    && c.write.len() + len + 2
                        <= write_room(&self.limits, &mut c.carries_video, len)
            });
            match conn {
                Some((i, conn)) if fits => {
                    conn.verified = true;
                    conn.write.extend((out.data.len() as u16).to_be_bytes());
                    conn.write.extend(out.data.iter().copied());
                    self.stats.frames_out.fetch_add(1, Ordering::Relaxed);
                    pending.push(i);
                }
                _ => {
                    self.stats.dropped_out.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Some(port) = self.shards.get(out.shard) {
                let _ = port.returned.push(out.data);
            }
        }
        pending.sort_unstable();
        pending.dedup();
        for i in pending {
            if let Err(why) = self.flush(i) {
                self.close(i, why);
            }
        }
    }

    /// Writes what connection `i` has waiting; registers for WRITABLE while some is
    /// left.
    fn flush(&mut self, i: usize) -> Result<(), Close> {
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return Ok(());
        };
        while !conn.write.is_empty() {
            let (front, _) = conn.write.as_slices();
            match conn.stream.write(front) {
                Ok(0) => return Err(Close::Gone),
                Ok(n) => {
                    conn.write.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(Close::Gone),
            }
        }
        let want = !conn.write.is_empty();
        if want != conn.wants_write {
            conn.wants_write = want;
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let _ =
                self.poll
                    .registry()
                    .reregister(&mut conn.stream, Token(i + FIRST_CONN), interest);
        }
        Ok(())
    }

    fn close(&mut self, i: usize, why: Close) {
        let Some(mut conn) = self.conns.get_mut(i).and_then(Option::take) else {
            return;
        };
        if why == Close::Limit {
            self.stats.closed_limit.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(peer = %conn.peer, participant = ?conn.bound, ?why, "ICE-TCP connection closed");
        let _ = self.poll.registry().deregister(&mut conn.stream);
        // The participant's shard forgets the address (its slot streams stop going
        // there; a new connection from it may be someone else's).
        if let Some(participant) = conn.bound {
            let home = crate::mesh::home_of(participant, self.shards.len());
            if let Some(port) = self.shards.get(home) {
                let closed = TcpIn {
                    participant,
                    source: conn.peer,
                    data: Vec::new(),
                };
                if port.inbound.push(closed).is_ok() {
                    self.touched[home] = true;
                }
            }
        }
        if self.by_peer.get(&conn.peer) == Some(&i) {
            self.by_peer.remove(&conn.peer);
        }
        let key = limit_key(conn.peer.ip());
        if let Some(n) = self.per_ip.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&key);
            }
        }
        self.free.push(i);
    }

    /// Closes connections past their first-STUN deadline or idle.
    fn sweep(&mut self, now: Instant) {
        let late: Vec<usize> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.as_ref()?;
                // Verified: the node answered a STUN request on it in time.
                let unbound_late =
                    !c.verified && now.saturating_duration_since(c.opened) > self.limits.first_stun;
                let idle = now.saturating_duration_since(c.last_in) > self.limits.idle;
                (unbound_late || idle).then_some(i)
            })
            .collect();
        for i in late {
            self.close(i, Close::Limit);
        }
    }

    fn wake_shards(&mut self) {
        for (s, touched) in self.touched.iter_mut().enumerate() {
            if std::mem::take(touched) {
                self.shards[s].bell.ring();
            }
        }
    }
}

/// How many unsent bytes a connection may hold once a datagram of `len` bytes is
/// queued: large ones (video) leave [`TcpLimits::small_reserve`] to small ones (audio,
/// RTCP, ICE); small ones may fill the buffer on a connection that carries video, and
/// only the reserve on one that never did (a voice client: ~1 s of audio).
fn write_room(limits: &TcpLimits, carries_video: &mut bool, len: usize) -> usize {
    if len > SMALL_DATAGRAM {
        *carries_video = true;
        limits.write_buffer.saturating_sub(limits.small_reserve)
    } else if *carries_video {
        limits.write_buffer
    } else {
        limits.small_reserve
    }
}

/// One datagram (`conn.read[start..end]`) from a connection: the first must be a STUN
/// request naming a participant, which binds the connection to it; each goes to that
/// participant's home shard.
fn deliver(
    conn: &mut Conn,
    start: usize,
    end: usize,
    shards: &[ShardPort],
    stats: &TcpStats,
    touched: &mut [bool],
) -> Result<(), Close> {
    stats.frames_in.fetch_add(1, Ordering::Relaxed);
    let frame = &conn.read[start..end];
    let participant = match conn.bound {
        Some(p) => p,
        None => {
            let named = (classify(frame) == DatagramKind::Stun)
                .then(|| stun::StunMessage::parse(frame).ok())
                .flatten()
                .filter(|m| m.is_binding_request())
                .and_then(|m| m.ice_ufrags().map(|(ours, _)| ours))
                .and_then(crate::mesh::ufrag_participant);
            let Some(p) = named else {
                return Err(Close::Limit);
            };
            tracing::debug!(peer = %conn.peer, participant = %p, "ICE-TCP connection bound");
            conn.bound = Some(p);
            p
        }
    };
    let home = crate::mesh::home_of(participant, shards.len());
    let Some(port) = shards.get(home) else {
        return Ok(());
    };
    let mut data = port.returned.pop().unwrap_or_default();
    data.clear();
    data.extend_from_slice(frame);
    let item = TcpIn {
        participant,
        source: conn.peer,
        data,
    };
    if port.inbound.push(item).is_err() {
        stats.dropped_in.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(t) = touched.get_mut(home) {
        *t = true;
    }
    Ok(())
}

/// Finds the whole RFC 4571 frames at the start of `buf` (each a 2-byte big-endian
/// length, then that many bytes), as `(start, end)` ranges of their contents; returns
/// how many bytes they take. A frame longer than `max_frame` is an error (the
/// connection is closed); an empty one is skipped.
pub(crate) fn split_frames(
    buf: &[u8],
    max_frame: usize,
    frames: &mut Vec<(usize, usize)>,
) -> Result<usize, FrameTooLarge> {
    let mut at = 0;
    while let Some(head) = buf.get(at..at + 2) {
        let len = usize::from(u16::from_be_bytes([head[0], head[1]]));
        if len > max_frame {
            return Err(FrameTooLarge(len));
        }
        let end = at + 2 + len;
        if end > buf.len() {
            break;
        }
        if len > 0 {
            frames.push((at + 2, end));
        }
        at = end;
    }
    Ok(at)
}

/// A frame longer than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameTooLarge(pub usize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_network_counts_as_one_address() {
        let key = |s: &str| limit_key(s.parse().unwrap_or(IpAddr::V4([0; 4].into())));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::2"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(
            key("192.0.2.1"),
            "192.0.2.1"
                .parse::<IpAddr>()
                .unwrap_or(IpAddr::V4([0; 4].into()))
        );
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(
            key("::ffff:192.0.2.1"),
            key("192.0.2.1"),
            "IPv4-mapped is IPv4"
        );
    }

    #[test]
    fn video_leaves_room_for_voice_and_voice_alone_stays_short() {
        let limits = TcpLimits::default();
        let mut video = false;
        // A voice connection: ~1 s of audio, no more.
        assert_eq!(write_room(&limits, &mut video, 200), 16 * 1024);
        assert!(!video);
        // Video takes up to 48 KB; after it, audio may fill the last 16 KB.
        assert_eq!(write_room(&limits, &mut video, 1_200), 48 * 1024);
        assert!(video);
        assert_eq!(write_room(&limits, &mut video, 200), 64 * 1024);
        assert_eq!(write_room(&limits, &mut video, 1_200), 48 * 1024);
    }

    fn framed(datagrams: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for d in datagrams {
            out.extend((d.len() as u16).to_be_bytes());
            out.extend_from_slice(d);
        }
        out
    }

    #[test]
    fn frames_split_across_reads_and_two_in_one() {
        let all = framed(&[b"hello", b"", b"world!"]);
        let mut frames = Vec::new();
        // Byte by byte: nothing whole until it is.
        let mut buf = Vec::new();
        let mut got: Vec<Vec<u8>> = Vec::new();
        for b in &all {
            buf.push(*b);
            frames.clear();
            let used = split_frames(&buf, 100, &mut frames).expect("small frames");
            got.extend(frames.iter().map(|(s, e)| buf[*s..*e].to_vec()));
            buf.drain(..used);
        }
        assert_eq!(got, vec![b"hello".to_vec(), b"world!".to_vec()]);
        assert!(buf.is_empty());
        // All at once: both, and everything used.
        frames.clear();
        assert_eq!(split_frames(&all, 100, &mut frames), Ok(all.len()));
        assert_eq!(frames.len(), 2);
    }

    #[test]
    fn an_oversized_frame_is_refused_before_it_arrives() {
        let mut frames = Vec::new();
        assert_eq!(
            split_frames(&[0x10, 0x01], 4096, &mut frames),
            Err(FrameTooLarge(4097))
        );
        assert_eq!(
            split_frames(&[0xff, 0xff, 1, 2], 4096, &mut frames),
            Err(FrameTooLarge(65535))
        );
        assert_eq!(
            split_frames(&[0x00], 4096, &mut frames),
            Ok(0),
            "half a length"
        );
    }
}
