//! Proximity rooms (issue 10, item 1): room policy `proximity {radius, positions}`;
//! positions from the backend (`room.set_positions`) or from clients (`position`); a
//! listener hears an ordinary speaker only within the radius (with hysteresis at the
//! edge), slots go to the loudest after distance, `speakers` entries carry `distance`;
//! no position: hears and is heard by no one but priority speakers; priority speakers
//! and whispers ignore distance. Rooms spanning shards get the same positions on
//! every shard.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use chorus_engine::{Command, Permissions, Reply, Request, RequestError};
use chorus_protocol::control::{
    PositionSource, Proximity, RoomCreate, RoomKind, RoomSetPositions, RoomUpdate,
};
use chorus_protocol::signal::{ErrorCode, RoomId, ServerMessage};
use chorus_tests::sim::Sim;

fn room(name: &str) -> RoomId {
    RoomId::new(name).unwrap()
}

fn create(sim: &mut Sim, name: &str, radius: f64, positions: PositionSource, slots: Option<u8>) {
    let replies = sim.request(Request::CreateRoom(RoomCreate {
        kind: Some(RoomKind::Raid),
        audio_slots: slots,
        proximity: Some(Proximity { radius, positions }),
        ..RoomCreate::new(room(name))
    }));
    match &replies[..] {
        [Ok(Reply::Room(r))] => assert_eq!(r.proximity.map(|p| p.radius), Some(radius)),
        other => panic!("{other:?}"),
    }
}

/// `room.set_positions` for clients by index; returns the unknown ids it reported.
fn place(sim: &mut Sim, name: &str, at: &[(usize, [f64; 3])]) -> Result<usize, RequestError> {
    let positions: BTreeMap<_, _> = at.iter().map(|(i, p)| (sim.clients[*i].id, *p)).collect();
    let replies = sim.request(Request::SetPositions(RoomSetPositions {
        room: room(name),
        positions,
    }));
    match replies.into_iter().next().unwrap()? {
        Reply::Positions(p) => {
            assert!(p.unknown.is_empty(), "{p:?}");
            Ok(p.updated)
        }
        other => panic!("{other:?}"),
    }
}

/// Packets `to` got from `from` over the next `d`.
/// The latest `speakers` a client got: (participant index, distance) per entry.
fn last_speakers(sim: &Sim, who: usize) -> Vec<(usize, Option<f32>)> {
    let index = |id| sim.clients.iter().position(|c| c.id == id).unwrap();
    sim.clients[who]
        .last_speakers()
        .iter()
        .map(|s| (index(s.participant_id), s.distance))
        .collect()
}

fn last_error(sim: &Sim, who: usize) -> Option<(ErrorCode, String)> {
    sim.clients[who].inbox.iter().rev().find_map(|m| match m {
        ServerMessage::Error { code, message } => Some((*code, message.clone())),
        _ => None,
    })
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn a_listener_hears_only_who_is_near_across_shards() {
    // Three shards: listener, speakers and the room's home spread over them.
    let mut sim = Sim::with_shards(3, |_| {});
    create(&mut sim, "world", 10.0, PositionSource::Backend, None);
    let a = sim.connect("a", "world");
    let near = sim.connect("near", "world");
    let far = sim.connect("far", "world");
    let lost = sim.connect("lost", "world");
    for s in [near, far, lost] {
        sim.clients[s].speaking = Some(20);
    }
    // Before any position: no one hears anyone.
    for s in [near, far, lost] {
        assert_eq!(sim.heard_over(a, s, SECOND), 0);
    }
    place(
        &mut sim,
        "world",
        &[
            (a, [0.0, 0.0, 0.0]),
            (near, [3.0, 4.0, 0.0]),
            (far, [30.0, 0.0, 0.0]),
        ],
    )
    .unwrap();
    assert!(sim.heard_over(a, near, SECOND) >= 45);
    assert_eq!(sim.heard_over(a, far, SECOND), 0);
    assert_eq!(sim.heard_over(a, lost, SECOND), 0, "no position: unheard");
    assert_eq!(
        sim.clients[lost].received.len(),
        0,
        "no position: hears no one"
    );
    // `speakers` lists whom the listener can hear, with the distance.
    assert_eq!(last_speakers(&sim, a), vec![(near, Some(5.0))]);

    // The far one walks up: heard within a second.
    place(&mut sim, "world", &[(far, [0.0, 8.0, 0.0])]).unwrap();
    let before = sim.clients[a].from(far).count();
    sim.run_until(SECOND, |s| s.clients[a].from(far).count() > before);
    assert!(sim.clients[a].from(far).count() > before, "heard once near");
    sim.run_for(SECOND);
    let mut seen = last_speakers(&sim, a);
    seen.sort_by_key(|e| e.0);
    assert_eq!(seen, vec![(near, Some(5.0)), (far, Some(8.0))]);
    // And away again.
    place(&mut sim, "world", &[(far, [0.0, 80.0, 0.0])]).unwrap();
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.heard_over(a, far, SECOND), 0);
    sim.run_for(SECOND);
    assert_eq!(last_speakers(&sim, a), vec![(near, Some(5.0))]);
}

