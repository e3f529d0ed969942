//! The I/O driver: one thread per shard, each owning a [`Shard`] and its own UDP
//! socket on the node's one port (`SO_REUSEPORT`).
//!
//! It is the only part of the engine that reads the clock or touches a socket. Each
//! thread waits (mio) for datagrams, commands, messages from other shards, or its
//! shard's next timeout; feeds the shard; sends its transmits in batches; hands
//! messages to other shards; and passes events to the caller's sink.
//!
//! Queues between threads are bounded. Speaker packets handed between shards go
//! through a ring per destination that drops the *oldest* packet when full (late audio
//! is worthless); control messages and commands are refused when their queue is full.
//! Either way the sending shard never blocks, and every drop is counted in
//! [`DriverStats`].

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chorus_protocol::signal::{ParticipantId, RoomId};

use crate::client_event::VideoSource;
use crossbeam_channel::{Receiver, TrySendError};
use crossbeam_queue::ArrayQueue;
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;

use crate::cluster::{NodeIndex, RosterChange};
use crate::config::ShardConfig;
use crate::doorbell::Doorbell;
use crate::error::EngineError;
use crate::forwarder::SpeakerPacket;
use crate::inbox_queue::{inbox_queue, InboxSender};
use crate::io::{Command, Event, Protocol, Request, RequestId, Transmit};
use crate::latency::{LatencyHistogram, LatencySnapshot};
use crate::mesh::{home_of, room_home, ShardMessage, MAX_SHARDS};
use crate::shard::{generate_certificate, Shard, ShardStats};
use crate::socket::{bind_reuseport, Batch, SendBatch, BATCH};
use crate::tcp::{self, ShardPort, TcpIn, TcpLimits, TcpOut, TcpSide, TcpStats, TcpThread};
use crate::video::packet::VideoPacket;

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);
/// Datagrams read before other work gets a turn.
const READ_BUDGET: usize = 256;
/// Speaker packets waiting for one shard, from all others.
const MEDIA_QUEUE: usize = 8192;
/// Control messages waiting for one shard.
const CONTROL_QUEUE: usize = 16384;
/// Commands waiting for one shard.
const COMMAND_QUEUE: usize = 16384;

/// Counters of the driver's own drops, per node.
#[derive(Debug, Default)]
pub struct DriverStats {
    /// Speaker packets dropped (oldest first) because a shard's hand-off ring was full.
    pub dropped_handoff: AtomicU64,
    /// Video packets dropped (oldest first) because a shard's video hand-off ring was
    /// full (its own ring: video never pushes voice out). A slot that misses one
    /// sees a gap; its subscriber's NACK finds nothing to resend and its PLI brings
    /// a keyframe.
    pub dropped_video_handoff: AtomicU64,
    /// Control messages between shards refused because a queue was full.
    pub dropped_control: AtomicU64,
    /// Datagrams the socket refused to send.
    pub dropped_send: AtomicU64,
}

/// What one shard thread last published about itself (twice a second).
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    pub stats: ShardStats,
    /// Participants whose media is on this shard.
    pub participants: usize,
    /// Rooms whose roster this shard keeps.
    pub rooms: usize,
    /// Of those, rooms in p2p mode.
    pub p2p_rooms: usize,
}

/// How often a shard thread publishes its [`ShardSnapshot`].
const SNAPSHOT_EVERY: Duration = Duration::from_millis(500);
/// A shard that received no media (RTP from its clients or speaker packets from other
/// shards) for this long is idle.
const IDLE_AFTER: Duration = Duration::from_millis(500);
/// How often an idle shard reads its socket at most. The first packet of a speaker
/// after silence may wait this long; every packet after it goes through at once.
const IDLE_WAKE_EVERY: Duration = Duration::from_millis(20);

/// Where a shard thread puts its local speakers' packets for other nodes of their
/// rooms (called on the shard thread: it must not block).
pub type RelaySink = Arc<dyn Fn(&crate::cluster::RelayOut) + Send + Sync>;

