//! A room spanning shards: media lives where the kernel delivers it, each speaker's
//! packet crosses to every other shard once, and every subscriber gets every packet
//! exactly once — with mute, deafen, leave and timeouts working across shards.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use chorus_engine::{CloseReason, Command, ShardMessage};
use chorus_hostile::packets::stun_connectivity_check;
use chorus_protocol::signal::ServerMessage;
use chorus_protocol::stun::{StunClass, StunMessage};
use chorus_tests::sim::Sim;

/// An ICE connectivity check from `client`'s side to the node, as a browser sends on
/// each of its candidate pairs, signed with the node's ICE password from the answer,
/// arriving from `source` at `shard`; everything it sets off is delivered.
fn check_from(sim: &mut Sim, client: usize, source: SocketAddr, shard: usize, nominates: bool) {
    use aws_lc_rs::hmac;
    let sdp = sim.last_answer(client).unwrap().0.to_owned();
    let value = |key: &str| {
        sdp.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap()
            .trim()
            .to_owned()
    };
    let (node_ufrag, node_pwd) = (value("a=ice-ufrag:"), value("a=ice-pwd:"));
    let ours = sim.clients[client]
        .rtc
        .direct_api()
        .local_ice_credentials()
        .ufrag;
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, node_pwd.as_bytes());
    let mut check = Vec::new();
    stun_connectivity_check(
        if nominates {
            *b"nominate0000"
        } else {
            *b"checks-only!"
        },
        &format!("{node_ufrag}:{ours}"),
        nominates,
        |m| {
            let mut mac = [0u8; 20];
            mac.copy_from_slice(hmac::sign(&key, m).as_ref());
            mac
        },
        &mut check,
    );
    let now = sim.now;
    sim.shards[shard].handle_datagram(now, source, &check);
    sim.pump();
}

/// Asserts that `rx` got every frame `tx` sent from its first one on, once, in order.
fn assert_exactly_once(sim: &Sim, rx: usize, tx: usize) {
    let frames: Vec<u32> = sim.clients[rx].from(tx).map(|r| r.frame).collect();
    assert!(!frames.is_empty(), "{} heard nothing of {}", rx, tx);
    let first = frames[0];
    assert!(first <= 3, "{rx} heard {tx} late, from frame {first}");
    let want: Vec<u32> = (first..sim.clients[tx].sent).collect();
    assert_eq!(frames, want, "{rx} from {tx}: every frame once, in order");
}

fn six_speakers_on_three_shards() -> Sim {
    let mut sim = Sim::with_shards(3, |_| {});
    for i in 0..6 {
        sim.connect(&format!("p{i}"), "raid");
        // The media moved to the shard the client's traffic arrives at.
        assert_eq!(sim.holder(i), Some(sim.clients[i].shard), "p{i}'s media");
    }
    for i in 0..6 {
        sim.clients[i].speaking = Some(20 + i as u8);
    }
    sim
}

#[test]
fn every_packet_reaches_every_subscriber_once_across_shards() {
    let mut sim = six_speakers_on_three_shards();
    sim.run_for(Duration::from_secs(2));
    for i in 0..6 {
        sim.clients[i].speaking = None;
    }
    sim.run_for(Duration::from_millis(100));
    for rx in 0..6 {
        for tx in (0..6).filter(|t| *t != rx) {
            assert_exactly_once(&sim, rx, tx);
            let r = sim.clients[rx].from(tx).next().unwrap();
            assert_eq!(r.csrc, vec![sim.clients[tx].csrc]);
        }
        assert_eq!(sim.clients[rx].from(rx).count(), 0);
    }
    for (k, shard) in sim.shards.iter().enumerate() {
        let s = shard.stats();
        assert!(s.rtp_in > 0, "shard {k} has speakers");
        // Once per other shard, not once per remote subscriber.
        assert_eq!(s.handoffs_out, s.rtp_in * 2, "shard {k}");
        // Media is created on the home shard at join; the others adopt their two.
        let adopted = if k == home(&sim) { 0 } else { 2 };
        assert_eq!(s.migrations_in, adopted, "shard {k}");
        assert_eq!(s.dropped_no_slot, 0);
    }
}

/// The shard keeping the room's roster.
fn home(sim: &Sim) -> usize {
    sim.shards.iter().position(|s| s.room_count() == 1).unwrap()
}

