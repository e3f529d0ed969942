//! Peer-to-peer mode (issue 13), through the engine's sans-IO API with a simulated
//! clock: a small room whose members all joined with `p2p` is in mode `p2p` (`joined`
//! says so), the node relays their `p2p_signal`s and announces speakers from their own
//! `speaking` reports; every trigger of an upgrade to `sfu` (capacity, a member without
//! `p2p`, a server mute, a grant change, video, a whisper, a failed peer connection,
//! the policy)
//! tells every member `mode` and the backend `mode_changed`; the way back waits for the
//! room's `p2p_downgrade_s`, and never comes after a failed peer connection.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chorus_engine::{Command, Reply, Request};
use chorus_protocol::control::{
    NodeEvent, ParticipantMute, ParticipantSetPermissions, RoomCreate, RoomKind, RoomUpdate,
};
use chorus_protocol::signal::{ErrorCode, ModeReason, RoomId, RoomMode, ServerMessage};
use chorus_tests::sim::Sim;

fn room(name: &str) -> RoomId {
    RoomId::new(name).unwrap()
}

/// A `private` room (p2p_max 2) that goes back to p2p after `downgrade_s`.
fn private_room(sim: &mut Sim, name: &str, downgrade_s: u32) {
    let replies = sim.request(Request::CreateRoom(RoomCreate {
        kind: Some(RoomKind::Private),
        p2p_downgrade_s: Some(downgrade_s),
        ..RoomCreate::new(room(name))
    }));
    match &replies[..] {
        [Ok(Reply::Room(r))] => {
            assert_eq!(r.p2p_max, 2, "private rooms carry two people directly");
            assert_eq!(
                r.mode,
                chorus_engine::p2p::RoomMode::P2p,
                "an empty room is p2p"
            );
        }
        other => panic!("room.create: {other:?}"),
    }
}

/// A client that joins able to connect directly.
fn join_p2p(sim: &mut Sim, name: &str, room: &str) -> usize {
    sim.join_p2p = true;
    let c = sim.join(name, room);
    sim.join_p2p = false;
    c
}

fn joined_mode(sim: &Sim, c: usize) -> RoomMode {
    match sim.clients[c].messages("joined")[..] {
        [ServerMessage::Joined { mode, .. }] => *mode,
        ref other => panic!("joined: {other:?}"),
    }
}

/// The `mode` messages a client got: (mode, reason).
fn modes(sim: &Sim, c: usize) -> Vec<(RoomMode, ModeReason)> {
    sim.clients[c]
        .messages("mode")
        .into_iter()
        .map(|m| match m {
            ServerMessage::Mode { mode, reason } => (*mode, *reason),
            _ => unreachable!(),
        })
        .collect()
}

fn mode_events(sim: &Sim) -> Vec<(RoomMode, ModeReason)> {
    sim.events_of("mode_changed")
        .into_iter()
        .map(|e| match e {
            NodeEvent::ModeChanged { mode, reason, .. } => (*mode, *reason),
            _ => unreachable!(),
        })
        .collect()
}

fn room_mode(sim: &mut Sim, name: &str) -> chorus_engine::p2p::RoomMode {
    match &sim.request(Request::GetRoom(room(name)))[..] {
        [Ok(Reply::Room(r))] => r.mode,
        other => panic!("room.get: {other:?}"),
    }
}

fn last_error(sim: &Sim, c: usize) -> Option<(ErrorCode, String)> {
    sim.clients[c].inbox.iter().rev().find_map(|m| match m {
        ServerMessage::Error { code, message } => Some((*code, message.clone())),
        _ => None,
    })
}

fn signal(sim: &mut Sim, from: usize, to: usize, data: &str) {
    let (participant, to) = (sim.clients[from].id, sim.clients[to].id);
    sim.command(Command::P2pSignal {
        participant,
        to,
        data: data.to_owned(),
    });
}

