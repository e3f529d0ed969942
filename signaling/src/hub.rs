//! Where the shards' answers and events meet the control plane.
//!
//! A control-plane call becomes an engine [`Request`] sent to the shard(s) that can
//! answer it ([`ControlHub::ask`]); the shards' [`Event::Reply`](chorus_engine::Event::Reply)s
//! come back through [`ControlHub::reply`] on their threads, and events through
//! [`ControlHub::event`] into a broadcast channel that `events.subscribe` connections
//! follow. It knows the engine and the control socket's wire types, nothing of the
//! connections: the JSON-RPC server (`control.rs`) and resumes (`session.rs`) use it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chorus_engine::{CommandSender, Reply, Request, RequestError, RequestId};
use chorus_protocol::control::{ErrorCode, NodeEvent, RpcError};
use parking_lot::Mutex;
use tokio::sync::{broadcast, oneshot};

use crate::wire;

/// How long a request waits for the shards' answers.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Events buffered for each subscriber before it counts as lagging.
const EVENT_BUFFER: usize = 8192;

/// What the shards answered to one request.
pub(crate) type Answers = Vec<Result<Reply, RequestError>>;

struct Pending {
    expected: usize,
    answers: Answers,
    done: Option<oneshot::Sender<Answers>>,
}

/// Where shard replies and events meet the control connections.
pub(crate) struct ControlHub {
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
    pub(crate) events: broadcast::Sender<NodeEvent>,
}

impl Default for ControlHub {
    fn default() -> Self {
        ControlHub {
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            events: broadcast::channel(EVENT_BUFFER).0,
        }
    }
}

impl ControlHub {
    /// A shard answered (called on shard threads; never blocks).
    pub fn reply(&self, id: RequestId, result: Result<Reply, RequestError>) {
        let mut pending = self.pending.lock();
        let Some(p) = pending.get_mut(&id.0) else {
            return; // timed out already
        };
        p.answers.push(result);
        finish_if_answered(&mut pending, id.0);
    }

    /// Something happened (called on shard threads; never blocks).
    pub fn event(&self, event: NodeEvent) {
        // No subscriber is not an error.
        let _ = self.events.send(event);
    }

    /// Sends a request to the shard(s) that answer it and waits for every answer.
    pub async fn ask(&self, engine: &CommandSender, request: Request) -> Result<Answers, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(
            id,
            Pending {
                expected: usize::MAX,
                answers: Vec::new(),
                done: Some(tx),
            },
        );
        let asked = engine.request(RequestId(id), request);
        {
            let mut pending = self.pending.lock();
            if asked == 0 {
                pending.remove(&id);
                return Err(busy());
            }
            // Answers may have arrived before `expected` was known.
            if let Some(p) = pending.get_mut(&id) {
                p.expected = asked;
                finish_if_answered(&mut pending, id);
            }
        }
        match tokio::time::timeout(REPLY_TIMEOUT, rx).await {
            Ok(Ok(answers)) => Ok(answers),
            _ => {
                self.pending.lock().remove(&id);
                Err(busy())
            }
        }
    }

    /// Asks one shard; its answer or the error it gave.
    pub async fn ask_one(
        &self,
        engine: &CommandSender,
        request: Request,
    ) -> Result<Reply, RpcError> {
        self.ask(engine, request)
            .await?
            .into_iter()
            .next()
            .ok_or_else(busy)?
            .map_err(request_error)
    }
}

impl ControlHub {
    /// A room's participants, from its home shard (for `resume`).
    pub async fn participants(
        &self,
        engine: &CommandSender,
        room: chorus_protocol::signal::RoomId,
    ) -> Result<Vec<chorus_protocol::control::ParticipantDetails>, RpcError> {
        match self
            .ask_one(engine, Request::ListParticipants(room))
            .await?
        {
            Reply::Participants(p) => Ok(p.into_iter().map(wire::participant_details).collect()),
            _ => Err(unexpected()),
        }
    }

    /// Which tier carries a room's audio now, from its home shard (for `resume`).
    pub async fn room_mode(
        &self,
        engine: &CommandSender,
        room: chorus_protocol::signal::RoomId,
    ) -> Option<chorus_protocol::signal::RoomMode> {
        match self.ask_one(engine, Request::GetRoom(room)).await {
            Ok(Reply::Room(r)) => Some(wire::room_mode(r.mode)),
            _ => None,
        }
    }
}

/// Hands request `id` its answers once every shard asked has answered.
fn finish_if_answered(pending: &mut HashMap<u64, Pending>, id: u64) {
    if pending
        .get(&id)
        .is_none_or(|p| p.answers.len() < p.expected)
    {
        return;
    }
    if let Some(Pending {
        answers,
        done: Some(done),
        ..
    }) = pending.remove(&id)
    {
        let _ = done.send(answers);
    }
}

pub(crate) fn busy() -> RpcError {
    RpcError::new(
        ErrorCode::Busy,
        "the media engine did not answer in time; retry",
    )
}

pub(crate) fn request_error(e: RequestError) -> RpcError {
    let code = match e {
        RequestError::RoomNotFound(_) => ErrorCode::RoomNotFound,
        RequestError::RoomExists(_) => ErrorCode::RoomExists,
        RequestError::ParticipantNotFound { .. } => ErrorCode::ParticipantNotFound,
        RequestError::Invalid(_) => ErrorCode::InvalidParams,
    };
    RpcError::new(code, e.to_string())
}

pub(crate) fn unexpected() -> RpcError {
    RpcError::new(ErrorCode::Internal, "unexpected answer from the engine")
}
