//! `--signaling-only`: WebSocket clients and nothing else.
//!
//! Every participant opens a WebSocket to `/v1/signal`, sends `join` and waits for
//! `joined`; it never offers, so it has no media and no media timeout
//! (`docs/protocol.md` §7). Once everyone joined (and `--settle` passed) the clients
//! send `--message-rate` messages per second in total for `--duration`: each client
//! its share at a fixed period from a random phase, a `mute` toggle for a
//! `--mute-share` of them and a `ping` for the rest. Measured:
//!
//! - `join_ms`: from sending `join` to receiving `joined` (`connect_ms`: the TCP
//!   connect and WebSocket upgrade before it);
//! - `answer_ms`: from sending a message to its answer: for `ping` the `pong` (its id
//!   is the send time), for `mute` the sender's own `participant_updated` with the new
//!   state (it comes back through the media engine and goes to the whole room);
//! - the node's CPU per client message in the window and per join in the ramp, and its
//!   RSS per joined participant, from `/proc` (`--node-pid`).
//!
//! All clients run on this process's one tokio thread.

use std::collections::{BTreeMap, VecDeque};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_protocol::signal::{ClientMessage, DisplayName, ParticipantId, RoomId, ServerMessage};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::churn::Rng;
use crate::cli::Args;
use crate::hist::Hist;
use crate::procfs;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long the connect and the join may take each.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
/// After the window: answers to window messages still count if they arrive by then.
const GRACE: Duration = Duration::from_secs(2);

const PHASE_RAMP: u8 = 0;
const PHASE_SETTLE: u8 = 1;
const PHASE_MEASURE: u8 = 2;
const PHASE_DONE: u8 = 3;

/// What the clients share.
struct Run {
    ws_url: String,
    room_prefix: String,
    rooms: u32,
    start: Instant,
    joined: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
    early_closes: Mutex<BTreeMap<String, u64>>,
    errors_after_join: Mutex<BTreeMap<String, u64>>,
    connect: Mutex<Hist>,
    join: Mutex<Hist>,
    ping: Mutex<Hist>,
    mute: Mutex<Hist>,
    pings_sent: AtomicU64,
    mutes_sent: AtomicU64,
    send_errors: AtomicU64,
    /// `participant_updated` about someone else (the room's fan-out of mutes).
    updates_of_others: AtomicU64,
    /// A `participant_updated` about oneself that matched no mute in flight.
    unexpected_updates: AtomicU64,
}

/// When the clients send: `(start, end)` once decided.
type Window = watch::Receiver<Option<(tokio::time::Instant, tokio::time::Instant)>>;

fn bump(map: &Mutex<BTreeMap<String, u64>>, key: String) {
    if let Ok(mut m) = map.lock() {
        *m.entry(key).or_default() += 1;
    }
}

fn record(h: &Mutex<Hist>, ns: u64) {
    if let Ok(mut h) = h.lock() {
        h.record(ns);
    }
}

fn merged(h: &Mutex<Hist>) -> Hist {
    h.lock().map(|h| h.clone()).unwrap_or_default()
}

impl Run {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn fail(&self, reason: String) {
        tracing::debug!("join failed: {reason}");
        self.failed.fetch_add(1, Ordering::Relaxed);
        bump(&self.failures, reason);
    }
}

/// The node's /proc figures.
struct Node {
    pid: String,
}

impl Node {
    fn cpu(&self) -> Option<u64> {
        procfs::cpu_ticks(&self.pid).ok()
    }
    fn rss(&self) -> Option<u64> {
        procfs::rss_kb(&self.pid).ok()
    }
}

