//! A real-network test client for a running node (`chorus_signaling::start`): a real
//! WebSocket to `/v1/signal` and a real str0m `Rtc` on a UDP socket on 127.0.0.1, run
//! on the real clock by a background tokio task.
//!
//! [`LiveClient::join`] does what a browser does (`join` → `joined`, one sendonly
//! microphone plus `slots` recvonly audio m-sections in the `offer`, the `answer`,
//! ICE as the controlling agent, DTLS) and returns once DTLS is connected. From then
//! on the background task
//!
//! - sends one Opus packet every 20 ms on the microphone while [`LiveClient::set_speaking`]
//!   is on, with an RFC 6464 level of −20 dBov (loud: the node counts it as speaking
//!   from the first packet), and nothing while it is off (the node stops counting the
//!   client as a speaker 300 ms after its last packet);
//! - counts the RTP packets it receives, in total and per CSRC (the node puts the
//!   speaker's CSRC on every forwarded packet);
//! - logs and queues every server message ([`LiveClient::messages`],
//!   [`LiveClient::wait_for`]) and notes the close code when the node closes the socket;
//! - keeps the last [`SENT_RING`] SRTP packets it sent, for [`LiveClient::replay_sent`].
//!
//! [`LiveClient::send_raw`] sends any bytes from the client's own UDP socket (its source
//! address is the one the node knows), and [`LiveClient::stop_media`] stops the str0m
//! client while the socket stays open: what an attacker who can send from (or spoof) a
//! participant's address can do.
//!
//! Tests on the real network must not assert timing: every wait here takes a timeout
//! that is only an upper bound, and returns as soon as its condition holds.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chorus_client::OPUS_PT;
use chorus_protocol::demux::{classify, DatagramKind};
use chorus_signaling::RunningNode;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use str0m::change::SdpPendingOffer;
use str0m::media::{Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Upper bound of each step of [`LiveClient::join`] (WebSocket, `joined`, `answer`,
/// DTLS connected). Generous: it only matters when something is broken.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// One Opus frame: the interval between packets while speaking.
pub const FRAME: Duration = Duration::from_millis(20);
/// The RFC 6464 level of the packets sent while speaking, in −dBov.
pub const SPEAKING_DBOV: u8 = 20;
/// RTP clock ticks per millisecond (Opus: 48 kHz).
const TICKS_PER_MS: u32 = 48;
/// The longest the background task sleeps, so it notices [`LiveClient::set_speaking`].
const MAX_SLEEP: Duration = Duration::from_millis(10);
/// SRTP packets the client keeps of those it sent, for [`LiveClient::replay_sent`].
pub const SENT_RING: usize = 64;

/// Polls `condition` every 20 ms until it holds (true) or `timeout` passed (false).
pub async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the background task shares with the [`LiveClient`].
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Woken on every change of `state`.
    changed: Notify,
    speaking: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.changed.notify_waiters();
    }
}

#[derive(Default)]
struct State {
    /// Every server message, in order of arrival.
    log: Vec<Value>,
    /// Messages not yet taken by [`LiveClient::wait_for`].
    queue: VecDeque<Value>,
    /// The close code, once the WebSocket closed (1005 without a code, 1006 without a
    /// close frame).
    closed: Option<u16>,
    connected: bool,
    /// Why the str0m client failed, if it did (it stops then).
    media_error: Option<String>,
    sent: u64,
    received_total: u64,
    received_by_csrc: HashMap<u32, u64>,
    /// Where str0m last sent a datagram: the node's media address.
    remote: Option<SocketAddr>,
    /// The last [`SENT_RING`] SRTP packets sent, oldest first.
    sent_rtp: VecDeque<Vec<u8>>,
}

/// One participant on a real node: signaling over a real WebSocket, media over real
/// UDP. Dropping it stops its background task (the node sees the socket drop).
pub struct LiveClient {
    participant_id: String,
    csrc: u32,
    joined: Value,
    answer: Value,
    shared: Arc<Shared>,
    outgoing: mpsc::UnboundedSender<Cmd>,
    /// The client's UDP socket, shared with the background task.
    socket: Arc<UdpSocket>,
    task: tokio::task::JoinHandle<()>,
}