#[test]
fn mute_deafen_and_leave_work_across_shards() {
    let mut sim = six_speakers_on_three_shards();
    sim.run_for(Duration::from_secs(1));
    // Mute a speaker whose media is not on the home shard.
    let muted = (0..6)
        .find(|i| sim.clients[*i].shard != home(&sim))
        .unwrap();
    let id = sim.clients[muted].id;
    sim.command(Command::SetMuted {
        participant: id,
        muted: true,
    });
    let heard: Vec<usize> = (0..6)
        .map(|rx| sim.clients[rx].from(muted).count())
        .collect();
    // Deafen another one, on yet another shard if there is one.
    let deaf = (0..6)
        .find(|i| *i != muted && sim.clients[*i].shard != sim.clients[muted].shard)
        .unwrap();
    let deaf_id = sim.clients[deaf].id;
    sim.command(Command::SetDeafened {
        participant: deaf_id,
        deafened: true,
    });
    let deaf_total = sim.clients[deaf].received.len();
    sim.run_for(Duration::from_secs(1));
    for rx in (0..6).filter(|r| *r != muted) {
        assert_eq!(
            sim.clients[rx].from(muted).count(),
            heard[rx],
            "{rx} hears muted"
        );
        assert_eq!(sim.clients[rx].messages("participant_updated").len(), 2);
    }
    assert_eq!(
        sim.clients[deaf].received.len(),
        deaf_total,
        "deafened receives nothing"
    );
    let other = (0..6).find(|i| *i != muted && *i != deaf).unwrap();
    assert!(
        sim.clients[other].from(deaf).count() > 90,
        "deafened is still heard"
    );

    // Leave from a shard that is not home: everyone is told, slots are freed.
    let leaver = (0..6)
        .find(|i| *i != muted && *i != deaf && sim.clients[*i].shard != home(&sim))
        .unwrap();
    let leaver_id = sim.clients[leaver].id;
    sim.clients[leaver].speaking = None;
    sim.command(Command::Leave {
        participant: leaver_id,
    });
    assert_eq!(sim.closed, vec![(leaver_id, CloseReason::Left)]);
    assert_eq!(
        sim.holder(leaver),
        None,
        "its media is gone from every shard"
    );
    for rx in (0..6).filter(|r| *r != leaver) {
        let left: Vec<_> = sim.clients[rx]
            .messages("participant_left")
            .into_iter()
            .filter(|m| matches!(m, ServerMessage::ParticipantLeft { participant_id } if *participant_id == leaver_id))
            .collect();
        assert_eq!(left.len(), 1, "{rx} told once");
    }
    let h = home(&sim);
    assert_eq!(
        sim.shards[h]
            .room_members(&chorus_protocol::signal::RoomId::new("raid").unwrap())
            .unwrap()
            .len(),
        5
    );
}

#[test]
fn a_client_vanishing_on_another_shard_is_removed_by_its_home() {
    let mut sim = Sim::with_shards(2, |c| c.disconnect_timeout = Duration::from_secs(5));
    let ids: Vec<usize> = (0..4)
        .map(|i| sim.connect(&format!("p{i}"), "party"))
        .collect();
    for i in &ids {
        sim.clients[*i].speaking = Some(20);
    }
    sim.run_for(Duration::from_secs(1));
    let gone = ids
        .iter()
        .copied()
        .find(|i| sim.clients[*i].shard != home(&sim))
        .unwrap();
    let gone_id = sim.clients[gone].id;
    sim.clients[gone].online = false;
    let before: Vec<usize> = ids
        .iter()
        .map(|rx| sim.clients[*rx].received.len())
        .collect();
    sim.run_for(Duration::from_secs(6));
    assert_eq!(sim.closed, vec![(gone_id, CloseReason::Timeout)]);
    for rx in ids.iter().copied().filter(|r| *r != gone) {
        assert!(sim.clients[rx]
            .messages("participant_left")
            .iter()
            .any(|m| matches!(m, ServerMessage::ParticipantLeft { participant_id } if *participant_id == gone_id)));
        // Bystanders kept hearing the two others throughout (6 s × 50 × 2, minus jitter).
        assert!(sim.clients[rx].received.len() - before[rx] >= 590, "{rx}");
    }
}

/// Two shards, a and b talking in one room for a second.
fn two_speakers_on_two_shards() -> (Sim, usize, usize) {
    let mut sim = Sim::with_shards(2, |_| {});
    let a = sim.connect("a", "r");
    let b = sim.connect("b", "r");
    sim.clients[a].speaking = Some(20);
    sim.clients[b].speaking = Some(20);
    sim.run_for(Duration::from_secs(1));
    (sim, a, b)
}

