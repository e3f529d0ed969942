//! The cluster directory in Redis: which nodes are alive, and where each room lives.
//!
//! Every node registers a [`NodeRecord`] under `{prefix}node:{id}` with a TTL and renews
//! it every [`HEARTBEAT_EVERY`]; a node that stops renewing disappears after [`NODE_TTL`].
//! Each node also holds a small number (1–255) under `{prefix}index:{n}`, unique among live
//! nodes, renewed by the same heartbeat.
//!
//! Each room has a [`RoomRecord`] (`{prefix}room:{name}`, a hash: home node, epoch, span),
//! the set of nodes holding its members (`{prefix}room_nodes:{name}`), and is listed in
//! its home's set `{prefix}homes:{node_id}` so that failover can find a dead node's rooms.
//! Every write that must be consistent runs as one Lua script: atomic, one round trip.
//!
//! Key layout (all under the prefix, [`DEFAULT_PREFIX`] unless configured):
//!
//! | key                  | type   | holds                                   |
//! |----------------------|--------|-----------------------------------------|
//! | `nodes`              | SET    | ids of registered nodes                 |
//! | `node:{id}`          | STRING | the node's [`NodeRecord`] as JSON, TTL  |
//! | `index:{n}`          | STRING | id of the node holding number `n`, TTL  |
//! | `room:{name}`        | HASH   | `home`, `epoch`, `span` (`1`/`0`)       |
//! | `room_nodes:{name}`  | SET    | ids of nodes holding the room's members |
//! | `homes:{id}`         | SET    | names of the rooms homed on node `id`   |

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use serde::{Deserialize, Serialize};

use crate::ClusterError;

/// The key prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "chorus:";
/// How long a node's record lives without a heartbeat.
pub const NODE_TTL: Duration = Duration::from_millis(3000);
/// How often a node renews it.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(1000);
/// The highest node number; numbers run from 1 to this.
pub const MAX_INDEX: u16 = 255;

/// The bound on [`Directory::connect`]'s first connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The bound on one connection attempt (also when reconnecting).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// The bound on one command's reply.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Connection attempts after the first one failed, per (re)connect.
const CONNECT_RETRIES: usize = 2;

/// A node as the directory knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Random node id (hex), unique per process run.
    pub id: String,
    /// Node number 1..=255, unique among live nodes.
    pub index: u16,
    /// Public signaling URL, e.g. `ws://10.0.0.5:7880/v1/signal`.
    pub url: String,
    /// QUIC relay address.
    pub relay: SocketAddr,
    /// Participants connected to this node.
    pub participants: u64,
    /// Share of the node's cores in use, 0.0..=1.0.
    pub cpu: f32,
    /// The node takes no new rooms or participants.
    pub draining: bool,
    /// Unix ms when the node started.
    pub started_ms: u64,
}

/// Where a room lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomRecord {
    /// Id of the room's home node.
    pub home: String,
    /// Bumped each time the room changes home (1 when created).
    pub epoch: u64,
    /// The room may spread its members over several nodes.
    pub span: bool,
}

/// A handle on the directory: a self-reconnecting Redis connection and the key prefix.
///
/// Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Directory {
    conn: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// KEYS = index:1..=255; ARGV = id, ttl ms. Returns the number held or claimed, 0 if none.
static CLAIM_INDEX: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    return i
  end
end
for i = 1, #KEYS do
  if redis.call('SET', KEYS[i], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return i
  end
end
return 0
",
    )
});

/// KEYS = node key, nodes set, index key; ARGV = id, json, ttl ms.
/// Returns 1, or 0 (and writes nothing) when another node holds the index.
static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local holder = redis.call('GET', KEYS[3])
if holder == false then
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[3])
elseif holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
else
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
",
    )
});

/// KEYS = nodes set, node keys...; ARGV = ids... (ARGV[i] owns KEYS[i + 1]).
/// Removes from the set the ids whose key is (still) gone; returns how many.
static PRUNE_NODES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local removed = 0
for i = 1, #ARGV do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then
    removed = removed + redis.call('SREM', KEYS[1], ARGV[i])
  end
