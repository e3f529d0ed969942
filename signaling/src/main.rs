//! `chorus`: the media node binary.

use anyhow::Context;
use chorus_signaling::cli::{Cli, ServeArgs};
use clap::{CommandFactory, FromArgMatches};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    // `serve` is the only subcommand (clap requires one).
    let Some(serve) = matches.subcommand_matches("serve") else {
        Cli::from_arg_matches(&matches)?;
        anyhow::bail!("usage: chorus serve [OPTIONS]");
    };
    let args = ServeArgs::resolve(serve)?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log).context("bad --log filter")?,
        )
        .with_writer(std::io::stderr)
        .init();
    let config = args.node_config();
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
    match node.tcp {
        Some(tcp) => eprintln!(
            "chorus: demo page at http://{}/  (media on udp {}, ICE-TCP on {tcp})",
            node.http, node.udp
        ),
        None => eprintln!(
            "chorus: demo page at http://{}/  (media on udp {})",
            node.http, node.udp
        ),
    }
    if let Some(path) = &node.control {
        eprintln!("chorus: control socket at {}", path.display());
    }
    tokio::select! {
        // SIGTERM or Ctrl-C: drain (no new joins, rooms closed at the deadline).
        _ = shutdown_signal() => {
            node.drain(std::time::Duration::from_secs(args.drain_timeout)).await;
        }
        // `node.drain` on the control socket ran its course.
        _ = node.drained() => {}
    }
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
