//! What the cluster layer asks of this node ([`chorus_cluster::ClusterHost`]): a
//! room's policy for a node that is to run it too, control calls another node
//! forwarded here, and the node's load for the directory.

use std::sync::{Arc, Weak};

use chorus_cluster::node::BoxFuture;
use chorus_cluster::ClusterHost;
use chorus_engine::{Reply, Request};
use chorus_protocol::control::{
    Call, ErrorCode, NodeInfo, RoomCreate, RoomDelete, RoomUpdate, RpcError,
};
use chorus_protocol::signal::RoomId;
use serde_json::Value;

use crate::state::Shared;

/// The node as its cluster sees it (weak: the cluster's tasks must not keep a
/// stopped node alive).
pub(crate) struct Host(pub Weak<Shared>, pub CpuMeter);

/// The share of the machine's cores this process used since the last reading
/// (`/proc/self/stat`; 0 where there is none).
#[derive(Default)]
pub(crate) struct CpuMeter(parking_lot::Mutex<Option<(std::time::Instant, f64)>>);

impl CpuMeter {
    /// Linux's USER_HZ, the unit of `/proc/<pid>/stat`'s times (100 on every
    /// architecture Chorus runs on).
    const TICKS_PER_SECOND: f64 = 100.0;

    fn read(&self) -> f32 {
        let Some(cpu_s) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| process_cpu_seconds(&s))
        else {
            return 0.0;
        };
        let now = std::time::Instant::now();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let mut last = self.0.lock();
        let share = match *last {
            Some((at, before)) => {
                let wall = now.saturating_duration_since(at).as_secs_f64();
                if wall > 0.0 {
                    ((cpu_s - before) / wall / cores).clamp(0.0, 1.0)
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        *last = Some((now, cpu_s));
        share as f32
    }
}

/// User + system CPU seconds from a `/proc/<pid>/stat` line (fields 14 and 15,
/// counted after the command name, which may hold spaces and parentheses).
fn process_cpu_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ")": state is field 3; utime is field 14, stime 15.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / CpuMeter::TICKS_PER_SECOND)
}

impl ClusterHost for Host {
    fn room_policy(&self, room: RoomId) -> BoxFuture<Option<Value>> {
        let shared = self.0.upgrade();
        Box::pin(async move {
            let shared = shared?;
            let reply = shared
                .control
                .ask_one(&shared.engine, Request::GetRoom(room))
                .await
                .ok()?;
            let Reply::Room(summary) = reply else {
                return None;
            };
            let info = crate::wire::room_info(summary);
            let create = RoomCreate {
                kind: Some(info.kind),
                max_participants: Some(info.max_participants),
                audio_slots: Some(info.audio_slots),
                video_slots: Some(info.video_slots),
                empty_timeout_s: Some(info.empty_timeout_s),
                metadata: Some(info.metadata),
                whisper: Some(info.whisper),
                spam_guard: Some(info.spam_guard),
                proximity: info.proximity,
                p2p_max: Some(info.p2p_max),
                p2p_downgrade_s: Some(info.p2p_downgrade_s),
                span: Some(true),
                ..RoomCreate::new(info.room)
            };
            serde_json::to_value(create).ok()
        })
    }

    fn call(&self, method: String, params: Value) -> BoxFuture<Result<Value, Value>> {
        let shared = self.0.upgrade();
        Box::pin(async move {
            let to_value = |e: chorus_protocol::control::RpcError| {
                serde_json::to_value(e).unwrap_or(Value::Null)
            };
            let Some(shared) = shared else {
                return Err(to_value(chorus_protocol::control::RpcError::new(
                    chorus_protocol::control::ErrorCode::Unavailable,
                    "the node is stopping",
                )));
            };
            let call = Call::decode(&method, Some(params)).map_err(to_value)?;
            crate::control::dispatch_at(&shared, call, true)
                .await
                .map_err(to_value)
        })
    }

    fn load(&self) -> (u64, f32) {
        match self.0.upgrade() {
            Some(shared) => (shared.routes.len() as u64, self.1.read()),
            None => (0, 0.0),
        }
    }

    fn draining(&self) -> bool {
        self.0
            .upgrade()
            .is_none_or(|s| s.draining.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn promote(&self, room: RoomId) {
        let Some(shared) = self.0.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            // Not there yet (a join creates it next): nothing to promote.
            let _ = shared
                .control
                .ask_one(&shared.engine, Request::PromoteRoom(room))
                .await;
        });
    }

    fn fatal(&self, why: String) {
        let Some(shared) = self.0.upgrade() else {
            return;
        };
        tracing::error!(%why, "leaving the cluster: draining");
        let deadline = shared.config.drain_timeout;
        crate::state::start_drain(shared, deadline);
    }

