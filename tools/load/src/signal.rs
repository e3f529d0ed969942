//! One participant's signaling: a real WebSocket to `/v1/signal`, `join` → `joined`,
//! `offer` → `answer` (the SDP comes from and goes to the participant's str0m client on
//! a media worker), then reading the socket until the run ends, then `leave`.
//!
//! With churn (`--churn-every`), the same task keeps the participant's slot busy for
//! the whole run: during the window it leaves and rejoins with a fresh client, or
//! toggles mute, at jittered intervals (see `churn.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_protocol::signal::{ClientMessage, DisplayName, RoomId, ServerMessage, Source};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::churn::Rng;
use crate::worker::{Cmd, RunConfig, Shared, WorkerHandle};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long each signaling step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// What the signaling side shares.
pub struct Signaling {
    /// Each node's signaling URL (`RunConfig::spread` says who joins where).
    pub ws_urls: Vec<String>,
    pub room_prefix: String,
    /// How long a rejoin may take to connect (`--connect-timeout`).
    pub connect_timeout: Duration,
    pub cfg: RunConfig,
    pub shared: Arc<Shared>,
    pub workers: Vec<WorkerHandle>,
    /// Participants whose join and offer/answer completed.
    pub signaled: AtomicU64,
    /// Participants whose signaling failed, by reason.
    pub failures: Mutex<BTreeMap<String, u64>>,
    pub failed: AtomicU64,
    /// Sockets the node closed (or that broke) before the run ended, by reason.
    pub early_closes: Mutex<BTreeMap<String, u64>>,
    /// `error` messages received after a successful join, by code.
    pub errors_after_join: Mutex<BTreeMap<String, u64>>,
    /// `audio_slots` of the last `joined`.
    pub audio_slots: AtomicU64,
    /// Churn operations (all zero without `--churn-every`).
    pub churn: ChurnCounters,
    /// Each slot's participant id, from its latest `joined` (for `--proximity`).
    pub ids: Mutex<std::collections::HashMap<u32, String>>,
    /// With `--cameras`: set once everyone is connected; the participants then
    /// subscribe their video slots to their room's cameras.
    pub video_go: watch::Sender<bool>,
    /// `subscribe` messages sent.
    pub subscriptions: AtomicU64,
    /// `video_slots` messages received.
    pub video_slot_maps: AtomicU64,
}

/// What the churn did.
#[derive(Default)]
pub struct ChurnCounters {
    /// Rejoins whose signaling finished and whose DTLS connected.
    pub joins: AtomicU64,
    /// Rejoins that failed (signaling, or DTLS not connected in `--connect-timeout`).
    pub failed_joins: AtomicU64,
    pub failure_reasons: Mutex<BTreeMap<String, u64>>,
    /// `leave` sent and the client dropped.
    pub leaves: AtomicU64,
    /// `mute` sent with `muted: true`, and with `muted: false`.
    pub mutes: AtomicU64,
    pub unmutes: AtomicU64,
    /// Clients of a slot the node closed or lost mid-run, replaced at their slot's
    /// next event.
    pub lost_sockets: AtomicU64,
    /// Leaves and rejoins in progress: the run waits for them before it stops.
    pub busy: AtomicU64,
    /// Set when the window has ended: no more events, and a failure from now on is
    /// the run stopping, not the node.
    pub over: AtomicBool,
}

/// A participant's churn: its period and generator, and when the window is.
pub struct Churn {
    pub every: Duration,
    pub rng: Rng,
    /// `(start, end)` of the window once decided.
    pub window: watch::Receiver<Option<(tokio::time::Instant, tokio::time::Instant)>>,
}

impl Signaling {
    pub fn room_name(&self, room: u32) -> String {
        format!("{}-{room}", self.room_prefix)
    }

