//! `chorus-load`: a load generator for a Chorus node that uses the real protocols.
//!
//! ```text
//! chorus-load --url http://127.0.0.1:7880 --rooms 50 --per-room 10 --speakers 3 \
//!             --duration 60s --node-pid $(pgrep -x chorus)
//! ```
//!
//! # Method
//!
//! Every simulated participant is a complete WebRTC client: a WebSocket to
//! `/v1/signal` (`join` → `joined`, `offer` → `answer`, as in `docs/protocol.md`) and a
//! str0m `Rtc` in rtp mode (full ICE as the controlling agent, DTLS, SRTP) on its own
//! UDP socket bound to `--bind-ip` (127.0.0.1 by default), so the node demultiplexes
//! the clients exactly as it would browsers. Each client offers one `sendonly`
//! microphone and `audio_slots` `recvonly` slots (the number `joined` gives).
//!
//! Participants are numbered round-robin over the rooms (participant `g` is in room
//! `g % rooms`), joined at `--ramp` per second. The first `--speakers` of each room
//! speak: from the moment their DTLS is up they send a `--packet-bytes` payload every
//! `--interval` with an RFC 6464 level of `--level-dbov` (−20 dBov, which the node
//! counts as speaking). Listeners send nothing (or silence at −127 dBov with
//! `--listeners silence`). The payload carries a magic, the sender's index, its
//! packet counter and the send time (monotonic ns since the tool started; senders and
//! receivers share the process and the clock).
//!
//! Threads: one tokio thread runs the WebSockets (and the progress line); `--workers`
//! media threads (2 by default) each own a share of the clients and drive them from
//! one mio poll loop with a timer heap: no thread per participant. Signaling and media
//! meet over channels (the SDP offer and answer).
//!
//! The **measurement window** opens `--settle` (1 s) after every participant's
//! signaling finished and DTLS connected (or `--connect-timeout` passed) and lasts
//! `--duration`. A packet belongs to the window if it was *sent* inside it; receivers
//! get 500 ms of grace after the window for packets in flight.
//!
//! # Figures (the JSON line on stdout)
//!
//! - `forwarded_pps`: window packets received by all clients, per second: what the
//!   node forwarded.
//! - `sent_pps`: window packets the clients sent to the node, per second.
//! - `latency_ms` (`p50`, `p95`, `p99`, `max`): receive time − embedded send time.
//!   This is one-way through the node **plus the clients' own work**: SRTP encryption
//!   in the sender, decryption in the receiver, and the client threads' scheduling
//!   (the clients share the CPU with the node).
//! - `loss`: per (receiver, speaker) pair of the same room, the speaker's window
//!   packets (its counter range, known exactly by the sender) that never reached the
//!   receiver; summed and divided by the expected total. With `speakers <=
//!   audio_slots` every receiver should get every other speaker's every packet.
//!   `duplicates` and `reordered` (arrived below the highest counter seen) come from
//!   the same counters.
//! - `join_ms` (`p50`, `p99`): from sending `join` to the first forwarded packet
//!   received, for participants that had a connected speaker in their room when they
//!   joined (others would measure the wait for a speaker).
//! - `cpu_us_per_packet`: the node's user+system CPU time in the window
//!   (`/proc/PID/stat`, in clock ticks of `getconf CLK_TCK`) divided by the packets
//!   forwarded in the window. It includes everything the node did: ingress, egress,
//!   timers, signaling. `null` without `--node-pid`.
//! - `rss_kb_per_participant`: the node's `VmRSS` after the ramp minus before the
//!   first join, divided by the participants. `null` without `--node-pid`.
//! - `join_failures`: participants whose signaling failed or whose DTLS never
//!   connected, with `join_failure_reasons`. The exit status is 1 when there are any,
//!   2 when the run could not start (node unreachable, bad arguments).
//! - `client_cpu_pct`: this tool's own CPU use in the window (100 = one core), the
//!   share of the machine the node did not have.
//!
//! # Churn (`--churn-every`)
//!
//! During the window every participant, at intervals of the period ± 50 % (uniform;
//! the first at a uniform phase), either leaves (its media client and socket are
//! dropped, it sends `leave` and waits for the close) and is replaced at once by a
//! fresh client joining the same room in the same role — a rejoined speaker speaks —
//! or toggles mute (`{"type":"mute","muted":…}`); each with probability ½. Loss is
//! then counted only where the receiver and the speaker were both in steady state,
//! away from every join, leave and mute toggle by `--churn-guard` (see `churn.rs`);
//! `churn` in the JSON counts the operations and the packets a muted speaker still
//! got forwarded. A rejoin that fails (signaling, or DTLS within `--connect-timeout`)
//! counts in `churn.failed_joins` and makes the exit status 1; the slot tries again
//! at its next event.
//!
//! # ICE-TCP (`--transport tcp`)
//!
//! Each client's only ICE candidate is an active TCP one: it connects to the node's
//! passive TCP candidate at its first transmit and sends and reads RFC 4571 frames.
//! Everything else (signaling, accounting, figures) is as over UDP.
//!
//! # Proximity (`--control`, `--proximity`)
//!
//! With `--control PATH` the rooms are created through the node's control socket
//! (`raid` rooms of `--per-room`, with `--audio-slots`); with `--proximity RADIUS` too
//! as proximity rooms, and a backend loop sends every room's positions
//! (`room.set_positions`, all participants walking on circles of their own in a
//! `--world`-wide square) `--positions-hz` times a second from the end of the ramp to
//! the end of the window. `proximity` in the JSON gives the batches, their size and
//! their round trip (`rtt_ms`: JSON both ways, the node's work, the reply). A listener
//! hears only the speakers within the radius, so `loss` and `expected` are no loss
//! figures there; `cpu_us_per_packet` and `forwarded_pps` are.
//!
//! # Several nodes (`--url` more than once)
//!
//! The nodes of one cluster: each room's participants are dealt round-robin over the
//! URLs by position in the room (`spread.rs`; a URL given twice gets two shares), the
//! rooms are made through `--control` as `raid` rooms with `span: true`, and
//! `latency_same_node_ms` / `latency_cross_node_ms` split the latency by whether the
//! listener joined at the speaker's node. With `--node-pid` for each node, the node
//! figures are their sum and `nodes` lists each one's CPU and relay counters
//! (`chorus_relay_*_total` from its `/metrics` at the window's edges); `relay` checks
//! them against one copy per speaker packet per other node holding members of its room.
#![forbid(unsafe_code)]
#![recursion_limit = "256"]

