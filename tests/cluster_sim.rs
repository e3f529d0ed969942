//! A room that spans nodes (issue 14), in simulation: two nodes (one of two shards,
//! one of one), each a [`Sim`] with its own node number, bridged as the cluster layer
//! bridges real nodes: each node's roster changes go to the other's home shard of the
//! room, and each local speaker's packet is relayed once to the other node, whose
//! shards forward it as a packet handed by a local shard.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use chorus_engine::cluster::REMOTE_ORIGIN;
use chorus_engine::{room_home, Command, RelayOut, ShardMessage};
use chorus_protocol::signal::{ParticipantId, ServerMessage};
use chorus_tests::sim::Sim;

fn node(number: u16, shards: usize) -> Sim {
    Sim::with_shards(shards, |c| c.node = number)
}

/// Hands what `from` put out for other nodes to `to`. Returns the packets relayed.
fn bridge(from: &mut Sim, to: &mut Sim) -> usize {
    for (room, change) in std::mem::take(&mut from.roster) {
        let home = room_home(&room, to.shards.len());
        let now = to.now;
        to.shards[home].handle_shard_message(now, ShardMessage::Remote { room, change });
    }
    let mut audio = 0;
    let now = to.now;
    for out in std::mem::take(&mut from.relayed) {
        match out {
            RelayOut::Audio(room, packet) => {
                audio += 1;
                for s in &mut to.shards {
                    let (room, packet) = (room.clone(), packet.clone());
                    s.handle_shard_message(now, ShardMessage::Media { room, packet });
                }
            }
            RelayOut::Video(room, mut packet) => {
                packet.origin = REMOTE_ORIGIN;
                for s in &mut to.shards {
                    let (room, packet) = (room.clone(), packet.clone());
                    s.handle_shard_message(now, ShardMessage::Video { room, packet });
                }
            }
            RelayOut::Keyframe {
                publisher,
                source,
                layer,
            } => {
                let home = chorus_engine::home_of(publisher, to.shards.len());
                to.shards[home].handle_shard_message(
                    now,
                    ShardMessage::Keyframe {
                        publisher,
                        source,
                        layer,
                    },
                );
            }
        }
    }
    to.pump();
    audio
}

/// Runs both nodes for `d` in 10 ms steps, bridging both ways after each.
fn run(a: &mut Sim, b: &mut Sim, d: Duration) -> usize {
    let step = Duration::from_millis(10);
    let mut relayed = 0;
    let mut t = Duration::ZERO;
    while t < d {
        a.run_for(step);
        b.run_for(step);
        relayed += bridge(a, b);
        relayed += bridge(b, a);
        t += step;
    }
    relayed
}

fn joined_ids(sim: &Sim, idx: usize) -> Vec<ParticipantId> {
    sim.clients[idx]
        .inbox
        .iter()
        .filter_map(|m| match m {
            ServerMessage::ParticipantJoined { participant } => Some(participant.participant_id),
            _ => None,
        })
        .collect()
}

fn left_ids(sim: &Sim, idx: usize) -> Vec<ParticipantId> {
    sim.clients[idx]
        .inbox
        .iter()
        .filter_map(|m| match m {
            ServerMessage::ParticipantLeft { participant_id } => Some(*participant_id),
            _ => None,
        })
        .collect()
}

/// Packets a client received carrying `csrc`, and how many of them repeat a
/// (SSRC, sequence) pair (a copy delivered twice).
fn heard(sim: &Sim, idx: usize, csrc: u32) -> (usize, usize) {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut twice = 0;
    for r in &sim.clients[idx].received {
        if r.csrc.first() == Some(&csrc) {
            total += 1;
            if !seen.insert((r.ssrc, r.seq)) {
                twice += 1;
            }
        }
    }
    (total, twice)
}

