//! Rooms across machines (issue 14) on real parts: a real `redis-server` and three
//! nodes of one cluster in this process (each its own engine, HTTP server, control
//! socket and QUIC relay on loopback), with real clients (WebSocket + str0m over UDP).
//! Timeouts are upper bounds only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use chorus_signaling::config::ClusterSettings;
use chorus_signaling::{NodeConfig, RunningNode};
use chorus_tests::live::{wait_until, LiveClient};
use chorus_tests::redis::RedisServer;
use chorus_tests::rpc::{socket_path, Rpc};
use chorus_tests::ws::{connect, metrics, node_with, recv, send};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(10);
/// 0.6 s of audio at 50 packets a second.
const HEARD: u64 = 30;

async fn cluster_node(redis: &RedisServer, tag: &str, shards: usize) -> RunningNode {
    node_with(NodeConfig {
        dev: true,
        shards,
        control: Some(socket_path(tag)),
        cluster: Some(ClusterSettings {
            redis: redis.url(),
            relay: "127.0.0.1:0".parse().unwrap(),
            secret: "test-cluster-secret".into(),
            advertise_url: None,
        }),
        ..NodeConfig::default()
    })
    .await
}

async fn rpc(node: &RunningNode) -> Rpc {
    Rpc::connect(node.control.as_deref().unwrap()).await
}