end
return removed
",
    )
});

/// KEYS = node key, nodes set, index key; ARGV = id.
static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
if redis.call('GET', KEYS[3]) == ARGV[1] then
  redis.call('DEL', KEYS[3])
end
return 1
",
    )
});

/// KEYS = room key, homes:{home}; ARGV = home, span, room name. Returns HMGET home epoch span.
static CLAIM_ROOM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'home', ARGV[1], 'epoch', 1, 'span', ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[3])
end
return redis.call('HMGET', KEYS[1], 'home', 'epoch', 'span')
",
    )
});

/// KEYS = room key, homes:{dead}, homes:{new}; ARGV = dead, new, room name.
/// Returns HMGET home epoch span.
static TAKE_OVER_ROOM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local home = redis.call('HGET', KEYS[1], 'home')
if home == false then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'home', ARGV[2], 'epoch', 1, 'span', '0')
  redis.call('SADD', KEYS[3], ARGV[3])
elseif home == ARGV[1] then
  redis.call('HSET', KEYS[1], 'home', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'epoch', 1)
  redis.call('SREM', KEYS[2], ARGV[3])
  redis.call('SADD', KEYS[3], ARGV[3])
end
return redis.call('HMGET', KEYS[1], 'home', 'epoch', 'span')
",
    )
});

/// KEYS = room key; ARGV = span.
static SET_ROOM_SPAN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'span', ARGV[1])
  return 1
end
return 0
",
    )
});

/// KEYS = room key, room node set, homes:{home}; ARGV = home, room name.
/// Returns 1 if removed, 0 if the room is homed elsewhere.
static REMOVE_ROOM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local home = redis.call('HGET', KEYS[1], 'home')
if home == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('SREM', KEYS[3], ARGV[2])
  return 1
end
if home == false then
  redis.call('SREM', KEYS[3], ARGV[2])
end
return 0
",
    )
});

/// A TTL in whole milliseconds, at least 1 (Redis refuses `PX 0`).
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// How `span` is stored in the room hash.
fn span_arg(span: bool) -> &'static str {
    if span {
        "1"
    } else {
        "0"
    }
}

/// Builds a [`RoomRecord`] from its hash fields (`HMGET home epoch span`);
/// `None` when the hash does not exist.
fn parse_room(key: &str, fields: Vec<Option<String>>) -> Result<Option<RoomRecord>, ClusterError> {
    let bad = |reason: String| ClusterError::BadRecord {
        key: key.to_owned(),
        reason,
    };
    let mut fields = fields.into_iter();
    let (home, epoch, span) = (
        fields.next().flatten(),
        fields.next().flatten(),
        fields.next().flatten(),
    );
    if home.is_none() && epoch.is_none() && span.is_none() {
        return Ok(None);
    }
    let home = home.ok_or_else(|| bad("no home".into()))?;
    let epoch = epoch
        .ok_or_else(|| bad("no epoch".into()))?
        .parse::<u64>()
        .map_err(|e| bad(format!("epoch: {e}")))?;
    let span = match span.as_deref() {
        None | Some("0") | Some("false") => false,
        Some("1") | Some("true") => true,
        Some(other) => return Err(bad(format!("span: {other:?}"))),
    };
    Ok(Some(RoomRecord { home, epoch, span }))
}

/// Like [`parse_room`], for the scripts that always leave a record behind.
fn expect_room(key: &str, fields: Vec<Option<String>>) -> Result<RoomRecord, ClusterError> {
    parse_room(key, fields)?.ok_or_else(|| ClusterError::BadRecord {
        key: key.to_owned(),
        reason: "missing after write".into(),
    })
}