impl LiveClient {
    /// Joins `room` on `node` as `name` (with `token` if given), offers a microphone and
    /// `slots` receive-only audio m-sections, applies the answer and returns once DTLS
    /// is connected. Each step may take up to [`STEP_TIMEOUT`]; an `error` from the node,
    /// a close or a timeout is an `Err` saying which.
    pub async fn join(
        node: &RunningNode,
        room: &str,
        name: &str,
        token: Option<&str>,
        slots: usize,
    ) -> Result<LiveClient, String> {
        let bind: SocketAddr = ([127, 0, 0, 1], 0).into();
        LiveClient::join_from(node, room, name, token, slots, bind).await
    }

    /// [`LiveClient::join`] with the client's UDP socket bound to `bind` (e.g. `[::1]:0`
    /// for an IPv6 client).
    pub async fn join_from(
        node: &RunningNode,
        room: &str,
        name: &str,
        token: Option<&str>,
        slots: usize,
        bind: SocketAddr,
    ) -> Result<LiveClient, String> {
        LiveClient::join_at(node.http, room, name, token, slots, bind).await
    }

    /// [`LiveClient::join_from`] for a node known by its HTTP address only (one run
    /// as a separate process).
    pub async fn join_at(
        http: SocketAddr,
        room: &str,
        name: &str,
        token: Option<&str>,
        slots: usize,
        bind: SocketAddr,
    ) -> Result<LiveClient, String> {
        let url = format!("ws://{http}/v1/signal");
        let (mut ws, _) = tokio::time::timeout(STEP_TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .map_err(|_| "WebSocket connect timed out".to_owned())?
            .map_err(|e| format!("WebSocket connect: {e}"))?;
        let shared = Arc::new(Shared::default());

        let mut join = json!({"type": "join", "room": room, "name": name});
        if let Some(token) = token {
            join["token"] = token.into();
        }
        ws_send(&mut ws, join.to_string()).await?;
        let joined = expect(&mut ws, &shared, "joined").await?;
        let participant_id = joined["participant_id"]
            .as_str()
            .ok_or_else(|| format!("joined without participant_id: {joined}"))?
            .to_owned();
        let csrc = joined["csrc"]
            .as_u64()
            .and_then(|c| u32::try_from(c).ok())
            .ok_or_else(|| format!("joined without csrc: {joined}"))?;

        let socket = UdpSocket::bind(bind)
            .await
            .map(Arc::new)
            .map_err(|e| format!("bind UDP: {e}"))?;
        let local = socket
            .local_addr()
            .map_err(|e| format!("UDP address: {e}"))?;
        let (mut media, offer) = Media::new(local, slots)?;
        ws_send(&mut ws, json!({"type": "offer", "sdp": offer}).to_string()).await?;
        let answer = expect(&mut ws, &shared, "answer").await?;
        let sdp = answer["sdp"]
            .as_str()
            .ok_or_else(|| format!("answer without sdp: {answer}"))?;
        media.accept_answer(sdp)?;

        let (outgoing, commands) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(ws, socket.clone(), media, commands, shared.clone()));
        let client = LiveClient {
            participant_id,
            csrc,
            joined,
            answer,
            shared,
            outgoing,
            socket,
            task,
        };
        client
            .wait_state(STEP_TIMEOUT, |s| {
                (s.connected || s.media_error.is_some() || s.closed.is_some()).then_some(())
            })
            .await;
        let failure = {
            let s = client.shared.lock();
            match (s.connected, &s.media_error, s.closed) {
                (_, Some(e), _) => Some(format!("WebRTC failed: {e}")),
                (true, None, _) => None,
                (false, None, Some(code)) => {
                    Some(format!("socket closed ({code}) before DTLS connected"))
                }
                (false, None, None) => Some(format!(
                    "DTLS not connected within {} s",
                    STEP_TIMEOUT.as_secs()
                )),
            }
        };
        match failure {
            None => Ok(client),
            Some(why) => Err(why),
        }
    }

    /// This client's participant id (from `joined`).
    pub fn participant_id(&self) -> &str {
        &self.participant_id
    }

    /// The CSRC others see on this client's audio (from `joined`).
    pub fn csrc(&self) -> u32 {
        self.csrc
    }

    /// The `joined` message.
    pub fn joined(&self) -> &Value {
        &self.joined
    }

    /// The `answer` message (its `slots` are the slots' mids).
    pub fn answer(&self) -> &Value {
        &self.answer
    }

    /// Starts (true) or stops (false) sending a loud Opus packet every 20 ms.
    pub fn set_speaking(&self, speaking: bool) {
        self.shared.speaking.store(speaking, Ordering::Relaxed);
    }