/// One shard's inboxes, shared with every other thread.
struct Inbox {
    snapshot: Mutex<ShardSnapshot>,
    /// Set to close every room homed on the shard, with this reason.
    close_rooms: Mutex<Option<String>>,
    /// Set when the node starts draining (taken once by the shard thread).
    drain: AtomicBool,
    /// Forwarding latency on this shard.
    latency: LatencyHistogram,
    commands: InboxSender<Command>,
    control: InboxSender<ShardMessage>,
    media: ArrayQueue<(RoomId, SpeakerPacket)>,
    video: ArrayQueue<(RoomId, VideoPacket)>,
    /// Datagrams from ICE-TCP connections, and buffers for them.
    tcp_in: Arc<ArrayQueue<TcpIn>>,
    tcp_returned: Arc<ArrayQueue<Vec<u8>>>,
    /// Rung after anything is put in the queues and flags above, but `tcp_returned`
    /// (spare buffers, taken as the shard goes) and the snapshot and latency (the
    /// shard's own).
    bell: Arc<Doorbell>,
}

impl Inbox {
    /// A video packet for the shard's ring; the oldest goes when it is full, never
    /// silently: the shard drops that layer until its next keyframe and asks for one.
    fn push_video(&self, room: RoomId, packet: VideoPacket, stats: &DriverStats) {
        let Some((room, lost)) = self.video.force_push((room, packet)) else {
            return;
        };
        stats.dropped_video_handoff.fetch_add(1, Ordering::Relaxed);
        let gap = ShardMessage::VideoGap {
            room,
            publisher: lost.publisher,
            source: lost.source,
            layer: lost.layer,
            origin: lost.origin,
        };
        if self.control.try_send(gap).is_err() {
            stats.dropped_control.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A running node: its shard threads. Dropping it stops them.
pub struct Driver {
    inboxes: Arc<Vec<Inbox>>,
    stop: Arc<AtomicBool>,
    stats: Arc<DriverStats>,
    tcp_stats: Arc<TcpStats>,
    tcp_waker: Option<Arc<Waker>>,
    local_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    threads: Vec<JoinHandle<()>>,
}

/// A cheap, cloneable way to send commands to a running node.
#[derive(Clone)]
pub struct CommandSender {
    inboxes: Arc<Vec<Inbox>>,
    stats: Arc<DriverStats>,
    tcp_stats: Arc<TcpStats>,
}

impl CommandSender {
    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    /// The home shard of a room (where its participants' ids must point).
    pub fn room_home(&self, room: &RoomId) -> usize {
        room_home(room, self.shards())
    }

    /// The driver's own drop counters.
    pub fn driver_stats(&self) -> &DriverStats {
        &self.stats
    }

    /// The ICE-TCP side's counters (all zero without TCP).
    pub fn tcp_stats(&self) -> &TcpStats {
        &self.tcp_stats
    }

    /// Closes every room on every shard (`room_closed {reason}` to each member).
    pub fn close_all_rooms(&self, reason: &str) {
        for inbox in self.inboxes.iter() {
            *inbox.close_rooms.lock() = Some(reason.to_owned());
            inbox.bell.ring();
        }
    }

    /// The node starts draining: each shard closes its empty rooms now and every other
    /// one when its last member leaves.
    pub fn start_draining(&self) {
        for inbox in self.inboxes.iter() {
            inbox.drain.store(true, Ordering::Release);
            inbox.bell.ring();
        }
    }

    /// Every shard's forwarding latency histogram, in shard order.
    pub fn forwarding_latency(&self) -> Vec<LatencySnapshot> {
        self.inboxes.iter().map(|i| i.latency.snapshot()).collect()
    }

    /// Queues a control request: at its room's home shard, or at every shard for
    /// node-wide ones ([`Request::room`] is `None`). Returns how many shards will
    /// answer with an [`Event::Reply`] (0: the node is stopped or too busy).
    pub fn request(&self, id: RequestId, request: Request) -> usize {
        let targets: Vec<usize> = match request.room() {
            Some(room) => vec![self.room_home(room)],
            None => (0..self.shards()).collect(),
        };
        let mut asked = 0;
        for s in targets {
            let inbox = &self.inboxes[s];
            let message = ShardMessage::Request {
                id,
                request: request.clone(),
            };
            if inbox.control.try_send(message).is_ok() {
                asked += 1;
            }
            inbox.bell.ring();
        }
        asked
    }

    /// Every shard's last published snapshot, in shard order.
    pub fn snapshots(&self) -> Vec<ShardSnapshot> {
        self.inboxes
            .iter()
            .map(|i| i.snapshot.lock().clone())
            .collect()
    }

    /// A speaker's packet from another node of the room: every shard forwards it to
    /// its subscribers in the room, as a packet handed by another shard (the oldest
    /// is dropped when a shard's ring is full).
    pub fn relay_in(&self, room: &RoomId, packet: &SpeakerPacket) {
        for inbox in self.inboxes.iter() {
            if inbox
                .media
                .force_push((room.clone(), packet.clone()))
                .is_some()
            {
                self.stats.dropped_handoff.fetch_add(1, Ordering::Relaxed);
            }
            inbox.bell.ring();
        }
    }

    /// A publisher's video packet from another node (its `origin` must be
    /// [`crate::cluster::REMOTE_ORIGIN`]): every shard forwards it to its video slots
    /// in the room, as a packet handed by another shard (the oldest is dropped when a
    /// shard's ring is full; that slot asks for a keyframe).
    pub fn relay_video_in(&self, room: &RoomId, packet: &VideoPacket) {
        for inbox in self.inboxes.iter() {
            inbox.push_video(room.clone(), packet.clone(), &self.stats);
            inbox.bell.ring();
        }
    }

    /// Another node's subscriber waits for a keyframe of `publisher` (held here):
    /// to its home shard, which passes it to the shard holding its media.
    pub fn relay_keyframe(&self, publisher: ParticipantId, source: VideoSource, layer: u8) {
        let inbox = &self.inboxes[home_of(publisher, self.shards())];
        let message = ShardMessage::Keyframe {
            publisher,
            source,
            layer,
        };
        if inbox.control.try_send(message).is_err() {
            self.stats.dropped_control.fetch_add(1, Ordering::Relaxed);
        }
        inbox.bell.ring();
    }

    /// A member another node holds joined, changed or left `room` (to the room's
    /// home shard). False when its queue is full.
    pub fn remote_roster(&self, room: RoomId, change: RosterChange) -> bool {
        let inbox = &self.inboxes[self.room_home(&room)];
        let ok = inbox
            .control
            .try_send(ShardMessage::Remote { room, change })
            .is_ok();
        inbox.bell.ring();
        ok
    }

    /// Node `node` of the cluster is gone: every room drops its members.
    pub fn node_lost(&self, node: NodeIndex) {
        for inbox in self.inboxes.iter() {
            if inbox
                .control
                .try_send(ShardMessage::NodeLost { node })
                .is_err()
            {
                self.stats.dropped_control.fetch_add(1, Ordering::Relaxed);
            }
            inbox.bell.ring();
        }
    }

    /// Queues a command at the participant's home shard; false if the node has
    /// stopped or is too busy to take it.
    pub fn send(&self, command: Command) -> bool {
        let home = home_of(command.participant(), self.shards());
        let inbox = &self.inboxes[home];
        let ok = inbox.commands.try_send(command).is_ok();
        inbox.bell.ring();
        ok
    }
}

impl Driver {
    /// Binds `shards` sockets on `addr` and starts a thread for each, and with `tcp`
    /// (an address to listen on, and the limits) the ICE-TCP thread. `config`'s
    /// `local_addr` is what ICE advertises for UDP and `tcp_addr` for TCP (their ports
    /// are filled in when 0). `events` is called on the shard threads for every event;
    /// it must not block.
    pub fn spawn(
        config: ShardConfig,
        addr: SocketAddr,
        tcp: Option<(SocketAddr, TcpLimits)>,
        shards: usize,
        events: impl Fn(Event) + Send + Sync + 'static,
    ) -> Result<Driver, EngineError> {
        Driver::spawn_with_relay(config, addr, tcp, shards, events, None)
    }

    /// [`Driver::spawn`], for a node of a cluster: each shard thread hands its local
    /// speakers' packets for other nodes ([`Shard::poll_relay`]) to `relay`.
    pub fn spawn_with_relay(
        mut config: ShardConfig,
        addr: SocketAddr,
        tcp: Option<(SocketAddr, TcpLimits)>,
        shards: usize,
        events: impl Fn(Event) + Send + Sync + 'static,
        relay: Option<RelaySink>,
    ) -> Result<Driver, EngineError> {
        let shards = shards.clamp(1, MAX_SHARDS);
        let sockets = bind_reuseport(addr, shards)?;
        let local_addr = sockets[0].local_addr()?;
        if config.local_addr.port() == 0 {
            // Port 0 was asked: advertise the one the kernel picked.
            config.local_addr.set_port(local_addr.port());
        }
        let listener = match tcp {
            Some((tcp_addr, limits)) => {
                let listener = crate::socket::bind_tcp_listener(tcp_addr)?;
                let bound = listener.local_addr()?;
                let advertised = config.tcp_addr.get_or_insert(bound);
                if advertised.port() == 0 {
                    advertised.set_port(bound.port());
                }
                Some((listener, limits, bound))
            }
            None => {
                config.tcp_addr = None;
                None
            }
        };
        let cert = generate_certificate()?;
        // The one wall-clock reading the shards get: RTCP's NTP time counts from it.
        config.wallclock_at_start = std::time::SystemTime::now();
        let events: Arc<dyn Fn(Event) + Send + Sync> = Arc::new(events);
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(DriverStats::default());
        let now = Instant::now();

        let mut polls = Vec::new();
        let mut inboxes = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..shards {
            let poll = Poll::new()?;
            let bell = Arc::new(Doorbell::new(poll.registry(), WAKER)?);
            let (commands, commands_rx) = inbox_queue(COMMAND_QUEUE);
            let (control, control_rx) = inbox_queue(CONTROL_QUEUE);
            inboxes.push(Inbox {
                snapshot: Mutex::new(ShardSnapshot::default()),
                close_rooms: Mutex::new(None),
                drain: AtomicBool::new(false),
                latency: LatencyHistogram::default(),
                commands,
                control,
                media: ArrayQueue::new(MEDIA_QUEUE),
                video: ArrayQueue::new(MEDIA_QUEUE),
                tcp_in: Arc::new(ArrayQueue::new(tcp::IN_QUEUE)),
                tcp_returned: Arc::new(ArrayQueue::new(tcp::IN_QUEUE)),
                bell,
            });
            polls.push(poll);
            receivers.push((commands_rx, control_rx));
        }
        let inboxes = Arc::new(inboxes);
        let mut threads = Vec::new();
        let tcp_stats = Arc::new(TcpStats::default());
        let mut tcp_side = None;
        let mut tcp_addr = None;
        if let Some((listener, limits, bound)) = listener {
            let ports = inboxes
                .iter()
                .map(|i| ShardPort {
                    inbound: i.tcp_in.clone(),
                    returned: i.tcp_returned.clone(),
                    bell: i.bell.clone(),
                })
                .collect();
            let (thread, side) =
                TcpThread::new(listener, limits, ports, tcp_stats.clone(), stop.clone())?;
            threads.push(
                std::thread::Builder::new()
                    .name("chorus-tcp".into())
                    .spawn(move || thread.run())?,
            );
            tcp_side = Some(Arc::new(side));
            tcp_addr = Some(bound);
        }
        for (id, ((socket, poll), (commands, control))) in
            sockets.into_iter().zip(polls).zip(receivers).enumerate()
        {
            let shard = Shard::in_mesh(config.clone(), now, id, shards, cert.clone());
            let worker = Worker {
                id,
                shard,
                poll,
                tcp: tcp_side.clone(),
                socket: mio::net::UdpSocket::from_std(socket),
                commands,
                control,
                inboxes: inboxes.clone(),
                stop: stop.clone(),
                stats: stats.clone(),
                events: events.clone(),
                relay: relay.clone(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("chorus-shard-{id}"))
                    .spawn(move || worker.run())?,
            );
        }
        Ok(Driver {
            inboxes,
            stop,
            stats,
            tcp_stats,
            tcp_waker: tcp_side.map(|t| t.waker.clone()),
            local_addr,
            tcp_addr,
            threads,
        })
    }

    pub fn sender(&self) -> CommandSender {
        CommandSender {
            inboxes: self.inboxes.clone(),
            stats: self.stats.clone(),
            tcp_stats: self.tcp_stats.clone(),
        }
    }

    /// The address the sockets are bound to (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address the ICE-TCP listener is bound to, if there is one.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    pub fn stats(&self) -> &DriverStats {
        &self.stats
    }

    /// Stops the threads and waits for them.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        for inbox in self.inboxes.iter() {
            inbox.bell.ring();
        }
        if let Some(w) = &self.tcp_waker {
            let _ = w.wake();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Worker {
    id: usize,
    shard: Shard,
    poll: Poll,
    /// The ICE-TCP thread's queue for this shard's TCP transmits.
    tcp: Option<Arc<TcpSide>>,
    socket: mio::net::UdpSocket,
    commands: Receiver<Command>,
    control: Receiver<ShardMessage>,
    inboxes: Arc<Vec<Inbox>>,
    stop: Arc<AtomicBool>,
    stats: Arc<DriverStats>,
    events: Arc<dyn Fn(Event) + Send + Sync>,
    relay: Option<RelaySink>,
}

impl Worker {
    fn run(mut self) {
        let span = tracing::info_span!("shard", shard = self.id);
        let _enter = span.enter();
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut self.socket, SOCKET, Interest::READABLE)
        {
            tracing::error!(error = %e, "cannot poll the socket; shard stops");
            return;
        }
        let mut mio_events = Events::with_capacity(64);
        let mut batch = Batch::default();
        // The socket's family decides how IPv4 destinations are written; the shard's
        // address tells it if the socket cannot.
        let bound = self
            .socket
            .local_addr()
            .unwrap_or(self.shard.config().local_addr);
        let mut send = SendBatch::for_local(bound);
        let mut transmits: Vec<Transmit> = Vec::with_capacity(256);
        let mut woken = vec![false; self.inboxes.len()];
        let mut published = Instant::now() - SNAPSHOT_EVERY;
        let mut last_counts = (0, 0);
        let (mut last_media, mut media_seen) = (Instant::now(), 0);
        // While idle, the socket is left out of the poll until this instant.
        let mut socket_resumes: Option<Instant> = None;
        // The last turn stopped at its read budget: datagrams may be left, and mio's
        // readiness is edge-triggered (no event comes for datagrams already queued),
        // so the next poll does not sleep.
        let mut budget_spent = false;
        // The inbox may hold something: it was rung, or the last turn left work in it.
        let mut inbox_pending = false;
        let bell = self.inboxes[self.id].bell.clone();
        while !self.stop.load(Ordering::Acquire) {
            if socket_resumes.is_some_and(|at| at <= Instant::now()) {
                socket_resumes = None;
                // Readiness is checked on registration: what arrived meanwhile wakes
                // the next poll at once.
                if let Err(e) =
                    self.poll
                        .registry()
                        .register(&mut self.socket, SOCKET, Interest::READABLE)
                {
                    tracing::error!(error = %e, "cannot poll the socket; shard stops");
                    return;
                }
            }
            // Other threads always ring the doorbell, but write its eventfd only while
            // the shard may block in a poll; a shard at work takes their mark after
            // its poll.
            let timeout = if budget_spent || inbox_pending || !bell.may_sleep() {
                Some(Duration::ZERO)
            } else {
                self.shard
                    .poll_timeout()
                    .into_iter()
                    .chain(socket_resumes)
                    .min()
                    .map(|t| t.saturating_duration_since(Instant::now()))
            };
            if let Err(e) = self.poll.poll(&mut mio_events, timeout) {
                if e.kind() != ErrorKind::Interrupted {
                    tracing::error!(error = %e, "poll failed; shard stops");
                    return;
                }
            }
            let now = Instant::now();
            // The inbox's queues are looked at only when it was rung (or a turn left
            // work there), not on every datagram's wake-up.
            inbox_pending |= bell.take();
            // The socket is read when it reported readiness (an edge: something
            // arrived since it was last emptied) or the last turn left datagrams.
            let mut read = 0;
            let mut failed = false;
            let socket_ready = budget_spent || mio_events.iter().any(|e| e.token() == SOCKET);
            while socket_ready && read < READ_BUDGET {
                let n = match batch.recv(&self.socket) {
                    Ok(n) => n,
                    // ICMP errors surface here on Linux (ECONNREFUSED): not fatal, and
                    // reading one cleared it. Datagrams may still be queued (no new
                    // edge would come for them): read on once; an error that stays
                    // would otherwise spin the loop.
                    Err(e) if !failed => {
                        tracing::trace!(error = %e, "recv");
                        failed = true;
                        continue;
                    }
                    Err(e) => {
                        tracing::trace!(error = %e, "recv");
                        break;
                    }
                };
                if n == 0 {
                    break;
                }
                let received = Instant::now();
                self.shard.handle_batch(now, batch.datagrams(n));
                read += n;
                if self.flush(&mut send, &mut transmits, &mut woken) > 0 {
                    self.inboxes[self.id].latency.observe(received.elapsed());
                }
                // A short batch emptied the socket, and mio's readiness is
                // edge-triggered: a datagram that comes later brings an event of its
                // own. Asking again would be a system call that finds nothing.
                if n < BATCH {
                    break;
                }
            }
            budget_spent = read >= READ_BUDGET;
            if inbox_pending {
                inbox_pending = self.take_inbox(now, &mut send, &mut transmits, &mut woken);
            }
            if self.shard.poll_timeout().is_some_and(|t| t <= now) {
                self.shard.handle_timeout(now);
            }
            self.flush(&mut send, &mut transmits, &mut woken);
            let stats = self.shard.stats();
            let media = stats.rtp_in + stats.video_in + stats.handoffs_in;
            if media != media_seen {
                media_seen = media;
                last_media = now;
            }
            // A shard without media gathers its clients' consent checks and reports
            // into one wake-up per IDLE_WAKE_EVERY instead of one each: the socket
            // leaves the poll for that long. Commands and other shards' messages
            // still wake it at once.
            if socket_resumes.is_none() && now.saturating_duration_since(last_media) >= IDLE_AFTER {
                if let Err(e) = self.poll.registry().deregister(&mut self.socket) {
                    tracing::warn!(error = %e, "cannot pause the socket");
                } else {
                    socket_resumes = Some(now + IDLE_WAKE_EVERY);
                }
            }
            // Also at once when participants or rooms came or went: a shard left with
            // nothing to do sleeps without a timeout, and its last word must be true.
            let counts = (self.shard.participant_count(), self.shard.room_count());
            if now.saturating_duration_since(published) >= SNAPSHOT_EVERY || counts != last_counts {
                published = now;
                last_counts = counts;
                *self.inboxes[self.id].snapshot.lock() = ShardSnapshot {
                    stats: self.shard.stats().clone(),
                    participants: self.shard.participant_count(),
                    rooms: self.shard.room_count(),
                    p2p_rooms: self.shard.p2p_room_count(),
                };
            }
        }
    }

    /// Takes what other threads left in the shard's inbox: control messages, media
    /// and video handed by other shards, ICE-TCP datagrams, commands, drain and close
    /// requests. Returns true if a queue held more than a turn's share, so that the
    /// next turn takes the rest without waiting for another wake-up.
    fn take_inbox(
        &mut self,
        now: Instant,
        send: &mut SendBatch,
        transmits: &mut Vec<Transmit>,
        woken: &mut [bool],
    ) -> bool {
        while let Ok(m) = self.control.try_recv() {
            self.shard.handle_shard_message(now, m);
        }
        let media = &self.inboxes[self.id].media;
        let mut oldest: Option<Instant> = None;
        for _ in 0..MEDIA_QUEUE {
            let Some((room, packet)) = media.pop() else {
                break;
            };
            oldest = Some(oldest.map_or(packet.received, |o| o.min(packet.received)));
            self.shard
                .handle_shard_message(now, ShardMessage::Media { room, packet });
        }
        // Video handed in from other shards: one batch, so that each subscriber's
        // str0m is drained once for all of it.
        let video = &self.inboxes[self.id].video;
        let mut budget = MEDIA_QUEUE;
        let batch = std::iter::from_fn(|| {
            budget = budget.checked_sub(1)?;
            let (room, packet) = video.pop()?;
            oldest = Some(oldest.map_or(packet.received, |o| o.min(packet.received)));
            Some((room, packet))
        });
        self.shard.handle_video_batch(now, batch);
        if let Some(oldest) = oldest {
            if self.flush(send, transmits, woken) > 0 {
                self.inboxes[self.id].latency.observe(oldest.elapsed());
            }
        }
        let mut tcp_read = false;
        for _ in 0..READ_BUDGET {
            let Some(d) = self.inboxes[self.id].tcp_in.pop() else {
                break;
            };
            tcp_read = true;
            self.shard.handle_tcp(now, d.participant, d.source, &d.data);
            self.shard.recycle(d.data);
        }
        if tcp_read {
            self.flush(send, transmits, woken);
        }
        while let Ok(c) = self.commands.try_recv() {
            self.shard.handle_command(now, c);
        }
        let inbox = &self.inboxes[self.id];
        if inbox.drain.swap(false, Ordering::AcqRel) {
            self.shard.start_draining(now);
        }
        if let Some(reason) = inbox.close_rooms.lock().take() {
            self.shard.close_rooms(now, &reason);
        }
        // More than a turn's share: the next turn takes the rest at once.
        !inbox.media.is_empty() || !inbox.video.is_empty() || !inbox.tcp_in.is_empty()
    }

    /// Sends transmits, routes shard messages (waking each destination once), and
    /// hands events to the sink. Returns how many datagrams were sent.
    fn flush(
        &mut self,
        send: &mut SendBatch,
        transmits: &mut Vec<Transmit>,
        woken: &mut [bool],
    ) -> usize {
        transmits.clear();
        let mut tcp_sent = false;
        while let Some(t) = self.shard.poll_transmit() {
            if t.proto == Protocol::Udp {
                transmits.push(t);
                continue;
            }
            // ICE-TCP: framed and written by the TCP thread.
            let out = TcpOut {
                shard: self.id,
                destination: t.destination,
                data: t.contents,
            };
            let pushed = match &self.tcp {
                Some(tcp) => tcp.outbound.push(out),
                None => Err(out),
            };
            match pushed {
                Ok(()) => tcp_sent = true,
                Err(out) => {
                    self.stats.dropped_send.fetch_add(1, Ordering::Relaxed);
                    self.shard.recycle(out.data);
                }
            }
        }
        if tcp_sent {
            if let Some(tcp) = &self.tcp {
                let _ = tcp.waker.wake();
            }
        }
        // Buffers the TCP thread is done with come back to the pool.
        let returned = &self.inboxes[self.id].tcp_returned;
        while returned.len() > tcp::IN_QUEUE / 2 {
            let Some(b) = returned.pop() else {
                break;
            };
            self.shard.recycle(b);
        }
        let mut sent = 0;
        if !transmits.is_empty() {
            sent = send.send(&self.socket, transmits);
            let dropped = (transmits.len() - sent) as u64;
            if dropped > 0 {
                self.stats
                    .dropped_send
                    .fetch_add(dropped, Ordering::Relaxed);
            }
            // The buffers go back to the shard's pool for the next datagrams.
            for t in transmits.drain(..) {
                self.shard.recycle(t.contents);
            }
        }
        woken.fill(false);
        while let Some((to, message)) = self.shard.poll_shard_message() {
            let Some(inbox) = self.inboxes.get(to) else {
                continue;
            };
            match message {
                ShardMessage::Media { room, packet } => {
                    if inbox.media.force_push((room, packet)).is_some() {
                        self.stats.dropped_handoff.fetch_add(1, Ordering::Relaxed);
                    }
                }
                ShardMessage::Video { room, packet } => inbox.push_video(room, packet, &self.stats),
                other => match inbox.control.try_send(other) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                        self.stats.dropped_control.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(to, "control queue full: message dropped");
                    }
                },
            }
            woken[to] = true;
        }
        for (to, w) in woken.iter().enumerate() {
            if *w {
                self.inboxes[to].bell.ring();
            }
        }
        while let Some(out) = self.shard.poll_relay() {
            if let Some(relay) = &self.relay {
                relay(&out);
            }
        }
        while let Some(e) = self.shard.poll_event() {
            (self.events)(e);
        }
        sent
    }
}