#[test]
fn two_p2p_members_are_p2p_and_a_third_moves_the_room_to_the_node_and_back() {
    let mut sim = Sim::new();
    private_room(&mut sim, "duo", 3);
    let a = join_p2p(&mut sim, "ann", "duo");
    let b = join_p2p(&mut sim, "bob", "duo");
    assert_eq!(joined_mode(&sim, a), RoomMode::P2p);
    assert_eq!(joined_mode(&sim, b), RoomMode::P2p);
    assert!(modes(&sim, a).is_empty(), "no change to announce");
    assert_eq!(
        room_mode(&mut sim, "duo"),
        chorus_engine::p2p::RoomMode::P2p
    );

    // The third is over p2p_max: everyone moves to the node, the joiner reads it in
    // `joined`.
    let c = join_p2p(&mut sim, "cid", "duo");
    assert_eq!(joined_mode(&sim, c), RoomMode::Sfu);
    assert!(modes(&sim, c).is_empty());
    for x in [a, b] {
        assert_eq!(modes(&sim, x), [(RoomMode::Sfu, ModeReason::Capacity)]);
    }
    assert_eq!(mode_events(&sim), [(RoomMode::Sfu, ModeReason::Capacity)]);
    assert_eq!(
        room_mode(&mut sim, "duo"),
        chorus_engine::p2p::RoomMode::Sfu
    );

    // The third leaves: back to p2p only after the room stayed within p2p_max for 3 s.
    let id = sim.clients[c].id;
    sim.command(Command::Leave { participant: id });
    sim.run_for(Duration::from_millis(2900));
    assert_eq!(modes(&sim, a).len(), 1, "not before the delay");
    sim.run_for(Duration::from_millis(200));
    for x in [a, b] {
        assert_eq!(
            modes(&sim, x),
            [
                (RoomMode::Sfu, ModeReason::Capacity),
                (RoomMode::P2p, ModeReason::WithinLimit)
            ]
        );
    }
    assert_eq!(mode_events(&sim).len(), 2);
}

#[test]
fn a_brief_dip_under_the_limit_does_not_go_back() {
    let mut sim = Sim::new();
    private_room(&mut sim, "duo", 3);
    let a = join_p2p(&mut sim, "ann", "duo");
    let _b = join_p2p(&mut sim, "bob", "duo");
    let c = join_p2p(&mut sim, "cid", "duo");
    let id = sim.clients[c].id;
    sim.command(Command::Leave { participant: id });
    sim.run_for(Duration::from_secs(2));
    // Someone else comes within the delay: the clock starts again after they go.
    let d = join_p2p(&mut sim, "dee", "duo");
    assert_eq!(joined_mode(&sim, d), RoomMode::Sfu);
    sim.run_for(Duration::from_secs(2));
    let id = sim.clients[d].id;
    sim.command(Command::Leave { participant: id });
    sim.run_for(Duration::from_secs(2));
    assert_eq!(
        modes(&sim, a).len(),
        1,
        "still sfu: 2 s since the last change"
    );
    sim.run_for(Duration::from_millis(1100));
    assert_eq!(
        modes(&sim, a).last(),
        Some(&(RoomMode::P2p, ModeReason::WithinLimit))
    );
}

