//! The HTTP server's accept loop: hyper (HTTP/1.1) with a header-read deadline and a cap on
//! concurrent TCP connections per client address, around the axum router.
//!
//! `axum::serve` sets no deadline on reading a request's headers, so a client that
//! opens connections and sends nothing (or a byte now and then) would hold them for
//! ever. Here each connection must deliver its request headers within
//! [`HEADER_TIMEOUT`], and one address may hold at most `limit` connections at once
//! (the WebSocket limit, `--max-connections-per-ip`, counts sessions after the upgrade;
//! this one counts sockets, with room for plain HTTP beside the sessions).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::{Extension, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

/// How long a connection may take to send a request's headers (default).
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping server waits for connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Open TCP connections per client address.
#[derive(Default)]
struct Counts(Mutex<HashMap<IpAddr, usize>>);

/// One connection counted against its address, for as long as it lives.
struct Slot {
    counts: Arc<Counts>,
    ip: IpAddr,
}

impl Slot {
    fn take(counts: &Arc<Counts>, ip: IpAddr, limit: usize) -> Option<Slot> {
        let mut map = counts.0.lock();
        let n = map.entry(ip).or_insert(0);
        if limit != 0 && *n >= limit {
            return None;
        }
        *n += 1;
        Some(Slot {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.counts.0.lock();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` until `stop` fires, then lets open connections finish
/// (up to a grace period). `limit`: TCP connections per address (0: none).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limit: usize,
    header_timeout: Duration,
    stop: oneshot::Receiver<()>,
) {
    let counts = Arc::new(Counts::default());
    let (shutdown, shutting_down) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(stop);
    loop {
        // Reap finished connections so the set stays the size of the open ones.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // An IPv6 /64 counts as one address, as for ICE-TCP.
        let key = chorus_engine::tcp::limit_key(peer.ip());
        let Some(slot) = Slot::take(&counts, key, limit) else {
            tracing::debug!(%peer, "too many connections from this address: refused");
            continue; // dropping the stream closes it
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(
            app.clone()
                .layer(Extension(ConnectInfo::<SocketAddr>(peer))),
        );
        // HTTP/1.1 only (WebSockets upgrade from it): hyper's auto-detection of
        // HTTP/2 would wait for a first byte with no deadline.
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut shutting_down = shutting_down.clone();
        connections.spawn(async move {
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = async {
                    // (the guard `wait_for` returns must not live across an await)
                    let _ = shutting_down.wait_for(|s| *s).await;
                } => {
                    // Finish the request in progress, take no new one.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::trace!(error = %e, %peer, "http connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    let _ = shutdown.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!("connections still open after the grace period");
        connections.abort_all();
    }
}
