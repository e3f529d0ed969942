//! The control plane's requests and events, through the sans-IO engine: real str0m
//! clients on a simulated network and clock, rooms homed on one of two shards.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chorus_engine::{CloseReason, Command, Reply, Request, RequestError};
use chorus_protocol::control::{
    NodeEvent, ParticipantKick, ParticipantMute, ParticipantRef, ParticipantSetPermissions,
    RoomCreate, RoomDelete, RoomKind, RoomUpdate,
};
use chorus_protocol::signal::{ErrorCode, RoomId, ServerMessage};
use chorus_tests::sim::Sim;

fn room(name: &str) -> RoomId {
    RoomId::new(name).unwrap()
}

fn create(name: &str) -> RoomCreate {
    RoomCreate::new(room(name))
}

fn one(mut answers: Vec<Result<Reply, RequestError>>) -> Result<Reply, RequestError> {
    assert_eq!(answers.len(), 1, "one shard answers a room request");
    answers.remove(0)
}

/// A node that creates rooms only through the control plane.
fn managed(shards: usize) -> Sim {
    Sim::with_shards(shards, |c| c.auto_create_rooms = false)
}

#[test]
fn rooms_are_created_listed_updated_and_deleted() {
    let mut sim = managed(2);
    let reply = one(sim.request(Request::CreateRoom(RoomCreate {
        kind: Some(RoomKind::Party),
        metadata: Some("{\"game\":1}".into()),
        ..create("party-1")
    })));
    let Ok(Reply::Room(info)) = reply else {
        panic!("{reply:?}")
    };
    let d = RoomKind::Party.defaults();
    assert_eq!(info.kind, RoomKind::Party);
    assert_eq!(
        info.max_participants, d.max_participants,
        "the kind's default"
    );
    assert_eq!(info.audio_slots, d.audio_slots);
    assert_eq!(info.empty_timeout_s, d.empty_timeout_s);
    assert_eq!(info.metadata, "{\"game\":1}");
    assert!(!info.auto_created);
    assert!(matches!(
        &sim.events_of("room_created")[..],
        [NodeEvent::RoomCreated { room, kind: RoomKind::Party, auto_created: false }] if room.as_str() == "party-1"
    ));

    assert_eq!(
        one(sim.request(Request::CreateRoom(create("party-1")))),
        Err(RequestError::RoomExists(room("party-1")))
    );
    // Explicit settings beat the kind's.
    one(sim.request(Request::CreateRoom(RoomCreate {
        kind: Some(RoomKind::Raid),
        audio_slots: Some(3),
        ..create("raid-1")
    })))
    .unwrap();

    let lists = sim.request(Request::ListRooms);
    assert_eq!(lists.len(), 2, "every shard answers");
    let mut names: Vec<String> = lists
        .into_iter()
        .flat_map(|r| match r {
            Ok(Reply::Rooms(rooms)) => rooms,
            other => panic!("{other:?}"),
        })
        .map(|r| r.room.as_str().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["party-1", "raid-1"]);

    let reply = one(sim.request(Request::UpdateRoom(RoomUpdate {
        max_participants: Some(40),
        metadata: Some("m".into()),
        ..RoomUpdate::new(room("raid-1"))
    })));
    let Ok(Reply::Room(info)) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(
        (
            info.max_participants,
            info.audio_slots,
            info.metadata.as_str()
        ),
        (40, 3, "m")
    );

    let a = sim.connect("a", "raid-1");
    let reply = one(sim.request(Request::DeleteRoom(RoomDelete {
        room: room("raid-1"),
        reason: Some("raid over".into()),
    })));
    assert!(
        matches!(reply, Ok(Reply::Room(ref r)) if r.participants == 1),
        "{reply:?}"
    );
    assert!(sim.clients[a].inbox.contains(&ServerMessage::RoomClosed {
        reason: "raid over".into()
    }));
    assert!(sim
        .closed
        .contains(&(sim.clients[a].id, CloseReason::RoomClosed)));
    assert!(sim.events.iter().any(|e| matches!(e,
        NodeEvent::RoomClosed { room, reason } if room.as_str() == "raid-1" && reason == "raid over")));
    assert!(sim.events.iter().any(|e| matches!(e,
        NodeEvent::ParticipantLeft { reason, .. } if reason == "room_closed")));
    assert_eq!(
        one(sim.request(Request::GetRoom(room("raid-1")))),
        Err(RequestError::RoomNotFound(room("raid-1")))
    );
}

