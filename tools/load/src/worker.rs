//! Media workers: each thread owns a set of str0m clients, one non-blocking UDP socket
//! per client, and runs them from one mio poll loop.
//!
//! The loop: fire the timers that are due (str0m timeouts and frame sends, kept in one
//! min-heap with lazy deletion), wait on mio until the next timer, a readable socket or
//! a command from the signaling side, then read every readable socket until it would
//! block. After *every* `Rtc::handle_input` the client is drained until
//! `Output::Timeout` (in rtp mode str0m holds one received packet at a time).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chorus_client::OPUS_PT;
use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use str0m::change::SdpPendingOffer;
use str0m::config::DtlsCert;
use str0m::media::{Mid, Pt};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::sync::oneshot;

use crate::accounting::StreamStats;
use crate::hist::Hist;
use crate::payload::Stamp;
use crate::spread::Spread;
use crate::video::{self, Camera, VideoCounts, VideoLoad, VideoStamp};

const WAKER: Token = Token(usize::MAX);
/// How often a worker publishes its counters and latency histogram for progress lines.
const FLUSH: Duration = Duration::from_millis(250);
/// RTP clock rate of Opus.
const OPUS_HZ: u64 = 48_000;

/// Everything every worker needs to know about the run.
#[derive(Clone)]
pub struct RunConfig {
    pub start: Instant,
    pub interval: Duration,
    pub packet_bytes: usize,
    /// RFC 6464 level of speakers' packets, in dBov (-127..=0).
    pub level_dbov: i8,
    /// Whether non-speakers send silence (level -127) instead of nothing.
    pub listeners_send_silence: bool,
    pub rooms: u32,
    pub speakers: u32,
    pub bind_ip: IpAddr,
    pub cert: DtlsCert,
    /// Churn is on: speakers keep the send time of each window packet, and clients
    /// come and go.
    pub churn: bool,
    /// Clients reach the node over ICE-TCP only (an active TCP candidate, RFC 4571
    /// framing) instead of UDP.
    pub tcp: bool,
    /// Cameras and video slots (`--cameras`); `None` for a voice-only run.
    pub video: Option<VideoLoad>,
    /// Which node each participant joins at (one node unless `--url` is repeated).
    pub spread: Arc<Spread>,
}

impl RunConfig {
    /// Participants are numbered round-robin over the rooms: global index `g` is in
    /// room `g % rooms` at position `g / rooms`, and the first `speakers` positions
    /// speak.
    pub fn is_speaker(&self, global: u32) -> bool {
        global / self.rooms < self.speakers
    }

    /// Whether participant `global` publishes a camera (the first `cameras` positions).
    pub fn is_camera(&self, global: u32) -> bool {
        self.video
            .as_ref()
            .is_some_and(|v| global / self.rooms < v.cameras)
    }
}

/// State shared between the workers, the signaling tasks and the progress printer.
pub struct Shared {
    /// Measurement window in ns since `start`; `u64::MAX` until decided.
    pub window_start_ns: AtomicU64,
    pub window_end_ns: AtomicU64,
    /// Per participant slot (global index): its current client's DTLS connected.
    pub connected: Vec<AtomicBool>,
    pub workers: Vec<WorkerStats>,
    /// Local UDP ports of the clients.
    pub client_ports: Mutex<Vec<u16>>,
    /// The nodes' media addresses (the destinations of the clients' first datagrams:
    /// one per node).
    pub node_media: Mutex<Vec<SocketAddr>>,
}

impl Shared {
    pub fn new(participants: usize, workers: usize) -> Shared {
        Shared {
            window_start_ns: AtomicU64::new(u64::MAX),
            window_end_ns: AtomicU64::new(u64::MAX),
            connected: (0..participants).map(|_| AtomicBool::new(false)).collect(),
            workers: (0..workers).map(|_| WorkerStats::default()).collect(),
            client_ports: Mutex::new(Vec::with_capacity(participants)),
            node_media: Mutex::new(Vec::new()),
        }
    }

    pub fn window(&self) -> (u64, u64) {
        (
            self.window_start_ns.load(Ordering::Relaxed),
            self.window_end_ns.load(Ordering::Relaxed),
        )
    }
}