#[test]
fn every_trigger_moves_the_room_to_the_node() {
    // A member that cannot connect directly.
    let mut sim = Sim::new();
    private_room(&mut sim, "r", 1);
    let a = join_p2p(&mut sim, "ann", "r");
    let b = sim.join("bob", "r");
    assert_eq!(joined_mode(&sim, b), RoomMode::Sfu);
    assert_eq!(modes(&sim, a), [(RoomMode::Sfu, ModeReason::NotP2p)]);

    // A server mute; lifting it lets the room go back after the delay.
    let mut sim = Sim::new();
    private_room(&mut sim, "r", 1);
    let a = join_p2p(&mut sim, "ann", "r");
    let b = join_p2p(&mut sim, "bob", "r");
    let mute = |sim: &mut Sim, muted| {
        let participant_id = sim.clients[b].id;
        sim.request(Request::Mute(ParticipantMute {
            room: room("r"),
            participant_id,
            muted,
        }))
    };
    mute(&mut sim, true);
    assert_eq!(modes(&sim, a), [(RoomMode::Sfu, ModeReason::ServerMuted)]);
    assert_eq!(modes(&sim, b), [(RoomMode::Sfu, ModeReason::ServerMuted)]);
    mute(&mut sim, false);
    sim.run_for(Duration::from_millis(1100));
    assert_eq!(
        modes(&sim, a).last(),
        Some(&(RoomMode::P2p, ModeReason::WithinLimit))
    );

    // A grant change: without `subscribe` the node could not keep audio from it.
    let mut sim = Sim::new();
    private_room(&mut sim, "r", 1);
    let a = join_p2p(&mut sim, "ann", "r");
    let b = join_p2p(&mut sim, "bob", "r");
    let participant_id = sim.clients[b].id;
    sim.request(Request::SetPermissions(ParticipantSetPermissions {
        room: room("r"),
        participant_id,
        publish: None,
        subscribe: Some(false),
        priority: None,
        sources: None,
    }));
    assert_eq!(modes(&sim, a), [(RoomMode::Sfu, ModeReason::Grants)]);

    // Video: a camera goes through the node.
    let mut sim = Sim::new();
    private_room(&mut sim, "r", 1);
    let a = join_p2p(&mut sim, "ann", "r");
    let b = join_p2p(&mut sim, "bob", "r");
    let participant = sim.clients[b].id;
    sim.command(Command::SetVideo {
        participant,
        source: chorus_engine::VideoSource::Camera,
        enabled: true,
    });
    assert_eq!(modes(&sim, a), [(RoomMode::Sfu, ModeReason::Video)]);

    // A whisper (here the backend's): only the node can keep it from the others. Its
    // end lets the room go back after the delay.
    let mut sim = Sim::new();
    private_room(&mut sim, "r", 1);
    let a = join_p2p(&mut sim, "ann", "r");
    let b = join_p2p(&mut sim, "bob", "r");
    let (pa, pb) = (sim.clients[a].id, sim.clients[b].id);
    let whisper = |sim: &mut Sim, to: Option<Vec<chorus_protocol::signal::ParticipantId>>| {
        let replies = sim.request(Request::SetWhisper(
            chorus_protocol::control::ParticipantSetWhisper {
                room: room("r"),
                participant_id: pa,
                to,
            },
        ));
        assert!(matches!(replies[..], [Ok(_)]), "{replies:?}");
    };
    whisper(&mut sim, Some(vec![pb]));
    assert_eq!(modes(&sim, b), [(RoomMode::Sfu, ModeReason::Whisper)]);
    whisper(&mut sim, None);
    sim.run_for(Duration::from_millis(1100));
    assert_eq!(
        modes(&sim, b).last(),
        Some(&(RoomMode::P2p, ModeReason::WithinLimit))
    );

    // The backend lowers p2p_max.
    let mut sim = Sim::new();
    private_room(&mut sim, "r", 1);
    let a = join_p2p(&mut sim, "ann", "r");
    sim.request(Request::UpdateRoom(RoomUpdate {
        p2p_max: Some(0),
        ..RoomUpdate::new(room("r"))
    }));
    assert_eq!(modes(&sim, a), [(RoomMode::Sfu, ModeReason::Policy)]);
    let events = mode_events(&sim);
    assert_eq!(events, [(RoomMode::Sfu, ModeReason::Policy)]);
}