#[test]
fn a_managed_node_admits_only_to_created_rooms_up_to_capacity() {
    let mut sim = managed(1);
    let x = sim.join("x", "nowhere");
    assert!(matches!(
        sim.clients[x].inbox.last(),
        Some(ServerMessage::Error {
            code: ErrorCode::RoomNotFound,
            ..
        })
    ));
    one(sim.request(Request::CreateRoom(RoomCreate {
        max_participants: Some(2),
        ..create("duo")
    })))
    .unwrap();
    sim.connect("a", "duo");
    sim.connect("b", "duo");
    let c = sim.join("c", "duo");
    assert!(matches!(
        sim.clients[c].inbox.last(),
        Some(ServerMessage::Error {
            code: ErrorCode::RoomFull,
            ..
        })
    ));
}

#[test]
fn an_empty_room_closes_after_its_timeout_and_not_before() {
    let mut sim = managed(2);
    one(sim.request(Request::CreateRoom(RoomCreate {
        empty_timeout_s: Some(10),
        ..create("g")
    })))
    .unwrap();
    sim.run_for(Duration::from_secs(5));
    let a = sim.connect("a", "g");
    sim.run_for(Duration::from_secs(30));
    assert!(
        sim.events_of("room_closed").is_empty(),
        "never while someone is in"
    );
    let id = sim.clients[a].id;
    sim.command(Command::Leave { participant: id });
    sim.run_for(Duration::from_secs(9));
    assert!(sim.events_of("room_closed").is_empty(), "9 s empty");
    sim.run_for(Duration::from_secs(2));
    assert!(matches!(
        &sim.events_of("room_closed")[..],
        [NodeEvent::RoomClosed { reason, .. }] if reason == "empty_timeout"
    ));
    assert!(one(sim.request(Request::GetRoom(room("g")))).is_err());

    // 0: never closed for being empty.
    one(sim.request(Request::CreateRoom(RoomCreate {
        empty_timeout_s: Some(0),
        ..create("forever")
    })))
    .unwrap();
    sim.run_for(Duration::from_secs(3600));
    assert!(one(sim.request(Request::GetRoom(room("forever")))).is_ok());
}

#[test]
fn an_auto_created_room_closes_when_its_last_member_leaves() {
    let mut sim = Sim::new();
    let a = sim.connect("a", "adhoc");
    assert_eq!(sim.events_of("room_created").len(), 1);
    let id = sim.clients[a].id;
    sim.command(Command::Leave { participant: id });
    assert!(matches!(
        &sim.events_of("room_closed")[..],
        [NodeEvent::RoomClosed { reason, .. }] if reason == "empty"
    ));
}

#[test]
fn participants_are_listed_with_what_the_backend_needs() {
    let mut sim = Sim::with_shards(2, |_| {});
    let a = sim.connect("a", "r");
    let b = sim.connect_on("b", "r", 1);
    let reply = one(sim.request(Request::ListParticipants(room("r"))));
    let Ok(Reply::Participants(list)) = reply else {
        panic!("{reply:?}")
    };
    let ids: Vec<_> = list.iter().map(|p| p.participant_id).collect();
    assert_eq!(ids, [sim.clients[a].id, sim.clients[b].id], "join order");
    assert!(list
        .iter()
        .all(|p| p.publish && p.subscribe && !p.server_muted));
    assert_eq!(list[1].shard, sim.holder(b).unwrap());
    assert_eq!(list[0].csrc, sim.clients[a].csrc);

    let get = |sim: &mut Sim, id| {
        one(sim.request(Request::GetParticipant(ParticipantRef {
            room: room("r"),
            participant_id: id,
        })))
    };
    let idb = sim.clients[b].id;
    assert!(matches!(get(&mut sim, idb), Ok(Reply::Participant(p)) if p.name.as_str() == "b"));
    let stranger = chorus_protocol::signal::ParticipantId(0x9_9900);
    assert!(matches!(
        get(&mut sim, stranger),
        Err(RequestError::ParticipantNotFound { .. })
    ));
    let joined = sim.events_of("participant_joined");
    assert_eq!(joined.len(), 2);
}

