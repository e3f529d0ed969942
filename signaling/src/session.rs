//! One client's WebSocket: protocol v1 framing, the join handshake, rate limiting,
//! and the translation of client messages into engine commands.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use chorus_cluster::Placement;
use chorus_engine::{ClientEvent, CloseReason, Command, Permissions, Sources};
use chorus_protocol::signal::{
    ClientMessage, DecodeError, DisplayName, ErrorCode, ParticipantId, RoomId, ServerMessage,
    MAX_P2P_SIGNAL_BYTES,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::rate::RateLimiter;
use crate::routes::{Outbound, CONNECTION_QUEUE};
use crate::state::Shared;
use crate::websocket::{Incoming, WebSocket, WsError};
use crate::wire;

/// RFC 6455 §7.4.1 close codes.
const NORMAL: u16 = 1000;
const POLICY: u16 = 1008;
const SERVER_ERROR: u16 = 1011;
const GOING_AWAY: u16 = 1001;
const TRY_AGAIN_LATER: u16 = 1013;
/// Our own (RFC 6455 §7.4.2 private range): media went silent.
const MEDIA_TIMEOUT: u16 = 4000;
/// Our own: the session was resumed on another socket.
const RESUMED_ELSEWHERE: u16 = 4001;

/// What to do after a client message.
enum Flow {
    Continue,
    Close(u16, &'static str),
    /// Take over a parked (or stale) session: needs the engine's roster, so it is
    /// finished by the connection loop.
    Resume {
        participant: ParticipantId,
        token: String,
    },
    /// In a cluster: the join must be placed (asks the directory), so it is finished
    /// by the connection loop.
    Place(Box<PendingJoin>),
}

/// A join that passed every check, not yet handed to the engine.
struct PendingJoin {
    room: RoomId,
    name: DisplayName,
    identity: Option<String>,
    permissions: Permissions,
    p2p: bool,
}

/// How a connection ended.
enum End {
    /// Send this close frame, then leave.
    Close(u16, &'static str),
    /// The client vanished (no close frame, or a network error): the session may be
    /// resumed within the window.
    Vanished,
    /// The client sent a close frame (the WebSocket layer has queued the echo); one
    /// other than 1000 may be followed by a resume.
    ClientClosed { vanished: bool, code: Option<u16> },
    /// Another socket resumed the session: close without leaving.
    Superseded,
}

struct Session {
    shared: Arc<Shared>,
    ip: IpAddr,
    participant: Option<ParticipantId>,
    /// `join` was accepted (stays true after leaving).
    joined: bool,
    /// The join's outcome was counted.
    answered: bool,
    limiter: RateLimiter,
    /// `p2p_signal`s and `speaking` reports have buckets of their own.
    p2p_signals: RateLimiter,
    speaking: RateLimiter,
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

pub(crate) async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: WebSocket<S>,
    shared: Arc<Shared>,
    ip: IpAddr,
) {
    let Some(_slot) = IpSlot::take(&shared, ip) else {
        let refusal = ServerMessage::error(
            ErrorCode::RateLimited,
            "too many connections from this address",
        );
        let _ = ws.send_text(&refusal.to_json()).await;
        let _ = ws
            .send_close(Some((TRY_AGAIN_LATER, "too many connections")))
            .await;
        return;
    };
    let join_deadline = tokio::time::sleep(shared.config.join_timeout);
    tokio::pin!(join_deadline);
    let (tx, mut rx) = mpsc::channel::<Outbound>(CONNECTION_QUEUE);
    let mut tx = Some(tx);
    let rate = shared.config.client_message_rate;
    let now = Instant::now();
    let mut session = Session {
        shared,
        ip,
        participant: None,
        joined: false,
        answered: false,
        limiter: RateLimiter::new(rate, now),
        p2p_signals: RateLimiter::with_burst(
            chorus_engine::p2p::SIGNAL_RATE,
            chorus_engine::p2p::SIGNAL_BURST,
            now,
        ),
        speaking: RateLimiter::with_burst(
            chorus_engine::p2p::SPEAKING_RATE,
            chorus_engine::p2p::SPEAKING_BURST,
            now,
        ),
    };
    let mut replies: Vec<ServerMessage> = Vec::new();
    let mut stopping = session.shared.stopping.clone();
    let end = loop {
        tokio::select! {
            // The only change is to true (or the node is gone): close either way.
            _ = stopping.changed() => break End::Close(GOING_AWAY, "node stopping"),
            // An idle connection that never joins holds resources for nothing.
            _ = &mut join_deadline, if !session.joined => {
                break End::Close(POLICY, "join timeout");
            }
            incoming = ws.next() => {
                let text = match incoming {
                    Ok(Some(Incoming::Text(text))) => text,
                    Ok(Some(Incoming::Binary)) => {
                        replies.push(ServerMessage::error(
                            ErrorCode::BadRequest,
                            "binary frames are not part of the protocol; send JSON text",
                        ));
                        String::new()
                    }
                    Ok(Some(Incoming::TooLarge)) => {
                        replies.push(ServerMessage::error(
                            ErrorCode::BadRequest,
                            DecodeError::TooLarge.to_string(),
                        ));
                        String::new()
                    }
                    // Echo the close (RFC 6455 §5.5.1), then leave; a close other
                    // than "normal" (1001 going away: a tab closed, a page reloaded)
                    // may be followed by a resume.
                    Ok(Some(Incoming::Close(code))) => {
                        break End::ClientClosed {
                            vanished: code.is_some_and(|c| c != NORMAL),
                            code,
                        };
                    }
                    Ok(None) => break End::Vanished,
                    Err(WsError::Protocol(code, why)) => {
                        tracing::debug!(code, why, "websocket protocol error");
                        let _ = ws.send_close(Some((code, why))).await;
                        break End::Vanished;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "websocket error");
                        break End::Vanished;
                    }
                };
                let mut flow = if text.is_empty() {
                    Flow::Continue
                } else {
                    session.on_text(&text, &mut tx, &mut replies)
                };
                if let Flow::Place(join) = flow {
                    flow = session.place(*join, &mut tx, &mut replies).await;
                }
                if let Flow::Resume { participant, token } = flow {
                    flow = Flow::Continue;
                    match session.resume(participant, &token, &mut tx).await {
                        Ok(resumed) => replies.push(resumed),
                        Err(why) => replies.push(ServerMessage::error(ErrorCode::ResumeFailed, why)),
                    }
                }
                for r in replies.drain(..) {
                    if ws.send_text(&r.to_json()).await.is_err() {
                        break;
                    }
                }
                if let Flow::Close(code, reason) = flow {
                    break End::Close(code, reason);
                }
            }
            out = rx.recv() => match out {
                Some(Outbound::Event(event)) => {
                    let m = session.outgoing(*event);
                    if ws.send_text(&m.to_json()).await.is_err() {
                        break End::Vanished;
                    }
                }
                Some(Outbound::Superseded) => {
                    // Resumed on another socket: that one holds the session now.
                    session.participant = None;
                    break End::Superseded;
                }
                Some(Outbound::Close(reason)) => {
                    // The engine let go of us: nothing to tell it on the way out.
                    if let Some(pid) = session.participant.take() {
                        session.shared.routes.unregister(pid);
                        session.shared.resumes.forget(pid);
                    }
                    let (code, why) = match reason {
                        CloseReason::Left => (NORMAL, "left"),
                        CloseReason::Timeout => (MEDIA_TIMEOUT, "media timeout"),
                        CloseReason::Rejected => (POLICY, "join refused"),
                        CloseReason::RoomClosed => (NORMAL, "room closed"),
                        CloseReason::Kicked => (NORMAL, "kicked"),
                    };
                    break End::Close(code, why);
                }
                // Our route was dropped (queue overflow) or the node is stopping.
                None => break End::Close(SERVER_ERROR, "signaling queue overflow"),
            }
        }
    };
    let close = match end {
        End::Close(code, reason) => Some((code, reason)),
        End::Vanished => {
            session.park();
            None
        }
        End::ClientClosed { vanished, code } => {
            if vanished {
                session.park();
            }
            // The echo (RFC 6455 §5.5.1): the client's code, or none.
            let _ = ws.send_close(code.map(|c| (c, ""))).await;
            None
        }
        End::Superseded => Some((RESUMED_ELSEWHERE, "resumed elsewhere")),
    };
    if let Some((code, reason)) = close {
        let _ = ws.send_close(Some((code, reason))).await;
    }
    session.leave();
}

impl Session {
    /// An engine event as the protocol v1 message this client gets. The engine's
    /// answer to the join (`joined`, or why not) is counted, and `joined` gains what
    /// only signaling knows: STUN, and TURN with credentials for this participant, and
    /// a resume token.
    fn outgoing(&mut self, event: ClientEvent) -> ServerMessage {
        match event {
            ClientEvent::Joined(j) if !self.answered => {
                self.answered = true;
                self.shared.joins.count("ok");
                let ice_servers = self
                    .shared
                    .config
                    .ice
                    .servers_for(&j.participant.to_string(), unix_now());
                let resume_token = (!self.shared.config.resume_window.is_zero())
                    .then(|| self.shared.resumes.issue(j.participant, j.room.clone()))
                    .filter(|t| !t.is_empty());
                let alternates = self.shared.cluster.as_ref().map_or_else(Vec::new, |c| {
                    c.nodes()
                        .into_iter()
                        .filter(|n| n.index != c.index() && !n.draining)
                        .map(|n| n.url)
                        .collect()
                });
                wire::joined(j, ice_servers, resume_token, alternates)
            }
            ClientEvent::Refused { why, .. } if !self.answered => {
                self.answered = true;
                self.shared.joins.count(wire::error_code(why).as_str());
                wire::server_message(event)
            }
            other => wire::server_message(other),
        }
    }

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
            ClientMessage::Offer { sdp, sources } => {
                if sources.len() > 2 || sources.keys().any(|mid| mid.len() > 16) {
                    replies.push(ServerMessage::error(
                        ErrorCode::BadRequest,
                        "sources: at most two entries (the camera and the screen), each a mid of 1 to 16 characters",
                    ));
                    return Flow::Continue;
                }
                let mut video = Vec::with_capacity(sources.len());
                for (mid, source) in sources {
                    match wire::video_source(source) {
                        Some(s) => video.push((mid, s)),
                        None => {
                            replies.push(ServerMessage::error(
                                ErrorCode::BadRequest,
                                format!("sources: {mid:?} must be \"camera\" or \"screen\""),
                            ));
                            return Flow::Continue;
                        }
                    }
                }
                engine.send(Command::Offer {
                    participant: pid,
                    sdp,
                    sources: video,
                });
            }
            ClientMessage::Video { source, enabled } => match wire::video_source(source) {
                Some(source) => {
                    engine.send(Command::SetVideo {
                        participant: pid,
                        source,
                        enabled,
                    });
                }
                None => replies.push(ServerMessage::error(
                    ErrorCode::BadRequest,
                    "video: source must be \"camera\" or \"screen\"",
                )),
            },
            ClientMessage::Subscribe {
                slot,
                participant_id,
                source,
                quality,
            } => match wire::video_source(source) {
                Some(source) => {
                    engine.send(Command::Subscribe {
                        participant: pid,
                        slot,
                        publisher: participant_id,
                        source,
                        quality: wire::video_quality(quality),
                    });
                }
                None => replies.push(ServerMessage::error(
                    ErrorCode::BadRequest,
                    "subscribe: source must be \"camera\" or \"screen\"",
                )),
            },
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
            ClientMessage::Whisper { to } => {
                engine.send(Command::SetWhisper {
                    participant: pid,
                    to,
                });
            }
            ClientMessage::Position { position } => {
                engine.send(Command::SetPosition {
                    participant: pid,
                    position,
                });
            }
            ClientMessage::P2pSignal { to, data } => {
                if !self.p2p_signals.allow(Instant::now()) {
                    replies.push(ServerMessage::error(
                        ErrorCode::RateLimited,
                        "too many p2p_signal messages",
                    ));
                    return Flow::Continue;
                }
                let data = serde_json::Value::Object(data).to_string();
                if data.len() > MAX_P2P_SIGNAL_BYTES {
                    replies.push(ServerMessage::error(
                        ErrorCode::BadRequest,
                        format!("p2p_signal: data is larger than {MAX_P2P_SIGNAL_BYTES} bytes"),
                    ));
                    return Flow::Continue;
                }
                engine.send(Command::P2pSignal {
                    participant: pid,
                    to,
                    data,
                });
            }
            ClientMessage::Speaking { level } => {
                if !(0.0..=1.0).contains(&level) {
                    replies.push(ServerMessage::error(
                        ErrorCode::BadRequest,
                        "speaking: level must be a number from 0 to 1",
                    ));
                } else if !self.speaking.allow(Instant::now()) {
                    replies.push(ServerMessage::error(
                        ErrorCode::RateLimited,
                        "too many speaking reports",
                    ));
                } else {
                    engine.send(Command::Speaking {
                        participant: pid,
                        level,
                    });
                }
            }
            ClientMessage::P2pFailed { peer } => {
                engine.send(Command::P2pFailed {
                    participant: pid,
                    peer,
                });
            }
            ClientMessage::Ping { id } => replies.push(ServerMessage::Pong { id }),
            ClientMessage::Resume { .. } => {
                replies.push(ServerMessage::error(
                    ErrorCode::BadRequest,
                    "already in a session",
                ));
            }
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
        let (room, name, token, p2p) = match message {
            ClientMessage::Join {
                room,
                name,
                token,
                p2p,
            } => (room, name, token, p2p),
            ClientMessage::Resume {
                participant_id,
                resume_token,
            } => {
                if !self.shared.allow_join(self.ip) {
                    replies.push(ServerMessage::error(
                        ErrorCode::RateLimited,
                        "too many joins from this address; retry later",
                    ));
                    return Flow::Close(TRY_AGAIN_LATER, "too many joins");
                }
                return Flow::Resume {
                    participant: participant_id,
                    token: resume_token,
                };
            }
            other => {
                replies.push(ServerMessage::error(
                    ErrorCode::NotJoined,
                    format!("send join first (got {})", other.kind()),
                ));
                return Flow::Continue;
            }
        };
        if !self.shared.allow_join(self.ip) {
            self.answered = true;
            self.shared.joins.count(ErrorCode::RateLimited.as_str());
            replies.push(ServerMessage::error(
                ErrorCode::RateLimited,
                "too many joins from this address; retry later",
            ));
            return Flow::Close(TRY_AGAIN_LATER, "too many joins");
        }
        // In a cluster a draining node sends the join elsewhere (see `place`).
        if self.shared.draining.load(Ordering::Relaxed) && self.shared.cluster.is_none() {
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
        let join = PendingJoin {
            room,
            name,
            identity,
            permissions,
            p2p,
        };
        if self.shared.cluster.is_some() {
            return Flow::Place(Box::new(join));
        }
        self.admit(join, tx, replies)
    }

    /// In a cluster: where the join belongs. Here (after making sure a room that
    /// spans runs here with its home's policy), or a `redirect` to its home node.
    async fn place(
        &mut self,
        join: PendingJoin,
        tx: &mut Option<mpsc::Sender<Outbound>>,
        replies: &mut Vec<ServerMessage>,
    ) -> Flow {
        let Some(cluster) = self.shared.cluster.clone() else {
            return self.admit(join, tx, replies);
        };
        if self.shared.draining.load(Ordering::Relaxed) {
            self.answered = true;
            return match cluster.drain_target(&join.room).await {
                Some(url) => self.redirect(&join.room, url, replies),
                None => {
                    self.shared.joins.count(ErrorCode::Unavailable.as_str());
                    replies.push(ServerMessage::error(
                        ErrorCode::Unavailable,
                        "this node is draining and no other node takes joins",
                    ));
                    Flow::Close(GOING_AWAY, "node draining")
                }
            };
        }
        let placed = match cluster.place_join(&join.room).await {
            Ok(Placement::Local) => {
                // Placed here, but the room does not exist and a join does not make
                // one: the claim goes (the engine answers `room_not_found`).
                let auto = self.shared.config.dev || self.shared.config.auto_create_rooms;
                if !auto && !crate::cluster::runs_here(&self.shared, &join.room).await {
                    cluster.release_claim(&join.room).await;
                }
                Ok(())
            }
            Ok(Placement::Span { home }) => {
                crate::cluster::ensure_replica(&self.shared, &cluster, home, &join.room).await
            }
            Ok(Placement::Redirect { url }) => {
                self.answered = true;
                return self.redirect(&join.room, url, replies);
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(why) = placed {
            self.answered = true;
            self.shared.joins.count(ErrorCode::Unavailable.as_str());
            tracing::warn!(room = %join.room, error = %why, "join could not be placed");
            replies.push(ServerMessage::error(
                ErrorCode::Unavailable,
                format!("the cluster cannot place this join now: {why}; retry"),
            ));
            return Flow::Close(TRY_AGAIN_LATER, "cluster unavailable");
        }
        self.admit(join, tx, replies)
    }

    /// Answers a join with `redirect` to another node's `url`; the socket closes.
    fn redirect(&mut self, room: &RoomId, url: String, replies: &mut Vec<ServerMessage>) -> Flow {
        self.shared.joins.count("redirect");
        tracing::info!(%room, %url, "join redirected to another node");
        replies.push(ServerMessage::Redirect { url });
        Flow::Close(NORMAL, "redirect")
    }

    /// Hands a placed join to the engine.
    fn admit(
        &mut self,
        join: PendingJoin,
        tx: &mut Option<mpsc::Sender<Outbound>>,
        replies: &mut Vec<ServerMessage>,
    ) -> Flow {
        let PendingJoin {
            room,
            name,
            identity,
            permissions,
            p2p,
        } = join;
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
            p2p,
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
                    priority: claims.grants.priority,
                    sources: claims
                        .grants
                        .sources
                        .as_deref()
                        .map_or(Sources::ALL, Sources::from_list),
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
            self.shared.resumes.forget(pid);
            self.shared.engine.send(Command::Leave { participant: pid });
        }
    }

    /// The client vanished: keep its session for the resume window (the room sees
    /// nothing), then leave unless a `resume` took it over.
    fn park(&mut self) {
        let window = self.shared.config.resume_window;
        if window.is_zero() {
            return; // `leave` follows
        }
        let Some(pid) = self.participant else {
            return;
        };
        let Some(generation) = self.shared.resumes.park(pid) else {
            return;
        };
        self.participant = None;
        let (tx, mut rx) = mpsc::channel::<Outbound>(CONNECTION_QUEUE);
        self.shared.routes.register(pid, tx);
        tracing::info!(participant = %pid, ?window, "signaling dropped: session parked");
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::sleep(window);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    out = rx.recv() => match out {
                        // Messages for a client that is not there are dropped.
                        Some(Outbound::Event(_)) => {}
                        Some(Outbound::Close(_)) => {
                            // The engine let go of it meanwhile (timeout, kick, ...).
                            shared.resumes.forget(pid);
                            return;
                        }
                        // Resumed: the new socket holds the route now.
                        Some(Outbound::Superseded) => return,
                        // Our route was dropped (not by a resume): leave now.
                        None => {
                            if shared.resumes.expire(pid, generation) {
                                shared.engine.send(Command::Leave { participant: pid });
                            }
                            return;
                        }
                    },
                    _ = &mut deadline => {
                        if shared.resumes.expire(pid, generation) {
                            tracing::info!(participant = %pid, "not resumed: leaving");
                            shared.routes.unregister(pid);
                            shared.engine.send(Command::Leave { participant: pid });
                        }
                        return;
                    }
                }
            }
        });
    }

    /// A `resume`: takes the session over and tells the client the room as it is.
    async fn resume(
        &mut self,
        pid: ParticipantId,
        token: &str,
        tx: &mut Option<mpsc::Sender<Outbound>>,
    ) -> Result<ServerMessage, &'static str> {
        const NO_SESSION: &str =
            "no session to resume (it ended, or the token is wrong): join again";
        let room = self
            .shared
            .resumes
            .claim(pid, token)
            .map_err(|_| NO_SESSION)?;
        let Some(sender) = tx.take() else {
            return Err(NO_SESSION);
        };
        self.shared.routes.supersede(pid, sender);
        self.participant = Some(pid);
        self.joined = true;
        self.answered = true;
        tracing::info!(%room, participant = %pid, "session resumed");
        let participants = self
            .shared
            .control
            .participants(&self.shared.engine, room.clone())
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.participant_id != pid)
            .map(|p| chorus_protocol::signal::ParticipantInfo {
                participant_id: p.participant_id,
                name: p.name,
                muted: p.muted,
                server_muted: p.server_muted,
                deafened: p.deafened,
                csrc: p.csrc,
                camera: p.camera,
                screen: p.screen,
            })
            .collect();
        let mode = self
            .shared
            .control
            .room_mode(&self.shared.engine, room.clone())
            .await
            .unwrap_or_default();
        Ok(ServerMessage::Resumed {
            participant_id: pid,
            room,
            participants,
            mode,
            ice_servers: self
                .shared
                .config
                .ice
                .servers_for(&pid.to_string(), unix_now()),
        })
    }
}

/// Seconds since the Unix epoch (TURN credentials expire in wall-clock time).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
