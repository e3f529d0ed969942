//! The control plane: JSON-RPC 2.0 over a Unix socket, one JSON object per line
//! (`docs/control.md`; the wire types are [`chorus_protocol::control`]).
//!
//! The backend beside the node (or `chorusctl`) connects to the socket, which only
//! its owner may open (mode 0600). Each call is answered through the engine
//! ([`crate::hub::ControlHub`]: a request to the shard(s) that can answer it, their
//! replies gathered); `events.subscribe` connections follow its broadcast of
//! [`NodeEvent`]s. Nothing here is on the media path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chorus_engine::{Reply, Request};
use chorus_protocol::control::{
    Call, ErrorCode, EventsSubscribe, NodeEvent, NodeStats, Notification, ParticipantRef,
    Request as RpcRequest, Response, RoomInfo, RpcError, ShardReport, TokenCreated, EVENT_TYPES,
    MAX_LINE_BYTES,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc};
use tokio_util::codec::{FramedRead, FramedWrite, LinesCodec, LinesCodecError};

use crate::hub::{request_error, unexpected};
use crate::state::Shared;
use crate::token::{Claims, Grants};
use crate::wire;

/// Lines queued towards one connection (answers and events).
const OUTBOUND_QUEUE: usize = 1024;

/// Why the control socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket {0} is in use by another running node (give another --control PATH)")]
    InUse(PathBuf),
}

/// Binds the control socket at `path` (creating its directory, mode 0700, if needed;
/// replacing a stale socket file left by a node that is gone) with mode 0600.
pub(crate) async fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ControlError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

