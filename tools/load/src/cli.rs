//! Command line: arguments, durations (`60s`, `20ms`) and the node's URL.

use std::net::IpAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Load generator for a Chorus node: real WebSocket signaling and real WebRTC
/// clients (ICE, DTLS, SRTP) in rooms of speakers and listeners. Prints a progress
/// line per second to stderr and one JSON line of results to stdout.
#[derive(Parser, Debug, Clone)]
#[command(name = "chorus-load", version)]
pub struct Args {
    /// The node's HTTP address (`http://HOST:PORT`); signaling is `ws://HOST:PORT/v1/signal`.
    /// Given more than once (or as a comma list): nodes of one cluster. Each room's
    /// participants are dealt round-robin over them by position in the room (a URL given
    /// twice gets two shares), the rooms are made through --control as rooms that span
    /// nodes, and latency is split by whether listener and speaker share a node.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:7880")]
    pub url: Vec<String>,
    /// Number of rooms.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub rooms: u32,
    /// Participants per room.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub per_room: u32,
    /// Speakers per room (the first participants of each room to join).
    #[arg(long, default_value_t = 1)]
    pub speakers: u32,
    /// Length of the measurement window (after the ramp and the settle time).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// RTP payload bytes per packet (Opus 20 ms at 32 kbit/s is 80); at least 20.
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u16).range(20..=1200))]
    pub packet_bytes: u16,
    /// Time between two packets of a speaker.
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// Joins started per second.
    #[arg(long, default_value_t = 50.0)]
    pub ramp: f64,
    /// Process id of the node, to sample its CPU time and RSS from /proc. Given more
    /// than once (or as a comma list), the nodes' together, and each one's in `nodes`.
    #[arg(long, value_delimiter = ',')]
    pub node_pid: Vec<u32>,
    /// What non-speakers send: nothing, or silence (packets with level -127 dBov).
    #[arg(long, value_enum, default_value_t = Listeners::Nothing)]
    pub listeners: Listeners,
    /// RFC 6464 level of speakers' packets in dBov (-127..=0).
    #[arg(long, default_value_t = -20, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i8).range(-127..=0))]
    pub level_dbov: i8,
    /// Media worker threads (each runs a share of the clients in one poll loop).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    /// Local IP the clients' UDP sockets bind to (their ICE host candidate).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_ip: IpAddr,
    /// Wait after everyone connected before the window starts (at least 500ms).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub settle: Duration,
    /// How long to wait, after the last join, for every client's DTLS to connect.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Room name prefix (rooms are PREFIX-0, PREFIX-1, …); default: unique per run.
    #[arg(long)]
    pub room_prefix: Option<String>,
    /// Churn during the window: each participant, at intervals of this period ± 50 %
    /// (uniform), either leaves and is replaced by a fresh client in the same room
    /// (same role), or toggles mute; half the events each. Off when absent.
    #[arg(long, value_parser = parse_duration)]
    pub churn_every: Option<Duration>,
    /// With churn: packets sent within this long of a join, a leave or a mute toggle
    /// are neither expected nor counted as lost.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub churn_guard: Duration,
    /// With churn, or with --signaling-only: seed of the event timing and choices
    /// (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Signaling only: the participants open a WebSocket and `join`, and nothing else
    /// (no offer, no media, no UDP). Once all joined, they send --message-rate
    /// messages per second in total for --duration (`ping`s, and `mute` toggles for
    /// --mute-share of them), and the JSON line gives join → `joined` and message →
    /// answer latencies and the node's CPU per message and RSS per participant.
    #[arg(long)]
    pub signaling_only: bool,
    /// With --signaling-only: client messages per second, all clients together, in
    /// the window (0: none, the clients only hold their sockets).
    #[arg(long, default_value_t = 1000.0, requires = "signaling_only")]
    pub message_rate: f64,
    /// With --signaling-only: the share of the messages that are `mute` toggles
    /// (answered by the sender's own `participant_updated`, which the whole room gets);
    /// the rest are `ping`s.
    #[arg(long, default_value_t = 0.1, requires = "signaling_only")]
    pub mute_share: f64,
    /// The node's control socket: the rooms are created through it (`raid` rooms of
    /// --per-room, with --audio-slots) instead of by the first join. Given more than
    /// once, room `i` is created through socket `i % count` (the first one sends the
    /// positions of --proximity). Required with more than one --url.
    #[arg(long, conflicts_with = "signaling_only")]
    pub control: Vec<std::path::PathBuf>,
    /// With --control: the rooms' audio slots (default: the kind's, 6).
    #[arg(long, requires = "control")]
    pub audio_slots: Option<u8>,
    /// Proximity rooms of this radius: the rooms are created through --control with
    /// `proximity: {radius}`, and every room's positions are sent with
    /// `room.set_positions` at --positions-hz (everyone walking in a --world square).
    #[arg(long, requires = "control", conflicts_with = "signaling_only")]
    pub proximity: Option<f64>,
    /// With --proximity: position batches per second per room.
    #[arg(long, default_value_t = 20.0, requires = "proximity")]
    pub positions_hz: f64,
    /// How the clients reach the node: UDP, or ICE-TCP only (RFC 4571 framing; the node
    /// must have ICE-TCP on).
    #[arg(long, value_enum, default_value = "udp")]
    pub transport: Transport,
    /// With --proximity: the side of the square world the participants walk in
    /// (default: 3 × the radius).
    #[arg(long, requires = "proximity")]
    pub world: Option<f64>,
    /// Video: the first CAMERAS participants of each room publish a camera (VP8
    /// simulcast, three layers, at --video-kbps and --video-fps), and every participant
    /// offers the room's video slots and, once all are connected, shows each camera of
    /// its room (but its own) in one, at --video-quality. The rooms need that many
    /// video slots (rooms made by a join take the node's --video-slots, default 4;
    /// with --control the rooms are made with `video_slots` = CAMERAS).
    #[arg(long, default_value_t = 0, conflicts_with_all = ["signaling_only", "churn_every"])]
    pub cameras: u32,
    /// With --cameras: frames per second of every layer.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=120))]
    pub video_fps: u32,
    /// With --cameras: the layers' bitrates in kbit/s, lowest first (`LOW,MEDIUM,HIGH`).
    #[arg(long, default_value = "150,500,1500", value_parser = parse_kbps)]
    pub video_kbps: [u32; 3],
    /// With --cameras: the quality subscribers ask for (`mixed`: even positions of a
    /// room `high`, odd ones `medium`).
    #[arg(long, value_enum, default_value = "mixed")]
    pub video_quality: crate::video::Quality,
}