#[test]
fn the_edge_does_not_flap() {
    let mut sim = Sim::new();
    create(&mut sim, "edge", 10.0, PositionSource::Backend, None);
    let a = sim.connect("a", "edge");
    let b = sim.connect("b", "edge");
    sim.clients[b].speaking = Some(20);
    place(&mut sim, "edge", &[(a, [0.0; 3]), (b, [9.9, 0.0, 0.0])]).unwrap();
    assert!(sim.heard_over(a, b, SECOND) >= 45);
    // Wandering across the radius, inside the hysteresis: heard without a gap.
    let before = sim.clients[a].from(b).count();
    for i in 0..40 {
        let x = if i % 2 == 0 { 10.8 } else { 9.6 };
        place(&mut sim, "edge", &[(b, [x, 0.0, 0.0])]).unwrap();
        sim.run_for(Duration::from_millis(50));
    }
    let got = sim.clients[a].from(b).count() - before;
    assert!(got >= 98, "{got} of 100 packets in 2 s at the edge");
    // Past the hysteresis: gone; back inside it but outside the radius: still gone.
    place(&mut sim, "edge", &[(b, [11.5, 0.0, 0.0])]).unwrap();
    assert_eq!(sim.heard_over(a, b, SECOND), 0);
    place(&mut sim, "edge", &[(b, [10.5, 0.0, 0.0])]).unwrap();
    assert_eq!(
        sim.heard_over(a, b, SECOND),
        0,
        "a newcomer needs the radius"
    );
    place(&mut sim, "edge", &[(b, [0.0, 0.0, 10.0])]).unwrap();
    assert!(sim.heard_over(a, b, SECOND) >= 45);
}

#[test]
fn a_near_whisper_beats_a_far_shout() {
    // One slot: the listener hears one speaker at a time.
    let mut sim = Sim::with_shards(2, |_| {});
    create(&mut sim, "hall", 10.0, PositionSource::Backend, Some(1));
    let a = sim.connect("a", "hall");
    let shout = sim.connect("shout", "hall");
    let quiet = sim.connect("quiet", "hall");
    place(
        &mut sim,
        "hall",
        &[
            (a, [0.0; 3]),
            (shout, [9.5, 0.0, 0.0]),
            (quiet, [0.0, 1.0, 0.0]),
        ],
    )
    .unwrap();
    sim.clients[shout].speaking = Some(6);
    assert!(sim.heard_over(a, shout, 2 * SECOND) >= 90);
    // -40 dBov at 1 unit (gain 0.81) against -6 dBov at 9.5 (gain 0.0025).
    sim.clients[quiet].speaking = Some(40);
    sim.run_for(3 * SECOND);
    assert!(sim.heard_over(a, quiet, SECOND) >= 45, "the near voice");
    assert_eq!(sim.heard_over(a, shout, SECOND), 0);
    // A plain room ranks the shout first: the quiet voice never gets the slot there.
    sim.request(Request::UpdateRoom(RoomUpdate {
        proximity: Some(None),
        ..RoomUpdate::new(room("hall"))
    }));
    sim.clients[quiet].speaking = None;
    sim.run_for(3 * SECOND);
    sim.clients[quiet].speaking = Some(40);
    sim.run_for(3 * SECOND);
    assert_eq!(sim.heard_over(a, quiet, SECOND), 0);
    assert!(sim.heard_over(a, shout, SECOND) >= 45);
    let entries = last_speakers(&sim, a);
    assert!(
        entries.iter().all(|(_, d)| d.is_none()),
        "no distances outside proximity: {entries:?}"
    );
}