    /// RTP packets sent on the microphone so far.
    pub fn sent(&self) -> u64 {
        self.shared.lock().sent
    }

    /// RTP packets received so far, on all slots.
    pub fn received_total(&self) -> u64 {
        self.shared.lock().received_total
    }

    /// RTP packets received so far that carry `csrc` (the speaker's, see
    /// [`LiveClient::csrc`] and the `csrc` of `joined` and `participant_joined`).
    pub fn received_from(&self, csrc: u32) -> u64 {
        self.shared
            .lock()
            .received_by_csrc
            .get(&csrc)
            .copied()
            .unwrap_or(0)
    }

    /// Whether DTLS is connected (always true after a successful join, unless the str0m
    /// client failed since).
    pub fn connected(&self) -> bool {
        let s = self.shared.lock();
        s.connected && s.media_error.is_none()
    }

    /// Why the str0m client failed, if it did.
    pub fn media_error(&self) -> Option<String> {
        self.shared.lock().media_error.clone()
    }

    /// The node's ICE ufrag for this client (`a=ice-ufrag:` of the answer): what a STUN
    /// request must name to reach this participant.
    pub fn node_ufrag(&self) -> Option<String> {
        self.answer["sdp"]
            .as_str()?
            .lines()
            .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
            .map(str::to_owned)
    }

    /// The client's own UDP address (the source the node knows it by).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.local_addr().ok()
    }

    /// The node's media address, as the client's str0m last sent to it.
    pub fn node_addr(&self) -> Option<SocketAddr> {
        self.shared.lock().remote
    }

    /// The SSRC of the client's microphone (from the SRTP packets it sent; `None` before
    /// the first).
    pub fn mic_ssrc(&self) -> Option<u32> {
        let s = self.shared.lock();
        let p = s.sent_rtp.back()?;
        Some(u32::from_be_bytes(p.get(8..12)?.try_into().ok()?))
    }

    /// Sends `data` as one datagram from the client's own UDP socket to the node's media
    /// address, beside whatever str0m sends. False if the node's address is not known
    /// yet or the socket refused.
    pub fn send_raw(&self, data: &[u8]) -> bool {
        let Some(node) = self.node_addr() else {
            return false;
        };
        self.socket.try_send_to(data, node).is_ok()
    }

    /// Sends again, from the client's socket, the last `n` (at most [`SENT_RING`]) SRTP
    /// packets it sent, oldest first; returns how many went out.
    pub fn replay_sent(&self, n: usize) -> usize {
        let (node, packets) = {
            let s = self.shared.lock();
            let skip = s.sent_rtp.len().saturating_sub(n);
            (
                s.remote,
                s.sent_rtp.iter().skip(skip).cloned().collect::<Vec<_>>(),
            )
        };
        let Some(node) = node else {
            return 0;
        };
        packets
            .iter()
            .filter(|p| self.socket.try_send_to(p, node).is_ok())
            .count()
    }

    /// Stops the str0m client for good (no more STUN, DTLS, RTP or RTCP from it, nothing
    /// received is handled) while the UDP socket and the WebSocket stay open: a client
    /// gone silent, whose address [`LiveClient::send_raw`] can still send from.
    pub fn stop_media(&self) {
        let _ = self.outgoing.send(Cmd::StopMedia);
    }

    /// Sends one message to the node (in order with the others; dropped once the
    /// socket is closed).
    pub fn send(&self, message: Value) {
        let _ = self.outgoing.send(Cmd::Text(message.to_string()));
    }

    /// Drops the WebSocket without a close frame (a network failure, as the node sees
    /// it); media keeps flowing.
    pub async fn drop_signaling(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        let _ = self.outgoing.send(Cmd::DropSignaling(done));
        let _ = wait.await;
    }

    /// Opens a new WebSocket and resumes this participant's session with the
    /// `resume_token` from `joined`; returns `resumed`, or why not.
    pub async fn resume(&self, node: &RunningNode) -> Result<Value, String> {
        let token = self.joined["resume_token"]
            .as_str()
            .ok_or("joined carried no resume_token")?
            .to_owned();
        let url = format!("ws://{}/v1/signal", node.http);
        let (mut ws, _) = tokio::time::timeout(STEP_TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .map_err(|_| "WebSocket connect timed out".to_owned())?
            .map_err(|e| format!("WebSocket connect: {e}"))?;
        let resume =
            json!({"type": "resume", "participant_id": self.participant_id, "resume_token": token});
        ws_send(&mut ws, resume.to_string()).await?;
        let resumed = expect(&mut ws, &self.shared, "resumed").await?;
        self.shared.update(|s| s.closed = None);
        let _ = self.outgoing.send(Cmd::Signaling(Box::new(ws)));
        Ok(resumed)
    }

    /// Sends `leave`. The node then closes the socket with 1000: see
    /// [`LiveClient::wait_closed`]. Media keeps running until the client is dropped.
    pub fn leave(&self) {
        self.send(json!({"type": "leave"}));
    }

    /// Takes the oldest queued server message of type `kind` (messages of other types
    /// stay queued), waiting up to `timeout` for one. `joined` and `answer`, which
    /// [`LiveClient::join`] consumed, are never queued.
    pub async fn wait_for(&self, kind: &str, timeout: Duration) -> Option<Value> {
        self.wait_state(timeout, |s| {
            let i = s.queue.iter().position(|m| m["type"] == kind)?;
            s.queue.remove(i)
        })
        .await
    }

    /// Every server message of type `kind` received so far, in order (taken by
    /// [`LiveClient::wait_for`] or not).
    /// Whether this client was told that `participant` left.
    pub fn saw_leave(&self, participant: &str) -> bool {
        self.messages("participant_left")
            .iter()
            .any(|m| m["participant_id"] == participant)
    }

    pub fn messages(&self, kind: &str) -> Vec<Value> {
        self.shared
            .lock()
            .log
            .iter()
            .filter(|m| m["type"] == kind)
            .cloned()
            .collect()
    }

    /// The WebSocket's close code once it is closed (1005: a close frame without a
    /// code; 1006: no close frame).
    pub fn closed(&self) -> Option<u16> {
        self.shared.lock().closed
    }

    /// Waits up to `timeout` for the WebSocket to close; its close code.
    pub async fn wait_closed(&self, timeout: Duration) -> Option<u16> {
        self.wait_state(timeout, |s| s.closed).await
    }

    /// Waits until `f` returns something or `timeout` passed (then `f`'s last word).
    async fn wait_state<T>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&mut State) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            // Registered before looking, so no change between the look and the wait
            // is missed.
            notified.as_mut().enable();
            let got = f(&mut self.shared.lock());
            if got.is_some() {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return f(&mut self.shared.lock());
            }
        }
    }
}