/// Runs the signaling-only load and prints its JSON line.
pub async fn run(args: Args, ws_url: String, participants: u32) -> anyhow::Result<ExitCode> {
    if !(args.message_rate >= 0.0 && args.message_rate.is_finite()) {
        anyhow::bail!("--message-rate must be a number of messages per second, 0 or more");
    }
    if !(0.0..=1.0).contains(&args.mute_share) {
        anyhow::bail!("--mute-share must be between 0 and 1");
    }
    let node = args.node_pid.first().map(|p| Node { pid: p.to_string() });
    let clk_tck = procfs::clock_ticks_per_second();
    let room_prefix = args.room_prefix.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!("sig{}", secs % 1_000_000)
    });
    let run = Arc::new(Run {
        ws_url,
        room_prefix,
        rooms: args.rooms,
        start: Instant::now(),
        joined: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        failures: Mutex::default(),
        early_closes: Mutex::default(),
        errors_after_join: Mutex::default(),
        connect: Mutex::default(),
        join: Mutex::default(),
        ping: Mutex::default(),
        mute: Mutex::default(),
        pings_sent: AtomicU64::new(0),
        mutes_sent: AtomicU64::new(0),
        send_errors: AtomicU64::new(0),
        updates_of_others: AtomicU64::new(0),
        unexpected_updates: AtomicU64::new(0),
    });
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut rng = Rng::new(seed);
    // Each client's period: the total rate shared by everyone.
    let period = (args.message_rate > 0.0)
        .then(|| Duration::from_secs_f64(f64::from(participants) / args.message_rate));

    let rss_before = node.as_ref().and_then(Node::rss);
    let cpu_ramp0 = node.as_ref().and_then(Node::cpu);
    let phase = Arc::new(AtomicU8::new(PHASE_RAMP));
    let progress = tokio::spawn(progress(
        run.clone(),
        phase.clone(),
        participants,
        node.as_ref().map(|n| Node { pid: n.pid.clone() }),
        clk_tck,
    ));
    let (window_tx, window_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(participants as usize);
    let t0 = tokio::time::Instant::now();
    for g in 0..participants {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(f64::from(g) / args.ramp)).await;
        if g >= 20
            && run.joined.load(Ordering::Relaxed) == 0
            && run.failed.load(Ordering::Relaxed) >= 20
        {
            eprintln!("chorus-load: the first 20 joins all failed; giving up");
            break;
        }
        let client = Client {
            run: run.clone(),
            global: g,
            period,
            mute_share: args.mute_share,
            rng: Rng::new(rng.next_u64()),
        };
        tasks.push(tokio::spawn(
            client.live(window_rx.clone(), stop_rx.clone()),
        ));
    }
    let started = tasks.len() as u64;
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT * 2 + Duration::from_secs(5);
    while run.joined.load(Ordering::Relaxed) + run.failed.load(Ordering::Relaxed) < started
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ramp_s = run.start.elapsed().as_secs_f64();
    let cpu_ramp1 = node.as_ref().and_then(Node::cpu);
    let rss_after_ramp = node.as_ref().and_then(Node::rss);
    let joined = run.joined.load(Ordering::Relaxed);

    phase.store(PHASE_SETTLE, Ordering::Relaxed);
    let ws = tokio::time::Instant::now() + args.settle;
    let we = ws + args.duration;
    let _ = window_tx.send(Some((ws, we)));
    tokio::time::sleep_until(ws).await;
    phase.store(PHASE_MEASURE, Ordering::Relaxed);
    let cpu0 = node.as_ref().and_then(Node::cpu);
    let self0 = procfs::cpu_ticks("self").ok();
    let host0 = procfs::host_ticks();
    let wait0 = node.as_ref().and_then(|n| procfs::runqueue_wait_ns(&n.pid));
    tokio::time::sleep_until(we).await;
    let cpu1 = node.as_ref().and_then(Node::cpu);
    let self1 = procfs::cpu_ticks("self").ok();
    let host1 = procfs::host_ticks();
    let wait1 = node.as_ref().and_then(|n| procfs::runqueue_wait_ns(&n.pid));
    let rss_end = node.as_ref().and_then(Node::rss);
    phase.store(PHASE_DONE, Ordering::Relaxed);
    eprintln!(
        "[{:7.1}s] done    window ended; waiting {} s for answers, then leaving",
        run.start.elapsed().as_secs_f64(),
        GRACE.as_secs()
    );
    tokio::time::sleep(GRACE).await;
    progress.abort();
    // Answers counted now (later ones are unanswered), then everyone leaves.
    let ping = merged(&run.ping);
    let mute = merged(&run.mute);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        for t in tasks {
            let _ = t.await;
        }
    })
    .await;

    let duration_s = args.duration.as_secs_f64();
    let ticks = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| b.saturating_sub(a));
    let node_cpu_s = ticks(cpu0, cpu1).map(|t| t as f64 / clk_tck as f64);
    let self_cpu_s = ticks(self0, self1).map(|t| t as f64 / clk_tck as f64);
    let ramp_cpu_s = ticks(cpu_ramp0, cpu_ramp1).map(|t| t as f64 / clk_tck as f64);
    let host_pct = host0.zip(host1).map(|(a, b)| {
        let (busy, total) = (b.0.saturating_sub(a.0), b.1.saturating_sub(a.1));
        let cores = total as f64 / (clk_tck as f64 * duration_s);
        busy as f64 / total.max(1) as f64 * cores * 100.0
    });
    let other_pct = host_pct.map(|h| {
        h - node_cpu_s.map_or(0.0, |c| c / duration_s * 100.0)
            - self_cpu_s.map_or(0.0, |c| c / duration_s * 100.0)
    });
    let pings_sent = run.pings_sent.load(Ordering::Relaxed);
    let mutes_sent = run.mutes_sent.load(Ordering::Relaxed);
    let sent = pings_sent + mutes_sent;
    let answered = ping.count() + mute.count();
    let unanswered = sent.saturating_sub(answered);
    let mut all = ping.clone();
    all.merge(&mute);
    let connect = merged(&run.connect);
    let join = merged(&run.join);
    let per_participant = |rss: Option<u64>| {
        rss_before
            .zip(rss)
            .filter(|_| joined > 0)
            .map(|(a, b)| round3((b as f64 - a as f64) / joined as f64))
    };
    let failed = run.failed.load(Ordering::Relaxed) + u64::from(participants) - started;
    let result = json!({
        "signaling_only": true,
        "participants": participants,
        "rooms": args.rooms,
        "per_room": args.per_room,
        "joined": joined,
        "join_failures": failed,
        "join_failure_reasons": map_json(&run.failures),
        "ramp_per_s": args.ramp,
        "ramp_s": round3(ramp_s),
        "duration_s": duration_s,
        "message_rate": args.message_rate,
        "mute_share": args.mute_share,
        "sent": sent,
        "sent_per_s": round3(sent as f64 / duration_s),
        "answered": answered,
        "unanswered": unanswered,
        "answer_ms": hist_json(&all),
        "ping": { "sent": pings_sent, "answered": ping.count(), "ms": hist_json(&ping) },
        "mute": { "sent": mutes_sent, "answered": mute.count(), "ms": hist_json(&mute) },
        "updates_of_others": run.updates_of_others.load(Ordering::Relaxed),
        "unexpected_updates": run.unexpected_updates.load(Ordering::Relaxed),
        "join_ms": hist_json(&join),
        "connect_ms": hist_json(&connect),
        "node_pid": args.node_pid.first(),
        "node_cpu_pct": node_cpu_s.map(|c| round3(c / duration_s * 100.0)),
        "node_cpu_us_per_message": node_cpu_s
            .filter(|_| sent > 0)
            .map(|c| round3(c * 1e6 / sent as f64)),
        "node_cpu_us_per_join": ramp_cpu_s
            .filter(|_| joined > 0)
            .map(|c| round3(c * 1e6 / joined as f64)),
        "rss_kb_before": rss_before,
        "rss_kb_after_ramp": rss_after_ramp,
        "rss_kb_end": rss_end,
        "rss_kb_per_participant": per_participant(rss_after_ramp),
        "rss_kb_per_participant_end": per_participant(rss_end),
        "client_cpu_pct": self_cpu_s.map(|c| round3(c / duration_s * 100.0)),
        "host_cpu_pct": host_pct.map(round3),
        "other_cpu_pct": other_pct.map(|v| round3(v.max(0.0))),
        "node_runqueue_wait_pct": ticks(wait0, wait1)
            .map(|ns| round3(ns as f64 / 1e9 / duration_s * 100.0)),
        "early_closes": map_json(&run.early_closes),
        "errors_after_join": map_json(&run.errors_after_join),
        "send_errors": run.send_errors.load(Ordering::Relaxed),
        "seed": seed,
    });
    println!("{result}");
    if failed > 0 || joined == 0 {
        eprintln!(
            "chorus-load: {failed} of {participants} participants failed to join: {}",
            result["join_failure_reasons"]
        );
        return Ok(ExitCode::from(1));
    }
    if unanswered > 0 {
        eprintln!("chorus-load: {unanswered} of {sent} messages were not answered");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// One client: join, wait for the window, send its share, leave at the end.
struct Client {
    run: Arc<Run>,
    global: u32,
    period: Option<Duration>,
    mute_share: f64,
    rng: Rng,
}

impl Client {
    async fn live(mut self, mut window: Window, mut stop: watch::Receiver<bool>) {
        let run = self.run.clone();
        let (mut ws, me) = match self.join().await {
            Ok(j) => j,
            Err(reason) => return run.fail(reason),
        };
        run.joined.fetch_add(1, Ordering::Relaxed);
        // Mutes in flight: (the state asked for, send time in ns).
        let mut pending: VecDeque<(bool, u64)> = VecDeque::new();
        let mut muted = false;
        let mut sent = 0u64;
        let mut schedule: Option<(tokio::time::Instant, tokio::time::Instant)> = None;
        let mut window_live = true;
        loop {
            if schedule.is_none() {
                if let (Some((start, end)), Some(period)) =
                    (*window.borrow_and_update(), self.period)
                {
                    schedule = Some((start + period.mul_f64(self.rng.unit()), end));
                }
            }
            let due = schedule
                .filter(|(next, end)| next < end)
                .map(|(next, _)| next);
            tokio::select! {
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(text))) => self.on_text(&text, me, &mut pending),
                    Some(Ok(Message::Close(frame))) => {
                        let why = frame.map_or("close without code".to_owned(), |f| {
                            format!("close {} {}", u16::from(f.code), f.reason)
                        });
                        return bump(&run.early_closes, why);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return bump(&run.early_closes, format!("websocket error: {e}")),
                    None => return bump(&run.early_closes, "websocket ended".into()),
                },
                () = async {
                    match due {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {
                    // A mute toggle for `mute_share` of the messages, evenly spread.
                    let share = self.mute_share;
                    let is_mute = ((sent + 1) as f64 * share).floor() > (sent as f64 * share).floor();
                    sent += 1;
                    let now = run.now_ns();
                    let message = if is_mute {
                        muted = !muted;
                        pending.push_back((muted, now));
                        run.mutes_sent.fetch_add(1, Ordering::Relaxed);
                        ClientMessage::Mute { muted }
                    } else {
                        run.pings_sent.fetch_add(1, Ordering::Relaxed);
                        ClientMessage::Ping { id: now }
                    };
                    if send(&mut ws, &message).await.is_err() {
                        run.send_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    if let (Some((next, _)), Some(period)) = (schedule.as_mut(), self.period) {
                        *next += period;
                    }
                }
                c = window.changed(), if schedule.is_none() && window_live => {
                    // An error: the run ended before it measured; wait for the stop.
                    window_live = c.is_ok();
                }
                _ = stop.changed() => break,
            }
        }
        leave(ws).await;
    }

    async fn join(&mut self) -> Result<(Ws, ParticipantId), String> {
        let run = &self.run;
        let t = Instant::now();
        // Like a browser's WebSocket: Nagle off (else a message written while the
        // previous one is unacknowledged waits for the node's delayed ACK, up to
        // 40 ms), and small buffers (tungstenite zero-fills its whole read buffer,
        // 128 KiB by default, before every read: client CPU the node does not get).
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let mut ws = match tokio::time::timeout(
            STEP_TIMEOUT,
            tokio_tungstenite::connect_async_with_config(run.ws_url.as_str(), Some(config), true),
        )
        .await
        {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => return Err(format!("websocket connect: {e}")),
            Err(_) => return Err("websocket connect: timed out".into()),
        };
        record(&run.connect, t.elapsed().as_nanos() as u64);
        let room = self.global % run.rooms;
        let join = ClientMessage::Join {
            room: RoomId::new(&format!("{}-{room}", run.room_prefix))
                .map_err(|e| format!("room name: {e}"))?,
            name: DisplayName::new(&format!("sig {}", self.global)).map_err(|e| e.to_string())?,
            token: None,
            p2p: false,
        };
        let t = Instant::now();
        send(&mut ws, &join).await?;
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            let msg = tokio::time::timeout_at(deadline, ws.next())
                .await
                .map_err(|_| format!("no joined within {} s", STEP_TIMEOUT.as_secs()))?;
            let text = match msg {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(f))) => {
                    return Err(f.map_or("closed before joined".to_owned(), |f| {
                        format!("closed before joined: {} {}", u16::from(f.code), f.reason)
                    }))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("websocket: {e}")),
                None => return Err("websocket ended before joined".into()),
            };
            match serde_json::from_str::<ServerMessage>(&text) {
                Ok(ServerMessage::Joined { participant_id, .. }) => {
                    record(&run.join, t.elapsed().as_nanos() as u64);
                    return Ok((ws, participant_id));
                }
                Ok(ServerMessage::Error { code, message }) => {
                    return Err(format!("error {}: {message}", code.as_str()))
                }
                // Unknown types are skipped, as the protocol asks of clients.
                _ => {}
            }
        }
    }

    fn on_text(&self, text: &str, me: ParticipantId, pending: &mut VecDeque<(bool, u64)>) {
        let run = &self.run;
        let Ok(message) = serde_json::from_str::<ServerMessage>(text) else {
            return;
        };
        let now = run.now_ns();
        match message {
            ServerMessage::Pong { id } => record(&run.ping, now.saturating_sub(id)),
            ServerMessage::ParticipantUpdated { participant }
                if participant.participant_id == me =>
            {
                match pending.pop_front() {
                    Some((muted, at)) if muted == participant.muted => {
                        record(&run.mute, now.saturating_sub(at));
                    }
                    _ => {
                        run.unexpected_updates.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            ServerMessage::ParticipantUpdated { .. } => {
                run.updates_of_others.fetch_add(1, Ordering::Relaxed);
            }
            ServerMessage::Error { code, .. } => {
                bump(&run.errors_after_join, code.as_str().to_owned());
            }
            _ => {}
        }
    }
}

async fn send(ws: &mut Ws, msg: &ClientMessage) -> Result<(), String> {
    let text = serde_json::to_string(msg).map_err(|e| e.to_string())?;
    ws.send(Message::Text(text.into()))
        .await
        .map_err(|e| format!("websocket send: {e}"))
}

/// Sends `leave` and waits (2 s at most) for the node to close the socket.
async fn leave(mut ws: Ws) {
    let _ = send(&mut ws, &ClientMessage::Leave).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(m)) = ws.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn ms(ns: u64) -> Value {
    json!(round3(ns as f64 / 1e6))
}

fn hist_json(h: &Hist) -> Value {
    let q = |q: f64| h.quantile(q).map_or(Value::Null, ms);
    json!({
        "p50": q(0.5),
        "p95": q(0.95),
        "p99": q(0.99),
        "max": if h.count() > 0 { ms(h.max()) } else { Value::Null },
        "count": h.count(),
    })
}

fn map_json(m: &Mutex<BTreeMap<String, u64>>) -> Value {
    m.lock().map_or(Value::Null, |m| json!(*m))
}

/// One line per second to stderr.
async fn progress(
    run: Arc<Run>,
    phase: Arc<AtomicU8>,
    participants: u32,
    node: Option<Node>,
    clk_tck: u64,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last_cpu = node.as_ref().and_then(Node::cpu);
    let mut last_t = Instant::now();
    let mut last_sent = 0u64;
    loop {
        tick.tick().await;
        let now = Instant::now();
        let dt = now.duration_since(last_t).as_secs_f64().max(1e-3);
        last_t = now;
        let cpu = node.as_ref().and_then(Node::cpu);
        let cpu_pct = last_cpu.zip(cpu).map_or("-".to_owned(), |(a, b)| {
            format!(
                "{:.0}%",
                b.saturating_sub(a) as f64 / clk_tck as f64 / dt * 100.0
            )
        });
        last_cpu = cpu;
        let rss = node
            .as_ref()
            .and_then(Node::rss)
            .map_or("-".to_owned(), |kb| format!("{} MiB", kb / 1024));
        let sent = run.pings_sent.load(Ordering::Relaxed) + run.mutes_sent.load(Ordering::Relaxed);
        let mut all = merged(&run.ping);
        all.merge(&merged(&run.mute));
        let p99 = all
            .quantile(0.99)
            .map_or("-".to_owned(), |v| format!("{:.2} ms", v as f64 / 1e6));
        let join_p99 = merged(&run.join)
            .quantile(0.99)
            .map_or("-".to_owned(), |v| format!("{:.1} ms", v as f64 / 1e6));
        let phase = match phase.load(Ordering::Relaxed) {
            PHASE_RAMP => "ramp",
            PHASE_SETTLE => "settle",
            PHASE_MEASURE => "measure",
            _ => "done",
        };
        eprintln!(
            "[{:7.1}s] {phase:<7} joined {}/{participants} (failed {}), join p99 {join_p99}, sent {:.0} msg/s, answer p99 {p99} (so far), node cpu {cpu_pct}, rss {rss}",
            run.start.elapsed().as_secs_f64(),
            run.joined.load(Ordering::Relaxed),
            run.failed.load(Ordering::Relaxed),
            (sent - last_sent) as f64 / dt,
        );
        last_sent = sent;
    }
}