#[test]
fn priority_speakers_and_whispers_ignore_distance() {
    let mut sim = Sim::with_shards(2, |_| {});
    create(&mut sim, "field", 10.0, PositionSource::Backend, None);
    let lead = sim.connect_with_permissions(
        "lead",
        "field",
        Permissions {
            priority: true,
            sources: chorus_engine::Sources::ALL,
            ..Permissions::ALL
        },
    );
    let a = sim.connect("a", "field");
    let b = sim.connect("b", "field");
    let nowhere = sim.connect("nowhere", "field");
    let scout = sim.connect("scout", "field");
    place(
        &mut sim,
        "field",
        &[
            (a, [0.0; 3]),
            (b, [500.0, 0.0, 0.0]),
            (scout, [-900.0, 0.0, 0.0]),
        ],
    )
    .unwrap();
    // The leader has no position and is heard by everyone, the one without a
    // position included.
    sim.clients[lead].speaking = Some(20);
    for who in [a, b, nowhere, scout] {
        assert!(sim.heard_over(who, lead, SECOND) >= 45, "{who}");
    }
    sim.clients[lead].speaking = None;
    // The scout whispers to a, 900 units away; b does not hear it.
    sim.clients[scout].speaking = Some(20);
    assert_eq!(sim.heard_over(a, scout, SECOND), 0);
    let scout_id = sim.clients[scout].id;
    let a_id = sim.clients[a].id;
    sim.command(Command::SetWhisper {
        participant: scout_id,
        to: Some(vec![a_id]),
    });
    assert!(sim.heard_over(a, scout, SECOND) >= 45);
    assert_eq!(sim.heard_over(b, scout, SECOND), 0);
    sim.run_for(SECOND);
    // Listed (it whispers to a), but no distance: that would tell where it is.
    assert!(last_speakers(&sim, a).contains(&(scout, None)));
}