    /// Slot → participant id of everyone joined so far.
    pub fn participant_ids(&self) -> std::collections::HashMap<u32, String> {
        self.ids.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// The signaling URL of the node where slot `global` joins.
    fn ws_url(&self, global: u32) -> &str {
        let node = self.cfg.spread.node_of(global);
        self.ws_urls
            .get(node)
            .or(self.ws_urls.first())
            .map_or("", String::as_str)
    }

    fn fail(&self, reason: String) {
        tracing::debug!("join failed: {reason}");
        self.failed.fetch_add(1, Ordering::Relaxed);
        bump(&self.failures, reason);
    }
}

fn bump(map: &Mutex<BTreeMap<String, u64>>, key: String) {
    if let Ok(mut m) = map.lock() {
        *m.entry(key).or_default() += 1;
    }
}

/// Runs participant `global` from join to leave (with churn: its slot, through every
/// rejoin, until the run ends).
pub async fn participant(
    sig: Arc<Signaling>,
    global: u32,
    mut stop: watch::Receiver<bool>,
    churn: Option<Churn>,
) {
    let mut ws = match join(&sig, global, global).await {
        Ok(ws) => ws,
        Err(reason) => return sig.fail(reason),
    };
    sig.signaled.fetch_add(1, Ordering::Relaxed);
    if let Some(churn) = churn {
        return churning(sig, global, ws, stop, churn).await;
    }
    if sig.cfg.video.is_some() {
        let mut go = sig.video_go.subscribe();
        loop {
            if *go.borrow_and_update() {
                break;
            }
            tokio::select! {
                r = read_until(&sig, &mut ws, &mut stop, None) => {
                    if r == Read::Stopped {
                        leave(ws).await;
                    }
                    return;
                }
                c = go.changed() => if c.is_err() { break },
            }
        }
        if let Err(e) = subscribe_cameras(&sig, global, &mut ws).await {
            bump(&sig.errors_after_join, format!("subscribe: {e}"));
        }
    }
    // Keep reading (the node closes a client that lets 1,024 messages queue up).
    if read_until(&sig, &mut ws, &mut stop, None).await == Read::Stopped {
        leave(ws).await;
    }
}

/// Connects and signals one client with id `id` in slot `global`.
async fn join(sig: &Signaling, global: u32, id: u32) -> Result<Ws, String> {
    let mut ws = match tokio::time::timeout(
        STEP_TIMEOUT,
        tokio_tungstenite::connect_async(sig.ws_url(global)),
    )
    .await
    {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => return Err(format!("websocket connect: {e}")),
        Err(_) => return Err("websocket connect: timed out".into()),
    };
    if let Err(reason) = handshake(sig, global, id, &mut ws).await {
        let _ = ws.close(None).await;
        return Err(reason);
    }
    Ok(ws)
}

#[derive(Debug, PartialEq, Eq)]
enum Read {
    /// The run is stopping.
    Stopped,
    /// The node closed the socket, or it broke (recorded in `early_closes`).
    Closed,
    /// The deadline passed.
    Due,
}

/// Reads the socket until the run stops, the socket ends, or `until`.
async fn read_until(
    sig: &Signaling,
    ws: &mut Ws,
    stop: &mut watch::Receiver<bool>,
    until: Option<tokio::time::Instant>,
) -> Read {
    let due = async {
        match until {
            Some(t) => tokio::time::sleep_until(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(due);
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    match serde_json::from_str(&t) {
                        Ok(ServerMessage::Error { code, .. }) => {
                            bump(&sig.errors_after_join, code.as_str().to_owned());
                        }
                        Ok(ServerMessage::VideoSlots { .. }) => {
                            sig.video_slot_maps.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let why = frame.map_or("close without code".to_owned(), |f| {
                        format!("close {} {}", u16::from(f.code), f.reason)
                    });
                    bump(&sig.early_closes, why);
                    return Read::Closed;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    bump(&sig.early_closes, format!("websocket error: {e}"));
                    return Read::Closed;
                }
                None => {
                    bump(&sig.early_closes, "websocket ended".into());
                    return Read::Closed;
                }
            },
            _ = stop.changed() => return Read::Stopped,
            () = &mut due => return Read::Due,
        }
    }
}

/// Sends `leave` and waits (2 s at most) for the node to close the socket.
async fn leave(mut ws: Ws) {
    let leave = serde_json::to_string(&ClientMessage::Leave).unwrap_or_default();
    let _ = ws.send(Message::Text(leave.into())).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(m)) = ws.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

fn now_ns(sig: &Signaling) -> u64 {
    Instant::now()
        .saturating_duration_since(sig.cfg.start)
        .as_nanos() as u64
}

/// The slot's life with churn: wait for the window, then at each event either toggle
/// mute or leave and rejoin with a fresh client; leave when the run stops.
async fn churning(
    sig: Arc<Signaling>,
    global: u32,
    ws: Ws,
    mut stop: watch::Receiver<bool>,
    mut churn: Churn,
) {
    let worker = &sig.workers[global as usize % sig.workers.len()];
    let mut ws = Some(ws);
    let mut id = global;
    let mut rejoins = 0;
    let mut muted = false;
    // The window (the events happen inside it).
    let (start, end) = loop {
        if let Some(w) = *churn.window.borrow_and_update() {
            break w;
        }
        let r = match ws.as_mut() {
            Some(w) => tokio::select! {
                r = read_until(&sig, w, &mut stop, None) => r,
                c = churn.window.changed() => if c.is_ok() { continue } else { Read::Stopped },
            },
            None => tokio::select! {
                _ = stop.changed() => Read::Stopped,
                c = churn.window.changed() => if c.is_ok() { continue } else { Read::Stopped },
            },
        };
        match r {
            Read::Closed => {
                worker.send(Cmd::Remove {
                    id,
                    at_ns: now_ns(&sig),
                });
                sig.churn.lost_sockets.fetch_add(1, Ordering::Relaxed);
                ws = None;
            }
            Read::Stopped | Read::Due => {
                if let Some(w) = ws {
                    leave(w).await;
                }
                return;
            }
        }
    };
    // A uniform phase for the first event, then the period ± 50 %.
    let mut next = start.max(tokio::time::Instant::now()) + churn.every.mul_f64(churn.rng.unit());
    loop {
        let due = (next < end).then_some(next);
        let r = match ws.as_mut() {
            Some(w) => read_until(&sig, w, &mut stop, due).await,
            None => {
                tokio::select! {
                    _ = stop.changed() => Read::Stopped,
                    () = async {
                        match due {
                            Some(t) => tokio::time::sleep_until(t).await,
                            None => std::future::pending().await,
                        }
                    } => Read::Due,
                }
            }
        };
        match r {
            Read::Stopped => break,
            Read::Closed => {
                worker.send(Cmd::Remove {
                    id,
                    at_ns: now_ns(&sig),
                });
                sig.churn.lost_sockets.fetch_add(1, Ordering::Relaxed);
                ws = None;
                continue;
            }
            Read::Due => {}
        }
        next = tokio::time::Instant::now() + churn.every.mul_f64(0.5 + churn.rng.unit());
        if sig.churn.over.load(Ordering::Relaxed) {
            continue;
        }
        let leave_now = churn.rng.unit() < 0.5;
        match ws.as_mut() {
            Some(w) if !leave_now => {
                // Toggle mute.
                muted = !muted;
                worker.send(Cmd::Mute {
                    id,
                    muted,
                    at_ns: now_ns(&sig),
                });
                let counter = if muted {
                    &sig.churn.mutes
                } else {
                    &sig.churn.unmutes
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if send(w, &ClientMessage::Mute { muted }).await.is_err() {
                    // The read next round sees the socket's end.
                    tracing::debug!(participant = id, "mute: send failed");
                }
            }
            _ => {
                sig.churn.busy.fetch_add(1, Ordering::Relaxed);
                if let Some(w) = ws.take() {
                    // Media first (the client is gone), then the signaling.
                    worker.send(Cmd::Remove {
                        id,
                        at_ns: now_ns(&sig),
                    });
                    leave(w).await;
                    sig.churn.leaves.fetch_add(1, Ordering::Relaxed);
                }
                muted = false;
                rejoins += 1;
                id = sig.cfg.spread.rejoin_id(global, rejoins);
                ws = rejoin(&sig, global, id, worker).await;
                sig.churn.busy.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
    if let Some(w) = ws {
        leave(w).await;
    }
}

/// A fresh client `id` joins in slot `global`; waits for its DTLS. `None` (counted as a
/// failed join) when either fails.
async fn rejoin(sig: &Signaling, global: u32, id: u32, worker: &WorkerHandle) -> Option<Ws> {
    let failed = |reason: String| {
        if !sig.churn.over.load(Ordering::Relaxed) {
            sig.churn.failed_joins.fetch_add(1, Ordering::Relaxed);
            bump(&sig.churn.failure_reasons, reason);
        }
    };
    let ws = match join(sig, global, id).await {
        Ok(ws) => ws,
        Err(reason) => {
            // The worker may hold a half-made client.
            worker.send(Cmd::Remove {
                id,
                at_ns: now_ns(sig),
            });
            failed(reason);
            return None;
        }
    };
    let flag = sig.shared.connected.get(global as usize)?;
    let deadline = tokio::time::Instant::now() + sig.connect_timeout;
    while !flag.load(Ordering::Relaxed) {
        if tokio::time::Instant::now() >= deadline {
            worker.send(Cmd::Remove {
                id,
                at_ns: now_ns(sig),
            });
            leave(ws).await;
            failed("ICE/DTLS did not connect".into());
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sig.churn.joins.fetch_add(1, Ordering::Relaxed);
    Some(ws)
}

async fn handshake(sig: &Signaling, global: u32, id: u32, ws: &mut Ws) -> Result<(), String> {
    let rooms = sig.cfg.rooms;
    let room = global % rooms;
    // Does it have someone to hear already? (Then its join time means something.)
    let pos = global / rooms;
    let join_eligible = (0..sig.cfg.speakers.min(pos)).any(|p| {
        sig.shared
            .connected
            .get((p * rooms + room) as usize)
            .is_some_and(|c| c.load(Ordering::Relaxed))
    });
    let join = ClientMessage::Join {
        room: RoomId::new(&sig.room_name(room)).map_err(|e| format!("room name: {e}"))?,
        name: DisplayName::new(&format!("load {global}")).map_err(|e| e.to_string())?,
        token: None,
        p2p: false,
    };
    let join_sent_ns = Instant::now()
        .saturating_duration_since(sig.cfg.start)
        .as_nanos() as u64;
    send(ws, &join).await?;
    let (audio_slots, video_slots) = match expect(ws, "joined").await? {
        ServerMessage::Joined {
            audio_slots,
            video_slots,
            participant_id,
            ..
        } => {
            sig.audio_slots
                .store(u64::from(audio_slots), Ordering::Relaxed);
            if let Ok(mut ids) = sig.ids.lock() {
                ids.insert(global, participant_id.to_string());
            }
            (audio_slots, video_slots)
        }
        _ => return Err("unexpected reply to join".into()),
    };
    if let Some(v) = &sig.cfg.video {
        let needed = v
            .cameras
            .saturating_sub(u32::from(sig.cfg.is_camera(global)));
        if u32::from(video_slots) < needed {
            return Err(format!(
                "the room gives {video_slots} video slots; --cameras {} needs {needed}",
                v.cameras
            ));
        }
    }

    let worker = &sig.workers[global as usize % sig.workers.len()];
    let (tx, rx) = oneshot::channel();
    worker.send(Cmd::Create {
        global,
        id,
        audio_slots,
        video_slots,
        join_sent_ns,
        join_eligible,
        reply: tx,
    });
    let offer = rx.await.map_err(|_| "media worker gone".to_owned())??;
    let sources = offer
        .camera
        .iter()
        .map(|mid| (mid.clone(), Source::Camera))
        .collect();
    send(
        ws,
        &ClientMessage::Offer {
            sdp: offer.sdp,
            sources,
        },
    )
    .await?;
    let sdp = match expect(ws, "answer").await? {
        ServerMessage::Answer { sdp, .. } => sdp,
        _ => return Err("unexpected reply to offer".into()),
    };
    let (tx, rx) = oneshot::channel();
    worker.send(Cmd::Answer { id, sdp, reply: tx });
    rx.await.map_err(|_| "media worker gone".to_owned())??;
    if offer.camera.is_some() {
        let video = ClientMessage::Video {
            source: Source::Camera,
            enabled: true,
        };
        send(ws, &video).await?;
    }
    Ok(())
}

/// Video slot `i` shows the `i`-th camera of the room (its own skipped), at the
/// quality `--video-quality` gives this participant's position.
async fn subscribe_cameras(sig: &Signaling, global: u32, ws: &mut Ws) -> Result<(), String> {
    let Some(v) = &sig.cfg.video else {
        return Ok(());
    };
    let rooms = sig.cfg.rooms;
    let (room, pos) = (global % rooms, global / rooms);
    let ids = sig.participant_ids();
    let quality = v.quality.for_position(pos);
    let mut slot = 0;
    for p in (0..v.cameras).filter(|&p| p != pos) {
        let Some(id) = ids.get(&(p * rooms + room)) else {
            continue; // its join failed (counted there)
        };
        let participant_id = id.parse().map_err(|_| format!("participant id {id:?}"))?;
        let msg = ClientMessage::Subscribe {
            slot,
            participant_id: Some(participant_id),
            source: Source::Camera,
            quality,
        };
        send(ws, &msg).await?;
        sig.subscriptions.fetch_add(1, Ordering::Relaxed);
        slot += 1;
    }
    Ok(())
}

async fn send(ws: &mut Ws, msg: &ClientMessage) -> Result<(), String> {
    let text = serde_json::to_string(msg).map_err(|e| e.to_string())?;
    ws.send(Message::Text(text.into()))
        .await
        .map_err(|e| format!("websocket send: {e}"))
}

/// Reads until a message of type `kind`; an `error` or a close first is a failure.
async fn expect(ws: &mut Ws, kind: &str) -> Result<ServerMessage, String> {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| format!("no {kind} within {} s", STEP_TIMEOUT.as_secs()))?;
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => {
                return Err(f.map_or(format!("closed before {kind}"), |f| {
                    format!("closed before {kind}: {} {}", u16::from(f.code), f.reason)
                }))
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("websocket: {e}")),
            None => return Err(format!("websocket ended before {kind}")),
        };
        // Unknown message types are skipped, as the protocol asks of clients.
        let Ok(m) = serde_json::from_str::<ServerMessage>(&text) else {
            continue;
        };
        match m {
            ServerMessage::Error { code, message } => {
                return Err(format!("error {}: {message}", code.as_str()))
            }
            // A join at a node that does not take it (the room does not span nodes).
            ServerMessage::Redirect { url } => return Err(format!("redirected to {url}")),
            ServerMessage::Joined { .. } if kind == "joined" => return Ok(m),
            ServerMessage::Answer { .. } if kind == "answer" => return Ok(m),
            _ => {}
        }
    }
}