/// Accepts control connections until the node stops.
pub(crate) async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    let mut stopping = shared.stopping.clone();
    loop {
        tokio::select! {
            _ = stopping.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, shared.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// One control connection: requests in order, answers and events interleaved on the
/// way out.
async fn connection(stream: UnixStream, shared: Arc<Shared>) {
    let (read, write) = stream.into_split();
    let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_LINE_BYTES));
    let (out, mut out_rx) = mpsc::channel::<String>(OUTBOUND_QUEUE);
    let writer = tokio::spawn(async move {
        let mut sink = FramedWrite::new(write, LinesCodec::new());
        while let Some(line) = out_rx.recv().await {
            if sink.send(line).await.is_err() {
                return;
            }
        }
    });
    let mut events: Option<tokio::task::JoinHandle<()>> = None;
    let mut stopping = shared.stopping.clone();
    loop {
        let line = tokio::select! {
            _ = stopping.changed() => break,
            line = lines.next() => line,
        };
        let line = match line {
            None => break,
            Some(Ok(line)) => line,
            Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                let e = RpcError::new(
                    ErrorCode::InvalidRequest,
                    format!("request is longer than {MAX_LINE_BYTES} bytes; closing"),
                );
                let _ = out.send(Response::err(Value::Null, e).to_line()).await;
                break;
            }
            Some(Err(LinesCodecError::Io(e))) => {
                tracing::debug!(error = %e, "control read failed");
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let request = match RpcRequest::decode(&line) {
            Ok(r) => r,
            Err((id, e)) => {
                if out.send(Response::err(id, e).to_line()).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let id = request.id.clone();
        let result = match Call::decode(&request.method, request.params) {
            Ok(Call::EventsSubscribe(filter)) => {
                if let Some(old) = events.take() {
                    old.abort();
                }
                let types = filter
                    .types
                    .clone()
                    .unwrap_or_else(|| EVENT_TYPES.iter().map(|t| (*t).to_owned()).collect());
                let rx = shared.control.events.subscribe();
                events = Some(tokio::spawn(follow(rx, filter, out.clone())));
                Ok(json!({ "subscribed": true, "types": types }))
            }
            Ok(call) => {
                tracing::debug!(method = call.method(), "control request");
                dispatch(&shared, call).await
            }
            Err(e) => Err(e),
        };
        // JSON-RPC notifications (no id) get no answer.
        let Some(id) = id else {
            continue;
        };
        let response = match result {
            Ok(v) => Response::ok(id, v),
            Err(e) => Response::err(id, e),
        };
        if out.send(response.to_line()).await.is_err() {
            break;
        }
    }
    if let Some(e) = events {
        e.abort();
    }
    drop(out);
    let _ = writer.await;
}

/// Forwards the events a subscriber asked for; tells it when it fell behind.
async fn follow(
    mut rx: broadcast::Receiver<NodeEvent>,
    filter: EventsSubscribe,
    out: mpsc::Sender<String>,
) {
    loop {
        let event = match rx.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(count)) => NodeEvent::EventsLost { count },
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let wanted = filter
            .types
            .as_ref()
            .is_none_or(|t| t.iter().any(|t| t == event.kind()))
            && match (&filter.room, event.room()) {
                (Some(want), Some(room)) => want == room,
                _ => true,
            };
        if wanted
            && out
                .send(Notification::event(event).to_line())
                .await
                .is_err()
        {
            return;
        }
    }
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value, RpcError> {
    serde_json::to_value(v).map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))
}

/// Answers one call.
pub(crate) async fn dispatch(shared: &Arc<Shared>, call: Call) -> Result<Value, RpcError> {
    dispatch_at(shared, call, false).await
}

/// Answers one call; in a cluster, one that must run on another node is forwarded
/// there (unless it was `forwarded` here).
pub(crate) async fn dispatch_at(
    shared: &Arc<Shared>,
    call: Call,
    forwarded: bool,
) -> Result<Value, RpcError> {
    if let (Some(cluster), false) = (&shared.cluster, forwarded) {
        if let Some(node) = crate::cluster::route(cluster, &call).await? {
            return crate::cluster::forward(cluster, node, &call).await;
        }
    }
    let hub = &shared.control;
    // A room answered here is homed here (room methods run at the room's home).
    let home_node = shared.cluster.as_ref().map(|c| c.index());
    let one = |reply: Reply| match reply {
        Reply::Room(r) => to_value(RoomInfo {
            home_node,
            ..wire::room_info(r)
        }),
        Reply::Participant(p) => to_value(wire::participant_details(p)),
        Reply::Participants(p) => to_value(
            p.into_iter()
                .map(wire::participant_details)
                .collect::<Vec<_>>(),
        ),
        Reply::Positions(p) => to_value(wire::positions_set(p)),
        _ => Err(unexpected()),
    };
    match call {
        Call::RoomCreate(c) => {
            if shared.draining.load(Ordering::Relaxed) {
                return Err(RpcError::new(
                    ErrorCode::Unavailable,
                    "the node is draining: create the room on another node",
                ));
            }
            let Some(cluster) = &shared.cluster else {
                return one(hub.ask_one(&shared.engine, Request::CreateRoom(c)).await?);
            };
            if !forwarded {
                if let Some(created) = crate::cluster::place_create(cluster, &c).await? {
                    return Ok(created);
                }
            }
            let created = one(hub
                .ask_one(&shared.engine, Request::CreateRoom(c.clone()))
                .await?)?;
            crate::cluster::claim_created(shared, cluster, &c).await?;
            Ok(created)
        }
        Call::RoomGet(r) => one(hub
            .ask_one(&shared.engine, Request::GetRoom(r.room))
            .await?),
        Call::RoomUpdate(u) => {
            let params = serde_json::to_value(&u).unwrap_or(Value::Null);
            let room = u.room.clone();
            let updated = one(hub.ask_one(&shared.engine, Request::UpdateRoom(u)).await?)?;
            // At the room's home: the other nodes running it follow.
            if let Some(cluster) = &shared.cluster {
                cluster.room_updated(room, params);
            }
            Ok(updated)
        }
        Call::RoomDelete(d) => one(hub.ask_one(&shared.engine, Request::DeleteRoom(d)).await?),
        Call::RoomList => {
            let mut rooms: Vec<RoomInfo> = Vec::new();
            for answer in hub.ask(&shared.engine, Request::ListRooms).await? {
                match answer.map_err(request_error)? {
                    Reply::Rooms(r) => rooms.extend(r.into_iter().map(wire::room_info)),
                    _ => return Err(unexpected()),
                }
            }
            rooms.sort_by(|a, b| a.room.cmp(&b.room));
            to_value(rooms)
        }
        Call::ParticipantList(r) => one(hub
            .ask_one(&shared.engine, Request::ListParticipants(r.room))
            .await?),
        Call::ParticipantGet(ParticipantRef {
            room,
            participant_id,
        }) => one(hub
            .ask_one(
                &shared.engine,
                Request::GetParticipant(ParticipantRef {
                    room,
                    participant_id,
                }),
            )
            .await?),
        Call::ParticipantKick(k) => one(hub.ask_one(&shared.engine, Request::Kick(k)).await?),
        Call::ParticipantMute(m) => one(hub.ask_one(&shared.engine, Request::Mute(m)).await?),
        Call::ParticipantSetPermissions(s) => one(hub
            .ask_one(&shared.engine, Request::SetPermissions(s))
            .await?),
        Call::ParticipantSetWhisper(s) => {
            one(hub.ask_one(&shared.engine, Request::SetWhisper(s)).await?)
        }
        Call::RoomSetPositions(s) => one(hub
            .ask_one(&shared.engine, Request::SetPositions(s))
            .await?),
        Call::TokenCreate(t) => {
            let Some(secret) = shared.config.token_secret.as_deref() else {
                return Err(RpcError::new(
                    ErrorCode::NotConfigured,
                    "this node has no token secret (start it with --token-secret)",
                ));
            };
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let claims = Claims {
                sub: t.identity,
                name: t.name.map(|n| n.as_str().to_owned()),
                room: t.room.as_str().to_owned(),
                exp: now + t.ttl_s,
                nbf: Some(now.saturating_sub(1)),
                grants: Grants {
                    publish: t.publish.unwrap_or(true),
                    subscribe: t.subscribe.unwrap_or(true),
                    admin: t.admin.unwrap_or(false),
                    priority: t.priority.unwrap_or(false),
                    sources: t.sources.clone(),
                },
            };
            let token = crate::token::mint(secret.as_bytes(), &claims)
                .map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))?;
            let ice_servers = shared.config.ice.servers_for(&claims.sub, now);
            to_value(TokenCreated {
                token,
                expires_at: claims.exp,
                ice_servers,
            })
        }
        Call::NodeStats => {
            let mut shards: Vec<ShardReport> = Vec::new();
            for answer in hub.ask(&shared.engine, Request::Stats).await? {
                match answer.map_err(request_error)? {
                    Reply::Stats(s) => shards.push(wire::shard_report(s)),
                    _ => return Err(unexpected()),
                }
            }
            shards.sort_by_key(|s| s.shard);
            let mut totals: BTreeMap<String, u64> = BTreeMap::new();
            for s in &shards {
                for (k, v) in &s.counters {
                    *totals.entry(k.clone()).or_default() += v;
                }
            }
            let d = shared.engine.driver_stats();
            let driver = [
                ("dropped_handoff", &d.dropped_handoff),
                ("dropped_video_handoff", &d.dropped_video_handoff),
                ("dropped_control", &d.dropped_control),
                ("dropped_send", &d.dropped_send),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.load(Ordering::Relaxed)))
            .chain(
                shared
                    .engine
                    .tcp_stats()
                    .counters()
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v)),
            )
            .collect();
            to_value(NodeStats {
                rooms: shards.iter().map(|s| s.rooms).sum(),
                participants: shards.iter().map(|s| s.participants).sum(),
                draining: shared.draining.load(Ordering::Relaxed),
                uptime_s: shared.started.elapsed().as_secs(),
                totals,
                driver,
                shards,
            })
        }
        Call::NodeList => to_value(crate::cluster::node_list(shared.cluster.as_ref())),
        Call::NodeDrain(d) => {
            let deadline = d
                .deadline_s
                .map_or(shared.config.drain_timeout, Duration::from_secs);
            crate::state::start_drain(shared.clone(), deadline);
            Ok(json!({ "draining": true, "deadline_s": deadline.as_secs() }))
        }
        Call::EventsSubscribe(_) => Err(unexpected()),
    }
}