/// Running totals of one worker, published every [`FLUSH`].
#[derive(Default)]
pub struct WorkerStats {
    pub connected: AtomicU64,
    pub sent: AtomicU64,
    pub received: AtomicU64,
    /// Latency of every load packet received so far (ns).
    pub latency: Mutex<Hist>,
}

pub enum Cmd {
    /// Create a client for a joined participant; reply with its SDP offer.
    Create {
        /// The slot: room and role.
        global: u32,
        /// This client's id (the stamp's sender): `global` for the first client of a
        /// slot, a fresh one for each rejoin.
        id: u32,
        audio_slots: u8,
        /// The room's video slots (offered only in a video run).
        video_slots: u8,
        /// When `join` was sent, ns since start.
        join_sent_ns: u64,
        /// A speaker of its room was already connected when it joined.
        join_eligible: bool,
        reply: oneshot::Sender<Result<Offered, String>>,
    },
    /// Apply the node's answer.
    Answer {
        id: u32,
        sdp: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// The participant sent `mute` (churn): recorded for the loss accounting.
    Mute {
        id: u32,
        muted: bool,
        at_ns: u64,
    },
    /// The participant leaves (churn): drop its WebRTC client and socket now.
    Remove {
        id: u32,
        at_ns: u64,
    },
    Stop,
}

/// What a worker hands back at the end.
/// A client's offer, for `offer`.
pub struct Offered {
    pub sdp: String,
    /// The camera's mid (the offer's `sources`), if it publishes one.
    pub camera: Option<String>,
}

pub struct WorkerReport {
    pub clients: Vec<ClientReport>,
    /// Video packets sent and received inside the window.
    pub video: VideoCounts,
    /// Latency of packets sent inside the window (ns).
    pub window_latency: Hist,
    /// With several nodes: the same, split by whether the speaker joined at the
    /// receiver's node or at another.
    pub window_latency_same_node: Hist,
    pub window_latency_cross_node: Hist,
    /// Load packets received that were sent inside the window (duplicates included).
    pub window_received: u64,
    /// Packets sent inside the window (speakers and silent listeners).
    pub window_sent: u64,
    /// Packets received that carried no load stamp.
    pub foreign: u64,
    /// Datagrams the OS refused to send.
    pub send_errors: u64,
    /// Clients whose str0m instance returned an error.
    pub rtc_errors: u64,
    pub ice_disconnects: u64,
}

pub struct ClientReport {
    pub global: u32,
    pub id: u32,
    pub connected: bool,
    pub join_eligible: bool,
    /// When it sent `join`, ns since start.
    pub join_sent_ns: u64,
    /// When its DTLS connected, ns since start.
    pub connected_ns: Option<u64>,
    /// From `join` sent to the first forwarded packet received, ns.
    pub join_to_first_rx_ns: Option<u64>,
    /// Counter range of the packets it sent inside the window.
    pub window_sent: Option<(u32, u32)>,
    /// Per sender: what this client received of it inside the window.
    pub streams: Vec<(u32, StreamStats)>,
    /// When it left (churn), ns since start; `None` if it stayed to the end.
    pub left_ns: Option<u64>,
    /// With churn, speakers: the send time of each window packet, from the first
    /// counter of `window_sent` on.
    pub window_send_ns: Vec<u64>,
    /// Its `mute` messages: (ns since start, muted).
    pub mute_changes: Vec<(u64, bool)>,
}

pub struct WorkerHandle {
    tx: mpsc::Sender<Cmd>,
    waker: Arc<Waker>,
    thread: Mutex<Option<JoinHandle<WorkerReport>>>,
}

impl WorkerHandle {
    pub fn spawn(id: usize, cfg: RunConfig, shared: Arc<Shared>) -> io::Result<WorkerHandle> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("media-{id}"))
            .spawn(move || {
                let mut w = Worker {
                    id,
                    poll,
                    rx,
                    cfg,
                    shared,
                    clients: Vec::new(),
                    by_id: HashMap::new(),
                    retired: Vec::new(),
                    ctx: Ctx::default(),
                };
                w.run()
            })?;
        Ok(WorkerHandle {
            tx,
            waker,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn send(&self, cmd: Cmd) {
        if self.tx.send(cmd).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Waits for the worker to end (after [`Cmd::Stop`]) and takes its report.
    pub fn join(&self) -> Option<WorkerReport> {
        let thread = self.thread.lock().ok()?.take()?;
        thread.join().ok()
    }
}

/// An ICE-TCP client's connection to the node: opened at str0m's first TCP transmit.
#[derive(Default)]
struct TcpConn {
    stream: Option<TcpStream>,
    peer: Option<SocketAddr>,
    /// Bytes read and not yet a whole frame.
    read: Vec<u8>,
    /// Framed bytes not yet written.
    write: Vec<u8>,
    /// Registered for WRITABLE too.
    wants_write: bool,
    registered: bool,
}

struct Client {
    global: u32,
    id: u32,
    rtc: Rtc,
    socket: UdpSocket,
    /// With `--transport tcp`: the connection its datagrams take instead.
    tcp: Option<TcpConn>,
    local: SocketAddr,
    mic: Mid,
    /// Its camera, if it publishes one (`--cameras`).
    camera: Option<Camera>,
    pending: Option<SdpPendingOffer>,
    mic_pt: Option<Pt>,
    /// Sends packets (speaker, or a listener sending silence).
    sends: bool,
    speaker: bool,
    connected: bool,
    connected_ns: Option<u64>,
    dead: bool,
    /// str0m's current timeout; heap entries for other instants are stale.
    next_timeout: Instant,
    next_frame: Option<Instant>,
    frames: u32,
    rtp_seq: u64,
    rtp_ts: u32,
    join_sent_ns: u64,
    join_eligible: bool,
    first_rx_ns: Option<u64>,
    window_sent: Option<(u32, u32)>,
    window_send_ns: Vec<u64>,
    mute_changes: Vec<(u64, bool)>,
    streams: Vec<(u32, StreamStats)>,
}

impl Client {
    fn report(&mut self, left_ns: Option<u64>) -> ClientReport {
        ClientReport {
            global: self.global,
            id: self.id,
            connected: self.connected,
            join_eligible: self.join_eligible,
            join_sent_ns: self.join_sent_ns,
            connected_ns: self.connected_ns,
            join_to_first_rx_ns: self
                .first_rx_ns
                .map(|t| t.saturating_sub(self.join_sent_ns)),
            window_sent: self.window_sent,
            streams: std::mem::take(&mut self.streams),
            left_ns,
            window_send_ns: std::mem::take(&mut self.window_send_ns),
            mute_changes: std::mem::take(&mut self.mute_changes),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Rtc,
    Frame,
    VideoFrame,
}

/// Worker state other than the clients, so both can be borrowed at once.
#[derive(Default)]
struct Ctx {
    /// ICE-TCP clients with bytes to write (written after the pass).
    tcp_dirty: Vec<usize>,
    timers: BinaryHeap<Reverse<(Instant, usize, Timer)>>,
    window: (u64, u64),
    sent: u64,
    received: u64,
    connected: u64,
    /// Connected clients removed since the last flush (churn).
    disconnected: u64,
    latency_pending: Hist,
    window_latency: Hist,
    window_latency_same_node: Hist,
    window_latency_cross_node: Hist,
    window_received: u64,
    window_sent: u64,
    /// The nodes' media addresses this worker has seen.
    nodes_known: Vec<SocketAddr>,
    foreign: u64,
    send_errors: u64,
    rtc_errors: u64,
    ice_disconnects: u64,
    video: VideoCounts,
}

struct Worker {
    id: usize,
    poll: Poll,
    rx: mpsc::Receiver<Cmd>,
    cfg: RunConfig,
    shared: Arc<Shared>,
    /// Indexed by mio token; a removed client leaves `None` (tokens are not reused).
    clients: Vec<Option<Client>>,
    by_id: HashMap<u32, usize>,
    /// Reports of the clients removed (churn).
    retired: Vec<ClientReport>,
    ctx: Ctx,
}

impl Worker {
    /// Writes what ICE-TCP clients queued (registering new connections).
    fn flush_tcp_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.ctx.tcp_dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for idx in dirty {
            let Some(c) = self.clients.get_mut(idx).and_then(Option::as_mut) else {
                continue;
            };
            if let Some(conn) = c.tcp.as_mut() {
                if flush_tcp(conn, idx, &self.poll).is_err() {
                    c.dead = true;
                }
            }
        }
    }

    fn run(&mut self) -> WorkerReport {
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 2048];
        let mut next_flush = Instant::now() + FLUSH;
        loop {
            let now = Instant::now();
            self.fire_timers(now);
            self.flush_tcp_dirty();
            if now >= next_flush {
                self.flush();
                next_flush = now + FLUSH;
            }
            let mut wait = next_flush.saturating_duration_since(now);
            if let Some(Reverse((at, _, _))) = self.ctx.timers.peek() {
                wait = wait.min(at.saturating_duration_since(now));
            }
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(worker = self.id, "poll failed: {e}");
                    return self.report();
                }
            }
            for event in events.iter() {
                if event.token() == WAKER {
                    if self.commands() {
                        self.flush();
                        return self.report();
                    }
                } else {
                    self.read(event.token().0, &mut buf);
                }
            }
            self.flush_tcp_dirty();
        }
    }

    /// Handles queued commands; `true` on `Stop`.
    fn commands(&mut self) -> bool {
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Cmd::Create {
                    global,
                    id,
                    audio_slots,
                    video_slots,
                    join_sent_ns,
                    join_eligible,
                    reply,
                } => {
                    let r = self.create(
                        global,
                        id,
                        (audio_slots, video_slots),
                        join_sent_ns,
                        join_eligible,
                    );
                    let _ = reply.send(r);
                }
                Cmd::Answer { id, sdp, reply } => {
                    let r = self.answer(id, &sdp);
                    let _ = reply.send(r);
                }
                Cmd::Mute { id, muted, at_ns } => {
                    if let Some(c) = self.by_id.get(&id).and_then(|&i| self.clients[i].as_mut()) {
                        c.mute_changes.push((at_ns, muted));
                    }
                }
                Cmd::Remove { id, at_ns } => self.remove(id, at_ns),
                Cmd::Stop => return true,
            }
        }
        false
    }

    fn create(
        &mut self,
        global: u32,
        id: u32,
        (audio_slots, video_slots): (u8, u8),
        join_sent_ns: u64,
        join_eligible: bool,
    ) -> Result<Offered, String> {
        let local_idx = self.clients.len();
        let mut socket = UdpSocket::bind(SocketAddr::new(self.cfg.bind_ip, 0))
            .map_err(|e| format!("bind UDP: {e}"))?;
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        if let Ok(mut ports) = self.shared.client_ports.lock() {
            ports.push(local.port());
        }
        self.poll
            .registry()
            .register(&mut socket, Token(local_idx), Interest::READABLE)
            .map_err(|e| format!("register UDP: {e}"))?;
        let now = Instant::now();
        let config = if self.cfg.video.is_some() {
            chorus_client::video_config(OPUS_PT)
        } else {
            chorus_client::config(OPUS_PT)
        };
        let mut rtc = config.set_dtls_cert(self.cfg.cert.clone()).build(now);
        // ICE-TCP: an active candidate (RFC 6544: port 9, the client connects).
        let tcp_local = SocketAddr::new(self.cfg.bind_ip, 9);
        let candidate = if self.cfg.tcp {
            Candidate::builder()
                .tcp()
                .host(tcp_local)
                .tcptype(TcpType::Active)
                .build()
        } else {
            Candidate::host(local, "udp")
        }
        .map_err(|e| format!("candidate: {e}"))?;
        rtc.add_local_candidate(candidate);
        let local = if self.cfg.tcp { tcp_local } else { local };
        let publishes = self.cfg.is_camera(global);
        let sections = chorus_client::VideoSections {
            camera: publishes.then_some(&video::RIDS[..]),
            screen: false,
            slots: if self.cfg.video.is_some() {
                usize::from(video_slots)
            } else {
                0
            },
        };
        let chorus_client::Offer {
            sdp: offer,
            pending,
            mic,
            camera,
            ..
        } = chorus_client::offer_with_video(&mut rtc, usize::from(audio_slots), &sections)
            .ok_or("str0m made no offer")?;
        let speaker = self.cfg.is_speaker(global);
        self.clients.push(Some(Client {
            global,
            id,
            rtc,
            socket,
            tcp: self.cfg.tcp.then(TcpConn::default),
            local,
            mic,
            camera: camera.map(Camera::new),
            pending: Some(pending),
            mic_pt: None,
            sends: speaker || self.cfg.listeners_send_silence,
            speaker,
            connected: false,
            connected_ns: None,
            dead: false,
            next_timeout: now,
            next_frame: None,
            frames: 0,
            rtp_seq: 1000,
            rtp_ts: 5000,
            join_sent_ns,
            join_eligible,
            first_rx_ns: None,
            window_sent: None,
            window_send_ns: Vec::new(),
            mute_changes: Vec::new(),
            streams: Vec::new(),
        }));
        self.by_id.insert(id, local_idx);
        let Some(c) = self.clients[local_idx].as_mut() else {
            return Err("client vanished".into());
        };
        drain(c, local_idx, &self.cfg, &self.shared, &mut self.ctx, now);
        Ok(Offered {
            sdp: offer,
            camera: camera.map(|m| m.to_string()),
        })
    }

    /// Drops a leaving client's WebRTC state and socket; keeps its report.
    fn remove(&mut self, id: u32, at_ns: u64) {
        let Some(idx) = self.by_id.remove(&id) else {
            return;
        };
        let Some(mut c) = self.clients.get_mut(idx).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.socket);
        if c.connected {
            self.ctx.disconnected += 1;
            if let Some(flag) = self.shared.connected.get(c.global as usize) {
                flag.store(false, Ordering::Relaxed);
            }
        }
        self.retired.push(c.report(Some(at_ns)));
        // `c` (its Rtc and UDP socket) is dropped here.
    }

    fn answer(&mut self, id: u32, sdp: &str) -> Result<(), String> {
        let &idx = self.by_id.get(&id).ok_or("unknown participant")?;
        let c = self.clients[idx].as_mut().ok_or("participant left")?;
        let pending = c.pending.take().ok_or("no offer outstanding")?;
        c.mic_pt = chorus_client::accept_answer(&mut c.rtc, pending, sdp)?;
        if let Some(cam) = c.camera.as_mut() {
            cam.pt = c
                .rtc
                .codec_config()
                .params()
                .iter()
                .find(|p| p.spec().codec == str0m::format::Codec::Vp8)
                .map(|p| p.pt());
            if cam.pt.is_none() {
                return Err("the answer has no VP8 for the camera".into());
            }
        }
        let now = Instant::now();
        if let Err(e) = c.rtc.handle_input(Input::Timeout(now)) {
            c.dead = true;
            rtc_failed(&mut self.ctx, c.global, &e);
            return Err(format!("str0m failed after the answer: {e}"));
        }
        drain(c, idx, &self.cfg, &self.shared, &mut self.ctx, now);
        Ok(())
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((at, idx, kind))) = self.ctx.timers.peek() {
            if at > now {
                break;
            }
            self.ctx.timers.pop();
            let Some(c) = self.clients[idx].as_mut() else {
                continue; // removed
            };
            if c.dead {
                continue;
            }
            let t = Instant::now();
            match kind {
                Timer::Rtc => {
                    if c.next_timeout != at {
                        continue; // superseded
                    }
                }
                Timer::Frame => {
                    if c.next_frame != Some(at) {
                        continue;
                    }
                    send_frame(c, &self.cfg, &mut self.ctx, t);
                    let mut next = at + self.cfg.interval;
                    if next + 5 * self.cfg.interval < t {
                        next = t + self.cfg.interval; // fell far behind: skip, don't burst
                    }
                    c.next_frame = Some(next);
                    self.ctx.timers.push(Reverse((next, idx, Timer::Frame)));
                }
                Timer::VideoFrame => {
                    let (Some(cam), Some(v)) = (c.camera.as_mut(), self.cfg.video.as_ref()) else {
                        continue;
                    };
                    if cam.next_frame != Some(at) {
                        continue;
                    }
                    let send_ns = ns_since(self.cfg.start, t);
                    let n = cam.write_frame(&mut c.rtc, v, c.id, send_ns, t);
                    let (ws, we) = self.ctx.window;
                    if send_ns >= ws && send_ns < we {
                        self.ctx.video.sent += n;
                    }
                    self.ctx.sent += n;
                    let mut next = at + v.frame;
                    if next + 5 * v.frame < t {
                        next = t + v.frame;
                    }
                    cam.next_frame = Some(next);
                    self.ctx
                        .timers
                        .push(Reverse((next, idx, Timer::VideoFrame)));
                }
            }
            // Either the timeout is due, or a packet was just written: str0m sends it
            // from its timeout handler.
            if let Err(e) = c.rtc.handle_input(Input::Timeout(t)) {
                c.dead = true;
                rtc_failed(&mut self.ctx, c.global, &e);
                continue;
            }
            drain(c, idx, &self.cfg, &self.shared, &mut self.ctx, t);
        }
    }

    fn read(&mut self, idx: usize, buf: &mut [u8]) {
        let Some(c) = self.clients.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        if c.tcp.is_some() {
            return self.read_tcp(idx, buf);
        }
        loop {
            let (n, from) = match c.socket.recv_from(buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!(participant = c.global, "recv: {e}");
                    return;
                }
            };
            if c.dead {
                continue;
            }
            feed(
                c,
                idx,
                Protocol::Udp,
                from,
                &buf[..n],
                &self.cfg,
                &self.shared,
                &mut self.ctx,
            );
        }
    }

    /// An ICE-TCP client's connection is readable (frames in) or writable (frames out).
    fn read_tcp(&mut self, idx: usize, buf: &mut [u8]) {
        let Some(c) = self.clients.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let Some(conn) = c.tcp.as_mut() else {
            return;
        };
        if flush_tcp(conn, idx, &self.poll).is_err() {
            c.dead = true;
            return;
        }
        let (Some(stream), Some(peer)) = (conn.stream.as_mut(), conn.peer) else {
            return;
        };
        loop {
            match io::Read::read(stream, buf) {
                Ok(0) => {
                    c.dead = true;
                    return;
                }
                Ok(n) => conn.read.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    c.dead = true;
                    return;
                }
            }
        }
        let data = std::mem::take(&mut conn.read);
        let mut at = 0;
        while let Some(head) = data.get(at..at + 2) {
            let len = usize::from(u16::from_be_bytes([head[0], head[1]]));
            let Some(frame) = data.get(at + 2..at + 2 + len) else {
                break;
            };
            at += 2 + len;
            if c.dead || len == 0 {
                continue;
            }
            feed(
                c,
                idx,
                Protocol::Tcp,
                peer,
                frame,
                &self.cfg,
                &self.shared,
                &mut self.ctx,
            );
        }
        if let Some(conn) = c.tcp.as_mut() {
            conn.read = data;
            conn.read.drain(..at);
        }
    }

    /// Publishes counters and the latency seen since the last flush.
    fn flush(&mut self) {
        let stats = &self.shared.workers[self.id];
        stats.sent.fetch_add(self.ctx.sent, Ordering::Relaxed);
        stats
            .received
            .fetch_add(self.ctx.received, Ordering::Relaxed);
        stats
            .connected
            .fetch_add(self.ctx.connected, Ordering::Relaxed);
        stats
            .connected
            .fetch_sub(self.ctx.disconnected, Ordering::Relaxed);
        self.ctx.sent = 0;
        self.ctx.received = 0;
        self.ctx.connected = 0;
        self.ctx.disconnected = 0;
        if let Ok(mut h) = stats.latency.lock() {
            h.merge(&self.ctx.latency_pending);
        }
        self.ctx.latency_pending.clear();
        self.ctx.window = self.shared.window();
    }

    fn report(&mut self) -> WorkerReport {
        let mut clients = std::mem::take(&mut self.retired);
        clients.extend(
            self.clients
                .iter_mut()
                .filter_map(Option::as_mut)
                .map(|c| c.report(None)),
        );
        let mut video = std::mem::take(&mut self.ctx.video);
        video.keyframe_requests = self
            .clients
            .iter()
            .filter_map(Option::as_ref)
            .filter_map(|c| c.camera.as_ref())
            .map(|cam| cam.keyframe_requests)
            .sum();
        WorkerReport {
            video,
            clients,
            window_latency: std::mem::take(&mut self.ctx.window_latency),
            window_latency_same_node: std::mem::take(&mut self.ctx.window_latency_same_node),
            window_latency_cross_node: std::mem::take(&mut self.ctx.window_latency_cross_node),
            window_received: self.ctx.window_received,
            window_sent: self.ctx.window_sent,
            foreign: self.ctx.foreign,
            send_errors: self.ctx.send_errors,
            rtc_errors: self.ctx.rtc_errors,
            ice_disconnects: self.ctx.ice_disconnects,
        }
    }
}