#[test]
fn clients_send_their_positions_when_the_room_says_so() {
    let mut sim = Sim::with_shards(2, |_| {});
    create(&mut sim, "open", 10.0, PositionSource::Client, None);
    let a = sim.connect("a", "open");
    let b = sim.connect("b", "open");
    sim.clients[b].speaking = Some(20);
    let at = |sim: &mut Sim, who: usize, position: [f64; 3]| {
        let participant = sim.clients[who].id;
        sim.command(Command::SetPosition {
            participant,
            position,
        });
    };
    at(&mut sim, a, [0.0; 3]);
    at(&mut sim, b, [100.0, 0.0, 0.0]);
    // Many positions in one tick: the last one counts.
    for x in 0..20 {
        at(&mut sim, b, [50.0 - f64::from(x), 0.0, 0.0]);
    }
    at(&mut sim, b, [2.0, 0.0, 0.0]);
    sim.run_for(Duration::from_millis(100));
    assert!(sim.heard_over(a, b, SECOND) >= 45);
    at(&mut sim, b, [f64::NAN, 0.0, 0.0]);
    assert_eq!(last_error(&sim, b).unwrap().0, ErrorCode::BadRequest);
    assert!(
        sim.heard_over(a, b, SECOND) >= 45,
        "a bad position moves no one"
    );

    // A backend room refuses clients' positions; a plain room too.
    create(&mut sim, "ruled", 10.0, PositionSource::Backend, None);
    let c = sim.connect("c", "ruled");
    at(&mut sim, c, [1.0, 2.0, 3.0]);
    let (code, message) = last_error(&sim, c).unwrap();
    assert_eq!(code, ErrorCode::Forbidden, "{message}");
    let d = sim.connect("d", "plain");
    at(&mut sim, d, [1.0, 2.0, 3.0]);
    assert_eq!(last_error(&sim, d).unwrap().0, ErrorCode::BadRequest);
    // And the backend cannot place anyone in a plain room; strangers are reported.
    let e = sim.connect("e", "plain");
    match place(&mut sim, "plain", &[(e, [0.0; 3])]) {
        Err(RequestError::Invalid(m)) => assert!(m.contains("not a proximity room"), "{m}"),
        other => panic!("{other:?}"),
    }
    let replies = sim.request(Request::SetPositions(RoomSetPositions {
        room: room("ruled"),
        positions: BTreeMap::from([(sim.clients[a].id, [0.0; 3]), (sim.clients[c].id, [0.0; 3])]),
    }));
    match &replies[..] {
        [Ok(Reply::Positions(p))] => {
            assert_eq!(p.updated, 1);
            assert_eq!(p.unknown, vec![sim.clients[a].id]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_participant_that_leaves_is_forgotten_and_a_late_shard_learns_everyone() {
    let mut sim = Sim::with_shards(2, |_| {});
    create(&mut sim, "late", 10.0, PositionSource::Backend, None);
    // Both on shard 0 first: shard 1 holds no one of the room.
    let a = sim.connect_on("a", "late", 0);
    let b = sim.connect_on("b", "late", 0);
    sim.clients[b].speaking = Some(20);
    place(&mut sim, "late", &[(a, [0.0; 3]), (b, [1.0, 0.0, 0.0])]).unwrap();
    assert!(sim.heard_over(a, b, SECOND) >= 45);
    // A newcomer on shard 1 is placed near b; shard 1 learns the room's positions
    // when it starts holding a member.
    let c = sim.connect_on("c", "late", 1);
    place(&mut sim, "late", &[(c, [0.0, 1.0, 0.0])]).unwrap();
    assert!(sim.heard_over(c, b, SECOND) >= 45);
    // b leaves and comes back under a new id with no position: unheard.
    let b_id = sim.clients[b].id;
    sim.command(Command::Leave { participant: b_id });
    let b2 = sim.connect_on("b2", "late", 0);
    sim.clients[b2].speaking = Some(20);
    assert_eq!(sim.heard_over(a, b2, SECOND), 0);
    assert_eq!(sim.heard_over(c, b2, SECOND), 0);
}

#[test]
fn a_lost_batch_is_made_good_by_a_resync() {
    use chorus_engine::ShardMessage;
    let mut sim = Sim::with_shards(2, |_| {});
    create(&mut sim, "lossy", 10.0, PositionSource::Backend, None);
    // The listener's media away from the room's home shard (which applies its own
    // batches without a message), the speaker's at home.
    let home = chorus_engine::room_home(&room("lossy"), 2);
    let away = 1 - home;
    let a = sim.connect_on("a", "lossy", away);
    let b = sim.connect_on("b", "lossy", home);
    let c = sim.connect_on("c", "lossy", away);
    sim.clients[b].speaking = Some(20);
    place(
        &mut sim,
        "lossy",
        &[(a, [0.0; 3]), (b, [50.0, 0.0, 0.0]), (c, [0.0, 3.0, 0.0])],
    )
    .unwrap();
    assert_eq!(sim.heard_over(a, b, SECOND), 0);
    // The batch bringing b near is lost on its way to shard 1.
    let mut lost = 0;
    sim.lose = Some(Box::new(move |to, m| {
        let hit = to == away && lost == 0 && matches!(m, ShardMessage::Positions { .. });
        lost += usize::from(hit);
        hit
    }));
    place(&mut sim, "lossy", &[(b, [2.0, 0.0, 0.0])]).unwrap();
    assert_eq!(
        sim.heard_over(a, b, SECOND),
        0,
        "the listener's shard missed it"
    );
    // The next batch (about someone else) shows the gap: shard 1 asks for everything.
    place(&mut sim, "lossy", &[(c, [0.0, 4.0, 0.0])]).unwrap();
    assert!(sim.heard_over(a, b, SECOND) >= 45, "resynced");
}

#[test]
fn radius_changes_and_proximity_turned_off_and_on() {
    let mut sim = Sim::with_shards(2, |_| {});
    create(&mut sim, "zone", 10.0, PositionSource::Backend, None);
    let a = sim.connect("a", "zone");
    let b = sim.connect("b", "zone");
    sim.clients[b].speaking = Some(20);
    place(&mut sim, "zone", &[(a, [0.0; 3]), (b, [15.0, 0.0, 0.0])]).unwrap();
    assert_eq!(sim.heard_over(a, b, SECOND), 0);
    let update = |sim: &mut Sim, p: Option<Proximity>| {
        let r = sim.request(Request::UpdateRoom(RoomUpdate {
            proximity: Some(p),
            ..RoomUpdate::new(room("zone"))
        }));
        assert!(r[0].is_ok(), "{r:?}");
    };
    let radius = |r| {
        Some(Proximity {
            radius: r,
            positions: PositionSource::Backend,
        })
    };
    update(&mut sim, radius(20.0));
    assert!(sim.heard_over(a, b, SECOND) >= 45, "a wider radius");
    update(&mut sim, radius(14.0));
    assert!(
        sim.heard_over(a, b, SECOND) >= 45,
        "a slot holder keeps it within the new reach (15.4)"
    );
    update(&mut sim, radius(5.0));
    assert_eq!(sim.heard_over(a, b, SECOND), 0, "out of the new reach");
    update(&mut sim, None);
    assert!(sim.heard_over(a, b, SECOND) >= 45, "off: everyone");
    update(&mut sim, radius(10.0));
    assert_eq!(
        sim.heard_over(a, b, SECOND),
        0,
        "on again: the positions were forgotten"
    );
    place(&mut sim, "zone", &[(a, [0.0; 3]), (b, [5.0, 0.0, 0.0])]).unwrap();
    assert!(sim.heard_over(a, b, SECOND) >= 45);
    // Radius out of range: refused by the engine as by the control plane.
    let r = sim.request(Request::UpdateRoom(RoomUpdate {
        proximity: Some(radius(1e-9)),
        ..RoomUpdate::new(room("zone"))
    }));
    assert!(matches!(r[..], [Err(RequestError::Invalid(_))]), "{r:?}");
}

#[test]
fn a_listener_whose_media_moves_shards_keeps_hearing_by_distance() {
    let mut sim = Sim::with_shards(3, |_| {});
    create(&mut sim, "move", 10.0, PositionSource::Backend, None);
    let a = sim.connect_on("a", "move", 0);
    let near = sim.connect_on("near", "move", 0);
    let far = sim.connect_on("far", "move", 0);
    for s in [near, far] {
        sim.clients[s].speaking = Some(20);
    }
    place(
        &mut sim,
        "move",
        &[
            (a, [0.0; 3]),
            (near, [3.0, 0.0, 0.0]),
            (far, [60.0, 0.0, 0.0]),
        ],
    )
    .unwrap();
    assert!(sim.heard_over(a, near, SECOND) >= 45);
    // a's network changes: its media moves to shard 2, which held no one of the room.
    sim.restart_ice(a, "10.9.9.9:5000".parse().unwrap(), 2);
    sim.run_until(Duration::from_secs(5), |s| s.holder(a) == Some(2));
    assert_eq!(sim.holder(a), Some(2));
    sim.run_for(Duration::from_millis(200));
    assert!(
        sim.heard_over(a, near, SECOND) >= 45,
        "near, on the new shard"
    );
    assert_eq!(sim.heard_over(a, far, SECOND), 0, "far, on the new shard");
    // And the positions keep coming there.
    place(&mut sim, "move", &[(far, [0.0, 5.0, 0.0])]).unwrap();
    assert!(sim.heard_over(a, far, SECOND) >= 45);
}
