//! `chorus-floor`: what any forwarder pays on this machine to move the same datagrams.
//!
//! A *null forwarder* and its clients, to put a floor under the node's figures in
//! BENCHMARKS.md. The forwarder does what Chorus's driver does around the engine and
//! nothing of the engine itself: one thread per shard on an `SO_REUSEPORT` socket, mio's
//! poll, [`Batch::recv`] (`recvmmsg`), and for each datagram one copy to every other
//! member of its room through [`SendBatch`] (`sendmmsg`): no SRTP, no str0m, no timers.
//! Its CPU time per datagram sent is the kernel's send and receive paths, the wake-ups
//! and the socket layer: what the node pays before any media work.
//!
//! The clients mimic `chorus-load`'s media workers: worker threads, each with one
//! non-blocking socket per participant in one mio poll loop, speakers sending a
//! datagram every 20 ms from a random phase, every participant reading what it gets.
//!
//! ```sh
//! chorus-floor forward --bind 127.0.0.1:19000 --threads 1 --warmup 5 --window 20
//! chorus-floor clients --node 127.0.0.1:19000 --rooms 50 --per-room 10 --speakers 3 --seconds 30
//! ```
//!
//! `forward` prints one JSON line when its window ends (CPU time from its threads'
//! `schedstat`, the user/system split from `/proc/self/stat`, datagrams counted by the
//! forwarder) and exits; `clients` runs for `--seconds` and
//! prints what it sent and received. `tools/bench/floor.sh` runs both, for the standard
//! load on loopback and for the small room across two network namespaces.
//!
//! Datagrams: `J` + room (u32, big-endian) joins a room (the forwarder learns the
//! source address); anything else starting with a room number (bytes 1..5) is media.
#![allow(clippy::expect_used)]

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_engine::socket::{bind_reuseport, Batch, SendBatch, BATCH};
use chorus_engine::{Protocol, Transmit};
use mio::{Events, Interest, Poll, Token};

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
enum FloorError {
    #[error("unknown mode {0:?} (forward or clients)")]
    Mode(String),
    #[error("expected --flag, got {0:?}")]
    NotAFlag(String),
    #[error("--{0} needs a value")]
    NoValue(String),
    #[error("--{0} is required")]
    Missing(String),
    #[error("--{name}: cannot read {value:?}")]
    BadValue { name: String, value: String },
    #[error("--size must be 5..=1400 and --threads at least 1")]
    OutOfRange,
    #[error("bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("a client thread panicked")]
    ClientThread,
}

const JOIN: u8 = b'J';
const MEDIA: u8 = 0x80;
const INTERVAL: Duration = Duration::from_millis(20);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first() else {
        eprintln!("usage: chorus-floor forward|clients [--flag value]...");
        std::process::exit(2);
    };
    let flags = match Flags::parse(&args[1..]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("chorus-floor: {e}");
            std::process::exit(2);
        }
    };
    let result = match mode.as_str() {
        "forward" => forward(&flags),
        "clients" => clients(&flags),
        other => Err(FloorError::Mode(other.to_string())),
    };
    if let Err(e) = result {
        eprintln!("chorus-floor: {e}");
        std::process::exit(1);
    }
}

/// `--name value` pairs.
struct Flags(HashMap<String, String>);

impl Flags {
    fn parse(args: &[String]) -> Result<Flags, FloorError> {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let name = k
                .strip_prefix("--")
                .ok_or_else(|| FloorError::NotAFlag(k.clone()))?;
            let v = it
                .next()
                .ok_or_else(|| FloorError::NoValue(name.to_string()))?;
            map.insert(name.to_string(), v.clone());
        }
        Ok(Flags(map))
    }

    fn get<T: std::str::FromStr>(&self, name: &str, default: Option<T>) -> Result<T, FloorError> {
        match self.0.get(name) {
            Some(v) => v.parse().map_err(|_| FloorError::BadValue {
                name: name.to_string(),
                value: v.clone(),
            }),
            None => default.ok_or_else(|| FloorError::Missing(name.to_string())),
        }
    }
}

/// Rooms by number, each the addresses that joined it.
type Rooms = Arc<Mutex<HashMap<u32, Vec<SocketAddr>>>>;

fn room_of(d: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(1..5)?.try_into().ok()?))
}

/// The process's CPU seconds (user, system) from `/proc/self/stat` (all threads).
fn cpu_seconds() -> (f64, f64) {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    let Some(rest) = s.rfind(')').map(|i| &s[i + 2..]) else {
        return (0.0, 0.0);
    };
    let f: Vec<&str> = rest.split(' ').collect();
    // After the comm: state is field 3; utime is 14 and stime 15 → indexes 11 and 12.
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    (tick(11), tick(12))
}