/// `LOW,MEDIUM,HIGH` kbit/s, each 8..=20,000.
pub fn parse_kbps(s: &str) -> Result<[u32; 3], String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let [a, b, c] = parts.as_slice() else {
        return Err(format!(
            "--video-kbps {s:?}: expected three numbers, e.g. 150,500,1500"
        ));
    };
    let mut out = [0u32; 3];
    for (o, p) in out.iter_mut().zip([a, b, c]) {
        *o = p
            .parse()
            .ok()
            .filter(|k| (8..=20_000).contains(k))
            .ok_or_else(|| format!("--video-kbps {s:?}: {p:?} is not 8..=20000 kbit/s"))?;
    }
    Ok(out)
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listeners {
    Nothing,
    Silence,
}

/// `60s`, `1.5s`, `20ms`, `500us`, `2m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?}: expected e.g. 60s, 20ms"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        other => return Err(format!("bad duration unit {other:?} (use us, ms, s, m)")),
    };
    if !(0.0..=1e7).contains(&secs) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The signaling URL and `host:port` for a node URL: `http://h:p[/…]` or `ws://h:p[/…]`.
pub fn signal_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .ok_or_else(|| {
            format!("--url {url:?}: expected http://HOST:PORT (TLS is not supported; target the node directly)")
        })?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("--url {url:?} has no host"));
    }
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((format!("ws://{authority}/v1/signal"), authority))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("20ms").unwrap(), Duration::from_millis(20));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500us").unwrap(), Duration::from_micros(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn bitrates() {
        assert_eq!(parse_kbps("150,500,1500").unwrap(), [150, 500, 1500]);
        assert_eq!(parse_kbps(" 100, 300 ,900").unwrap(), [100, 300, 900]);
        assert!(parse_kbps("150,500").is_err());
        assert!(parse_kbps("150,500,x").is_err());
        assert!(parse_kbps("0,500,1500").is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(
            signal_url("http://127.0.0.1:17990").unwrap(),
            (
                "ws://127.0.0.1:17990/v1/signal".to_owned(),
                "127.0.0.1:17990".to_owned()
            )
        );
        assert_eq!(
            signal_url("ws://node.example:7880/v1/signal").unwrap().0,
            "ws://node.example:7880/v1/signal"
        );
        assert_eq!(signal_url("http://h/").unwrap().1, "h:80");
        assert!(signal_url("https://h:1").is_err());
        assert!(signal_url("http://").is_err());
    }

    #[test]
    fn parses_the_issue_command_line() {
        let a = Args::try_parse_from([
            "chorus-load",
            "--url",
            "http://127.0.0.1:17990",
            "--rooms",
            "50",
            "--per-room",
            "10",
            "--speakers",
            "3",
            "--duration",
            "60s",
            "--node-pid",
            "42",
            "--level-dbov",
            "-30",
        ])
        .unwrap();
        assert_eq!((a.rooms, a.per_room, a.speakers), (50, 10, 3));
        assert_eq!(a.duration, Duration::from_secs(60));
        assert_eq!(a.interval, Duration::from_millis(20));
        assert_eq!(a.packet_bytes, 80);
        assert_eq!(a.node_pid, vec![42]);
        assert_eq!(a.url, ["http://127.0.0.1:17990"]);
        assert_eq!(a.level_dbov, -30);
        assert_eq!(a.listeners, Listeners::Nothing);
        assert_eq!(a.churn_every, None);
    }

    #[test]
    fn parses_signaling_only() {
        let a = Args::try_parse_from([
            "chorus-load",
            "--signaling-only",
            "--rooms",
            "500",
            "--per-room",
            "10",
            "--message-rate",
            "10000",
            "--mute-share",
            "0.2",
        ])
        .unwrap();
        assert!(a.signaling_only);
        assert_eq!(a.message_rate, 10_000.0);
        assert_eq!(a.mute_share, 0.2);
        assert!(
            Args::try_parse_from(["chorus-load", "--message-rate", "5"]).is_err(),
            "--message-rate needs --signaling-only"
        );
    }

    #[test]
    fn parses_proximity() {
        let a = Args::try_parse_from([
            "chorus-load",
            "--control",
            "/tmp/c.sock",
            "--proximity",
            "30",
            "--world",
            "100",
        ])
        .unwrap();
        assert_eq!(a.proximity, Some(30.0));
        assert_eq!(a.positions_hz, 20.0);
        assert_eq!(a.world, Some(100.0));
        assert!(
            Args::try_parse_from(["chorus-load", "--proximity", "30"]).is_err(),
            "--proximity needs --control"
        );
    }

    #[test]
    fn parses_churn() {
        let a = Args::try_parse_from([
            "chorus-load",
            "--churn-every",
            "5s",
            "--churn-guard",
            "500ms",
            "--seed",
            "3",
        ])
        .unwrap();
        assert_eq!(a.churn_every, Some(Duration::from_secs(5)));
        assert_eq!(a.churn_guard, Duration::from_millis(500));
        assert_eq!(a.seed, Some(3));
    }

    #[test]
    fn parses_several_nodes() {
        let a = Args::try_parse_from([
            "chorus-load",
            "--url",
            "http://127.0.0.1:1,http://127.0.0.1:2",
            "--url",
            "http://127.0.0.1:3",
            "--control",
            "/tmp/a.sock",
            "--control",
            "/tmp/b.sock",
            "--node-pid",
            "7,8",
        ])
        .unwrap();
        assert_eq!(
            a.url,
            [
                "http://127.0.0.1:1",
                "http://127.0.0.1:2",
                "http://127.0.0.1:3"
            ]
        );
        assert_eq!(a.control.len(), 2);
        assert_eq!(a.node_pid, vec![7, 8]);
        let a = Args::try_parse_from(["chorus-load"]).unwrap();
        assert_eq!(a.url, ["http://127.0.0.1:7880"]);
        assert!(a.control.is_empty() && a.node_pid.is_empty());
    }
}
