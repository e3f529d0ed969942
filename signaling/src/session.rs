//! One client's WebSocket: protocol v1 framing, the join handshake, rate limiting,
//! and the translation of client messages into engine commands.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use chorus_engine::{CloseReason, Command, Permissions};
use chorus_protocol::signal::{
    ClientMessage, DisplayName, ErrorCode, ParticipantId, RoomId, ServerMessage,
};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use crate::node::Shared;
use crate::routes::{Outbound, CONNECTION_QUEUE};

/// RFC 6455 §7.4.1 close codes.
const NORMAL: u16 = 1000;
const POLICY: u16 = 1008;
const SERVER_ERROR: u16 = 1011;
const GOING_AWAY: u16 = 1001;
const TRY_AGAIN_LATER: u16 = 1013;
/// Our own (RFC 6455 §7.4.2 private range): media went silent.
const MEDIA_TIMEOUT: u16 = 4000;

/// What to do after a client message.
enum Flow {
    Continue,
    Close(u16, &'static str),
}

struct Session {
    shared: Arc<Shared>,
    participant: Option<ParticipantId>,
    /// `join` was accepted (stays true after leaving).
    joined: bool,
    /// The join's outcome was counted.
    answered: bool,
    limiter: RateLimiter,
}

/// Counts a connection against its IP address for as long as it lives.
struct IpSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl IpSlot {
    /// A slot for one more connection from `ip`, if under the limit.
    fn take(shared: &Arc<Shared>, ip: IpAddr) -> Option<IpSlot> {
        let limit = shared.config.max_connections_per_ip;
        let mut counts = shared.connections_per_ip.lock();
        let n = counts.entry(ip).or_insert(0);
        if limit != 0 && *n >= limit {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            shared: shared.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.shared.connections_per_ip.lock();
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

pub(crate) async fn run(socket: WebSocket, shared: Arc<Shared>, ip: IpAddr) {
    let (mut sink, mut stream) = socket.split();
    let Some(_slot) = IpSlot::take(&shared, ip) else {
        let refusal = ServerMessage::error(
            ErrorCode::RateLimited,
            "too many connections from this address",
        );
        let _ = sink.send(Message::Text(refusal.to_json().into())).await;
        let frame = CloseFrame {
            code: TRY_AGAIN_LATER,
            reason: "too many connections".into(),
        };
        let _ = sink.send(Message::Close(Some(frame))).await;
        return;
    };
    let join_deadline = tokio::time::sleep(shared.config.join_timeout);
    tokio::pin!(join_deadline);
    let (tx, mut rx) = mpsc::channel::<Outbound>(CONNECTION_QUEUE);
    let mut tx = Some(tx);
    let rate = shared.config.client_message_rate;
    let mut session = Session {
        shared,
        participant: None,
        joined: false,
        answered: false,
        limiter: RateLimiter::new(rate, Instant::now()),
    };
    let mut replies: Vec<ServerMessage> = Vec::new();
    let mut stopping = session.shared.stopping.clone();
    let close = loop {
        tokio::select! {
            // The only change is to true (or the node is gone): close either way.
            _ = stopping.changed() => break Some((GOING_AWAY, "node stopping")),
            // An idle connection that never joins holds resources for nothing.
            _ = &mut join_deadline, if !session.joined => {
                break Some((POLICY, "join timeout"));
            }
            incoming = stream.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => {
                        replies.push(ServerMessage::error(
                            ErrorCode::BadRequest,
                            "binary frames are not part of the protocol; send JSON text",
                        ));
                        String::new().into()
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    // Echo the close (RFC 6455 §5.5.1), then leave.
                    Some(Ok(Message::Close(_))) => break Some((NORMAL, "bye")),
                    None => break None,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "websocket error");
                        break None;
                    }
                };
                let flow = if text.is_empty() {
                    Flow::Continue
                } else {
                    session.on_text(&text, &mut tx, &mut replies)
                };
                for r in replies.drain(..) {
                    if sink.send(Message::Text(r.to_json().into())).await.is_err() {
                        break;
                    }
                }
                if let Flow::Close(code, reason) = flow {
                    break Some((code, reason));
                }
            }
            out = rx.recv() => match out {
                Some(Outbound::Message(m)) => {
                    if !session.answered {
                        // The engine's answer to our join: `joined`, or why not.
                        match &m {
                            ServerMessage::Joined { .. } => {
                                session.answered = true;
                                session.shared.joins.count("ok");
                            }
                            ServerMessage::Error { code, .. } => {
                                session.answered = true;
                                session.shared.joins.count(code.as_str());
                            }
                            _ => {}
                        }
                    }
                    if sink.send(Message::Text(m.to_json().into())).await.is_err() {
                        break None;
                    }
                }
                Some(Outbound::Close(reason)) => {
                    // The engine let go of us: nothing to tell it on the way out.
                    if let Some(pid) = session.participant.take() {
                        session.shared.routes.unregister(pid);
                    }
                    break Some(match reason {
                        CloseReason::Left => (NORMAL, "left"),
                        CloseReason::Timeout => (MEDIA_TIMEOUT, "media timeout"),
                        CloseReason::Rejected => (POLICY, "join refused"),
                        CloseReason::RoomClosed => (NORMAL, "room closed"),
                        CloseReason::Kicked => (NORMAL, "kicked"),
                    });
                }
                // Our route was dropped (queue overflow) or the node is stopping.
                None => break Some((SERVER_ERROR, "signaling queue overflow")),
            }
        }
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = sink.send(Message::Close(Some(frame))).await;
    }
    session.leave();
}

impl Session {
    fn on_text(
        &mut self,
        text: &str,
        tx: &mut Option<mpsc::Sender<Outbound>>,
        replies: &mut Vec<ServerMessage>,
    ) -> Flow {
        if !self.limiter.allow(Instant::now()) {
            replies.push(ServerMessage::error(
                ErrorCode::RateLimited,
                "too many messages; slow down",
            ));
            return Flow::Continue;
        }
        let message = match ClientMessage::decode(text) {
            Ok(m) => m,
            Err(e) => {
                replies.push(ServerMessage::error(ErrorCode::BadRequest, e.to_string()));
                return Flow::Continue;
            }
        };
        let Some(pid) = self.participant else {
            return self.on_first(message, tx, replies);
        };
        let engine = &self.shared.engine;
        match message {
            ClientMessage::Join { .. } => {
                replies.push(ServerMessage::error(
                    ErrorCode::BadRequest,
                    "already joined",
                ));
            }
            ClientMessage::Offer { sdp } => {
                engine.send(Command::Offer {
                    participant: pid,
                    sdp,
                });
            }
            ClientMessage::Candidate { candidate, .. } => {
                engine.send(Command::Candidate {
                    participant: pid,
                    candidate,
                });
            }
            ClientMessage::Mute { muted } => {
                engine.send(Command::SetMuted {
                    participant: pid,
                    muted,
                });
            }
            ClientMessage::Deafen { deafened } => {
                engine.send(Command::SetDeafened {
                    participant: pid,
                    deafened,
                });
            }
            ClientMessage::Ping { id } => replies.push(ServerMessage::Pong { id }),
            ClientMessage::Leave => {
                self.leave();
                return Flow::Close(NORMAL, "left");
            }
        }
        Flow::Continue
    }