fn muted_in(client: &LiveClient, id: &str) -> bool {
    client
        .messages("participant_updated")
        .iter()
        .any(|m| m["participant"]["participant_id"] == id && m["participant"]["muted"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_spans_three_nodes() {
    let redis = RedisServer::start();
    let a = cluster_node(&redis, "cluster-a", 2).await;
    let b = cluster_node(&redis, "cluster-b", 1).await;
    let c = cluster_node(&redis, "cluster-c", 1).await;
    let (mut ra, mut rb) = (rpc(&a).await, rpc(&b).await);

    // Every node sees the three (heartbeats every second).
    let list = ra.wait_nodes(3).await;
    let me: Vec<&Value> = list.iter().filter(|n| n["self"] == true).collect();
    assert_eq!(me.len(), 1, "{list:?}");

    // A raid room spans by default; created through node A, placed by load.
    let created = ra
        .call("room.create", json!({"room": "raid-1", "kind": "raid"}))
        .await
        .unwrap();
    assert_eq!(created["room"], "raid-1", "{created}");

    // One client on each node.
    let x = LiveClient::join(&a, "raid-1", "x", None, 4)
        .await
        .expect("x joins on A");
    let y = LiveClient::join(&b, "raid-1", "y", None, 4)
        .await
        .expect("y joins on B");
    let z = LiveClient::join(&c, "raid-1", "z", None, 4)
        .await
        .expect("z joins on C");

    // CSRCs and ids unique room-wide; each sees the two others.
    let csrcs = [x.csrc(), y.csrc(), z.csrc()];
    assert!(
        csrcs[0] != csrcs[1] && csrcs[1] != csrcs[2] && csrcs[0] != csrcs[2],
        "{csrcs:x?}"
    );
    let ids = [
        x.participant_id().to_owned(),
        y.participant_id().to_owned(),
        z.participant_id().to_owned(),
    ];
    let all_listed = wait_until(LIMIT, || {
        let knows = |c: &LiveClient, others: [&str; 2]| {
            let listed: Vec<Value> = c
                .messages("participant_joined")
                .iter()
                .map(|m| m["participant"]["participant_id"].clone())
                .chain(
                    c.joined()["participants"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| p["participant_id"].clone()),
                )
                .collect();
            others.iter().all(|o| listed.iter().any(|l| l == o))
        };
        knows(&x, [&ids[1], &ids[2]])
            && knows(&y, [&ids[0], &ids[2]])
            && knows(&z, [&ids[0], &ids[1]])
    })
    .await;
    assert!(all_listed, "every client lists the other two");

    // X speaks on A: Y (on B) and Z (on C) hear it, each packet exactly once.
    x.set_speaking(true);
    let heard = wait_until(LIMIT, || {
        y.received_from(x.csrc()) >= HEARD && z.received_from(x.csrc()) >= HEARD
    })
    .await;
    x.set_speaking(false);
    assert!(
        heard,
        "Y got {} and Z {} of X's packets",
        y.received_from(x.csrc()),
        z.received_from(x.csrc())
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = x.sent();
    for (who, got) in [
        ("Y", y.received_from(x.csrc())),
        ("Z", z.received_from(x.csrc())),
    ] {
        assert!(got <= sent, "{who} got {got} of {sent}: a packet twice");
        assert!(got + 3 >= sent, "{who} got {got} of {sent}");
    }
    assert_eq!(
        x.received_total(),
        0,
        "X heard something while alone speaking"
    );
    // One copy per speaker packet per other node with listeners: A sent each of X's
    // packets twice (to B and C), and B and C each received them once.
    let counter = |body: &str, name: &str| -> u64 {
        body.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let (ma, mb, mc) = (
        metrics(a.http).await,
        metrics(b.http).await,
        metrics(c.http).await,
    );
    let out_a = counter(&ma, "chorus_relay_packets_out_total");
    let (in_b, in_c) = (
        counter(&mb, "chorus_relay_packets_in_total"),
        counter(&mc, "chorus_relay_packets_in_total"),
    );
    assert_eq!(out_a, 2 * sent, "A relayed each packet once per node\n{ma}");
    assert_eq!(
        (in_b, in_c),
        (sent, sent),
        "each node received each packet once"
    );
    assert!(ma.contains("chorus_cluster_nodes 3"), "{ma}");

    // Z speaks on C: loudest-N at A names it.
    z.set_speaking(true);
    let heard = wait_until(LIMIT, || x.received_from(z.csrc()) >= HEARD).await;
    let z_id = ids[2].clone();
    let speaker = wait_until(LIMIT, || {
        x.messages("speakers").iter().any(|m| {
            m["speakers"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["participant_id"] == z_id.as_str()))
        })
    })
    .await;
    z.set_speaking(false);
    assert!(heard && speaker, "X hears Z and sees it in speakers");

    // A mute on C reaches A and B.
    z.send(json!({"type": "mute", "muted": true}));
    let seen = wait_until(LIMIT, || muted_in(&x, &ids[2]) && muted_in(&y, &ids[2])).await;
    assert!(seen, "X and Y see Z muted");

    // A control call on B for the room, wherever it is homed (its roster is
    // room-wide), and for a participant held by C.
    let room = rb
        .call("room.get", json!({"room": "raid-1"}))
        .await
        .unwrap();
    assert_eq!(room["kind"], "raid", "{room}");
    assert_eq!(room["participants"], 3, "{room}");
    let home = room["home_node"].as_u64().expect("home_node");
    for r in [&mut ra, &mut rb] {
        let again = r.call("room.get", json!({"room": "raid-1"})).await.unwrap();
        assert_eq!(again["home_node"], home, "every node names the same home");
    }
    let p = rb
        .call(
            "participant.get",
            json!({"room": "raid-1", "participant_id": z.participant_id()}),
        )
        .await
        .unwrap();
    assert_eq!(p["muted"], true, "{p}");
    let kicked = ra
        .call(
            "participant.mute",
            json!({"room": "raid-1", "participant_id": y.participant_id(), "muted": true}),
        )
        .await;
    assert!(kicked.is_ok(), "{kicked:?}");
    let seen = wait_until(LIMIT, || {
        y.messages("participant_updated").iter().any(|m| {
            m["participant"]["participant_id"] == ids[1].as_str()
                && m["participant"]["server_muted"] == true
        })
    })
    .await;
    assert!(seen, "a server mute asked at A reaches Y on B");

    // The policy is room-wide: room.update through any node reaches every node
    // running the room (a fourth member is refused at each).
    let updated = rb
        .call(
            "room.update",
            json!({"room": "raid-1", "max_participants": 3}),
        )
        .await
        .unwrap();
    assert_eq!(updated["max_participants"], 3, "{updated}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    for node in [&a, &b, &c] {
        let full = LiveClient::join(node, "raid-1", "fourth", None, 4).await;
        let why = full.err().expect("a fourth member is refused");
        assert!(why.contains("room_full"), "{why}");
    }

    // A room that does not span: its joins at other nodes are redirected home.
    let mut ws = connect(&b).await;
    send(
        &mut ws,
        json!({"type": "join", "room": "guild-7", "name": "g1"}),
    )
    .await;
    let first = recv(&mut ws).await;
    assert_eq!(first["type"], "joined", "{first}");
    let mut other = connect(&c).await;
    send(
        &mut other,
        json!({"type": "join", "room": "guild-7", "name": "g2"}),
    )
    .await;
    let redirect = recv(&mut other).await;
    assert_eq!(redirect["type"], "redirect", "{redirect}");
    assert_eq!(
        redirect["url"],
        format!("ws://127.0.0.1:{}/v1/signal", b.http.port())
    );

    // Node C goes away: X and Y are told Z left within 5 s.
    let gone = Instant::now();
    drop(z);
    c.stop().await;
    let cleaned = wait_until(Duration::from_secs(5), || {
        x.saw_leave(&ids[2]) && y.saw_leave(&ids[2])
    })
    .await;
    assert!(cleaned, "Z left at X and Y within 5 s");
    eprintln!(
        "node C gone → its member left elsewhere in {:?}",
        gone.elapsed()
    );

    // The room goes on between A and B (Y is server-muted: X speaks).
    let before = y.received_from(x.csrc());
    x.set_speaking(true);
    let heard = wait_until(LIMIT, || y.received_from(x.csrc()) >= before + HEARD).await;
    x.set_speaking(false);
    assert!(heard, "Y still hears X");

    // The room is deleted through B: members on every node are told.
    rb.call(
        "room.delete",
        json!({"room": "raid-1", "reason": "raid over"}),
    )
    .await
    .unwrap();
    for who in [&x, &y] {
        let closed = who
            .wait_for("room_closed", LIMIT)
            .await
            .expect("room_closed");
        assert_eq!(closed["reason"], "raid over", "{closed}");
    }
    drop((x, y, ws, other));
    a.stop().await;
    b.stop().await;
}

/// The node of `nodes` whose URL `node.list` gives for node number `index`.
async fn by_index<'a>(rpc: &mut Rpc, nodes: &'a [&'a RunningNode], index: u64) -> &'a RunningNode {
    let list = rpc.call("node.list", json!({})).await.unwrap();
    let url = list
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["index"] == index)
        .map(|n| n["url"].as_str().unwrap().to_owned())
        .expect("the node is listed");
    nodes
        .iter()
        .find(|n| url == format!("ws://127.0.0.1:{}/v1/signal", n.http.port()))
        .copied()
        .expect("one of ours")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_hands_its_rooms_over() {
    let redis = RedisServer::start();
    let a = cluster_node(&redis, "drain-a", 1).await;
    let b = cluster_node(&redis, "drain-b", 1).await;
    let mut ra = rpc(&a).await;
    ra.wait_nodes(2).await;
    ra.call("room.create", json!({"room": "raid-d", "kind": "raid"}))
        .await
        .unwrap();
    let info = ra
        .call("room.get", json!({"room": "raid-d"}))
        .await
        .unwrap();
    let home_index = info["home_node"].as_u64().unwrap();
    let nodes = [&a, &b];
    let home = by_index(&mut ra, &nodes, home_index).await;
    let other = if std::ptr::eq(home, &a) { &b } else { &a };
    let x = LiveClient::join(home, "raid-d", "x", None, 4)
        .await
        .expect("x joins at home");
    let y = LiveClient::join(other, "raid-d", "y", None, 4)
        .await
        .expect("y joins elsewhere");
    assert!(
        wait_until(LIMIT, || !y.messages("participant_joined").is_empty()
            || !y.joined()["participants"]
                .as_array()
                .is_none_or(Vec::is_empty))
        .await
    );

    // The home drains: the room's home moves to the other node at once.
    let mut rh = rpc(home).await;
    let started = Instant::now();
    rh.call("node.drain", json!({"deadline_s": 30}))
        .await
        .unwrap();
    let mut ro = rpc(other).await;
    let moved = loop {
        let info = ro
            .call("room.get", json!({"room": "raid-d"}))
            .await
            .unwrap();
        if info["home_node"].as_u64().is_some_and(|h| h != home_index) {
            break info;
        }
        assert!(
            Instant::now() - started < LIMIT,
            "the home never moved: {info}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("drain → the room's home moved in {:?}", started.elapsed());
    assert_eq!(
        moved["participants"], 2,
        "the new home's roster is room-wide: {moved}"
    );

    // The call goes on meanwhile; a join at the draining node is sent to the new home.
    x.set_speaking(true);
    assert!(
        wait_until(LIMIT, || y.received_from(x.csrc()) >= HEARD).await,
        "y hears x"
    );
    x.set_speaking(false);
    let mut ws = connect(home).await;
    send(
        &mut ws,
        json!({"type": "join", "room": "raid-d", "name": "late"}),
    )
    .await;
    let redirect = recv(&mut ws).await;
    assert_eq!(redirect["type"], "redirect", "{redirect}");
    assert_eq!(
        redirect["url"],
        format!("ws://127.0.0.1:{}/v1/signal", other.http.port())
    );

    // X leaves: the draining node lets the room go and finishes; the room lives on.
    x.leave();
    home.drained().await;
    assert!(
        wait_until(LIMIT, || y
            .messages("participant_left")
            .iter()
            .any(|m| m["participant_id"] == x.participant_id()))
        .await
    );
    let z = LiveClient::join(other, "raid-d", "z", None, 4)
        .await
        .expect("z joins the moved room");
    y.set_speaking(true);
    assert!(
        wait_until(LIMIT, || z.received_from(y.csrc()) >= HEARD).await,
        "z hears y"
    );
    y.set_speaking(false);
    drop((x, y, z, ws));
    a.stop().await;
    b.stop().await;
}