    fn apply_update(&self, params: Value) {
        let Some(shared) = self.0.upgrade() else {
            return;
        };
        let update: RoomUpdate = match serde_json::from_value(params) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "a room.update from the room's home does not parse");
                return;
            }
        };
        tokio::spawn(async move {
            let room = update.room.clone();
            if let Err(e) = shared
                .control
                .ask_one(&shared.engine, Request::UpdateRoom(update))
                .await
            {
                tracing::warn!(%room, error = %e.message, "the home's room.update failed here");
            }
        });
    }

    fn adopt(&self, room: RoomId, params: Value, home: String) -> BoxFuture<Result<(), String>> {
        let shared = self.0.upgrade();
        Box::pin(async move {
            let shared = shared.ok_or("the node is stopping")?;
            let cluster = shared.cluster.clone().ok_or("not in a cluster")?;
            if shared.draining.load(std::sync::atomic::Ordering::Relaxed) {
                return Err("this node drains too".to_owned());
            }
            if !runs_here(&shared, &room).await {
                create_here(&shared, params, Request::CreateRoom).await?;
            }
            match cluster.take_over_from(&room, &home).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!("room {room} has another home already")),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn close_replica(&self, room: RoomId, reason: String) {
        let Some(shared) = self.0.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let delete = RoomDelete {
                room,
                reason: Some(reason),
            };
            let _ = shared
                .control
                .ask_one(&shared.engine, Request::DeleteRoom(delete))
                .await;
        });
    }
}

/// Makes sure `room` runs here with its home's policy, before a join to a room that
/// spans nodes: asks the home node (over the relay) and creates it. A room that runs
/// here already is left as it is.
pub(crate) async fn ensure_replica(
    shared: &Arc<Shared>,
    cluster: &chorus_cluster::Cluster,
    home: chorus_cluster::relay::NodeIndex,
    room: &RoomId,
) -> Result<(), String> {
    if runs_here(shared, room).await {
        return Ok(());
    }
    let params = cluster
        .fetch_policy(home, room)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("room {room} is not at its home node"))?;
    create_here(shared, params, Request::CreateReplica).await
}

/// Whether `room` runs on this node.
pub(crate) async fn runs_here(shared: &Arc<Shared>, room: &RoomId) -> bool {
    shared
        .control
        .ask_one(&shared.engine, Request::GetRoom(room.clone()))
        .await
        .is_ok()
}

/// Creates `room` here with `params` (`room.create` params from its home), as the
/// room (`Request::CreateRoom`) or a replica of it (`Request::CreateReplica`).
async fn create_here(
    shared: &Arc<Shared>,
    params: Value,
    request: fn(RoomCreate) -> Request,
) -> Result<(), String> {
    let create: RoomCreate =
        serde_json::from_value(params).map_err(|e| format!("room policy: {e}"))?;
    match shared
        .control
        .ask_one(&shared.engine, request(create))
        .await
    {
        Ok(_) => Ok(()),
        // Another join made it meanwhile.
        Err(e) if e.message.contains("exists") => Ok(()),
        Err(e) => Err(e.message),
    }
}

/// Where a control call runs in a cluster: `Some(node)` for another node (the room's
/// home for room methods, the participant's node for participant methods), `None`
/// for here.
pub(crate) async fn route(
    cluster: &chorus_cluster::Cluster,
    call: &Call,
) -> Result<Option<chorus_cluster::relay::NodeIndex>, RpcError> {
    let me = cluster.index();
    let participant = match call {
        Call::ParticipantGet(p) => Some(p.participant_id),
        Call::ParticipantKick(p) => Some(p.participant_id),
        Call::ParticipantMute(p) => Some(p.participant_id),
        Call::ParticipantSetPermissions(p) => Some(p.participant_id),
        Call::ParticipantSetWhisper(p) => Some(p.participant_id),
        _ => None,
    };
    if let Some(pid) = participant {
        let node = chorus_engine::cluster::node_of(pid);
        return Ok((node != 0 && node != me).then_some(node));
    }
    let room = match call {
        Call::RoomGet(r) | Call::ParticipantList(r) => &r.room,
        Call::RoomUpdate(u) => &u.room,
        Call::RoomDelete(d) => &d.room,
        Call::RoomSetPositions(s) => &s.room,
        _ => return Ok(None),
    };
    let home = cluster
        .room_home(room)
        .await
        .map_err(|e| RpcError::new(ErrorCode::Unavailable, format!("directory: {e}")))?;
    Ok(home.map(|n| n.index).filter(|n| *n != me))
}