#[test]
fn a_failed_peer_connection_keeps_the_room_on_the_node_for_good() {
    let mut sim = Sim::new();
    private_room(&mut sim, "r", 1);
    let a = join_p2p(&mut sim, "ann", "r");
    let b = join_p2p(&mut sim, "bob", "r");
    let (pa, pb) = (sim.clients[a].id, sim.clients[b].id);
    // About someone not in the room: nothing happens.
    sim.command(Command::P2pFailed {
        participant: pa,
        peer: chorus_protocol::signal::ParticipantId(0xdead00),
    });
    assert!(modes(&sim, a).is_empty());
    sim.command(Command::P2pFailed {
        participant: pa,
        peer: pb,
    });
    assert_eq!(modes(&sim, b), [(RoomMode::Sfu, ModeReason::P2pFailed)]);
    // Everyone leaves and comes back: still sfu, and no later change.
    sim.command(Command::Leave { participant: pb });
    sim.run_for(Duration::from_secs(5));
    let c = join_p2p(&mut sim, "cid", "r");
    assert_eq!(joined_mode(&sim, c), RoomMode::Sfu);
    sim.run_for(Duration::from_secs(5));
    assert_eq!(modes(&sim, a).len(), 1);
    assert_eq!(mode_events(&sim).len(), 1);
}

#[test]
fn p2p_signals_are_relayed_between_p2p_members_only() {
    let mut sim = Sim::new();
    private_room(&mut sim, "r", 1);
    let a = join_p2p(&mut sim, "ann", "r");
    let b = join_p2p(&mut sim, "bob", "r");
    let sdp = r#"{"sdp":{"type":"offer","sdp":"v=0\r\n"}}"#;
    signal(&mut sim, a, b, sdp);
    let got = sim.clients[b].messages("p2p_signal");
    let [ServerMessage::P2pSignal { from, data }] = &got[..] else {
        panic!("{got:?}");
    };
    assert_eq!(*from, sim.clients[a].id);
    assert_eq!(
        serde_json::Value::Object(data.clone()),
        serde_json::from_str::<serde_json::Value>(sdp).unwrap()
    );

    // To oneself, to someone not in the room: `bad_request`, nothing relayed.
    signal(&mut sim, a, a, "{}");
    let (code, message) = last_error(&sim, a).unwrap();
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(
        message.contains("is not a p2p member of the room"),
        "{message}"
    );
    let participant = sim.clients[a].id;
    sim.command(Command::P2pSignal {
        participant,
        to: chorus_protocol::signal::ParticipantId(0x0077_7700),
        data: "{}".into(),
    });
    assert!(last_error(&sim, a)
        .unwrap()
        .1
        .starts_with("p2p_signal: p777700 is not a p2p member"));
    assert_eq!(sim.clients[a].messages("p2p_signal").len(), 0);

    // Once the room is on the node, no more relaying.
    let c = join_p2p(&mut sim, "cid", "r");
    signal(&mut sim, a, c, "{}");
    assert_eq!(
        last_error(&sim, a).unwrap().1,
        "p2p_signal: the room is not in p2p mode"
    );
    assert!(sim.clients[c].messages("p2p_signal").is_empty());
}

#[test]
fn speaking_reports_make_speakers_in_p2p_mode_only() {
    let mut sim = Sim::with_shards(2, |_| {});
    private_room(&mut sim, "r", 1);
    let a = join_p2p(&mut sim, "ann", "r");
    let b = join_p2p(&mut sim, "bob", "r");
    let pa = sim.clients[a].id;
    // Ann talks: a report every 200 ms for a second.
    for _ in 0..5 {
        sim.command(Command::Speaking {
            participant: pa,
            level: 0.2,
        });
        sim.run_for(Duration::from_millis(200));
    }
    let speakers = sim.clients[b].last_speakers();
    assert_eq!(speakers.len(), 1, "{speakers:?}");
    assert_eq!(speakers[0].participant_id, pa);
    assert!((speakers[0].level - 0.2).abs() < 0.01);
    assert_eq!(sim.events_of("speaking_started").len(), 1, "reported once");
    // Silence: a report of 0, then none; she stops speaking.
    sim.command(Command::Speaking {
        participant: pa,
        level: 0.0,
    });
    sim.run_for(Duration::from_secs(1));
    assert!(sim.clients[b].last_speakers().is_empty());
    assert_eq!(sim.events_of("speaking_stopped").len(), 1);

    // A muted member's reports do not count.
    sim.command(Command::SetMuted {
        participant: pa,
        muted: true,
    });
    sim.command(Command::Speaking {
        participant: pa,
        level: 0.5,
    });
    sim.run_for(Duration::from_millis(200));
    assert!(sim.clients[b].last_speakers().is_empty());
    sim.command(Command::SetMuted {
        participant: pa,
        muted: false,
    });

    // On the node, the node reads levels from packets: reports are ignored.
    join_p2p(&mut sim, "cid", "r");
    sim.command(Command::Speaking {
        participant: pa,
        level: 0.5,
    });
    sim.run_for(Duration::from_millis(200));
    assert!(sim.clients[b].last_speakers().is_empty());
    assert_eq!(sim.events_of("speaking_started").len(), 1);
}