#[test]
fn a_room_spans_two_nodes() {
    let mut a = node(1, 2);
    let mut b = node(2, 1);
    let alice = a.connect_on("alice", "raid", 0);
    let bob = a.connect_on("bob", "raid", 1);
    let carol = b.connect("carol", "raid");
    run(&mut a, &mut b, Duration::from_millis(50));

    // Ids and CSRCs carry the node: unique across the cluster.
    let ids: Vec<_> = [(&a, alice), (&a, bob), (&b, carol)]
        .iter()
        .map(|(s, i)| s.clients[*i].id)
        .collect();
    let csrcs: HashSet<u32> = [(&a, alice), (&a, bob), (&b, carol)]
        .iter()
        .map(|(s, i)| s.clients[*i].csrc)
        .collect();
    assert_eq!(csrcs.len(), 3, "CSRCs unique room-wide: {csrcs:x?}");
    assert_eq!(a.clients[alice].csrc >> 24, 1);
    assert_eq!(b.clients[carol].csrc >> 24, 2);
    assert_eq!(chorus_engine::cluster::node_of(ids[2]), 2);

    // Each side's roster lists the other's members.
    assert!(joined_ids(&b, carol).contains(&ids[0]));
    assert!(joined_ids(&b, carol).contains(&ids[1]));
    assert!(joined_ids(&a, alice).contains(&ids[2]));

    // Everyone talks: every packet reaches every listener once, across nodes.
    a.clients[alice].speaking = Some(20);
    a.clients[bob].speaking = Some(20);
    b.clients[carol].speaking = Some(20);
    let relayed = run(&mut a, &mut b, Duration::from_secs(1));
    let (alice_csrc, carol_csrc) = (a.clients[alice].csrc, b.clients[carol].csrc);
    let (from_alice, twice) = heard(&b, carol, alice_csrc);
    assert!(from_alice >= 40, "carol hears alice: {from_alice}");
    assert_eq!(twice, 0, "never twice");
    let (from_carol, twice) = heard(&a, alice, carol_csrc);
    assert!(from_carol >= 40, "alice hears carol: {from_carol}");
    assert_eq!(twice, 0);
    let (bob_hears_carol, _) = heard(&a, bob, carol_csrc);
    assert!(
        bob_hears_carol >= 40,
        "on the other shard too: {bob_hears_carol}"
    );
    // One copy per speaker packet per remote node: ~50 a second from each of three.
    assert!(
        (130..=160).contains(&relayed),
        "one copy per packet per node: {relayed}"
    );

    // Loudest-N sees everyone: carol's speakers name alice and bob.
    let speakers: HashSet<ParticipantId> = b.clients[carol]
        .last_speakers()
        .iter()
        .map(|s| s.participant_id)
        .collect();
    assert!(
        speakers.contains(&ids[0]) && speakers.contains(&ids[1]),
        "{speakers:?}"
    );

    // A mute on node 2 reaches node 1's clients.
    b.command(Command::SetMuted {
        participant: ids[2],
        muted: true,
    });
    run(&mut a, &mut b, Duration::from_millis(50));
    let muted = a.clients[alice].inbox.iter().any(|m| {
        matches!(m, ServerMessage::ParticipantUpdated { participant }
            if participant.participant_id == ids[2] && participant.muted)
    });
    assert!(muted, "alice sees carol muted");

    // Bob leaves node 1: carol is told.
    a.command(Command::Leave {
        participant: ids[1],
    });
    run(&mut a, &mut b, Duration::from_millis(50));
    assert_eq!(left_ids(&b, carol), vec![ids[1]]);

    // Node 1 is lost: carol is told alice left, and relaying stops.
    for s in &mut b.shards {
        let now = a.now;
        s.handle_shard_message(now, ShardMessage::NodeLost { node: 1 });
    }
    b.pump();
    assert_eq!(left_ids(&b, carol), vec![ids[1], ids[0]]);
    a.relayed.clear();
    b.relayed.clear();
    b.run_for(Duration::from_millis(200));
    assert!(
        b.relayed.is_empty(),
        "no one left on other nodes to relay to"
    );
}

#[test]
fn a_node_alone_relays_nothing() {
    let mut a = Sim::new();
    let (_x, _y, _z) = a.three_talking("r");
    a.run_for(Duration::from_millis(200));
    assert!(a.roster.is_empty() && a.relayed.is_empty());
    let home = room_home(&chorus_protocol::signal::RoomId::new("r").unwrap(), 1);
    assert_eq!(home, 0);
}