impl Drop for LiveClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn ws_send(ws: &mut Ws, text: String) -> Result<(), String> {
    ws.send(Message::Text(text.into()))
        .await
        .map_err(|e| format!("WebSocket send: {e}"))
}

/// Reads until a message of type `kind` and returns it. Every message read is logged;
/// the others are queued. An `error`, a close or [`STEP_TIMEOUT`] first is an `Err`.
async fn expect(ws: &mut Ws, shared: &Shared, kind: &str) -> Result<Value, String> {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| format!("no {kind} within {} s", STEP_TIMEOUT.as_secs()))?;
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                shared.update(|s| s.closed = Some(code));
                return Err(format!("socket closed ({code}) before {kind}"));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("WebSocket before {kind}: {e}")),
            None => return Err(format!("WebSocket ended before {kind}")),
        };
        let Ok(m) = serde_json::from_str::<Value>(&text) else {
            return Err(format!("not JSON: {text}"));
        };
        let found = m["type"] == kind;
        let error = m["type"] == "error";
        shared.update(|s| {
            s.log.push(m.clone());
            if !found {
                s.queue.push_back(m.clone());
            }
        });
        if found {
            return Ok(m);
        }
        if error {
            let code = m["code"].as_str().unwrap_or("?");
            let message = m["message"].as_str().unwrap_or("?");
            return Err(format!("error {code} before {kind}: {message}"));
        }
    }
}

/// What the test asks of the background task.
enum Cmd {
    /// A text message for the node.
    Text(String),
    /// Drop the WebSocket without closing it.
    DropSignaling(tokio::sync::oneshot::Sender<()>),
    /// Use this WebSocket from now on.
    Signaling(Box<Ws>),
    /// Stop the str0m client.
    StopMedia,
}