#[test]
fn a_server_mute_holds_until_the_server_lifts_it() {
    let mut sim = Sim::with_shards(2, |_| {});
    let (a, b, c) = sim.three_talking("r");
    let id = sim.clients[a].id;
    let mute = |sim: &mut Sim, muted| {
        one(sim.request(Request::Mute(ParticipantMute {
            room: room("r"),
            participant_id: id,
            muted,
        })))
        .unwrap()
    };
    let reply = mute(&mut sim, true);
    assert!(matches!(reply, Reply::Participant(ref p) if p.server_muted && !p.muted));
    sim.run_for(Duration::from_millis(100));
    let before = (
        sim.clients[b].from(a).count(),
        sim.clients[c].from(a).count(),
    );
    // The client tries to unmute itself: refused, and nothing is forwarded.
    sim.command(Command::SetMuted {
        participant: id,
        muted: false,
    });
    assert!(matches!(
        sim.clients[a].inbox.last(),
        Some(ServerMessage::Error {
            code: ErrorCode::Forbidden,
            ..
        })
    ));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        (
            sim.clients[b].from(a).count(),
            sim.clients[c].from(a).count()
        ),
        before,
        "nothing of a while server-muted"
    );
    let b_from_c = sim.clients[b].from(c).count();
    assert!(b_from_c > 49, "others unaffected");
    // Everyone saw it (the participant included).
    for i in [a, b, c] {
        assert!(sim.clients[i].inbox.iter().any(|m| matches!(m,
            ServerMessage::ParticipantUpdated { participant } if participant.participant_id == id && participant.server_muted)));
    }
    assert!(sim.events.iter().any(|e| matches!(e,
        NodeEvent::ParticipantUpdated { participant, .. } if participant.participant_id == id && participant.server_muted)));

    mute(&mut sim, false);
    sim.run_for(Duration::from_secs(1));
    assert!(
        sim.clients[b].from(a).count() >= before.0 + 45,
        "forwarded again"
    );
}

#[test]
fn a_kicked_participant_is_told_removed_and_announced() {
    let mut sim = Sim::with_shards(2, |_| {});
    let (a, b, c) = sim.three_talking("r");
    let id = sim.clients[b].id;
    let reply = one(sim.request(Request::Kick(ParticipantKick {
        room: room("r"),
        participant_id: id,
        reason: Some("spam".into()),
    })));
    assert!(reply.is_ok(), "{reply:?}");
    assert!(sim.clients[b].inbox.contains(&ServerMessage::Kicked {
        reason: "spam".into()
    }));
    assert!(sim.closed.contains(&(id, CloseReason::Kicked)));
    for i in [a, c] {
        assert!(sim.clients[i]
            .inbox
            .contains(&ServerMessage::ParticipantLeft { participant_id: id }));
    }
    assert!(sim.events.iter().any(|e| matches!(e,
        NodeEvent::ParticipantLeft { participant_id, reason, .. } if *participant_id == id && reason == "kicked")));
    let a_from_b = sim.clients[a].from(b).count();
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.clients[a].from(b).count(), a_from_b);
    assert!(matches!(
        one(sim.request(Request::Kick(ParticipantKick {
            room: room("r"),
            participant_id: id,
            reason: None,
        }))),
        Err(RequestError::ParticipantNotFound { .. })
    ));
}

#[test]
fn permissions_change_what_is_forwarded_at_once() {
    let mut sim = Sim::with_shards(2, |_| {});
    let (a, b, c) = sim.three_talking("r");
    let id = sim.clients[a].id;
    let set = |sim: &mut Sim, publish, subscribe| {
        one(
            sim.request(Request::SetPermissions(ParticipantSetPermissions {
                room: room("r"),
                participant_id: id,
                publish,
                subscribe,
                priority: None,
                sources: None,
            })),
        )
        .unwrap()
    };
    let reply = set(&mut sim, Some(false), None);
    assert!(matches!(reply, Reply::Participant(ref p) if !p.publish && p.subscribe));
    assert!(sim.clients[a].inbox.contains(&ServerMessage::Permissions {
        publish: false,
        subscribe: true,
        priority: false,
        sources: chorus_protocol::signal::Source::ALL.to_vec(),
    }));
    sim.run_for(Duration::from_millis(100));
    let b_from_a = sim.clients[b].from(a).count();
    let a_from_c = sim.clients[a].from(c).count();
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.clients[b].from(a).count(), b_from_a, "no publish");
    assert!(
        sim.clients[a].from(c).count() >= a_from_c + 45,
        "still subscribed"
    );

    set(&mut sim, Some(true), Some(false));
    sim.run_for(Duration::from_millis(100));
    let a_from_c = sim.clients[a].from(c).count();
    let b_from_a = sim.clients[b].from(a).count();
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.clients[a].from(c).count(), a_from_c, "no subscribe");
    assert!(
        sim.clients[b].from(a).count() >= b_from_a + 45,
        "publishes again"
    );
}