#[test]
fn rooms_without_a_p2p_policy_stay_on_the_node() {
    let mut sim = Sim::new();
    // Auto-created (`--dev`) rooms and public rooms: p2p_max 0.
    let a = join_p2p(&mut sim, "ann", "lobby");
    let b = join_p2p(&mut sim, "bob", "lobby");
    assert_eq!(joined_mode(&sim, a), RoomMode::Sfu);
    assert_eq!(joined_mode(&sim, b), RoomMode::Sfu);
    sim.run_for(Duration::from_secs(15));
    assert!(modes(&sim, a).is_empty());
    assert!(mode_events(&sim).is_empty());
    // A proximity room never goes p2p: the node mixes by distance.
    sim.request(Request::CreateRoom(RoomCreate {
        kind: Some(RoomKind::Private),
        proximity: Some(chorus_protocol::control::Proximity {
            radius: 10.0,
            positions: Default::default(),
        }),
        ..RoomCreate::new(room("near"))
    }));
    let c = join_p2p(&mut sim, "cid", "near");
    assert_eq!(joined_mode(&sim, c), RoomMode::Sfu);
}

/// The wire end to end: `join` with `p2p`, `joined.mode`, the relay and its limits,
/// bad `speaking` levels, `room.get`'s mode, `mode_changed` and the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wire_carries_modes_and_limits_the_relay() {
    use chorus_signaling::NodeConfig;
    use chorus_tests::rpc::{socket_path, Rpc};
    use chorus_tests::ws::{self, connect, expect_error, recv, send};
    use serde_json::json;

    let node = ws::node_with(NodeConfig {
        dev: true,
        control: Some(socket_path("p2p")),
        ..NodeConfig::default()
    })
    .await;
    let path = node.control.clone().expect("control socket");
    let mut events = Rpc::connect(&path).await;
    events.ok("events.subscribe", json!({})).await;
    let mut rpc = Rpc::connect(&path).await;
    let created = rpc
        .ok(
            "room.create",
            json!({"room":"duo","kind":"private","p2p_downgrade_s":2}),
        )
        .await;
    assert_eq!(created["p2p_max"], 2);
    assert_eq!(created["p2p_downgrade_s"], 2);
    assert_eq!(created["mode"], "p2p");
    assert_eq!(
        rpc.err("room.create", json!({"room":"x","p2p_max":5}))
            .await,
        -32602,
        "p2p_max is 0..=4"
    );

    let mut a = connect(&node).await;
    send(
        &mut a,
        json!({"type":"join","room":"duo","name":"Ann","p2p":true}),
    )
    .await;
    let ja = recv(&mut a).await;
    assert_eq!(ja["mode"], "p2p", "{ja}");
    let mut b = connect(&node).await;
    send(
        &mut b,
        json!({"type":"join","room":"duo","name":"Bob","p2p":true}),
    )
    .await;
    let jb = recv(&mut b).await;
    assert_eq!(jb["mode"], "p2p", "{jb}");
    assert_eq!(recv(&mut a).await["type"], "participant_joined");
    let (pa, pb) = (ja["participant_id"].clone(), jb["participant_id"].clone());

    // The relay, verbatim.
    let data = json!({"candidate":{"candidate":"candidate:1 1 udp 1 10.0.0.1 5000 typ host","sdpMid":"0"}});
    send(&mut a, json!({"type":"p2p_signal","to":pb,"data":data})).await;
    assert_eq!(
        recv(&mut b).await,
        json!({"type":"p2p_signal","from":pa,"data":data})
    );
    // To someone not in the room; data too large; not an object.
    send(
        &mut a,
        json!({"type":"p2p_signal","to":"p99999900","data":{}}),
    )
    .await;
    let e = expect_error(&mut a, "bad_request").await;
    assert_eq!(
        e["message"],
        "p2p_signal: p99999900 is not a p2p member of the room"
    );
    send(
        &mut a,
        json!({"type":"p2p_signal","to":pb,"data":{"sdp":"x".repeat(17 * 1024)}}),
    )
    .await;
    let e = expect_error(&mut a, "bad_request").await;
    assert_eq!(e["message"], "p2p_signal: data is larger than 16384 bytes");
    send(&mut a, json!({"type":"p2p_signal","to":pb,"data":"text"})).await;
    expect_error(&mut a, "bad_request").await;
    // A level out of range; a flood of reports.
    send(&mut a, json!({"type":"speaking","level":2})).await;
    let e = expect_error(&mut a, "bad_request").await;
    assert_eq!(e["message"], "speaking: level must be a number from 0 to 1");
    for _ in 0..25 {
        send(&mut a, json!({"type":"speaking","level":0.1})).await;
    }
    let e = expect_error(&mut a, "rate_limited").await;
    assert_eq!(e["message"], "too many speaking reports");
    send(&mut a, json!({"type":"ping","id":99})).await;
    while recv(&mut a).await["type"] != "pong" {}
    // A flood of signals (once both buckets are full again): 60 go through, the
    // rest are refused.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..64 {
        send(&mut a, json!({"type":"p2p_signal","to":pb,"data":{}})).await;
    }
    let e = expect_error(&mut a, "rate_limited").await;
    assert_eq!(e["message"], "too many p2p_signal messages");
    let mut relayed = 0;
    while relayed < 60 {
        let m = recv(&mut b).await;
        if m["type"] == "p2p_signal" {
            relayed += 1;
        }
    }

    // A third (over p2p_max, and without p2p): everyone is told, the backend too.
    let mut c = connect(&node).await;
    send(&mut c, json!({"type":"join","room":"duo","name":"Cid"})).await;
    let jc = recv(&mut c).await;
    assert_eq!(jc["mode"], "sfu");
    for ws in [&mut a, &mut b] {
        loop {
            let m = recv(ws).await;
            if m["type"] == "mode" {
                assert_eq!(m, json!({"type":"mode","mode":"sfu","reason":"capacity"}));
                break;
            }
        }
    }
    let e = events
        .event(Duration::from_secs(5), |e| e["type"] == "mode_changed")
        .await;
    assert_eq!(
        e,
        json!({"type":"mode_changed","room":"duo","mode":"sfu","reason":"capacity"})
    );
    assert_eq!(
        rpc.ok("room.get", json!({"room":"duo"})).await["mode"],
        "sfu"
    );
    let p = rpc
        .ok("participant.get", json!({"room":"duo","participant_id":pa}))
        .await;
    assert_eq!(p["p2p"], true);

    // The third leaves; after 2 s the room is p2p again, and the metrics say so.
    send(&mut c, json!({"type":"leave"})).await;
    let e = events
        .event(Duration::from_secs(5), |e| e["type"] == "mode_changed")
        .await;
    assert_eq!(e["mode"], "p2p");
    assert_eq!(e["reason"], "within_limit");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let body = chorus_tests::ws::metrics(node.http).await;
    assert!(
        body.lines()
            .any(|l| l == "chorus_rooms_by_mode{shard=\"0\",mode=\"p2p\"} 1"),
        "{body}"
    );
    node.stop().await;
}
