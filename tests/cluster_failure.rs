//! A cluster losing parts (issue 14, item 4), with nodes as real processes (the
//! `chorus` binary) so that one can be killed with SIGKILL: its members leave at the
//! other nodes within 5 s, the room's home moves to a live node, and the call goes
//! on. And a Redis outage: running calls go on, new placements wait for Redis.
//! Timeouts are upper bounds only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use chorus_tests::redis::{free_port, wait_port, RedisServer};
use std::time::{Duration, Instant};

use chorus_tests::live::{wait_until, LiveClient};
use chorus_tests::rpc::{socket_path, Rpc};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(10);
const HEARD: u64 = 30;

/// The `chorus` binary: `CHORUS_BIN`, else the workspace's debug build (built if
/// missing).
fn chorus_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("CHORUS_BIN") {
        return bin.into();
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = root.join("target/debug/chorus");
    if !bin.exists() {
        let ok = Command::new(env!("CARGO"))
            .args(["build", "-p", "chorus-signaling", "--bin", "chorus"])
            .current_dir(&root)
            .status()
            .expect("cargo runs")
            .success();
        assert!(ok, "could not build chorus");
    }
    bin
}

/// A node in its own process, killed (SIGKILL) when dropped.
struct NodeProcess {
    child: Child,
    http: SocketAddr,
    control: PathBuf,
}