/// The process's time on a CPU in seconds, to the nanosecond: the sum of its threads'
/// `/proc/self/task/*/schedstat` (user and system together). `/proc/self/stat` counts
/// in 10 ms ticks, too coarse for a forwarder that uses 0.5 % of a core.
fn cpu_exact() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split(' ').next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e9
}

fn forward(flags: &Flags) -> Result<(), FloorError> {
    let bind: SocketAddr = flags.get("bind", None)?;
    let threads: usize = flags.get("threads", Some(1))?;
    let warmup = Duration::from_secs_f64(flags.get("warmup", Some(5.0))?);
    let window = Duration::from_secs_f64(flags.get("window", Some(20.0))?);
    let sockets = bind_reuseport(bind, threads).map_err(|source| FloorError::Bind {
        addr: bind.to_string(),
        source,
    })?;
    let rooms: Rooms = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = sockets
        .into_iter()
        .map(|s| {
            let (rooms, stop, sent, received) =
                (rooms.clone(), stop.clone(), sent.clone(), received.clone());
            std::thread::spawn(move || forward_loop(s, &rooms, &stop, &sent, &received))
        })
        .collect();
    // CPU (user and system ticks, and exact), datagrams sent and received.
    let sample = || {
        (
            cpu_seconds(),
            cpu_exact(),
            sent.load(Ordering::Relaxed),
            received.load(Ordering::Relaxed),
        )
    };
    std::thread::sleep(warmup);
    let ((u0, s0), c0, tx0, rx0) = sample();
    let t0 = Instant::now();
    std::thread::sleep(window);
    let ((u1, s1), c1, tx1, rx1) = sample();
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Release);
    for w in workers {
        let _ = w.join();
    }
    let (tx, rx) = (tx1 - tx0, rx1 - rx0);
    let cpu = c1 - c0;
    let per = |n: u64| if n == 0 { 0.0 } else { cpu * 1e6 / n as f64 };
    println!(
        "{}",
        serde_json::json!({
            "role": "null forwarder",
            "threads": threads,
            "window_s": secs,
            "received_per_s": rx as f64 / secs,
            "sent_per_s": tx as f64 / secs,
            "cpu_pct": cpu * 100.0 / secs,
            "user_pct": (u1 - u0) * 100.0 / secs,
            "sys_pct": (s1 - s0) * 100.0 / secs,
            "cpu_us_per_sent": per(tx),
        })
    );
    Ok(())
}

fn forward_loop(
    socket: UdpSocket,
    rooms: &Mutex<HashMap<u32, Vec<SocketAddr>>>,
    stop: &AtomicBool,
    sent: &AtomicU64,
    received: &AtomicU64,
) {
    let local = socket.local_addr().expect("local address");
    let mut socket = mio::net::UdpSocket::from_std(socket);
    let mut poll = Poll::new().expect("poll");
    poll.registry()
        .register(&mut socket, Token(0), Interest::READABLE)
        .expect("register");
    let mut events = Events::with_capacity(8);
    let mut batch = Batch::default();
    let mut send = SendBatch::for_local(local);
    // Copies reuse their buffers: `used` of them are live in a turn.
    let mut copies: Vec<Transmit> = Vec::new();
    while !stop.load(Ordering::Acquire) {
        if poll
            .poll(&mut events, Some(Duration::from_millis(100)))
            .is_err()
        {
            continue;
        }
        loop {
            let n = batch.recv(&socket).unwrap_or(0);
            if n == 0 {
                break;
            }
            received.fetch_add(n as u64, Ordering::Relaxed);
            let mut used = 0;
            {
                let mut rooms = rooms.lock().expect("rooms");
                for d in batch.datagrams(n) {
                    let Some(room) = room_of(d.contents) else {
                        continue;
                    };
                    let members = rooms.entry(room).or_default();
                    if d.contents[0] == JOIN {
                        if !members.contains(&d.source) {
                            members.push(d.source);
                        }
                        continue;
                    }
                    for &to in members.iter().filter(|&&m| m != d.source) {
                        if used == copies.len() {
                            copies.push(Transmit {
                                proto: Protocol::Udp,
                                source: local,
                                destination: to,
                                contents: Vec::with_capacity(1500),
                            });
                        }
                        let t = &mut copies[used];
                        t.destination = to;
                        t.contents.clear();
                        t.contents.extend_from_slice(d.contents);
                        used += 1;
                    }
                }
            }
            let done = send.send(&socket, &copies[..used]);
            sent.fetch_add(done as u64, Ordering::Relaxed);
            // A short batch emptied the socket; mio's edge-triggered readiness brings
            // a new event for anything that arrives later.
            if n < BATCH {
                break;
            }
        }
    }
}