/// The background task: the WebSocket, the UDP socket and the str0m client.
async fn run(
    ws: Ws,
    socket: Arc<UdpSocket>,
    mut media: Media,
    mut commands: mpsc::UnboundedReceiver<Cmd>,
    shared: Arc<Shared>,
) {
    let mut ws = Some(ws);
    let mut buf = vec![0u8; 2048];
    media.tick(&socket, &shared);
    loop {
        let now = Instant::now();
        let wake = media.next_wake(now).min(now + MAX_SLEEP);
        tokio::select! {
            msg = next_message(&mut ws) => match msg {
                Some(Ok(Message::Text(t))) => {
                    let m = serde_json::from_str::<Value>(&t)
                        .unwrap_or_else(|_| json!({"type": "<not json>", "text": t.as_str()}));
                    shared.update(|s| {
                        s.log.push(m.clone());
                        s.queue.push_back(m);
                    });
                }
                Some(Ok(Message::Close(frame))) => {
                    // Keep reading: tungstenite answers the close, then the stream ends.
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    shared.update(|s| s.closed = Some(code));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    ws = None;
                    shared.update(|s| {
                        s.closed.get_or_insert(1006);
                    });
                }
            },
            cmd = commands.recv() => match cmd {
                Some(Cmd::DropSignaling(done)) => {
                    // Dropping the stream ends the TCP connection with no close frame.
                    ws = None;
                    let _ = done.send(());
                }
                Some(Cmd::Signaling(new)) => ws = Some(*new),
                Some(Cmd::StopMedia) => media.dead = true,
                Some(Cmd::Text(text)) => {
                    if let Some(w) = ws.as_mut() {
                        if w.send(Message::Text(text.into())).await.is_err() {
                            ws = None;
                            shared.update(|s| {
                                s.closed.get_or_insert(1006);
                            });
                        }
                    }
                }
                None => return, // the client was dropped
            },
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    media.receive(&socket, &shared, from, &buf[..n]);
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => media.tick(&socket, &shared),
        }
    }
}