#[test]
fn proximity_spans_nodes() {
    use chorus_engine::{Reply, Request};
    use chorus_protocol::control::{PositionSource, Proximity, RoomCreate, RoomKind};

    let mut a = node(1, 1);
    let mut b = node(2, 2);
    for sim in [&mut a, &mut b] {
        let replies = sim.request(Request::CreateRoom(RoomCreate {
            kind: Some(RoomKind::Raid),
            proximity: Some(Proximity {
                radius: 10.0,
                positions: PositionSource::Client,
            }),
            ..RoomCreate::new(chorus_protocol::signal::RoomId::new("world").unwrap())
        }));
        assert!(matches!(&replies[..], [Ok(Reply::Room(_))]), "{replies:?}");
    }
    let speaker = a.connect("speaker", "world");
    let near = b.connect_on("near", "world", 0);
    let far = b.connect_on("far", "world", 1);
    run(&mut a, &mut b, Duration::from_millis(50));
    let place = |sim: &mut Sim, who: usize, position: [f64; 3]| {
        let participant = sim.clients[who].id;
        sim.command(Command::SetPosition {
            participant,
            position,
        });
    };
    place(&mut a, speaker, [0.0; 3]);
    place(&mut b, near, [5.0, 0.0, 0.0]);
    place(&mut b, far, [100.0, 0.0, 0.0]);
    run(&mut a, &mut b, Duration::from_millis(200));
    a.clients[speaker].speaking = Some(20);
    run(&mut a, &mut b, Duration::from_secs(1));
    let csrc = a.clients[speaker].csrc;
    let (heard_near, _) = heard(&b, near, csrc);
    let (heard_far, _) = heard(&b, far, csrc);
    assert!(heard_near >= 40, "in reach on the other node: {heard_near}");
    assert_eq!(heard_far, 0, "out of reach on the other node");

    // The far one walks over (its position taken on node 2): it hears the speaker.
    place(&mut b, far, [3.0, 0.0, 0.0]);
    run(&mut a, &mut b, Duration::from_millis(200));
    let (before, _) = heard(&b, far, csrc);
    run(&mut a, &mut b, Duration::from_millis(600));
    let (after, _) = heard(&b, far, csrc);
    assert!(after > before + 20, "in reach now: {before} → {after}");
}

/// A camera on one node seen on the other: the slot switches layers on keyframes it
/// asks the publisher's node for, across the relay.
#[test]
fn video_crosses_nodes_and_keyframe_requests_come_back() {
    use chorus_engine::VideoQuality::{High, Low};
    use chorus_engine::VideoSource;

    let mut a = node(1, 2);
    let mut b = node(2, 2);
    let publisher = a.connect_video("cam", "v", Some(&["q", "h", "f"]));
    let watcher = b.connect_video("eye", "v", None);
    run(&mut a, &mut b, Duration::from_millis(50));
    a.publish(publisher, true);
    run(&mut a, &mut b, Duration::from_millis(50));
    let subscribe = |b: &mut Sim, pid, quality| {
        let participant = b.clients[watcher].id;
        b.command(Command::Subscribe {
            participant,
            slot: 0,
            publisher: Some(pid),
            source: VideoSource::Camera,
            quality,
        });
    };
    let pid = a.clients[publisher].id;
    subscribe(&mut b, pid, High);
    run(&mut a, &mut b, Duration::from_secs(2));
    let got = b.video_from(watcher, 0, publisher);
    assert!(got.len() > 50, "video crossed the nodes: {}", got.len());
    assert_eq!(got.last().and_then(|p| p.video).map(|v| v.layer), Some(2));

    let plis = a.clients[publisher].camera.plis[0];
    subscribe(&mut b, pid, Low);
    run(&mut a, &mut b, Duration::from_secs(1));
    assert!(
        a.clients[publisher].camera.plis[0] > plis,
        "the keyframe request crossed the nodes"
    );
    let got = b.video_from(watcher, 0, publisher);
    assert_eq!(got.last().and_then(|p| p.video).map(|v| v.layer), Some(0));
    let mut seqs: Vec<u64> = got.iter().map(|p| p.seq).collect();
    let n = seqs.len();
    seqs.dedup();
    assert_eq!(seqs.len(), n, "one continuous stream, no packet twice");
}
