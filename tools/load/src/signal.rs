//! One participant's signaling: a real WebSocket to `/v1/signal`, `join` → `joined`,
//! `offer` → `answer` (the SDP comes from and goes to the participant's str0m client on
//! a media worker), then reading the socket until the run ends, then `leave`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_protocol::signal::{ClientMessage, DisplayName, RoomId, ServerMessage};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::worker::{Cmd, RunConfig, Shared, WorkerHandle};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long each signaling step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// What the signaling side shares.
pub struct Signaling {
    pub ws_url: String,
    pub room_prefix: String,
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
}

impl Signaling {
    pub fn room_name(&self, room: u32) -> String {
        format!("{}-{room}", self.room_prefix)
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

/// Runs participant `global` from join to leave.
pub async fn participant(sig: Arc<Signaling>, global: u32, mut stop: watch::Receiver<bool>) {
    let mut ws = match tokio::time::timeout(
        STEP_TIMEOUT,
        tokio_tungstenite::connect_async(sig.ws_url.as_str()),
    )
    .await
    {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => return sig.fail(format!("websocket connect: {e}")),
        Err(_) => return sig.fail("websocket connect: timed out".into()),
    };
    if let Err(reason) = handshake(&sig, global, &mut ws).await {
        sig.fail(reason);
        let _ = ws.close(None).await;
        return;
    }
    sig.signaled.fetch_add(1, Ordering::Relaxed);

    // Keep reading (the node closes a client that lets 1,024 messages queue up).
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if let Ok(ServerMessage::Error { code, .. }) = serde_json::from_str(&t) {
                        bump(&sig.errors_after_join, code.as_str().to_owned());
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let why = frame.map_or("close without code".to_owned(), |f| {
                        format!("close {} {}", u16::from(f.code), f.reason)
                    });
                    bump(&sig.early_closes, why);
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    bump(&sig.early_closes, format!("websocket error: {e}"));
                    return;
                }
                None => {
                    bump(&sig.early_closes, "websocket ended".into());
                    return;
                }
            },
            _ = stop.changed() => break,
        }
    }
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

async fn handshake(sig: &Signaling, global: u32, ws: &mut Ws) -> Result<(), String> {
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
    };
    let join_sent_ns = Instant::now()
        .saturating_duration_since(sig.cfg.start)
        .as_nanos() as u64;
    send(ws, &join).await?;
    let audio_slots = match expect(ws, "joined").await? {
        ServerMessage::Joined { audio_slots, .. } => {
            sig.audio_slots
                .store(u64::from(audio_slots), Ordering::Relaxed);
            audio_slots
        }
        _ => return Err("unexpected reply to join".into()),
    };

    let worker = &sig.workers[global as usize % sig.workers.len()];
    let (tx, rx) = oneshot::channel();
    worker.send(Cmd::Create {
        global,
        audio_slots,
        join_sent_ns,
        join_eligible,
        reply: tx,
    });
    let offer = rx.await.map_err(|_| "media worker gone".to_owned())??;
    send(ws, &ClientMessage::Offer { sdp: offer }).await?;
    let sdp = match expect(ws, "answer").await? {
        ServerMessage::Answer { sdp, .. } => sdp,
        _ => return Err("unexpected reply to offer".into()),
    };
    let (tx, rx) = oneshot::channel();
    worker.send(Cmd::Answer {
        global,
        sdp,
        reply: tx,
    });
    rx.await.map_err(|_| "media worker gone".to_owned())?
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
            ServerMessage::Joined { .. } if kind == "joined" => return Ok(m),
            ServerMessage::Answer { .. } if kind == "answer" => return Ok(m),
            _ => {}
        }
    }
}