/// The next message of the WebSocket, if there is one (never, if there is none).
async fn next_message(
    ws: &mut Option<Ws>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match ws {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

/// The str0m client: non-ICE-lite (controlling), rtp mode, Opus.
struct Media {
    rtc: Rtc,
    local: SocketAddr,
    mic: Mid,
    pending: Option<SdpPendingOffer>,
    mic_pt: Option<Pt>,
    connected: bool,
    dead: bool,
    next_timeout: Instant,
    /// When the next packet is due, while speaking.
    next_frame: Option<Instant>,
    last_frame: Option<Instant>,
    frames: u32,
    seq: u64,
    ts: u32,
}

impl Media {
    /// A client with a host candidate at `local`, and its offer.
    fn new(local: SocketAddr, slots: usize) -> Result<(Media, String), String> {
        let now = Instant::now();
        let mut rtc = chorus_client::config(OPUS_PT).build(now);
        let candidate = Candidate::host(local, "udp").map_err(|e| format!("candidate: {e}"))?;
        rtc.add_local_candidate(candidate);
        let offer = chorus_client::offer(&mut rtc, slots).ok_or("str0m made no offer")?;
        let (mic, pending, sdp) = (offer.mic, offer.pending, offer.sdp);
        let media = Media {
            rtc,
            local,
            mic,
            pending: Some(pending),
            mic_pt: None,
            connected: false,
            dead: false,
            next_timeout: now,
            next_frame: None,
            last_frame: None,
            frames: 0,
            seq: 1000,
            ts: 5000,
        };
        Ok((media, sdp))
    }

    fn accept_answer(&mut self, sdp: &str) -> Result<(), String> {
        let pending = self.pending.take().ok_or("no offer outstanding")?;
        self.mic_pt = chorus_client::accept_answer(&mut self.rtc, pending, sdp)?;
        Ok(())
    }

    /// When the task must next call [`Media::tick`].
    fn next_wake(&self, now: Instant) -> Instant {
        if self.dead {
            // Nothing to drive: only commands and the WebSocket wake the task.
            return now + MAX_SLEEP;
        }
        let mut wake = self.next_timeout;
        if let Some(frame) = self.next_frame {
            wake = wake.min(frame);
        }
        wake.max(now)
    }

    /// Sends a packet if one is due, then lets str0m handle its timeout and drains it.
    fn tick(&mut self, socket: &UdpSocket, shared: &Shared) {
        if self.dead {
            return;
        }
        let now = Instant::now();
        if shared.speaking.load(Ordering::Relaxed) && self.connected {
            let due = *self.next_frame.get_or_insert(now);
            if due <= now {
                self.send_frame(now, shared);
                let mut next = due + FRAME;
                if next + 5 * FRAME < now {
                    next = now + FRAME; // fell far behind: skip, don't burst
                }
                self.next_frame = Some(next);
            }
        } else {
            self.next_frame = None;
        }
        // Either the timeout is due or a packet was just written (str0m sends it from
        // its timeout handler); an early timeout is harmless.
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            self.fail(shared, e);
            return;
        }
        self.drain(socket, shared, now);
    }

    fn receive(&mut self, socket: &UdpSocket, shared: &Shared, from: SocketAddr, data: &[u8]) {
        if self.dead {
            return;
        }
        let now = Instant::now();
        let Ok(receive) = Receive::new(Protocol::Udp, from, self.local, data) else {
            return;
        };
        if let Err(e) = self.rtc.handle_input(Input::Receive(now, receive)) {
            self.fail(shared, e);
            return;
        }
        // rtp mode holds one received packet at a time: drain after every input.
        self.drain(socket, shared, now);
    }

    /// Writes one loud packet on the microphone.
    fn send_frame(&mut self, now: Instant, shared: &Shared) {
        let Some(pt) = self.mic_pt else {
            return;
        };
        // Timestamps follow the wall clock across pauses, like a real sender's.
        let ticks = match self.last_frame {
            Some(last) if now.saturating_duration_since(last) > 3 * FRAME => {
                let ms = now.saturating_duration_since(last).as_millis();
                u32::try_from(ms)
                    .unwrap_or(u32::MAX)
                    .saturating_mul(TICKS_PER_MS)
            }
            _ => 20 * TICKS_PER_MS,
        };
        if self.last_frame.is_some() {
            self.ts = self.ts.wrapping_add(ticks);
        }
        // An Opus TOC byte (CELT fullband, 20 ms, mono, one frame), then a counter.
        let mut payload = vec![0xFC];
        payload.extend_from_slice(&self.frames.to_be_bytes());
        payload.resize(40, 0);
        let ext = ExtensionValues {
            audio_level: Some(-(SPEAKING_DBOV as i8)),
            voice_activity: Some(true),
            ..Default::default()
        };
        let write = RtpWrite::new(
            pt,
            self.seq.into(),
            self.ts,
            now,
            Arc::<[u8]>::from(payload),
        )
        .ext_vals(ext);
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(self.mic, None) else {
            return;
        };
        tx.write_rtp(write);
        self.frames = self.frames.wrapping_add(1);
        self.seq += 1;
        self.last_frame = Some(now);
        shared.update(|s| s.sent += 1);
    }

    /// Polls str0m until it asks for a timeout: datagrams go out, events are counted.
    fn drain(&mut self, socket: &UdpSocket, shared: &Shared, now: Instant) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    // A timeout already past would spin: keep it just after `now`.
                    self.next_timeout = t.max(now + Duration::from_micros(100));
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    // Loopback does not block; a lost datagram is what UDP is for.
                    let _ = socket.try_send_to(&t.contents, t.destination);
                    let mut s = shared.lock();
                    s.remote = Some(t.destination);
                    if classify(&t.contents) == DatagramKind::Rtp {
                        if s.sent_rtp.len() == SENT_RING {
                            s.sent_rtp.pop_front();
                        }
                        s.sent_rtp.push_back(t.contents.to_vec());
                    }
                }
                Ok(Output::Event(Event::Connected)) => {
                    self.connected = true;
                    shared.update(|s| s.connected = true);
                }
                Ok(Output::Event(Event::RtpPacket(p))) => {
                    let csrcs = &p.header.csrc[..p.header.csrc_count];
                    shared.update(|s| {
                        s.received_total += 1;
                        for csrc in csrcs {
                            *s.received_by_csrc.entry(*csrc).or_default() += 1;
                        }
                    });
                }
                Ok(Output::Event(_)) => {}
                Err(e) => {
                    self.fail(shared, e);
                    return;
                }
            }
        }
    }

    fn fail(&mut self, shared: &Shared, e: str0m::RtcError) {
        self.dead = true;
        tracing::warn!("live client WebRTC failed: {e}");
        shared.update(|s| s.media_error = Some(e.to_string()));
    }
}
