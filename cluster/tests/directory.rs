//! The Redis directory against a real `redis-server`, one per test.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chorus_cluster::directory::{Directory, NodeRecord, RoomRecord, NODE_TTL};
use chorus_cluster::ClusterError;

/// A `redis-server` on a free port, killed when dropped.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("/usr/bin/redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        let server = RedisServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn directory(&self, prefix: &str) -> Directory {
        Directory::connect(&self.url(), prefix).await.unwrap()
    }

    /// A plain connection, to look at the keys directly.
    async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn record(id: &str, index: u16) -> NodeRecord {
    NodeRecord {
        id: id.to_owned(),
        index,
        url: format!("ws://127.0.0.{index}:7880/v1/signal"),
        relay: SocketAddr::from(([127, 0, 0, 1], 7000 + index)),
        participants: u64::from(index) * 10,
        cpu: 0.5,
        draining: false,
        started_ms: 1_700_000_000_000,
    }
}

const SHORT: Duration = Duration::from_millis(300);
const PAST_SHORT: Duration = Duration::from_millis(500);

#[tokio::test]
async fn claim_index_takes_lowest_free_number() {
    let redis = RedisServer::start();
    let dir = redis.directory("t1:").await;

    assert_eq!(dir.claim_index("aa").await.unwrap(), 1);
    assert_eq!(dir.claim_index("bb").await.unwrap(), 2);
    // Asking again keeps the number held.
    assert_eq!(dir.claim_index("aa").await.unwrap(), 1);

    // "aa" heartbeats with a short TTL, then dies: its number frees up.
    dir.heartbeat(&record("aa", 1), SHORT).await.unwrap();
    dir.heartbeat(&record("bb", 2), NODE_TTL).await.unwrap();
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(dir.claim_index("cc").await.unwrap(), 1);

    // "aa" comes back: its number is gone to "cc".
    match dir.heartbeat(&record("aa", 1), NODE_TTL).await {
        Err(ClusterError::IndexLost(1)) => {}
        other => panic!("expected IndexLost(1), got {other:?}"),
    }
    // "bb" keeps its own.
    dir.heartbeat(&record("bb", 2), NODE_TTL).await.unwrap();
}

#[tokio::test]
async fn heartbeat_reclaims_an_expired_number() {
    let redis = RedisServer::start();
    let dir = redis.directory("t2:").await;

    assert_eq!(dir.claim_index("aa").await.unwrap(), 1);
    dir.heartbeat(&record("aa", 1), SHORT).await.unwrap();
    tokio::time::sleep(PAST_SHORT).await;
    // Nobody took it: the heartbeat takes it back.
    dir.heartbeat(&record("aa", 1), NODE_TTL).await.unwrap();
    assert_eq!(dir.claim_index("bb").await.unwrap(), 2);
}

#[tokio::test]
async fn nodes_lists_live_nodes_and_drops_dead_ones() {
    let redis = RedisServer::start();
    let dir = redis.directory("t3:").await;
    let mut raw = redis.raw().await;

    assert!(dir.nodes().await.unwrap().is_empty());
    let a = record("aa", dir.claim_index("aa").await.unwrap());
    let b = record("bb", dir.claim_index("bb").await.unwrap());
    dir.heartbeat(&a, NODE_TTL).await.unwrap();
    dir.heartbeat(&b, NODE_TTL).await.unwrap();
    assert_eq!(dir.nodes().await.unwrap(), vec![a.clone(), b.clone()]);

    // A heartbeat replaces the record.
    let mut a2 = a.clone();
    a2.participants = 99;
    a2.draining = true;
    dir.heartbeat(&a2, SHORT).await.unwrap();
    assert_eq!(dir.nodes().await.unwrap(), vec![a2, b.clone()]);

    // "aa" stops heartbeating.
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(dir.nodes().await.unwrap(), vec![b.clone()]);
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg("t3:nodes")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(members, vec!["bb".to_owned()]);

    // A record that does not parse is skipped.
    let _: () = redis::cmd("SET")
        .arg("t3:node:zz")
        .arg("not json")
        .query_async(&mut raw)
        .await
        .unwrap();
    let _: () = redis::cmd("SADD")
        .arg("t3:nodes")
        .arg("zz")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(dir.nodes().await.unwrap(), vec![b]);

    // Another prefix sees nothing.
    let other = redis.directory("other:").await;
    assert!(other.nodes().await.unwrap().is_empty());
}