/// A participant of the clients' side.
struct Client {
    socket: mio::net::UdpSocket,
    room: u32,
    speaker: bool,
    next_send: Instant,
}

fn clients(flags: &Flags) -> Result<(), FloorError> {
    let node: SocketAddr = flags.get("node", None)?;
    let bind: std::net::IpAddr = flags.get("bind", Some([127, 0, 0, 1].into()))?;
    let rooms: u32 = flags.get("rooms", Some(50))?;
    let per_room: u32 = flags.get("per-room", Some(10))?;
    let speakers: u32 = flags.get("speakers", Some(3))?;
    let threads: usize = flags.get("threads", Some(2))?;
    let size: usize = flags.get("size", Some(120))?;
    let seconds: f64 = flags.get("seconds", Some(30.0))?;
    if !(5..=1400).contains(&size) || threads == 0 {
        return Err(FloorError::OutOfRange);
    }
    let start = Instant::now();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut per_thread: Vec<Vec<Client>> = (0..threads).map(|_| Vec::new()).collect();
    let mut i = 0;
    for room in 0..rooms {
        for position in 0..per_room {
            let bound = |source| FloorError::Bind {
                addr: bind.to_string(),
                source,
            };
            let s = UdpSocket::bind((bind, 0)).map_err(bound)?;
            s.set_nonblocking(true).map_err(bound)?;
            let mut join = vec![JOIN];
            join.extend_from_slice(&room.to_be_bytes());
            // Joins are repeated: a lost one would leave a silent participant.
            for _ in 0..3 {
                let _ = s.send_to(&join, node);
            }
            // xorshift: a phase in [0, 20 ms) for each speaker.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let phase = Duration::from_micros(seed % INTERVAL.as_micros() as u64);
            per_thread[i % threads].push(Client {
                socket: mio::net::UdpSocket::from_std(s),
                room,
                speaker: position < speakers,
                next_send: start + Duration::from_millis(500) + phase,
            });
            i += 1;
        }
    }
    let end = start + Duration::from_secs_f64(seconds);
    let handles: Vec<_> = per_thread
        .into_iter()
        .map(|clients| std::thread::spawn(move || client_loop(clients, node, size, end)))
        .collect();
    let (mut sent, mut received) = (0u64, 0u64);
    for h in handles {
        let (s, r) = h.join().map_err(|_| FloorError::ClientThread)?;
        sent += s;
        received += r;
    }
    println!(
        "{}",
        serde_json::json!({
            "role": "floor clients",
            "participants": rooms * per_room,
            "sent": sent,
            "received": received,
            "expected_received": sent * u64::from(per_room.saturating_sub(1)),
        })
    );
    Ok(())
}

fn client_loop(
    mut clients: Vec<Client>,
    node: SocketAddr,
    size: usize,
    end: Instant,
) -> (u64, u64) {
    let mut poll = Poll::new().expect("poll");
    for (i, c) in clients.iter_mut().enumerate() {
        poll.registry()
            .register(&mut c.socket, Token(i), Interest::READABLE)
            .expect("register");
    }
    let mut events = Events::with_capacity(256);
    let mut buf = [0u8; 2048];
    let mut packet = vec![MEDIA; size];
    let (mut sent, mut received) = (0u64, 0u64);
    loop {
        let now = Instant::now();
        if now >= end {
            return (sent, received);
        }
        for c in clients
            .iter_mut()
            .filter(|c| c.speaker && c.next_send <= now)
        {
            packet[1..5].copy_from_slice(&c.room.to_be_bytes());
            if c.socket.send_to(&packet, node).is_ok() {
                sent += 1;
            }
            c.next_send += INTERVAL;
        }
        let next = clients
            .iter()
            .filter(|c| c.speaker)
            .map(|c| c.next_send)
            .min()
            .unwrap_or(end)
            .min(end);
        let _ = poll.poll(
            &mut events,
            Some(next.saturating_duration_since(Instant::now())),
        );
        for e in events.iter() {
            let Some(c) = clients.get(e.token().0) else {
                continue;
            };
            while c.socket.recv_from(&mut buf).is_ok() {
                received += 1;
            }
        }
    }
}
