//! `chorus-hostile`: sends hostile datagrams to a Chorus node's media port and prints
//! one JSON line of what it sent (and, with `--pid`, the node's resident memory before,
//! during and after). See `tools/hostile/README.md`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chorus_hostile::{run, Attack, Options, Pace, Sent};
use clap::Parser;
use serde_json::{json, Map, Value};

#[derive(Parser, Debug)]
#[command(
    name = "chorus-hostile",
    version,
    about = "Hostile traffic for a Chorus node's media port (UDP)."
)]
struct Cli {
    /// The node's UDP media address.
    #[arg(long)]
    target: SocketAddr,
    /// random | truncated | oversized | stun-bad-integrity | stun-unknown-ufrag |
    /// rtp-unauthenticated | rtcp-unauthenticated | flood | all (every one at once,
    /// sharing --rate evenly).
    #[arg(long, default_value = "all", value_parser = parse_attack)]
    attack: Choice,
    /// Datagrams per second in all (0: as fast as possible).
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Seconds to send for.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many datagrams (per attack) instead, if sooner.
    #[arg(long)]
    count: Option<u64>,
    /// A real participant's ICE ufrag on the node (the `a=ice-ufrag:` of its answer),
    /// for stun-bad-integrity (skipped without it).
    #[arg(long)]
    ufrag: Option<String>,
    /// The SSRC unauthenticated RTP/RTCP claim (random if not given).
    #[arg(long)]
    ssrc: Option<u32>,
    /// Source addresses of the flood (127.0.0.2, 127.0.0.3, ...).
    #[arg(long, default_value_t = 64)]
    sources: usize,
    /// Source ports per flood address.
    #[arg(long, default_value_t = 4)]
    ports_per_source: usize,
    /// Seed of the randomness (default: the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// The node's process id: its RSS (VmRSS) is sampled before, every 500 ms during,
    /// and after (1 s after the last datagram), and its peak (VmHWM) after.
    #[arg(long)]
    pid: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
enum Choice {
    One(Attack),
    All,
}

fn parse_attack(s: &str) -> Result<Choice, String> {
    if s == "all" {
        return Ok(Choice::All);
    }
    Attack::from_name(s).map(Choice::One).ok_or_else(|| {
        let names: Vec<&str> = Attack::ALL.iter().map(|a| a.name()).collect();
        format!("unknown attack {s:?}; one of {}, all", names.join(", "))
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !(cli.duration.is_finite() && cli.duration > 0.0) {
        eprintln!("chorus-hostile: --duration must be a positive number of seconds");
        return ExitCode::from(2);
    }
    let attacks: Vec<Attack> = match cli.attack {
        Choice::One(a) => vec![a],
        Choice::All => Attack::ALL
            .into_iter()
            .filter(|a| *a != Attack::StunBadIntegrity || cli.ufrag.is_some())
            .collect(),
    };
    let skipped: Vec<&str> = match cli.attack {
        Choice::All if cli.ufrag.is_none() => vec![Attack::StunBadIntegrity.name()],
        _ => Vec::new(),
    };
    if let Choice::One(Attack::StunBadIntegrity) = cli.attack {
        if cli.ufrag.is_none() {
            eprintln!("chorus-hostile: stun-bad-integrity needs --ufrag");
            return ExitCode::from(2);
        }
    }
    let share = if cli.rate == 0 {
        0
    } else {
        (cli.rate / attacks.len() as u32).max(1)
    };
    let pace = Pace {
        rate: share,
        duration: Some(Duration::from_secs_f64(cli.duration)),
        count: cli.count,
    };
    let seed = cli.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let stop = Arc::new(AtomicBool::new(false));
    let options = Options {
        ufrag: cli.ufrag.clone(),
        ssrc: cli.ssrc,
        sources: cli.sources,
        ports_per_source: cli.ports_per_source,
        seed,
        stop: Some(stop.clone()),
    };

    let rss_before = cli.pid.and_then(|p| status_kib(p, "VmRSS:"));
    let drops_before = udp_drops(cli.target.port());
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = cli.pid.map(|pid| {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut max = 0;
            while sampling.load(Ordering::Relaxed) {
                if let Some(kib) = status_kib(pid, "VmRSS:") {
                    max = max.max(kib);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            max
        })
    });

    let started = Instant::now();
    let threads: Vec<_> = attacks
        .iter()
        .map(|&attack| {
            let options = options.clone();
            let target = cli.target;
            std::thread::spawn(move || (attack, run(attack, target, pace, &options)))
        })
        .collect();
    let mut results = Map::new();
    let mut total = Sent::default();
    let mut failed = Vec::new();
    for t in threads {
        match t.join() {
            Ok((attack, Ok(Some(sent)))) => {
                total.add(sent);
                results.insert(attack.name().to_owned(), sent_json(&sent));
            }
            Ok((_, Ok(None))) => {}
            Ok((attack, Err(e))) => {
                stop.store(true, Ordering::Relaxed);
                failed.push(json!({"attack": attack.name(), "error": e.to_string()}));
            }
            Err(_) => failed.push(json!({"error": "an attack thread panicked"})),
        }
    }
    let elapsed = started.elapsed();

    let mut report = json!({
        "target": cli.target.to_string(),
        "attack": match cli.attack { Choice::One(a) => a.name(), Choice::All => "all" },
        "rate_pps": cli.rate,
        "rate_pps_per_attack": share,
        "duration_s": cli.duration,
        "elapsed_s": round3(elapsed.as_secs_f64()),
        "seed": seed,
        "sent": results,
        "total": sent_json(&total),
        "sent_pps": round3(total.datagrams as f64 / elapsed.as_secs_f64().max(1e-9)),
    });
    if !skipped.is_empty() {
        report["skipped"] = json!(skipped);
    }
    if !failed.is_empty() {
        report["failed"] = json!(failed);
    }
    if let Some(pid) = cli.pid {
        // Let the node work through what is queued before the last sample.
        std::thread::sleep(Duration::from_secs(1));
        sampling.store(false, Ordering::Relaxed);
        let max = sampler.and_then(|s| s.join().ok());
        report["node"] = json!({
            "pid": pid,
            "rss_kib_before": rss_before,
            "rss_kib_max": max,
            "rss_kib_after": status_kib(pid, "VmRSS:"),
            "hwm_kib_after": status_kib(pid, "VmHWM:"),
        });
    }
    if let (Some(before), Some(after)) = (drops_before, udp_drops(cli.target.port())) {
        // Datagrams the kernel dropped at the node's port: its receive buffers were full.
        report["node_udp_drops"] = json!(after.saturating_sub(before));
    }
    println!("{report}");
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn sent_json(s: &Sent) -> Value {
    json!({"datagrams": s.datagrams, "bytes": s.bytes, "errors": s.errors,
           "malformed": s.malformed, "sources": s.sources})
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A `kB` field of `/proc/PID/status` (`VmRSS:`, `VmHWM:`), in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Receive-buffer drops of every UDP socket on local `port` (`/proc/net/udp{,6}`).
fn udp_drops(port: u16) -> Option<u64> {
    let mut total = None;
    for path in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(table) = std::fs::read_to_string(path) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port != Some(port) {
                continue;
            }
            if let Some(d) = fields.get(12).and_then(|d| d.parse::<u64>().ok()) {
                *total.get_or_insert(0) += d;
            }
        }
    }
    total
}