#[tokio::test]
async fn leave_removes_at_once() {
    let redis = RedisServer::start();
    let dir = redis.directory("t4:").await;
    let mut raw = redis.raw().await;

    let a = record("aa", dir.claim_index("aa").await.unwrap());
    let b = record("bb", dir.claim_index("bb").await.unwrap());
    dir.heartbeat(&a, NODE_TTL).await.unwrap();
    dir.heartbeat(&b, NODE_TTL).await.unwrap();

    dir.leave("aa", a.index).await.unwrap();
    assert_eq!(dir.nodes().await.unwrap(), vec![b.clone()]);
    let exists: i64 = redis::cmd("EXISTS")
        .arg("t4:node:aa")
        .arg("t4:index:1")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(exists, 0);
    assert_eq!(dir.claim_index("cc").await.unwrap(), 1);

    // Leaving with a number someone else holds leaves that number alone.
    dir.leave("bb", 1).await.unwrap();
    let holder: Option<String> = redis::cmd("GET")
        .arg("t4:index:1")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(holder.as_deref(), Some("cc"));
    assert!(dir.nodes().await.unwrap().is_empty());
}

#[tokio::test]
async fn rooms_claim_take_over_and_remove() {
    let redis = RedisServer::start();
    let dir = redis.directory("t5:").await;
    let room = "salle à manger: ünïcode/room 1";

    assert_eq!(dir.room(room).await.unwrap(), None);

    // First claim wins.
    let first = dir.claim_room(room, "aa", false).await.unwrap();
    let expected = RoomRecord {
        home: "aa".into(),
        epoch: 1,
        span: false,
    };
    assert_eq!(first, expected);
    assert_eq!(dir.claim_room(room, "bb", true).await.unwrap(), expected);
    assert_eq!(dir.room(room).await.unwrap(), Some(expected.clone()));
    assert_eq!(
        dir.rooms_homed_on("aa").await.unwrap(),
        vec![room.to_owned()]
    );
    assert!(dir.rooms_homed_on("bb").await.unwrap().is_empty());

    dir.set_room_span(room, true).await.unwrap();
    assert!(dir.room(room).await.unwrap().unwrap().span);
    dir.set_room_span("no such room", true).await.unwrap();
    assert_eq!(dir.room("no such room").await.unwrap(), None);

    // Taking over from a node that is not the home changes nothing.
    let same = dir.take_over_room(room, "cc", "bb").await.unwrap();
    assert_eq!((same.home.as_str(), same.epoch), ("aa", 1));

    // Taking over from the home moves it and bumps the epoch.
    let moved = dir.take_over_room(room, "aa", "bb").await.unwrap();
    assert_eq!(
        moved,
        RoomRecord {
            home: "bb".into(),
            epoch: 2,
            span: true
        }
    );
    assert!(dir.rooms_homed_on("aa").await.unwrap().is_empty());
    assert_eq!(
        dir.rooms_homed_on("bb").await.unwrap(),
        vec![room.to_owned()]
    );
    // A second node racing for the same dead home loses.
    let raced = dir.take_over_room(room, "aa", "cc").await.unwrap();
    assert_eq!((raced.home.as_str(), raced.epoch), ("bb", 2));

    // Taking over a room without a record creates it.
    let fresh = dir.take_over_room("lost", "aa", "cc").await.unwrap();
    assert_eq!(
        fresh,
        RoomRecord {
            home: "cc".into(),
            epoch: 1,
            span: false
        }
    );
    assert_eq!(
        dir.rooms_homed_on("cc").await.unwrap(),
        vec!["lost".to_owned()]
    );

    // Removing is only for the home.
    dir.add_room_node(room, "bb").await.unwrap();
    dir.remove_room(room, "aa").await.unwrap();
    assert!(dir.room(room).await.unwrap().is_some());
    assert_eq!(dir.room_nodes(room).await.unwrap(), vec!["bb".to_owned()]);
    dir.remove_room(room, "bb").await.unwrap();
    assert_eq!(dir.room(room).await.unwrap(), None);
    assert!(dir.room_nodes(room).await.unwrap().is_empty());
    assert!(dir.rooms_homed_on("bb").await.unwrap().is_empty());

    // A removed room can be claimed afresh.
    let again = dir.claim_room(room, "cc", false).await.unwrap();
    assert_eq!((again.home.as_str(), again.epoch), ("cc", 1));
    let mut homed = dir.rooms_homed_on("cc").await.unwrap();
    homed.sort();
    let mut want = vec!["lost".to_owned(), room.to_owned()];
    want.sort();
    assert_eq!(homed, want);
}