mod accounting;
mod churn;
mod cli;
mod hist;
mod metrics;
mod payload;
mod procfs;
mod proximity;
mod signal;
mod sigonly;
mod spread;
mod video;
mod worker;

use std::collections::{BTreeMap, HashSet};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::accounting::LossTotals;
use crate::churn::{Life, Rng};
use crate::cli::{Args, Listeners};
use crate::hist::{quantile_sorted, Hist};
use crate::signal::{Churn, ChurnCounters, Signaling};
use crate::spread::Spread;
use crate::worker::{RunConfig, Shared, WorkerHandle, WorkerReport};

/// Grace after the window for packets in flight.
const GRACE: Duration = Duration::from_millis(500);
/// The window is announced to the workers at least this long before it opens.
const MIN_SETTLE: Duration = Duration::from_millis(500);

const PHASE_RAMP: u8 = 0;
const PHASE_CONNECT: u8 = 1;
const PHASE_SETTLE: u8 = 2;
const PHASE_MEASURE: u8 = 3;
const PHASE_DONE: u8 = 4;

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chorus-load: tokio: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("chorus-load: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The node's figures from /proc, when `--node-pid` is given.
struct Node {
    pid: String,
    clk_tck: u64,
}

impl Node {
    fn cpu_ticks(&self) -> Option<u64> {
        procfs::cpu_ticks(&self.pid).ok()
    }
    fn user_ticks(&self) -> Option<u64> {
        procfs::user_system_ticks(&self.pid)
            .ok()
            .map(|(user, _)| user)
    }
    fn rss_kb(&self) -> Option<u64> {
        procfs::rss_kb(&self.pid).ok()
    }
}

/// The sum of `f` over the nodes (`--node-pid` more than once); `None` without nodes or
/// when one could not be read.
fn nodes_sum(nodes: &[Node], f: impl Fn(&Node) -> Option<u64>) -> Option<u64> {
    if nodes.is_empty() {
        return None;
    }
    nodes.iter().map(f).sum()
}

/// Each node's relay counters now (with several nodes; `None` where unreadable).
async fn relay_sample(authorities: &[String]) -> Vec<Option<metrics::Relay>> {
    let mut out = Vec::with_capacity(authorities.len());
    for a in authorities {
        out.push(match metrics::scrape(a).await {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("chorus-load: warning: relay counters of {a}: {e:#}");
                None
            }
        });
    }
    out
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.speakers > args.per_room {
        bail!(
            "--speakers {} > --per-room {}",
            args.speakers,
            args.per_room
        );
    }
    if !(args.ramp > 0.0 && args.ramp.is_finite()) {
        bail!("--ramp must be a positive number of joins per second");
    }
    if args.interval < Duration::from_millis(1) || args.duration.is_zero() {
        bail!("--interval must be at least 1ms and --duration positive");
    }
    let participants = args
        .rooms
        .checked_mul(args.per_room)
        .filter(|&n| n <= 1_000_000)
        .context("too many participants")?;
    let spread = Arc::new(Spread::new(&args.url, args.rooms, args.per_room));
    let mut ws_urls = Vec::new();
    let mut authorities = Vec::new();
    for url in &spread.nodes {
        let (ws, authority) = cli::signal_url(url).map_err(anyhow::Error::msg)?;
        ws_urls.push(ws);
        authorities.push(authority);
    }
    if spread.spans() && args.signaling_only {
        bail!("--signaling-only takes one --url");
    }
    if spread.spans() && args.control.is_empty() {
        bail!(
            "--url given more than once needs --control: rooms made by a join do not span nodes (a join elsewhere is redirected)"
        );
    }

    // 5,000 clients hold 10,000 descriptors (a UDP socket and a WebSocket each).
    let nofile = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    let needed = 2 * u64::from(participants) + 64;
    if nofile < needed {
        eprintln!(
            "chorus-load: warning: open-file limit {nofile} < {needed} needed for {participants} participants"
        );
    }

    for (url, authority) in spread.nodes.iter().zip(&authorities) {
        match tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(authority),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("node unreachable at {url}: {e}"),
            Err(_) => bail!("node unreachable at {url}: connect timed out"),
        }
    }
    let mut nodes = Vec::new();
    for &pid in &args.node_pid {
        let node = Node {
            pid: pid.to_string(),
            clk_tck: procfs::clock_ticks_per_second(),
        };
        procfs::cpu_ticks(&node.pid).with_context(|| format!("--node-pid {pid}"))?;
        nodes.push(node);
    }
    if args.signaling_only {
        if nodes.len() > 1 {
            bail!("--signaling-only takes one --node-pid");
        }
        drop(nodes);
        let ws_url = ws_urls.swap_remove(0);
        return sigonly::run(args, ws_url, participants).await;
    }
    let rss_before = nodes_sum(&nodes, Node::rss_kb);

    let cert = str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate()
        .context("generating the clients' DTLS certificate")?;
    let start = Instant::now();
    let cfg = RunConfig {
        start,
        interval: args.interval,
        packet_bytes: usize::from(args.packet_bytes),
        level_dbov: args.level_dbov,
        listeners_send_silence: args.listeners == Listeners::Silence,
        rooms: args.rooms,
        speakers: args.speakers,
        bind_ip: args.bind_ip,
        cert,
        churn: args.churn_every.is_some(),
        tcp: args.transport == cli::Transport::Tcp,
        video: (args.cameras > 0).then(|| {
            video::VideoLoad::new(
                args.cameras,
                args.video_fps,
                args.video_kbps,
                args.video_quality,
            )
        }),
        spread: spread.clone(),
    };
    if args.cameras > args.per_room {
        bail!("--cameras {} > --per-room {}", args.cameras, args.per_room);
    }
    if args.cameras > 16 {
        bail!(
            "--cameras {}: a room has at most 16 video slots",
            args.cameras
        );
    }
    let shared = Arc::new(Shared::new(participants as usize, args.workers as usize));
    let mut workers = Vec::new();
    for id in 0..args.workers as usize {
        workers.push(WorkerHandle::spawn(id, cfg.clone(), shared.clone())?);
    }
    let room_prefix = args.room_prefix.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!("load{}", secs % 1_000_000)
    });
    let sig = Arc::new(Signaling {
        ws_urls,
        room_prefix,
        connect_timeout: args.connect_timeout,
        cfg,
        shared: shared.clone(),
        workers,
        signaled: AtomicU64::new(0),
        failures: Mutex::new(BTreeMap::new()),
        failed: AtomicU64::new(0),
        early_closes: Mutex::new(BTreeMap::new()),
        errors_after_join: Mutex::new(BTreeMap::new()),
        audio_slots: AtomicU64::new(0),
        churn: ChurnCounters::default(),
        ids: Mutex::new(Default::default()),
        video_go: watch::channel(false).0,
        subscriptions: AtomicU64::new(0),
        video_slot_maps: AtomicU64::new(0),
    });
    if args.proximity.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        bail!("--proximity must be a positive radius");
    }
    if !args.control.is_empty() {
        let names: Vec<String> = (0..args.rooms).map(|r| sig.room_name(r)).collect();
        proximity::create_rooms(
            &args.control,
            &names,
            args.per_room,
            args.audio_slots,
            args.proximity,
            (args.cameras > 0).then_some(args.cameras as u8),
            spread.spans(),
        )
        .await?;
    }
    let plan = match (args.proximity, args.control.first()) {
        (Some(radius), Some(control)) => Some(proximity::Plan {
            control: control.clone(),
            radius,
            hz: args.positions_hz,
            world: args.world.unwrap_or(3.0 * radius),
        }),
        _ => None,
    };
    if let Some(every) = args.churn_every {
        if every < Duration::from_millis(100) {
            bail!("--churn-every must be at least 100ms");
        }
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut rng = Rng::new(seed);
    let (window_tx, window_rx) = watch::channel(None);

    let phase = Arc::new(AtomicU8::new(PHASE_RAMP));
    let progress = tokio::spawn(progress(
        sig.clone(),
        phase.clone(),
        participants,
        args.node_pid
            .iter()
            .map(|p| Node {
                pid: p.to_string(),
                clk_tck: procfs::clock_ticks_per_second(),
            })
            .collect(),
    ));

    // Ramp.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(participants as usize);
    let t0 = tokio::time::Instant::now();
    for g in 0..participants {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(f64::from(g) / args.ramp)).await;
        if g >= 20
            && sig.signaled.load(Ordering::Relaxed) == 0
            && sig.failed.load(Ordering::Relaxed) >= 20
        {
            eprintln!("chorus-load: the first 20 joins all failed; giving up");
            break;
        }
        let churn = args.churn_every.map(|every| Churn {
            every,
            rng: Rng::new(rng.next_u64()),
            window: window_rx.clone(),
        });
        tasks.push(tokio::spawn(signal::participant(
            sig.clone(),
            g,
            stop_rx.clone(),
            churn,
        )));
    }
    let started = tasks.len() as u64;
    phase.store(PHASE_CONNECT, Ordering::Relaxed);
    // Wait for signaling to finish, then for DTLS.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while sig.signaled.load(Ordering::Relaxed) + sig.failed.load(Ordering::Relaxed) < started
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = tokio::time::Instant::now() + args.connect_timeout;
    while connected(&shared) < sig.signaled.load(Ordering::Relaxed)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ramp_s = start.elapsed().as_secs_f64();
    // The backend's position loop runs from now until the window ends.
    let (positions_stop, positions_rx) = watch::channel(false);
    let positions = plan.clone().map(|plan| {
        tokio::spawn(proximity::run(
            plan,
            sig.clone(),
            args.rooms,
            args.per_room,
            positions_rx,
        ))
    });
    let rss_after_ramp = nodes_sum(&nodes, Node::rss_kb);
    let connected_n = connected(&shared);
    // Video: everyone subscribes now (the settle time lets the bandwidth estimates
    // grow to the layers asked for; give it several seconds).
    sig.video_go.send_replace(true);

    // Measurement window.
    let mut window = None;
    if connected_n > 0 {
        phase.store(PHASE_SETTLE, Ordering::Relaxed);
        let ws = start.elapsed() + args.settle.max(MIN_SETTLE);
        let we = ws + args.duration;
        shared
            .window_start_ns
            .store(ws.as_nanos() as u64, Ordering::Relaxed);
        shared
            .window_end_ns
            .store(we.as_nanos() as u64, Ordering::Relaxed);
        let _ = window_tx.send(Some(((start + ws).into(), (start + we).into())));
        tokio::time::sleep_until((start + ws).into()).await;
        phase.store(PHASE_MEASURE, Ordering::Relaxed);
        let cpu0: Vec<Option<u64>> = nodes.iter().map(Node::cpu_ticks).collect();
        let user0 = nodes_sum(&nodes, Node::user_ticks);
        let self0 = procfs::cpu_ticks("self").ok();
        let udp0 = udp_sample(&shared);
        let host0 = procfs::host_ticks();
        let wait0 = nodes_sum(&nodes, |n| procfs::runqueue_wait_ns(&n.pid));
        // The relay counters are read after the CPU (a few ms of HTTP on each edge).
        let relay0 = if spread.spans() {
            relay_sample(&authorities).await
        } else {
            Vec::new()
        };
        tokio::time::sleep_until((start + we).into()).await;
        let cpu1: Vec<Option<u64>> = nodes.iter().map(Node::cpu_ticks).collect();
        let user1 = nodes_sum(&nodes, Node::user_ticks);
        let self1 = procfs::cpu_ticks("self").ok();
        let host1 = procfs::host_ticks();
        let wait1 = nodes_sum(&nodes, |n| procfs::runqueue_wait_ns(&n.pid));
        let rss_end = nodes_sum(&nodes, Node::rss_kb);
        let relay1 = if spread.spans() {
            relay_sample(&authorities).await
        } else {
            Vec::new()
        };
        let node_ticks_each: Vec<Option<u64>> = cpu0
            .iter()
            .zip(&cpu1)
            .map(|(a, b)| a.zip(*b).map(|(a, b)| b.saturating_sub(a)))
            .collect();
        let _ = positions_stop.send(true);
        sig.churn.over.store(true, Ordering::Relaxed);
        phase.store(PHASE_DONE, Ordering::Relaxed);
        progress.abort();
        eprintln!(
            "[{:7.1}s] done    window ended; stopping",
            start.elapsed().as_secs_f64()
        );
        tokio::time::sleep(GRACE).await;
        // Rejoins under way finish before the media stops (their clients would fail).
        let busy_deadline =
            tokio::time::Instant::now() + args.connect_timeout + Duration::from_secs(35);
        while sig.churn.busy.load(Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < busy_deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // After the grace: drops of packets sent in the window land by then.
        let udp1 = udp_sample(&shared);
        window = Some(WindowSamples {
            start_ns: ws.as_nanos() as u64,
            end_ns: we.as_nanos() as u64,
            udp: udp0.delta(&udp1),
            host_ticks: host0
                .zip(host1)
                .map(|(a, b)| (b.0.saturating_sub(a.0), b.1.saturating_sub(a.1))),
            node_wait_ns: wait0.zip(wait1).map(|(a, b)| b.saturating_sub(a)),
            node_ticks: (!node_ticks_each.is_empty())
                .then(|| node_ticks_each.iter().copied().sum())
                .flatten(),
            node_ticks_each,
            node_user_ticks: user0.zip(user1).map(|(a, b)| b.saturating_sub(a)),
            relay: relay0
                .iter()
                .zip(&relay1)
                .map(|(a, b)| a.zip(*b).map(|(a, b)| a.delta(&b)))
                .collect(),
            self_ticks: self0.zip(self1).map(|(a, b)| b.saturating_sub(a)),
            rss_end,
        });
    } else {
        eprintln!("chorus-load: no participant connected; nothing to measure");
    }
    phase.store(PHASE_DONE, Ordering::Relaxed);
    progress.abort();

    // Stop the media first (so nothing more is counted), then leave.
    let reports = stop_workers(&sig).await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        for t in tasks {
            let _ = t.await;
        }
    })
    .await;

    let clk_tck = nodes.first().map_or(100, |n| n.clk_tck);
    let self_clk = procfs::clock_ticks_per_second();
    let result = summarize(Summary {
        args: &args,
        participants,
        started,
        sig: &sig,
        reports: &reports,
        window: window.as_ref(),
        clk_tck,
        self_clk,
        ramp_s,
        rss_before,
        rss_after_ramp,
        seed,
    });
    let mut result = result;
    if let Some(task) = positions {
        let _ = positions_stop.send(true);
        result["proximity"] = match task.await {
            Ok(Ok(report)) => {
                let mut v = report.json();
                if let Some(plan) = &plan {
                    v["radius"] = json!(plan.radius);
                    v["world"] = json!(plan.world);
                    v["hz"] = json!(plan.hz);
                }
                v
            }
            Ok(Err(e)) => json!({"error": e.to_string()}),
            Err(e) => json!({"error": e.to_string()}),
        };
    }
    println!("{result}");
    let failures = result["join_failures"].as_u64().unwrap_or(0);
    if failures > 0 || window.is_none() {
        eprintln!(
            "chorus-load: {failures} of {participants} participants failed to join or connect: {}",
            result["join_failure_reasons"]
        );
        return Ok(ExitCode::from(1));
    }
    let churn_failures = sig.churn.failed_joins.load(Ordering::Relaxed);
    if churn_failures > 0 {
        eprintln!(
            "chorus-load: {churn_failures} rejoins failed: {}",
            result["churn"]["failure_reasons"]
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

struct WindowSamples {
    start_ns: u64,
    end_ns: u64,
    /// Host (busy, total) ticks over all CPUs.
    host_ticks: Option<(u64, u64)>,
    /// Time the node's threads waited for a CPU.
    node_wait_ns: Option<u64>,
    udp: UdpSample,
    node_ticks: Option<u64>,
    /// Each `--node-pid`'s share of `node_ticks`.
    node_ticks_each: Vec<Option<u64>>,
    /// Of `node_ticks`, the user time (the rest is the kernel's).
    node_user_ticks: Option<u64>,
    /// With several nodes: each node's relay counters over the window.
    relay: Vec<Option<metrics::Relay>>,
    self_ticks: Option<u64>,
    rss_end: Option<u64>,
}

/// Receive-buffer drops: the node's media socket(s), the clients' sockets, the host.
#[derive(Debug, Clone, Copy, Default)]
struct UdpSample {
    node: Option<u64>,
    clients: u64,
    host: Option<u64>,
}

impl UdpSample {
    fn delta(&self, later: &UdpSample) -> UdpSample {
        UdpSample {
            node: self.node.zip(later.node).map(|(a, b)| b.saturating_sub(a)),
            clients: later.clients.saturating_sub(self.clients),
            host: self.host.zip(later.host).map(|(a, b)| b.saturating_sub(a)),
        }
    }
}

fn udp_sample(shared: &Shared) -> UdpSample {
    let drops = procfs::udp_drops();
    let node_ports: Vec<u16> = shared
        .node_media
        .lock()
        .map(|n| n.iter().map(|a| a.port()).collect())
        .unwrap_or_default();
    let ports: HashSet<u16> = shared
        .client_ports
        .lock()
        .map(|p| p.iter().copied().collect())
        .unwrap_or_default();
    UdpSample {
        node: (!node_ports.is_empty()).then(|| {
            drops
                .iter()
                .filter(|(p, _)| node_ports.contains(p))
                .map(|(_, d)| d)
                .sum()
        }),
        clients: drops
            .iter()
            .filter(|(p, _)| ports.contains(p))
            .map(|(_, d)| d)
            .sum(),
        host: procfs::rcvbuf_errors(),
    }
}

fn connected(shared: &Shared) -> u64 {
    shared
        .workers
        .iter()
        .map(|w| w.connected.load(Ordering::Relaxed))
        .sum()
}

async fn stop_workers(sig: &Arc<Signaling>) -> Vec<WorkerReport> {
    let sig = sig.clone();
    tokio::task::spawn_blocking(move || {
        // Each worker finishes its current pass, then hands back its report.
        let mut out = Vec::new();
        for w in &sig.workers {
            w.send(worker::Cmd::Stop);
        }
        for w in &sig.workers {
            if let Some(r) = w.join() {
                out.push(r);
            }
        }
        out
    })
    .await
    .unwrap_or_default()
}

/// Prints one line per second to stderr.
async fn progress(sig: Arc<Signaling>, phase: Arc<AtomicU8>, participants: u32, nodes: Vec<Node>) {
    let start = sig.cfg.start;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (mut last_sent, mut last_recv) = (0u64, 0u64);
    let mut last_cpu = nodes_sum(&nodes, Node::cpu_ticks);
    let mut last_t = Instant::now();
    let mut first_drops: Option<u64> = None;
    loop {
        tick.tick().await;
        let now = Instant::now();
        let dt = now.duration_since(last_t).as_secs_f64().max(1e-3);
        last_t = now;
        let mut sent = 0;
        let mut recv = 0;
        let mut connected = 0;
        let mut lat = Hist::default();
        for w in &sig.shared.workers {
            sent += w.sent.load(Ordering::Relaxed);
            recv += w.received.load(Ordering::Relaxed);
            connected += w.connected.load(Ordering::Relaxed);
            if let Ok(h) = w.latency.lock() {
                lat.merge(&h);
            }
        }
        let cpu = nodes_sum(&nodes, Node::cpu_ticks);
        let cpu_pct = match (nodes.first(), last_cpu, cpu) {
            (Some(n), Some(a), Some(b)) => {
                format!(
                    "{:.0}%",
                    (b.saturating_sub(a)) as f64 / n.clk_tck as f64 / dt * 100.0
                )
            }
            _ => "-".to_owned(),
        };
        last_cpu = cpu;
        let drops = udp_sample(&sig.shared).node.map_or("-".to_owned(), |d| {
            d.saturating_sub(*first_drops.get_or_insert(d)).to_string()
        });
        let p99 = lat
            .quantile(0.99)
            .map_or("-".to_owned(), |v| format!("{:.2} ms", v as f64 / 1e6));
        let phase = match phase.load(Ordering::Relaxed) {
            PHASE_RAMP => "ramp",
            PHASE_CONNECT => "connect",
            PHASE_SETTLE => "settle",
            PHASE_MEASURE => "measure",
            _ => "done",
        };
        let c = &sig.churn;
        let churn = if sig.cfg.churn {
            format!(
                ", churn joins {} leaves {} mutes {} unmutes {} failed {}",
                c.joins.load(Ordering::Relaxed),
                c.leaves.load(Ordering::Relaxed),
                c.mutes.load(Ordering::Relaxed),
                c.unmutes.load(Ordering::Relaxed),
                c.failed_joins.load(Ordering::Relaxed),
            )
        } else {
            String::new()
        };
        eprintln!(
            "[{:7.1}s] {phase:<7} connected {connected}/{participants} (failed {}), sent {:.0} pps, recv {:.0} pps, p99 {p99} (so far), node cpu {cpu_pct}, node udp drops {drops}{churn}",
            start.elapsed().as_secs_f64(),
            sig.failed.load(Ordering::Relaxed),
            (sent - last_sent) as f64 / dt,
            (recv - last_recv) as f64 / dt,
        );
        last_sent = sent;
        last_recv = recv;
    }
}

struct Summary<'a> {
    args: &'a Args,
    participants: u32,
    started: u64,
    sig: &'a Signaling,
    reports: &'a [WorkerReport],
    window: Option<&'a WindowSamples>,
    clk_tck: u64,
    self_clk: u64,
    ramp_s: f64,
    rss_before: Option<u64>,
    rss_after_ramp: Option<u64>,
    seed: u64,
}

fn ms(ns: Option<u64>) -> Value {
    ns.map_or(Value::Null, |v| json!(round3(v as f64 / 1e6)))
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn map_json(m: &Mutex<BTreeMap<String, u64>>) -> Value {
    m.lock().map_or(Value::Null, |m| json!(*m))
}

fn summarize(s: Summary<'_>) -> Value {
    let args = s.args;
    let rooms = args.rooms;
    let duration_s = args.duration.as_secs_f64();
    let mut by_global = vec![None; s.participants as usize];
    let mut latency = Hist::default();
    let (mut same_node, mut cross_node) = (Hist::default(), Hist::default());
    let (mut received, mut sent) = (0u64, 0u64);
    let (mut foreign, mut send_errors, mut rtc_errors, mut ice_disconnects) = (0, 0, 0, 0);
    for r in s.reports {
        latency.merge(&r.window_latency);
        same_node.merge(&r.window_latency_same_node);
        cross_node.merge(&r.window_latency_cross_node);
        received += r.window_received;
        sent += r.window_sent;
        foreign += r.foreign;
        send_errors += r.send_errors;
        rtc_errors += r.rtc_errors;
        ice_disconnects += r.ice_disconnects;
        for c in &r.clients {
            // The first client of each slot (with churn, later ones have other ids).
            if let Some(slot) = by_global.get_mut(c.id as usize) {
                *slot = Some(c);
            }
        }
    }
    let churn = args.churn_every.is_some();

    // Loss: every connected receiver should get every other speaker of its room.
    let mut totals = LossTotals::default();
    let mut connected = 0u64;
    let mut late = 0u64;
    let window_start = s.window.map_or(0, |w| w.start_ns);
    let mut join_ms = Vec::new();
    let mut join_no_audio = 0u64;
    for (g, c) in by_global.iter().enumerate() {
        let Some(c) = c.filter(|c| c.connected) else {
            continue;
        };
        connected += 1;
        let g = g as u32;
        let room = g % rooms;
        // One that connected during the window is not expected to hear all of it.
        let late_receiver = c.connected_ns.is_none_or(|t| t > window_start);
        late += u64::from(late_receiver);
        if churn {
            continue; // accounted below, over every client
        }
        for p in 0..args.speakers {
            if late_receiver {
                break;
            }
            let sender = p * rooms + room;
            if sender == g {
                continue;
            }
            let range = by_global
                .get(sender as usize)
                .copied()
                .flatten()
                .and_then(|s| s.window_sent);
            let stream = c
                .streams
                .iter()
                .find(|(from, _)| *from == sender)
                .map(|(_, st)| st);
            totals.add(range, stream);
        }
        if c.join_eligible {
            match c.join_to_first_rx_ns {
                Some(ns) => join_ms.push(ns as f64 / 1e6),
                None => join_no_audio += 1,
            }
        }
    }
    let churn_json = if churn {
        let c = churn_summary(&s, &mut join_ms, &mut join_no_audio);
        totals = c.1;
        c.0
    } else {
        Value::Null
    };
    join_ms.sort_by(f64::total_cmp);

    let signal_failures = s.sig.failed.load(Ordering::Relaxed);
    let signaled = s.sig.signaled.load(Ordering::Relaxed);
    let not_connected = signaled.saturating_sub(connected);
    let not_started = u64::from(s.participants) - s.started;
    let mut reasons = s.sig.failures.lock().map(|m| m.clone()).unwrap_or_default();
    if not_connected > 0 {
        reasons.insert("ICE/DTLS did not connect".into(), not_connected);
    }
    if not_started > 0 {
        reasons.insert("not started (early failures)".into(), not_started);
    }
    let join_failures = signal_failures + not_connected + not_started;

    let w = s.window;
    let node_cpu_s = w
        .and_then(|w| w.node_ticks)
        .map(|t| t as f64 / s.clk_tck as f64);
    let self_cpu_s = w
        .and_then(|w| w.self_ticks)
        .map(|t| t as f64 / s.self_clk as f64);
    let cpu_us_per_packet = node_cpu_s
        .filter(|_| received > 0)
        .map(|c| round3(c * 1e6 / received as f64));
    // Host CPU in "percent of one core", like the node's and the client's figures.
    let host_pct = w.and_then(|w| w.host_ticks).map(|(busy, total)| {
        let cores = total as f64 / (s.self_clk as f64 * duration_s);
        busy as f64 / total.max(1) as f64 * cores * 100.0
    });
    let other_pct = host_pct.map(|h| {
        h - node_cpu_s.map_or(0.0, |c| c / duration_s * 100.0)
            - self_cpu_s.map_or(0.0, |c| c / duration_s * 100.0)
    });
    let video = summarize_video(&s, node_cpu_s, received);
    let rss_per = s
        .rss_before
        .zip(s.rss_after_ramp)
        .filter(|_| connected > 0)
        .map(|(a, b)| round3((b as f64 - a as f64) / connected as f64));
    let slots = s.sig.audio_slots.load(Ordering::Relaxed);

    let spans = s.sig.cfg.spread.spans();
    let several = spans || args.node_pid.len() > 1;
    let speaker_window = |g: u32| {
        by_global
            .get(g as usize)
            .copied()
            .flatten()
            .and_then(|c| c.window_sent)
    };
    let (nodes_json, relay_json) = if several {
        summarize_nodes(&s, &speaker_window)
    } else {
        (Value::Null, Value::Null)
    };
    let mut out = json!({
        "participants": s.participants,
        "rooms": rooms,
        "per_room": args.per_room,
        "speakers": args.speakers,
        "audio_slots": slots,
        "connected": connected,
        "join_failures": join_failures,
        "join_failure_reasons": reasons,
        "late_connected": late,
        "duration_s": duration_s,
        "ramp_s": round3(s.ramp_s),
        "interval_ms": args.interval.as_secs_f64() * 1e3,
        "packet_bytes": args.packet_bytes,
        "listeners": if args.listeners == Listeners::Silence { "silence" } else { "nothing" },
        "workers": args.workers,
        "sent_pps": round3(sent as f64 / duration_s),
        "forwarded_pps": round3(received as f64 / duration_s),
        "expected": totals.expected,
        "lost": totals.lost(),
        "loss": totals.loss(),
        "duplicates": totals.duplicates,
        "reordered": totals.reordered,
        "latency_ms": latency_json(&latency),
        // On one node every listener shares the speaker's node.
        "latency_same_node_ms": latency_json(if spans { &same_node } else { &latency }),
        "latency_cross_node_ms": latency_json(&cross_node),
        "latency_note": "receive time minus send time in one process; includes client-side SRTP encrypt and decrypt and client scheduling",
        "join_ms": {
            "p50": quantile_sorted(&join_ms, 0.5).map(round3),
            "p99": quantile_sorted(&join_ms, 0.99).map(round3),
            "count": join_ms.len(),
            "no_audio": join_no_audio,
        },
        "node_pid": args.node_pid.first(),
        "node_cpu_pct": node_cpu_s.map(|c| round3(c / duration_s * 100.0)),
        "node_user_pct": w
            .and_then(|w| w.node_user_ticks)
            .map(|t| round3(t as f64 / s.clk_tck as f64 / duration_s * 100.0)),
        "cpu_us_per_packet": cpu_us_per_packet,
        "rss_kb_before": s.rss_before,
        "rss_kb_after_ramp": s.rss_after_ramp,
        "rss_kb_end": w.and_then(|w| w.rss_end),
        "rss_kb_per_participant": rss_per,
        "client_cpu_pct": self_cpu_s.map(|c| round3(c / duration_s * 100.0)),
        "host_cpu_pct": host_pct.map(round3),
        "other_cpu_pct": other_pct.map(|v| round3(v.max(0.0))),
        "node_runqueue_wait_pct": w
            .and_then(|w| w.node_wait_ns)
            .map(|ns| round3(ns as f64 / 1e9 / duration_s * 100.0)),
        "client_cpu_note": "the load clients (WebRTC + WebSocket) run on the same machine and take this share of CPU from the node",
        "early_closes": map_json(&s.sig.early_closes),
        "errors_after_join": map_json(&s.sig.errors_after_join),
        "udp_drops": {
            "node_socket": w.and_then(|w| w.udp.node),
            "client_sockets": w.map(|w| w.udp.clients),
            "host_rcvbuf_errors": w.and_then(|w| w.udp.host),
        },
        "ice_disconnects": ice_disconnects,
        "send_errors": send_errors,
        "rtc_errors": rtc_errors,
        "foreign_packets": foreign,
        "churn": churn_json,
        "video": video,
    });
    if several {
        out["nodes"] = nodes_json;
        out["relay"] = relay_json;
    }
    out
}

/// `p50`, `p95`, `p99`, `max` of a latency histogram, in ms (`null`s when empty).
fn latency_json(h: &Hist) -> Value {
    json!({
        "p50": ms(h.quantile(0.5)),
        "p95": ms(h.quantile(0.95)),
        "p99": ms(h.quantile(0.99)),
        "max": ms((h.count() > 0).then(|| h.max())),
    })
}

/// With several nodes: each node's CPU and relay counters over the window (the
/// `i`-th `--node-pid` is the `i`-th distinct `--url`), and the relay's totals
/// against one copy per speaker packet per other node holding members of its room
/// (`expected_packets_out`; without churn). `speaker_window`: a slot's window counter
/// range.
fn summarize_nodes(
    s: &Summary<'_>,
    speaker_window: &dyn Fn(u32) -> Option<(u32, u32)>,
) -> (Value, Value) {
    let args = s.args;
    let duration_s = args.duration.as_secs_f64();
    let spread = &s.sig.cfg.spread;
    let w = s.window;
    let count = spread.nodes.len().max(args.node_pid.len());
    let relay_of = |i: usize| w.and_then(|w| w.relay.get(i).copied().flatten());
    let nodes: Vec<Value> = (0..count)
        .map(|i| {
            let ticks = w.and_then(|w| w.node_ticks_each.get(i).copied().flatten());
            json!({
                "url": spread.nodes.get(i),
                "pid": args.node_pid.get(i),
                "cpu_pct": ticks.map(|t| round3(t as f64 / s.clk_tck as f64 / duration_s * 100.0)),
                "relay": relay_of(i).map(|r| r.json()),
            })
        })
        .collect();
    let mut total = metrics::Relay::default();
    let mut complete = spread.spans();
    for i in 0..spread.nodes.len() {
        match relay_of(i) {
            Some(r) => total.add(&r),
            None => complete = false,
        }
    }
    let expected = (args.churn_every.is_none()).then(|| {
        let mut expected = 0u64;
        for room in 0..args.rooms {
            let members = spread.members_per_node(room);
            for p in 0..args.speakers {
                let g = p * args.rooms + room;
                let home = spread.node_of(g);
                let others = members
                    .iter()
                    .enumerate()
                    .filter(|&(n, &m)| n != home && m > 0)
                    .count() as u64;
                if let Some((first, last)) = speaker_window(g) {
                    expected += (u64::from(last) - u64::from(first) + 1) * others;
                }
            }
        }
        expected
    });
    let relay = if complete {
        json!({
            "packets_out": total.packets_out,
            "packets_in": total.packets_in,
            "bytes_out": total.bytes_out,
            "bytes_in": total.bytes_in,
            "packets_out_per_s": round3(total.packets_out as f64 / duration_s),
            "bytes_out_per_packet": (total.packets_out > 0)
                .then(|| round3(total.bytes_out as f64 / total.packets_out as f64)),
            "expected_packets_out": expected,
            "out_per_expected": expected
                .filter(|&e| e > 0)
                .map(|e| (total.packets_out as f64 / e as f64 * 1e5).round() / 1e5),
            "note": "the nodes' chorus_relay_* counters, read from /metrics at the window's edges; expected: each speaker's window packets times the other nodes holding members of its room",
        })
    } else {
        Value::Null
    };
    (Value::Array(nodes), relay)
}

/// The `video` object of the JSON (null without `--cameras`): what the cameras sent
/// and the slots received inside the window, and the node's CPU per forwarded packet
/// over audio and video together (`audio_received`: the audio packets received).
fn summarize_video(s: &Summary<'_>, node_cpu_s: Option<f64>, audio_received: u64) -> Value {
    let args = s.args;
    if args.cameras == 0 {
        return Value::Null;
    }
    let mut v = video::VideoCounts::default();
    for r in s.reports {
        v.merge(&r.video);
    }
    let duration_s = args.duration.as_secs_f64();
    // RTP header (12) + the extensions a slot carries (~8) + SRTP tag (16) + UDP/IP (28).
    const OVERHEAD: u64 = 12 + 8 + 16 + 28;
    let wire_bits = (v.payload_bytes + v.received * OVERHEAD) * 8;
    let mbps = wire_bits as f64 / duration_s / 1e6;
    let forwarded = v.received + audio_received;
    let cores = node_cpu_s.map(|c| c / duration_s);
    let layers = v.per_layer;
    let total = layers.iter().sum::<u64>().max(1) as f64;
    let cfg = s.sig.cfg.video.as_ref();
    json!({
        "cameras_per_room": args.cameras,
        "fps": args.video_fps,
        "layer_kbps": args.video_kbps,
        "packets_per_frame": cfg.map(video::VideoLoad::packets_per_frame),
        "quality": format!("{:?}", args.video_quality).to_lowercase(),
        "subscriptions": s.sig.subscriptions.load(Ordering::Relaxed),
        "video_slot_maps": s.sig.video_slot_maps.load(Ordering::Relaxed),
        "sent_pps": round3(v.sent as f64 / duration_s),
        "forwarded_pps": round3(v.received as f64 / duration_s),
        "forwarded_mbps": round3(mbps),
        "forwarded_layers": {
            "low": round3(layers[0] as f64 / total),
            "medium": round3(layers[1] as f64 / total),
            "high": round3(layers[2] as f64 / total),
        },
        "keyframe_requests": v.keyframe_requests,
        "latency_ms": {
            "p50": ms(v.latency.quantile(0.5)),
            "p99": ms(v.latency.quantile(0.99)),
        },
        "node_cpu_us_per_forwarded_packet": node_cpu_s
            .filter(|_| forwarded > 0)
            .map(|c| round3(c * 1e6 / forwarded as f64)),
        "forwarded_mbps_per_core": cores
            .filter(|c| *c > 0.0)
            .map(|c| round3(mbps / c)),
        "note": "audio and video packets together: node CPU in the window over every packet the clients received of it; Mbit/s counts the video copies on the wire (payload plus RTP, SRTP and UDP/IP headers)",
    })
}

/// With churn: loss over the steady (receiver, speaker) pairs and join times over every
/// client (see `churn.rs`), and the `churn` object of the JSON.
fn churn_summary(
    s: &Summary<'_>,
    join_ms: &mut Vec<f64>,
    join_no_audio: &mut u64,
) -> (Value, LossTotals) {
    let args = s.args;
    let rooms = args.rooms;
    let guard = args.churn_guard.as_nanos() as u64;
    let clients: Vec<_> = s.reports.iter().flat_map(|r| &r.clients).collect();
    let lives: Vec<Life<'_>> = clients
        .iter()
        .map(|c| Life {
            id: c.id,
            slot: c.global,
            connected_ns: c.connected_ns.filter(|_| c.connected),
            left_ns: c.left_ns,
            window_first: c.window_sent.map(|w| w.0),
            window_send_ns: &c.window_send_ns,
            mute_changes: &c.mute_changes,
            streams: &c.streams,
        })
        .collect();
    let window = s.window.map_or((0, 0), |w| (w.start_ns, w.end_ns));
    let mut loss = churn::ChurnLoss::default();
    for room in 0..rooms {
        let members: Vec<(&Life<'_>, &&worker::ClientReport)> = lives
            .iter()
            .zip(&clients)
            .filter(|(l, _)| l.slot % rooms == room)
            .collect();
        let receivers: Vec<&Life<'_>> = members.iter().map(|(l, _)| *l).collect();
        let speakers: Vec<&Life<'_>> = receivers
            .iter()
            .copied()
            .filter(|l| l.slot / rooms < args.speakers)
            .collect();
        let l = churn::room_loss(&speakers, &receivers, window, guard);
        loss.totals.expected += l.totals.expected;
        loss.totals.received += l.totals.received;
        loss.totals.duplicates += l.totals.duplicates;
        loss.totals.reordered += l.totals.reordered;
        loss.forwarded_while_muted += l.forwarded_while_muted;
        loss.muted_checked += l.muted_checked;
        for (life, c) in &members {
            if churn::join_eligible(life, c.join_sent_ns, &speakers, guard) {
                match c.join_to_first_rx_ns {
                    Some(ns) => join_ms.push(ns as f64 / 1e6),
                    None => *join_no_audio += 1,
                }
            }
        }
    }
    let ch = &s.sig.churn;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let value = json!({
        "every_s": args.churn_every.map(|d| d.as_secs_f64()),
        "guard_s": args.churn_guard.as_secs_f64(),
        "seed": s.seed,
        "joins": load(&ch.joins),
        "leaves": load(&ch.leaves),
        "mutes": load(&ch.mutes),
        "unmutes": load(&ch.unmutes),
        "failed_joins": load(&ch.failed_joins),
        "failure_reasons": map_json(&ch.failure_reasons),
        "lost_sockets": load(&ch.lost_sockets),
        "clients": clients.len(),
        "forwarded_while_muted": loss.forwarded_while_muted,
        "muted_packets_checked": loss.muted_checked,
        "note": "loss, expected, lost, duplicates, reordered: only packets sent while receiver and speaker were both connected, the speaker unmuted, and more than guard_s away from a join, leave or mute toggle of either",
    });
    (value, loss.totals)
}