#[test]
fn speaking_is_reported_once_when_it_starts_and_once_when_it_stops() {
    let mut sim = Sim::with_shards(2, |_| {});
    let a = sim.connect("a", "r");
    let b = sim.connect_on("b", "r", 1);
    let (ida, idb) = (sim.clients[a].id, sim.clients[b].id);
    sim.clients[b].speaking = Some(20);
    sim.run_for(Duration::from_secs(1));
    sim.clients[b].speaking = None;
    sim.run_for(Duration::from_secs(3));
    let speaking: Vec<_> = sim
        .events
        .iter()
        .filter_map(|e| match e {
            NodeEvent::SpeakingStarted { participant_id, .. } => Some((true, *participant_id)),
            NodeEvent::SpeakingStopped { participant_id, .. } => Some((false, *participant_id)),
            _ => None,
        })
        .collect();
    assert_eq!(
        speaking,
        [(true, idb), (false, idb)],
        "b's shard reports it, once each way; a never spoke ({ida})"
    );
}

#[test]
fn quality_is_reported_for_every_connected_participant() {
    let mut sim = Sim::with_shards(2, |c| c.quality_interval = Some(Duration::from_secs(1)));
    let (a, _b, _c) = sim.three_talking("r");
    // Long enough for the clients' receiver reports (str0m: every 5 s for audio).
    sim.run_for(Duration::from_secs(12));
    let ida = sim.clients[a].id;
    let of_a: Vec<_> = sim
        .events
        .iter()
        .filter_map(|e| match e {
            NodeEvent::Quality {
                participant_id,
                bitrate_in,
                bitrate_out,
                loss_in,
                ..
            } if *participant_id == ida => Some((*bitrate_in, *bitrate_out, *loss_in)),
            _ => None,
        })
        .collect();
    assert!(of_a.len() >= 3, "about one a second: {of_a:?}");
    let (bitrate_in, bitrate_out, _) = of_a[of_a.len() - 1];
    // 50 packets/s of a small Opus payload, and two speakers' worth back.
    assert!(bitrate_in > 10_000, "{of_a:?}");
    assert!(bitrate_out > bitrate_in, "{of_a:?}");
    let ids: std::collections::HashSet<_> = sim
        .events_of("quality")
        .iter()
        .filter_map(|e| match e {
            NodeEvent::Quality { participant_id, .. } => Some(*participant_id),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 3);
    // The slot streams are Chorus's own: what the clients' receiver reports say of
    // them (no loss on the simulated network, and a round trip from our sender
    // reports' LSR/DLSR) reaches the event.
    let out: Vec<_> = sim
        .events
        .iter()
        .filter_map(|e| match e {
            NodeEvent::Quality {
                participant_id,
                loss_out,
                rtt_ms,
                ..
            } if *participant_id == ida => Some((*loss_out, *rtt_ms)),
            _ => None,
        })
        .collect();
    assert!(
        out.iter()
            .any(|(loss, rtt)| *loss == Some(0.0) && rtt.is_some()),
        "{out:?}"
    );
}

#[test]
fn every_shard_reports_its_figures() {
    let mut sim = Sim::with_shards(2, |_| {});
    sim.three_talking("r");
    let reports: Vec<_> = sim
        .request(Request::Stats)
        .into_iter()
        .map(|r| match r {
            Ok(Reply::Stats(s)) => s,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports.iter().map(|r| r.participants).sum::<usize>(), 3);
    assert_eq!(reports.iter().map(|r| r.rooms).sum::<usize>(), 1);
    let forwarded: u64 = reports.iter().map(|r| r.counters["rtp_forwarded"]).sum();
    assert!(forwarded > 200, "{forwarded}");
    assert!(reports.iter().all(|r| r.counters["bytes_in"] > 0));
}

#[test]
fn a_draining_node_closes_each_room_as_soon_as_it_is_empty() {
    let mut sim = managed(2);
    for name in ["busy", "idle"] {
        one(sim.request(Request::CreateRoom(create(name)))).unwrap();
    }
    let a = sim.connect("a", "busy");
    let b = sim.connect("b", "busy");
    let now = sim.now;
    for s in &mut sim.shards {
        s.start_draining(now);
    }
    sim.pump();
    let closed = |sim: &Sim| -> Vec<String> {
        sim.events
            .iter()
            .filter_map(|e| match e {
                NodeEvent::RoomClosed { room, reason } if reason == "node_draining" => {
                    Some(room.as_str().to_owned())
                }
                _ => None,
            })
            .collect()
    };
    assert_eq!(closed(&sim), ["idle"], "the empty room closes at once");
    let id = sim.clients[a].id;
    sim.command(Command::Leave { participant: id });
    assert_eq!(closed(&sim), ["idle"], "not while b is in it");
    let id = sim.clients[b].id;
    sim.command(Command::Leave { participant: id });
    assert_eq!(closed(&sim), ["idle", "busy"], "and when b leaves");
}