#[tokio::test]
async fn room_names_do_not_collide_with_node_sets() {
    let redis = RedisServer::start();
    let dir = redis.directory("t6:").await;

    dir.claim_room("a", "n1", true).await.unwrap();
    dir.add_room_node("a", "n1").await.unwrap();
    // A room named like another room's node set is a room of its own.
    dir.claim_room("a:nodes", "n2", false).await.unwrap();
    dir.add_room_node("a:nodes", "n2").await.unwrap();
    assert_eq!(dir.room_nodes("a").await.unwrap(), vec!["n1".to_owned()]);
    assert_eq!(dir.room("a").await.unwrap().unwrap().home, "n1");
    assert_eq!(dir.room("a:nodes").await.unwrap().unwrap().home, "n2");
}

#[tokio::test]
async fn room_nodes_add_and_remove() {
    let redis = RedisServer::start();
    let dir = redis.directory("t7:").await;

    assert!(dir.room_nodes("r").await.unwrap().is_empty());
    dir.add_room_node("r", "bb").await.unwrap();
    dir.add_room_node("r", "aa").await.unwrap();
    dir.add_room_node("r", "aa").await.unwrap();
    assert_eq!(
        dir.room_nodes("r").await.unwrap(),
        vec!["aa".to_owned(), "bb".to_owned()]
    );
    dir.remove_room_node("r", "aa").await.unwrap();
    dir.remove_room_node("r", "zz").await.unwrap();
    assert_eq!(dir.room_nodes("r").await.unwrap(), vec!["bb".to_owned()]);
    dir.remove_room_node("r", "bb").await.unwrap();
    assert!(dir.room_nodes("r").await.unwrap().is_empty());
}

#[tokio::test]
async fn connect_to_nothing_fails_fast() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let result = Directory::connect(&format!("redis://127.0.0.1:{port}"), "t8:").await;
    assert!(result.is_err(), "connected to nothing");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn calls_fail_fast_then_recover_across_a_redis_restart() {
    let mut redis = RedisServer::start();
    let dir = redis.directory("t9:").await;
    dir.add_room_node("r", "aa").await.unwrap();

    // Redis dies: calls fail, quickly.
    let _ = redis.child.kill();
    let _ = redis.child.wait();
    let started = Instant::now();
    assert!(dir.room_nodes("r").await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );

    // Redis is back on the same port: the directory reconnects by itself.
    redis.child = Command::new("/usr/bin/redis-server")
        .args(["--port", &redis.port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match dir.add_room_node("r", "bb").await {
            Ok(()) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "no reconnect: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(dir.room_nodes("r").await.unwrap(), vec!["bb".to_owned()]);
}