impl Directory {
    /// Connects to Redis (a URL like `redis://127.0.0.1:6379`), using `prefix` for every key.
    ///
    /// The first connection is bounded by about 2 s. Afterwards the connection
    /// re-establishes itself after a Redis restart, and each call fails within a few
    /// seconds while Redis is unreachable rather than hanging.
    pub async fn connect(url: &str, prefix: &str) -> Result<Directory, ClusterError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(ATTEMPT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(CONNECT_RETRIES)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_millis(500));
        let conn = tokio::time::timeout(
            CONNECT_TIMEOUT,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| {
            redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection to {url} within {CONNECT_TIMEOUT:?}"),
            ))
        })??;
        tracing::debug!(prefix, "connected to the redis directory");
        Ok(Directory {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    /// The key prefix in use.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, rest: std::fmt::Arguments<'_>) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn nodes_key(&self) -> String {
        self.key(format_args!("nodes"))
    }

    fn node_key(&self, id: &str) -> String {
        self.key(format_args!("node:{id}"))
    }

    fn index_key(&self, index: u16) -> String {
        self.key(format_args!("index:{index}"))
    }

    fn room_key(&self, room: &str) -> String {
        self.key(format_args!("room:{room}"))
    }

    fn room_nodes_key(&self, room: &str) -> String {
        self.key(format_args!("room_nodes:{room}"))
    }

    fn homes_key(&self, node_id: &str) -> String {
        self.key(format_args!("homes:{node_id}"))
    }

    /// Claims the lowest free node number 1..=255 for `node_id` (`SET index:{n} id NX PX`,
    /// with [`NODE_TTL`]) and returns it. If `node_id` already holds a number, that one is
    /// renewed and returned. [`ClusterError::NoNodeNumber`] if all are taken.
    pub async fn claim_index(&self, node_id: &str) -> Result<u16, ClusterError> {
        let mut invocation = CLAIM_INDEX.prepare_invoke();
        for n in 1..=MAX_INDEX {
            invocation.key(self.index_key(n));
        }
        invocation.arg(node_id).arg(ttl_ms(NODE_TTL));
        let n: i64 = invocation.invoke_async(&mut self.conn.clone()).await?;
        match u16::try_from(n) {
            Ok(n) if (1..=MAX_INDEX).contains(&n) => {
                tracing::debug!(node_id, index = n, "claimed node number");
                Ok(n)
            }
            _ => Err(ClusterError::NoNodeNumber),
        }
    }

    /// Writes `record` with `ttl` (`SET node:{id}`, `SADD nodes`) and renews its node
    /// number, re-claiming it if it expired meanwhile. If another node took the number,
    /// nothing is written and [`ClusterError::IndexLost`] is returned. Atomic.
    pub async fn heartbeat(&self, record: &NodeRecord, ttl: Duration) -> Result<(), ClusterError> {
        let node_key = self.node_key(&record.id);
        if !(1..=MAX_INDEX).contains(&record.index) {
            return Err(ClusterError::BadRecord {
                key: node_key,
                reason: format!("node number {} outside 1..={MAX_INDEX}", record.index),
            });
        }
        let json = serde_json::to_string(record).map_err(|e| ClusterError::BadRecord {
            key: node_key.clone(),
            reason: e.to_string(),
        })?;
        let written: i64 = HEARTBEAT
            .key(&node_key)
            .key(self.nodes_key())
            .key(self.index_key(record.index))
            .arg(&record.id)
            .arg(json)
            .arg(ttl_ms(ttl))
            .invoke_async(&mut self.conn.clone())
            .await?;
        if written == 1 {
            Ok(())
        } else {
            tracing::warn!(
                node_id = %record.id,
                index = record.index,
                "node number taken by another node"
            );
            Err(ClusterError::IndexLost(record.index))
        }
    }

    /// Every live node, ordered by node number. Ids whose record expired are dropped from
    /// the `nodes` set; records that do not parse are skipped with a warning.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, ClusterError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.nodes_key())
            .query_async(&mut conn)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.node_key(id)).collect();
        let values: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        let mut nodes = Vec::with_capacity(ids.len());
        let mut gone = Vec::new();
        for ((id, key), value) in ids.iter().zip(&keys).zip(values) {
            match value {
                None => gone.push((id, key)),
                Some(json) => match serde_json::from_str::<NodeRecord>(&json) {
                    Ok(record) => nodes.push(record),
                    Err(e) => tracing::warn!(key = %key, error = %e, "skipping bad node record"),
                },
            }
        }
        if !gone.is_empty() {
            let mut invocation = PRUNE_NODES.prepare_invoke();
            invocation.key(self.nodes_key());
            for (id, key) in &gone {
                invocation.key(*key).arg(*id);
            }
            let removed: i64 = invocation.invoke_async(&mut conn).await?;
            tracing::debug!(removed, "dropped expired nodes from the directory");
        }
        nodes.sort_by(|a, b| a.index.cmp(&b.index).then_with(|| a.id.cmp(&b.id)));
        Ok(nodes)
    }

    /// Removes `node_id`'s record at once (drain or stop): its record, its entry in the
    /// `nodes` set, and node number `index` if it still holds it. Atomic.
    pub async fn leave(&self, node_id: &str, index: u16) -> Result<(), ClusterError> {
        let _: i64 = LEAVE
            .key(self.node_key(node_id))
            .key(self.nodes_key())
            .key(self.index_key(index))
            .arg(node_id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        tracing::debug!(node_id, index, "left the directory");
        Ok(())
    }

    /// The room's record, if it has one.
    pub async fn room(&self, room: &str) -> Result<Option<RoomRecord>, ClusterError> {
        let key = self.room_key(room);
        let fields: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&key)
            .arg("home")
            .arg("epoch")
            .arg("span")
            .query_async(&mut self.conn.clone())
            .await?;
        parse_room(&key, fields)
    }

    /// Creates the room's record with `home` (epoch 1) unless it has one, and returns the
    /// record there afterwards: ours, or the one that was first. Atomic.
    pub async fn claim_room(
        &self,
        room: &str,
        home: &str,
        span: bool,
    ) -> Result<RoomRecord, ClusterError> {
        let key = self.room_key(room);
        let fields: Vec<Option<String>> = CLAIM_ROOM
            .key(&key)
            .key(self.homes_key(home))
            .arg(home)
            .arg(span_arg(span))
            .arg(room)
            .invoke_async(&mut self.conn.clone())
            .await?;
        expect_room(&key, fields)
    }

    /// Moves the room to `new` if its home is `dead` (epoch + 1), or creates its record
    /// with home `new` (epoch 1, no span) if it has none; otherwise leaves it. Returns the
    /// record afterwards. Atomic.
    pub async fn take_over_room(
        &self,
        room: &str,
        dead: &str,
        new: &str,
    ) -> Result<RoomRecord, ClusterError> {
        let key = self.room_key(room);
        let fields: Vec<Option<String>> = TAKE_OVER_ROOM
            .key(&key)
            .key(self.homes_key(dead))
            .key(self.homes_key(new))
            .arg(dead)
            .arg(new)
            .arg(room)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let record = expect_room(&key, fields)?;
        if record.home == new {
            tracing::info!(
                room,
                dead,
                new,
                epoch = record.epoch,
                "room home is now this node"
            );
        }
        Ok(record)
    }

    /// Sets the room's `span`; does nothing if the room has no record.
    pub async fn set_room_span(&self, room: &str, span: bool) -> Result<(), ClusterError> {
        let _: i64 = SET_ROOM_SPAN
            .key(self.room_key(room))
            .arg(span_arg(span))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Deletes the room's record and node set, only if its home is `home`. Atomic.
    pub async fn remove_room(&self, room: &str, home: &str) -> Result<(), ClusterError> {
        let removed: i64 = REMOVE_ROOM
            .key(self.room_key(room))
            .key(self.room_nodes_key(room))
            .key(self.homes_key(home))
            .arg(home)
            .arg(room)
            .invoke_async(&mut self.conn.clone())
            .await?;
        if removed == 0 {
            tracing::debug!(room, home, "room not removed: homed elsewhere or gone");
        }
        Ok(())
    }

    /// Records that `node_id` holds members of the room.
    pub async fn add_room_node(&self, room: &str, node_id: &str) -> Result<(), ClusterError> {
        let _: i64 = redis::cmd("SADD")
            .arg(self.room_nodes_key(room))
            .arg(node_id)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Records that `node_id` no longer holds members of the room.
    pub async fn remove_room_node(&self, room: &str, node_id: &str) -> Result<(), ClusterError> {
        let _: i64 = redis::cmd("SREM")
            .arg(self.room_nodes_key(room))
            .arg(node_id)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// The nodes holding members of the room, sorted.
    pub async fn room_nodes(&self, room: &str) -> Result<Vec<String>, ClusterError> {
        self.sorted_members(self.room_nodes_key(room)).await
    }

    /// The rooms homed on `node_id`, sorted (kept by [`Directory::claim_room`],
    /// [`Directory::take_over_room`] and [`Directory::remove_room`]).
    pub async fn rooms_homed_on(&self, node_id: &str) -> Result<Vec<String>, ClusterError> {
        self.sorted_members(self.homes_key(node_id)).await
    }

    async fn sorted_members(&self, key: String) -> Result<Vec<String>, ClusterError> {
        let mut members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await?;
        members.sort();
        Ok(members)
    }
}

/// The least-loaded node to place a new room on: not draining; fewest participants, then
/// lowest cpu, then lowest node number. `None` if every node is draining (or none given).
pub fn least_loaded(nodes: &[NodeRecord]) -> Option<&NodeRecord> {
    nodes.iter().filter(|n| !n.draining).min_by(|a, b| {
        a.participants
            .cmp(&b.participants)
            .then_with(|| a.cpu.total_cmp(&b.cpu))
            .then_with(|| a.index.cmp(&b.index))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(index: u16, participants: u64, cpu: f32, draining: bool) -> NodeRecord {
        NodeRecord {
            id: format!("n{index}"),
            index,
            url: format!("ws://10.0.0.{index}:7880/v1/signal"),
            relay: SocketAddr::from(([10, 0, 0, index as u8], 7881)),
            participants,
            cpu,
            draining,
            started_ms: 0,
        }
    }

    fn pick(nodes: &[NodeRecord]) -> Option<u16> {
        least_loaded(nodes).map(|n| n.index)
    }

    #[test]
    fn least_loaded_order() {
        assert_eq!(pick(&[]), None);
        assert_eq!(pick(&[node(1, 0, 0.0, true)]), None);
        // Fewest participants first, whatever the cpu.
        assert_eq!(
            pick(&[node(1, 5, 0.1, false), node(2, 3, 0.9, false)]),
            Some(2)
        );
        // Then lowest cpu.
        assert_eq!(
            pick(&[node(1, 3, 0.5, false), node(2, 3, 0.2, false)]),
            Some(2)
        );
        // Then lowest node number.
        assert_eq!(
            pick(&[node(3, 3, 0.2, false), node(2, 3, 0.2, false)]),
            Some(2)
        );
        // Draining nodes never win, even when idle.
        assert_eq!(
            pick(&[node(1, 0, 0.0, true), node(2, 9, 0.9, false)]),
            Some(2)
        );
    }

    #[test]
    fn room_fields_parse() {
        let f = |v: [Option<&str>; 3]| v.iter().map(|s| s.map(str::to_owned)).collect();
        assert_eq!(parse_room("k", f([None, None, None])).ok(), Some(None));
        assert_eq!(
            parse_room("k", f([Some("a"), Some("3"), Some("1")])).ok(),
            Some(Some(RoomRecord {
                home: "a".into(),
                epoch: 3,
                span: true
            }))
        );
        assert!(parse_room("k", f([Some("a"), Some("x"), Some("0")])).is_err());
        assert!(parse_room("k", f([None, Some("1"), Some("0")])).is_err());
    }

    #[test]
    fn record_json_round_trips() {
        let n = node(7, 12, 0.25, false);
        let json = serde_json::to_string(&n).ok();
        let back = json.and_then(|j| serde_json::from_str::<NodeRecord>(&j).ok());
        assert_eq!(back, Some(n));
    }
}