/// Counts a client whose str0m instance failed (it is dropped from the run); the
/// first few are logged.
fn rtc_failed(ctx: &mut Ctx, global: u32, e: &dyn std::fmt::Display) {
    ctx.rtc_errors += 1;
    if ctx.rtc_errors <= 3 {
        tracing::warn!(participant = global, "client WebRTC failed: {e}");
    }
}

/// One datagram from the node into a client's `Rtc`, which is then drained.
#[allow(clippy::too_many_arguments)]
fn feed(
    c: &mut Client,
    idx: usize,
    proto: Protocol,
    from: SocketAddr,
    data: &[u8],
    cfg: &RunConfig,
    shared: &Shared,
    ctx: &mut Ctx,
) {
    let now = Instant::now();
    let Ok(receive) = Receive::new(proto, from, c.local, data) else {
        return;
    };
    if let Err(e) = c.rtc.handle_input(Input::Receive(now, receive)) {
        c.dead = true;
        rtc_failed(ctx, c.global, &e);
        return;
    }
    drain(c, idx, cfg, shared, ctx, now);
}

/// Writes a connection's queued frames; registers it (readable, and writable while
/// bytes wait) with the client's token.
fn flush_tcp(conn: &mut TcpConn, idx: usize, poll: &Poll) -> io::Result<()> {
    let Some(stream) = conn.stream.as_mut() else {
        return Ok(());
    };
    let mut written = 0;
    while written < conn.write.len() {
        match io::Write::write(stream, &conn.write[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // Still connecting: the WRITABLE event comes when it is up.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    conn.write.drain(..written);
    let want = !conn.write.is_empty();
    let interest = if want {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    if conn.wants_write != want || !conn.registered {
        let token = Token(idx);
        let r = poll.registry().register(stream, token, interest);
        if r.is_err() {
            poll.registry().reregister(stream, token, interest)?;
        }
        conn.wants_write = want;
        conn.registered = true;
    }
    Ok(())
}

fn ns_since(start: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(start).as_nanos() as u64
}

/// Writes one packet on the client's microphone (str0m sends it on the next timeout).
fn send_frame(c: &mut Client, cfg: &RunConfig, ctx: &mut Ctx, now: Instant) {
    let (Some(pt), true) = (c.mic_pt, c.connected) else {
        return;
    };
    let mut api = c.rtc.direct_api();
    let Some(tx) = api.stream_tx_by_mid(c.mic, None) else {
        return;
    };
    let send_ns = ns_since(cfg.start, now);
    let stamp = Stamp {
        sender: c.id,
        seq: c.frames,
        send_ns,
    };
    let level = if c.speaker { cfg.level_dbov } else { -127 };
    let ext = ExtensionValues {
        audio_level: Some(level),
        voice_activity: Some(c.speaker),
        ..Default::default()
    };
    let payload: Arc<[u8]> = stamp.encode(cfg.packet_bytes).into();
    tx.write_rtp(RtpWrite::new(pt, c.rtp_seq.into(), c.rtp_ts, now, payload).ext_vals(ext));
    let (ws, we) = ctx.window;
    let in_window = send_ns >= ws && send_ns < we;
    ctx.window_sent += u64::from(in_window);
    if c.speaker && in_window {
        c.window_sent = Some(match c.window_sent {
            Some((first, _)) => (first, c.frames),
            None => (c.frames, c.frames),
        });
        if cfg.churn {
            c.window_send_ns.push(send_ns);
        }
    }
    c.frames = c.frames.wrapping_add(1);
    c.rtp_seq += 1;
    let ticks = OPUS_HZ * cfg.interval.as_micros() as u64 / 1_000_000;
    c.rtp_ts = c.rtp_ts.wrapping_add(ticks as u32);
    ctx.sent += 1;
}

/// Polls the client until it asks for a timeout: datagrams go out, events are counted.
fn drain(
    c: &mut Client,
    idx: usize,
    cfg: &RunConfig,
    shared: &Shared,
    ctx: &mut Ctx,
    now: Instant,
) {
    loop {
        match c.rtc.poll_output() {
            Ok(Output::Timeout(t)) => {
                // A timeout already past would fire again in this pass: keep it just
                // after `now` so the pass ends.
                let t = t.max(now + Duration::from_micros(1));
                if t != c.next_timeout {
                    c.next_timeout = t;
                    ctx.timers.push(Reverse((t, idx, Timer::Rtc)));
                }
                return;
            }
            Ok(Output::Transmit(t)) => {
                if ctx.nodes_known.len() < cfg.spread.nodes.len()
                    && !ctx.nodes_known.contains(&t.destination)
                {
                    ctx.nodes_known.push(t.destination);
                    if let Ok(mut nodes) = shared.node_media.lock() {
                        if nodes.len() < cfg.spread.nodes.len() && !nodes.contains(&t.destination) {
                            nodes.push(t.destination);
                        }
                    }
                }
                if let Some(conn) = c.tcp.as_mut() {
                    if t.proto != Protocol::Tcp {
                        continue;
                    }
                    if conn.stream.is_none() {
                        match TcpStream::connect(t.destination) {
                            Ok(stream) => {
                                conn.stream = Some(stream);
                                conn.peer = Some(t.destination);
                            }
                            Err(e) => {
                                ctx.send_errors += 1;
                                tracing::debug!(participant = c.global, "connect: {e}");
                                continue;
                            }
                        }
                    }
                    conn.write
                        .extend_from_slice(&(t.contents.len() as u16).to_be_bytes());
                    conn.write.extend_from_slice(&t.contents);
                    ctx.tcp_dirty.push(idx);
                } else if let Err(e) = c.socket.send_to(&t.contents, t.destination) {
                    ctx.send_errors += 1;
                    tracing::trace!(participant = c.global, "send: {e}");
                }
            }
            Ok(Output::Event(e)) => on_event(c, idx, cfg, shared, ctx, now, e),
            Err(e) => {
                c.dead = true;
                rtc_failed(ctx, c.global, &e);
                return;
            }
        }
    }
}

fn on_event(
    c: &mut Client,
    idx: usize,
    cfg: &RunConfig,
    shared: &Shared,
    ctx: &mut Ctx,
    now: Instant,
    e: Event,
) {
    match e {
        Event::Connected if !c.connected => {
            c.connected = true;
            c.connected_ns = Some(ns_since(cfg.start, now));
            ctx.connected += 1;
            if let Some(flag) = shared.connected.get(c.global as usize) {
                flag.store(true, Ordering::Relaxed);
            }
            if c.sends {
                c.next_frame = Some(now);
                ctx.timers.push(Reverse((now, idx, Timer::Frame)));
            }
            if let Some(cam) = c.camera.as_mut() {
                cam.next_frame = Some(now);
                ctx.timers.push(Reverse((now, idx, Timer::VideoFrame)));
            }
        }
        Event::KeyframeRequest(r) => {
            if let Some(cam) = c.camera.as_mut() {
                cam.keyframe_requested(r.rid);
            }
        }
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
            ctx.ice_disconnects += 1;
        }
        Event::RtpPacket(p) => {
            if let Some(v) = VideoStamp::read_tail(&p.payload) {
                let now_ns = ns_since(cfg.start, now);
                ctx.received += 1;
                let (ws, we) = ctx.window;
                if v.send_ns >= ws && v.send_ns < we {
                    let counts = &mut ctx.video;
                    counts.received += 1;
                    counts.payload_bytes += p.payload.len() as u64;
                    if let Some(n) = counts.per_layer.get_mut(usize::from(v.layer)) {
                        *n += 1;
                    }
                    counts.latency.record(now_ns.saturating_sub(v.send_ns));
                }
                return;
            }
            let Some(stamp) = Stamp::decode(&p.payload) else {
                ctx.foreign += 1;
                return;
            };
            let now_ns = ns_since(cfg.start, now);
            c.first_rx_ns.get_or_insert(now_ns);
            let latency = now_ns.saturating_sub(stamp.send_ns);
            ctx.received += 1;
            ctx.latency_pending.record(latency);
            let (ws, we) = ctx.window;
            if stamp.send_ns >= ws && stamp.send_ns < we {
                ctx.window_received += 1;
                ctx.window_latency.record(latency);
                if cfg.spread.spans() {
                    if cfg.spread.node_of(stamp.sender) == cfg.spread.node_of(c.global) {
                        ctx.window_latency_same_node.record(latency);
                    } else {
                        ctx.window_latency_cross_node.record(latency);
                    }
                }
                let stream = match c.streams.iter().position(|(s, _)| *s == stamp.sender) {
                    Some(i) => &mut c.streams[i].1,
                    None => {
                        c.streams.push((stamp.sender, StreamStats::default()));
                        &mut c.streams.last_mut().expect("just pushed").1
                    }
                };
                stream.record(stamp.seq);
            }
        }
        _ => {}
    }
}