/// Runs a call on another node and returns its answer as if it ran here.
pub(crate) async fn forward(
    cluster: &chorus_cluster::Cluster,
    node: chorus_cluster::relay::NodeIndex,
    call: &Call,
) -> Result<Value, RpcError> {
    let params = params_of(call);
    match cluster.call(node, call.method(), params).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(serde_json::from_value(e).unwrap_or_else(|_| {
            RpcError::new(ErrorCode::Internal, "node answered with a malformed error")
        })),
        Err(e) => Err(RpcError::new(
            ErrorCode::Unavailable,
            format!("the node that holds it did not answer: {e}"),
        )),
    }
}

/// A call's params as the wire carries them.
fn params_of(call: &Call) -> Value {
    let v = match call {
        Call::RoomCreate(c) => serde_json::to_value(c),
        Call::RoomGet(r) | Call::ParticipantList(r) => serde_json::to_value(r),
        Call::RoomUpdate(u) => serde_json::to_value(u),
        Call::RoomDelete(d) => serde_json::to_value(d),
        Call::ParticipantGet(p) => serde_json::to_value(p),
        Call::ParticipantKick(p) => serde_json::to_value(p),
        Call::ParticipantMute(p) => serde_json::to_value(p),
        Call::ParticipantSetPermissions(p) => serde_json::to_value(p),
        Call::ParticipantSetWhisper(p) => serde_json::to_value(p),
        Call::RoomSetPositions(s) => serde_json::to_value(s),
        Call::TokenCreate(t) => serde_json::to_value(t),
        Call::EventsSubscribe(e) => serde_json::to_value(e),
        Call::NodeDrain(d) => serde_json::to_value(d),
        Call::RoomList | Call::NodeStats | Call::NodeList => Ok(Value::Object(Default::default())),
    };
    v.unwrap_or(Value::Null)
}

/// `room.create` in a cluster: on the least-loaded live node (forwarded there), and
/// recorded in the directory as its home. `None`: create it here (then
/// [`claim_created`]).
pub(crate) async fn place_create(
    cluster: &chorus_cluster::Cluster,
    create: &RoomCreate,
) -> Result<Option<Value>, RpcError> {
    if let Some(home) = cluster
        .room_home(&create.room)
        .await
        .map_err(|e| RpcError::new(ErrorCode::Unavailable, format!("directory: {e}")))?
    {
        if home.index != cluster.index() {
            return Err(RpcError::new(
                ErrorCode::RoomExists,
                format!(
                    "room {} exists on node {} ({})",
                    create.room, home.index, home.url
                ),
            ));
        }
        return Ok(None);
    }
    let nodes = cluster.nodes();
    match chorus_cluster::directory::least_loaded(&nodes) {
        Some(target) if target.index != cluster.index() => {
            let call = Call::RoomCreate(create.clone());
            forward(cluster, target.index, &call).await.map(Some)
        }
        _ => Ok(None),
    }
}

/// After a `room.create` here: the directory records this node as its home. If
/// another node claimed the name first, the room here is deleted again.
pub(crate) async fn claim_created(
    shared: &Arc<Shared>,
    cluster: &chorus_cluster::Cluster,
    create: &RoomCreate,
) -> Result<(), RpcError> {
    let record = cluster
        .claim_room(&create.room, create.spans())
        .await
        .map_err(|e| RpcError::new(ErrorCode::Unavailable, format!("directory: {e}")))?;
    if record.home == cluster.node_id() {
        return Ok(());
    }
    let delete = RoomDelete {
        room: create.room.clone(),
        reason: Some("created on another node".into()),
    };
    let _ = shared
        .control
        .ask_one(&shared.engine, Request::DeleteRoom(delete))
        .await;
    Err(RpcError::new(
        ErrorCode::RoomExists,
        format!("room {} was created on another node meanwhile", create.room),
    ))
}

/// `node.list`: the live nodes as the directory last listed them.
pub(crate) fn node_list(cluster: Option<&chorus_cluster::Cluster>) -> Vec<NodeInfo> {
    let Some(cluster) = cluster else {
        return Vec::new();
    };
    cluster
        .nodes()
        .into_iter()
        .map(|n| NodeInfo {
            this: n.index == cluster.index(),
            index: n.index,
            id: n.id,
            url: n.url,
            relay: n.relay.to_string(),
            participants: n.participants,
            cpu: n.cpu,
            draining: n.draining,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::process_cpu_seconds;

    #[test]
    fn cpu_seconds_from_a_stat_line() {
        let line = "4242 (chorus (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 130 0 0 20 0 9 0";
        assert_eq!(process_cpu_seconds(line), Some(3.8));
        assert_eq!(process_cpu_seconds("garbage"), None);
    }
}