    /// Before `join`, only `join` is valid.
    fn on_first(
        &mut self,
        message: ClientMessage,
        tx: &mut Option<mpsc::Sender<Outbound>>,
        replies: &mut Vec<ServerMessage>,
    ) -> Flow {
        let ClientMessage::Join { room, name, token } = message else {
            replies.push(ServerMessage::error(
                ErrorCode::NotJoined,
                format!("send join first (got {})", message.kind()),
            ));
            return Flow::Continue;
        };
        if self.shared.draining.load(Ordering::Relaxed) {
            self.answered = true;
            self.shared.joins.count(ErrorCode::Unavailable.as_str());
            replies.push(ServerMessage::error(
                ErrorCode::Unavailable,
                "this node is draining: join another node",
            ));
            return Flow::Close(GOING_AWAY, "node draining");
        }
        let (name, identity, permissions) = match self.authorize(&room, name, token) {
            Ok(granted) => granted,
            Err(why) => {
                self.answered = true;
                self.shared.joins.count(ErrorCode::Unauthorized.as_str());
                replies.push(ServerMessage::error(ErrorCode::Unauthorized, why));
                return Flow::Close(POLICY, "unauthorized");
            }
        };
        let Some(tx) = tx.take() else {
            return Flow::Continue;
        };
        let home = self.shared.engine.room_home(&room);
        let pid = self.shared.next_participant_id(home);
        self.shared.routes.register(pid, tx);
        self.participant = Some(pid);
        self.joined = true;
        let sent = self.shared.engine.send(Command::Join {
            participant: pid,
            room,
            name,
            identity,
            permissions,
        });
        if !sent {
            replies.push(ServerMessage::error(
                ErrorCode::Internal,
                "media engine stopped",
            ));
            return Flow::Close(SERVER_ERROR, "engine stopped");
        }
        Flow::Continue
    }

    /// Who may join, with which name and permissions. With a token (required outside
    /// `--dev`), its grants decide and its `name` claim, if any, is the name.
    fn authorize(
        &self,
        room: &RoomId,
        name: DisplayName,
        token: Option<String>,
    ) -> Result<(DisplayName, Option<String>, Permissions), String> {
        match (&self.shared.tokens, token) {
            (Some(verifier), Some(token)) => {
                let claims = verifier.verify(&token, room).map_err(|e| e.to_string())?;
                let name = match claims.name.as_deref().map(DisplayName::new) {
                    Some(Ok(n)) => n,
                    Some(Err(e)) => return Err(format!("token name: {e}")),
                    None => name,
                };
                let permissions = Permissions {
                    publish: claims.grants.publish,
                    subscribe: claims.grants.subscribe,
                };
                Ok((name, Some(claims.sub), permissions))
            }
            (_, None) if self.shared.config.dev => Ok((name, None, Permissions::ALL)),
            (None, Some(_)) if self.shared.config.dev => Ok((name, None, Permissions::ALL)),
            (Some(_), None) => Err("this node requires a token".into()),
            (None, _) => {
                Err("this node has no token secret: start it with --token-secret, or --dev".into())
            }
        }
    }

    /// Tells the engine we are gone (once) and drops our route.
    fn leave(&mut self) {
        if let Some(pid) = self.participant.take() {
            self.shared.routes.unregister(pid);
            self.shared.engine.send(Command::Leave { participant: pid });
        }
    }
}

/// A token bucket: `rate` messages per second, bursts of `2 * rate`.
struct RateLimiter {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    fn new(rate: u32, now: Instant) -> Self {
        let rate = f64::from(rate.max(1));
        RateLimiter {
            rate,
            tokens: rate * 2.0,
            last: now,
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now
            .saturating_duration_since(self.last)
            .min(Duration::from_secs(10));
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.rate * 2.0);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_allows_bursts_then_refills() {
        let t = Instant::now();
        let mut l = RateLimiter::new(10, t);
        assert_eq!((0..30).filter(|_| l.allow(t)).count(), 20);
        assert!(!l.allow(t));
        assert!(l.allow(t + Duration::from_millis(100)));
    }
}
