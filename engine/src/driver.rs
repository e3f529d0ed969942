//! The I/O driver: one thread that owns a [`Shard`] and its UDP socket.
//!
//! It is the only part of the engine that reads the clock or touches a socket. It
//! waits (mio) for a datagram, a command or the shard's next timeout, feeds the shard,
//! then sends its transmits and hands its events to the caller's sink.
//! The per-core sharded runtime (one such thread per core over `SO_REUSEPORT`
//! sockets, batched syscalls) replaces this single-socket loop; the shard API stays.

use std::io::ErrorKind;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::ShardConfig;
use crate::error::EngineError;
use crate::io::{Command, Event};
use crate::shard::Shard;

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);
/// Datagrams read before other work gets a turn.
const READ_BUDGET: usize = 256;
/// Largest datagram read (larger ones are truncated and then refused by str0m).
const RECV_BUFFER: usize = 2048;

/// A running driver. Dropping it stops the thread.
pub struct Driver {
    commands: Sender<Command>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A cheap, cloneable way to send commands to a running driver.
#[derive(Clone)]
pub struct CommandSender {
    commands: Sender<Command>,
    waker: Arc<Waker>,
}

impl CommandSender {
    /// Queues a command; false if the driver has stopped.
    pub fn send(&self, command: Command) -> bool {
        let ok = self.commands.send(command).is_ok();
        // A failed wake means the poll is gone with the thread; send already said so.
        let _ = self.waker.wake();
        ok
    }
}

impl Driver {
    /// Starts a driver thread for a shard on `socket`. `events` is called on that
    /// thread for every event; it must not block.
    pub fn spawn(
        config: ShardConfig,
        socket: UdpSocket,
        mut events: impl FnMut(Event) + Send + 'static,
    ) -> Result<Driver, EngineError> {
        socket.set_nonblocking(true)?;
        let mut socket = mio::net::UdpSocket::from_std(socket);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let shard = Shard::new(config, Instant::now())?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("chorus-shard-0".into())
            .spawn(move || run(shard, poll, socket, rx, &stop_flag, &mut events))?;
        Ok(Driver {
            commands: tx,
            waker,
            stop,
            thread: Some(thread),
        })
    }

    pub fn sender(&self) -> CommandSender {
        CommandSender {
            commands: self.commands.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(
    mut shard: Shard,
    mut poll: Poll,
    socket: mio::net::UdpSocket,
    commands: Receiver<Command>,
    stop: &AtomicBool,
    events: &mut dyn FnMut(Event),
) {
    let span = tracing::info_span!("shard", shard = 0);
    let _enter = span.enter();
    let mut mio_events = Events::with_capacity(64);
    let mut buf = vec![0u8; RECV_BUFFER];
    while !stop.load(Ordering::Acquire) {
        let timeout = shard
            .poll_timeout()
            .map(|t| t.saturating_duration_since(Instant::now()));
        if let Err(e) = poll.poll(&mut mio_events, timeout) {
            if e.kind() != ErrorKind::Interrupted {
                tracing::error!(error = %e, "poll failed; shard stops");
                return;
            }
        }
        let now = Instant::now();
        for _ in 0..READ_BUDGET {
            match socket.recv_from(&mut buf) {
                Ok((n, source)) => shard.handle_datagram(now, source, &buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP errors surface here on Linux (ECONNREFUSED): not fatal.
                    tracing::trace!(error = %e, "recv");
                }
            }
        }
        loop {
            match commands.try_recv() {
                Ok(c) => shard.handle_command(now, c),
                Err(TryRecvError::Empty) => break,
                // Every sender is gone: nobody can drive this shard any more.
                Err(TryRecvError::Disconnected) => return,
            }
        }
        if shard.poll_timeout().is_some_and(|t| t <= now) {
            shard.handle_timeout(now);
        }
        while let Some(t) = shard.poll_transmit() {
            if let Err(e) = socket.send_to(&t.contents, t.destination) {
                // Never block the shard: a full socket buffer drops the datagram.
                tracing::trace!(error = %e, destination = %t.destination, "send dropped");
            }
        }
        while let Some(e) = shard.poll_event() {
            events(e);
        }
    }
}