impl NodeProcess {
    fn start(redis: &str, tag: &str) -> NodeProcess {
        let port = free_port();
        let control = socket_path(tag);
        let child = Command::new(chorus_bin())
            .args(["serve", "--dev", "--shards", "1", "--tcp", "none"])
            .args(["--http", &format!("127.0.0.1:{port}")])
            .args(["--udp", "127.0.0.1:0", "--relay", "127.0.0.1:0"])
            .args(["--control", control.to_str().unwrap()])
            .args(["--redis", redis])
            .env("CHORUS_CLUSTER_SECRET", "failure-test-secret")
            .env("CHORUS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("chorus runs");
        wait_port(port, "chorus");
        NodeProcess {
            child,
            http: ([127, 0, 0, 1], port).into(),
            control,
        }
    }

    async fn rpc(&self) -> Rpc {
        let deadline = Instant::now() + LIMIT;
        while !self.control.exists() {
            assert!(Instant::now() < deadline, "no control socket");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Rpc::connect(&self.control).await
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.control);
    }
}

async fn join(node: &NodeProcess, room: &str, name: &str) -> LiveClient {
    LiveClient::join_at(node.http, room, name, None, 4, ([127, 0, 0, 1], 0).into())
        .await
        .unwrap_or_else(|e| panic!("{name} joins: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_leaves_and_its_rooms_move_home() {
    let redis = RedisServer::start();
    let mut nodes: Vec<NodeProcess> = ["kill-a", "kill-b", "kill-c"]
        .iter()
        .map(|t| NodeProcess::start(&redis.url(), t))
        .collect();
    let mut rpc = nodes[0].rpc().await;
    rpc.wait_nodes(3).await;
    rpc.call("room.create", json!({"room": "raid-9", "kind": "raid"}))
        .await
        .unwrap();
    let info = rpc
        .call("room.get", json!({"room": "raid-9"}))
        .await
        .unwrap();
    let home = info["home_node"].as_u64().expect("home_node in a cluster");
    let list = rpc.call("node.list", json!({})).await.unwrap();
    let home_url = list
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["index"] == home)
        .map(|n| n["url"].as_str().unwrap().to_owned())
        .unwrap();
    let dead = nodes
        .iter()
        .position(|n| home_url.contains(&n.http.port().to_string()))
        .expect("the home is one of ours");
    let mut clients = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        clients.push(join(n, "raid-9", &format!("p{i}")).await);
    }
    let ids: Vec<String> = clients
        .iter()
        .map(|c| c.participant_id().to_owned())
        .collect();
    let live: Vec<usize> = (0..3).filter(|i| *i != dead).collect();
    let (s, t) = (live[0], live[1]);
    let all_listed = wait_until(LIMIT, || {
        clients.iter().all(|c| {
            let seen = c.messages("participant_joined").len()
                + c.joined()["participants"].as_array().map_or(0, Vec::len);
            seen >= 2
        })
    })
    .await;
    assert!(all_listed, "every client lists the two others");
    clients[s].set_speaking(true);
    let heard = wait_until(LIMIT, || {
        clients[t].received_from(clients[s].csrc()) >= HEARD
            && clients[dead].received_from(clients[s].csrc()) >= HEARD
    })
    .await;
    assert!(heard, "the call runs across the three");

    // SIGKILL the room's home mid-call.
    let killed = Instant::now();
    nodes[dead].kill();
    let cleaned = wait_until(Duration::from_secs(5), || {
        clients[s].saw_leave(&ids[dead]) && clients[t].saw_leave(&ids[dead])
    })
    .await;
    let took = killed.elapsed();
    assert!(
        cleaned,
        "the killed node's member left at the others within 5 s"
    );
    eprintln!("kill -9 of the home node → participant_left at the others after {took:?}");

    // The call goes on between the two left.
    let before = clients[t].received_from(clients[s].csrc());
    let heard = wait_until(LIMIT, || {
        clients[t].received_from(clients[s].csrc()) >= before + HEARD
    })
    .await;
    assert!(heard, "the room keeps working");
    clients[s].set_speaking(false);

    // The room has a live home again, and joins still work.
    let mut rpc = nodes[s].rpc().await;
    let deadline = Instant::now() + LIMIT;
    let new_home = loop {
        let info = rpc.call("room.get", json!({"room": "raid-9"})).await;
        if let Ok(info) = info {
            if info["home_node"].as_u64().is_some_and(|h| h != home) {
                break info["home_node"].clone();
            }
        }
        assert!(Instant::now() < deadline, "the room never got a new home");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "the room's new home: node {new_home} after {:?}",
        killed.elapsed()
    );
    let late = join(&nodes[t], "raid-9", "late").await;
    let listed = late.joined()["participants"].as_array().map_or(0, Vec::len);
    assert!(
        listed >= 1,
        "the late joiner sees the room: {}",
        late.joined()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_keeps_calls_and_holds_new_placements() {
    let port = free_port();
    let redis = RedisServer::start_on(port);
    let url = redis.url();
    let nodes: Vec<NodeProcess> = ["outage-a", "outage-b"]
        .iter()
        .map(|t| NodeProcess::start(&url, t))
        .collect();
    let mut rpc = nodes[0].rpc().await;
    rpc.wait_nodes(2).await;
    rpc.call("room.create", json!({"room": "raid-o", "kind": "raid"}))
        .await
        .unwrap();
    let x = join(&nodes[0], "raid-o", "x").await;
    let y = join(&nodes[1], "raid-o", "y").await;
    x.set_speaking(true);
    assert!(wait_until(LIMIT, || y.received_from(x.csrc()) >= HEARD).await);

    // Redis goes away for longer than a node record's TTL (3 s): the call goes on.
    drop(redis);
    let before = y.received_from(x.csrc());
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        wait_until(LIMIT, || y.received_from(x.csrc()) >= before + 3 * HEARD).await,
        "the call goes on without Redis"
    );
    assert!(x.messages("participant_left").is_empty() && y.messages("participant_left").is_empty());
    // A new room cannot be placed: the join is refused with a reason, at once.
    let refused = LiveClient::join_at(
        nodes[1].http,
        "raid-new",
        "z",
        None,
        4,
        ([127, 0, 0, 1], 0).into(),
    )
    .await;
    let why = refused.err().expect("no placement without the directory");
    assert!(
        why.contains("unavailable") || why.contains("cluster"),
        "{why}"
    );

    // Redis is back (empty): the nodes register again and placements resume.
    let _redis = RedisServer::start_on(port);
    let deadline = Instant::now() + LIMIT;
    loop {
        let joined = LiveClient::join_at(
            nodes[1].http,
            "raid-new",
            "z",
            None,
            4,
            ([127, 0, 0, 1], 0).into(),
        )
        .await;
        if joined.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "placements never resumed: {:?}",
            joined.err()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let still = y.received_from(x.csrc());
    assert!(wait_until(LIMIT, || y.received_from(x.csrc()) >= still + HEARD).await);
    x.set_speaking(false);
    // Nobody was taken for gone: the nodes re-registered, still connected.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        x.messages("participant_left").is_empty() && y.messages("participant_left").is_empty(),
        "no member left after the outage"
    );
    let info = rpc
        .call("room.get", json!({"room": "raid-o"}))
        .await
        .unwrap();
    assert_eq!(info["participants"], 2, "the room is whole: {info}");
}
