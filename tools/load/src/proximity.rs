//! `--proximity`: the rooms are proximity rooms, made through the node's control
//! socket (`room.create` with `proximity: {radius}`), and a backend loop sends every
//! room's positions with `room.set_positions` at `--positions-hz`: all participants,
//! each walking on a circle of its own in a `--world`-wide square (speakers and
//! listeners alike). Each call's round trip (JSON both ways, the engine's work, the
//! reply) is the cost of a batch as a backend sees it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::watch;

use crate::hist::Hist;
use crate::signal::Signaling;

/// A JSON-RPC client on the node's control socket, one call at a time.
pub struct Control {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    write: tokio::net::unix::OwnedWriteHalf,
    next_id: u64,
}

impl Control {
    pub async fn connect(path: &Path) -> anyhow::Result<Control> {
        let stream = UnixStream::connect(path)
            .await
            .with_context(|| format!("control socket {}", path.display()))?;
        let (read, write) = stream.into_split();
        Ok(Control {
            lines: BufReader::new(read).lines(),
            write,
            next_id: 1,
        })
    }

    pub async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line =
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        line.push('\n');
        self.write.write_all(line.as_bytes()).await?;
        loop {
            let Some(answer) = self.lines.next_line().await? else {
                bail!("control socket closed");
            };
            let v: Value = serde_json::from_str(&answer)?;
            if v.get("id") != Some(&json!(id)) {
                continue; // an event notification
            }
            if let Some(e) = v.get("error") {
                bail!("{method}: {e}");
            }
            return Ok(v.get("result").cloned().unwrap_or(Value::Null));
        }
    }
}

/// What `--proximity` asks for.
#[derive(Debug, Clone)]
pub struct Plan {
    pub control: PathBuf,
    pub radius: f64,
    pub hz: f64,
    pub world: f64,
}

/// Creates the rooms through the control sockets (`raid` rooms of `per_room`; room
/// `i` through socket `i % count`), with `audio_slots` if given, as proximity rooms of
/// `radius` if given, with `span: true` if `span` (members on several nodes).
pub async fn create_rooms(
    controls: &[PathBuf],
    names: &[String],
    per_room: u32,
    audio_slots: Option<u8>,
    radius: Option<f64>,
    video_slots: Option<u8>,
    span: bool,
) -> anyhow::Result<()> {
    let mut sockets = Vec::with_capacity(controls.len());
    for path in controls {
        sockets.push(Control::connect(path).await?);
    }
    let count = sockets.len();
    for (i, name) in names.iter().enumerate() {
        let Some(control) = sockets.get_mut(i % count.max(1)) else {
            bail!("no control socket");
        };
        let mut params = json!({"room": name, "kind": "raid", "max_participants": per_room.max(1)});
        if span {
            params["span"] = json!(true);
        }
        if let Some(n) = audio_slots {
            params["audio_slots"] = json!(n);
        }
        if let Some(r) = radius {
            params["proximity"] = json!({"radius": r});
        }
        if let Some(n) = video_slots {
            params["video_slots"] = json!(n);
        }
        control.call("room.create", params).await?;
    }
    Ok(())
}

/// What the position loop did.
#[derive(Debug, Default)]
pub struct Report {
    pub batches: u64,
    pub positions: u64,
    /// Round trip per call, in µs.
    pub rtt_us: Hist,
    /// Calls that could not keep the rate (the previous round was still running).
    pub late: u64,
    pub errors: u64,
}

impl Report {
    pub fn json(&self) -> Value {
        let q = |p| self.rtt_us.quantile(p).map(|v| v as f64 / 1000.0);
        json!({
            "batches": self.batches,
            "positions_per_batch": self.positions.checked_div(self.batches).unwrap_or(0),
            "rtt_ms": {"p50": q(0.5), "p99": q(0.99), "max": self.rtt_us.max() as f64 / 1000.0},
            "late": self.late,
            "errors": self.errors,
            "note": "in a proximity room a listener hears only the speakers within the radius: the run's loss and expected count the others as lost, so they are not a loss figure here; cpu_us_per_packet and forwarded_pps are",
        })
    }
}

/// Sends every room's positions `plan.hz` times a second until `stop`.
pub async fn run(
    plan: Plan,
    sig: Arc<Signaling>,
    rooms: u32,
    per_room: u32,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Report> {
    let mut control = Control::connect(&plan.control).await?;
    let mut report = Report::default();
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / plan.hz.max(0.1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        if last.elapsed() > period * 2 {
            report.late += 1;
        }
        last = Instant::now();
        let t = start.elapsed().as_secs_f64();
        let ids = sig.participant_ids();
        for room in 0..rooms {
            let mut positions = BTreeMap::new();
            for p in 0..per_room {
                let global = p * rooms + room;
                let Some(id) = ids.get(&global) else {
                    continue;
                };
                positions.insert(id.clone(), walk(global, t, plan.world));
            }
            if positions.is_empty() {
                continue;
            }
            let n = positions.len() as u64;
            let sent = Instant::now();
            let result = control
                .call(
                    "room.set_positions",
                    json!({"room": sig.room_name(room), "positions": positions}),
                )
                .await;
            match result {
                Ok(_) => {
                    report.rtt_us.record(sent.elapsed().as_micros() as u64);
                    report.batches += 1;
                    report.positions += n;
                }
                Err(e) => {
                    tracing::debug!("room.set_positions: {e}");
                    report.errors += 1;
                }
            }
        }
    }
    Ok(report)
}

/// Where participant `global` is at `t` seconds: on a circle of radius world/10 around
/// a spot of its own, walking at about 1.5 units a second.
pub fn walk(global: u32, t: f64, world: f64) -> [f64; 3] {
    // A spread of spots: the golden-ratio sequence in both axes.
    let g = f64::from(global);
    let cx = (g * 0.618_033_988_75).fract() * world;
    let cz = (g * 0.754_877_666_25).fract() * world;
    let r = world / 10.0;
    let phase = g + t * 1.5 / r.max(1e-9);
    [cx + r * phase.cos(), 0.0, cz + r * phase.sin()]
}