#[test]
fn media_follows_a_client_whose_traffic_moves_to_another_shard() {
    let (mut sim, a, b) = two_speakers_on_two_shards();
    // b's network changes and the kernel now hashes it to the other shard.
    let from = sim.clients[b].shard;
    sim.clients[b].shard = 1 - from;
    sim.run_for(Duration::from_secs(12));
    assert_eq!(
        sim.holder(b),
        Some(1 - from),
        "b's media followed its traffic"
    );
    let heard_before = sim.clients[a].from(b).count();
    let got_before = sim.clients[b].from(a).count();
    sim.run_for(Duration::from_secs(1));
    assert!(
        sim.clients[a].from(b).count() >= heard_before + 49,
        "a hears b again"
    );
    assert!(
        sim.clients[b].from(a).count() >= got_before + 49,
        "b hears a again"
    );
}

#[test]
fn a_media_command_follows_a_participant_that_moved_meanwhile() {
    let mut sim = Sim::with_shards(2, |_| {});
    let a = sim.connect("a", "r");
    let b = sim.connect("b", "r");
    sim.clients[b].speaking = Some(20);
    sim.run_for(Duration::from_secs(1));
    let from = sim.holder(b).unwrap();
    sim.clients[b].shard = 1 - from;
    sim.run_for(Duration::from_secs(3));
    assert_eq!(sim.holder(b), Some(1 - from), "b's media moved");
    // A command sent to where b's media used to be (it crossed the move) still
    // reaches it: the old holder sends it on through b's home shard.
    let participant = sim.clients[b].id;
    let now = sim.now;
    sim.shards[from].handle_shard_message(
        now,
        ShardMessage::Redirect {
            command: Command::SetServerMuted {
                participant,
                muted: true,
            },
            hops: 0,
        },
    );
    sim.pump();
    sim.run_for(Duration::from_millis(100));
    let heard = sim.clients[a].from(b).count();
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        sim.clients[a].from(b).count(),
        heard,
        "b is muted where it is now"
    );
}

/// A browser keeps checking its other candidate pairs (every ~2.5 s) while its media
/// flows on the pair it nominated; when such a pair hashes to another shard, its
/// checks must not move the media away from where its packets arrive (they did: the
/// media went back and forth each time, and what arrived meanwhile was dropped). A
/// check that nominates the other pair still moves it.
#[test]
fn a_check_on_a_backup_pair_does_not_move_a_speakers_media() {
    let (mut sim, a, b) = two_speakers_on_two_shards();
    let holder = sim.holder(b).unwrap();
    let other = 1 - holder;
    let backup: SocketAddr = "10.99.0.7:5555".parse().unwrap();
    sim.stray = Some(Vec::new());
    for _ in 0..4 {
        check_from(&mut sim, b, backup, other, false);
        assert_eq!(
            sim.holder(b),
            Some(holder),
            "b's media stays where it arrives"
        );
        assert!(
            sim.heard_over(a, b, Duration::from_millis(500)) >= 23,
            "a hears all of b"
        );
    }
    // Each check was answered all the same (from the holding shard), so the pair
    // stays usable.
    let sent = sim.stray.take().unwrap();
    let answered = sent
        .iter()
        .filter(|(to, d)| {
            *to == backup
                && StunMessage::parse(d).is_ok_and(|m| m.class() == StunClass::SuccessResponse)
        })
        .count();
    assert_eq!(answered, 4, "every check on the backup pair answered");
    // The same check nominating the pair: the media follows it.
    check_from(&mut sim, b, backup, other, true);
    assert_eq!(
        sim.holder(b),
        Some(other),
        "a nominated pair moves the media"
    );
}

/// The same for a participant that sends no media (a listener): the consent checks on
/// its nominated pair keep it where they arrive.
#[test]
fn a_check_on_a_backup_pair_does_not_move_a_listener() {
    let (mut sim, a, b) = two_speakers_on_two_shards();
    sim.clients[b].speaking = None;
    sim.run_for(Duration::from_secs(10));
    let holder = sim.holder(b).unwrap();
    let backup: SocketAddr = "10.99.0.8:5555".parse().unwrap();
    for _ in 0..5 {
        check_from(&mut sim, b, backup, 1 - holder, false);
        assert_eq!(
            sim.holder(b),
            Some(holder),
            "b's media stays where its checks arrive"
        );
        assert!(
            sim.heard_over(b, a, Duration::from_secs(2)) >= 95,
            "b hears a"
        );
    }
}
