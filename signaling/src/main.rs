//! `chorus`: the media node binary.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use chorus_signaling::NodeConfig;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "chorus",
    version,
    about = "Chorus WebRTC media node (SFU) for voice"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a media node: UDP media, HTTP + WebSocket signaling, and the demo page.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Development mode: joins need no token and rooms are created on first join.
    #[arg(long, env = "CHORUS_DEV")]
    dev: bool,
    /// HTTP listen address (signaling at /v1/signal, demo page at /).
    #[arg(long, env = "CHORUS_HTTP", default_value = "127.0.0.1:7880")]
    http: SocketAddr,
    /// UDP media address: bound, and advertised as the ICE host candidate.
    #[arg(long, env = "CHORUS_UDP", default_value = "127.0.0.1:7882")]
    udp: SocketAddr,
    /// Shard threads, each with its own socket on the UDP port (default: one per core).
    #[arg(long, env = "CHORUS_SHARDS", value_parser = clap::value_parser!(u16).range(1..=256))]
    shards: Option<u16>,
    /// Advertise this IP in ICE candidates instead of the UDP address's (NAT, 0.0.0.0).
    #[arg(long, env = "CHORUS_PUBLIC_IP")]
    public_ip: Option<IpAddr>,
    /// Audio slots per subscriber in rooms created on join (1 to 32).
    #[arg(long, env = "CHORUS_AUDIO_SLOTS", default_value_t = 8,
          value_parser = clap::value_parser!(u8).range(1..=32))]
    audio_slots: u8,
    /// Capacity of rooms created on join.
    #[arg(long, env = "CHORUS_MAX_PARTICIPANTS", default_value_t = 500)]
    max_participants: usize,
    /// Seconds without any datagram from a client before it is removed.
    #[arg(long, env = "CHORUS_DISCONNECT_TIMEOUT", default_value_t = 20)]
    disconnect_timeout: u64,
    /// Create rooms on first join without --dev too (otherwise only the control plane
    /// creates them).
    #[arg(long, env = "CHORUS_AUTO_CREATE_ROOMS")]
    auto_create_rooms: bool,
    /// Secret for the HS256 join tokens (required without --dev). Prefer the env var:
    /// command lines are visible to other users of the machine.
    #[arg(long, env = "CHORUS_TOKEN_SECRET", hide_env_values = true)]
    token_secret: Option<String>,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `chorus_engine=debug`.
    #[arg(long, env = "CHORUS_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cmd::Serve(args) = Cli::parse().command;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log).context("bad --log filter")?,
        )
        .with_writer(std::io::stderr)
        .init();
    if args.udp.ip().is_unspecified() && args.public_ip.is_none() {
        anyhow::bail!(
            "--udp {} binds every interface: also give --public-ip, the address clients reach",
            args.udp
        );
    }
    let config = NodeConfig {
        dev: args.dev,
        http: args.http,
        udp: args.udp,
        public_ip: args.public_ip,
        shards: args
            .shards
            .map(usize::from)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        audio_slots: args.audio_slots,
        max_participants: args.max_participants,
        disconnect_timeout: Duration::from_secs(args.disconnect_timeout),
        token_secret: args.token_secret,
        auto_create_rooms: args.auto_create_rooms,
        ..NodeConfig::default()
    };
    match config.token_secret.as_deref() {
        None if !config.dev => anyhow::bail!(
            "without --dev every join needs a token: give --token-secret (or CHORUS_TOKEN_SECRET)"
        ),
        Some(s) if s.len() < 32 => {
            tracing::warn!(
                "the token secret is shorter than 32 bytes: HS256 wants at least 256 bits"
            )
        }
        _ => {}
    }
    let node = chorus_signaling::start(config).await?;
    eprintln!(
        "chorus: demo page at http://{}/  (media on udp {})",
        node.http, node.udp
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    node.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
