//! The mic-spam guard (issue 10, item 4, its default `event` action): a speaker pinned
//! near full scale is reported to the control plane as `spam_detected` within a few
//! seconds, once; normal speech is not.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chorus_protocol::control::NodeEvent;
use chorus_tests::sim::Sim;

fn spam_events(sim: &Sim) -> Vec<(String, String, f32)> {
    sim.events
        .iter()
        .filter_map(|e| match e {
            NodeEvent::SpamDetected {
                participant_id,
                reason,
                level,
                ..
            } => Some((participant_id.to_string(), reason.clone(), *level)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_speaker_pinned_at_full_scale_is_reported_once_and_normal_speech_never() {
    // Two shards: each speaker is watched where its media is.
    let mut sim = Sim::with_shards(2, |_| {});
    let tone = sim.connect("soundboard", "raid");
    let talker = sim.connect("talker", "raid");
    let listener = sim.connect("listener", "raid");
    sim.clients[talker].speaking = Some(20);
    sim.clients[listener].speaking = Some(127);
    sim.run_for(Duration::from_secs(5));
    assert!(spam_events(&sim).is_empty(), "{:?}", spam_events(&sim));

    sim.clients[tone].speaking = Some(1);
    sim.run_for(Duration::from_secs(5));
    let flagged = spam_events(&sim);
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    let (who, reason, level) = &flagged[0];
    assert_eq!(*who, sim.clients[tone].id.to_string());
    assert_eq!(reason, "loud");
    assert!(*level > 0.8, "level {level}");

    // Still pinned: no second event in the same episode; the talker never.
    sim.run_for(Duration::from_secs(50));
    assert_eq!(spam_events(&sim).len(), 1, "{:?}", spam_events(&sim));
}

/// With `spam_guard: {"action":"mute"}`, the flagged speaker is also server-muted:
/// everyone gets `participant_updated` with `server_muted: true` and stops hearing it.
#[test]
fn the_mute_action_server_mutes_the_flagged_speaker() {
    use chorus_engine::Request;
    use chorus_protocol::control::{RoomCreate, RoomKind, SpamAction, SpamGuard};
    use chorus_protocol::signal::{RoomId, ServerMessage};

    let mut sim = Sim::with_shards(2, |_| {});
    let replies = sim.request(Request::CreateRoom(RoomCreate {
        kind: Some(RoomKind::Raid),
        spam_guard: Some(SpamGuard {
            action: SpamAction::Mute,
            ..SpamGuard::default()
        }),
        ..RoomCreate::new(RoomId::new("raid").unwrap())
    }));
    assert!(replies[0].is_ok(), "{replies:?}");
    let tone = sim.connect("soundboard", "raid");
    let listener = sim.connect("listener", "raid");
    sim.clients[listener].speaking = Some(127);
    sim.clients[tone].speaking = Some(1);
    sim.run_for(Duration::from_secs(5));
    assert_eq!(spam_events(&sim).len(), 1, "{:?}", spam_events(&sim));
    let tone_id = sim.clients[tone].id;
    assert!(
        sim.clients[listener].inbox.iter().any(|m| matches!(m,
            ServerMessage::ParticipantUpdated { participant } if participant.participant_id == tone_id && participant.server_muted)),
        "the room is told"
    );
    let before = sim.clients[listener].from(tone).count();
    sim.run_for(Duration::from_secs(2));
    assert_eq!(
        sim.clients[listener].from(tone).count(),
        before,
        "nobody hears it any more"
    );
}

/// The room's thresholds reach the shard watching each speaker, also when they change
/// while it talks: with `continuous_s: 5`, a speaker that never pauses is flagged
/// after 5 s, not 120.
#[test]
fn the_room_sets_the_thresholds_on_every_shard() {
    use chorus_engine::Request;
    use chorus_protocol::control::{RoomCreate, RoomUpdate, SpamGuard};
    use chorus_protocol::signal::RoomId;

    let mut sim = Sim::with_shards(2, |_| {});
    let name = RoomId::new("hall").unwrap();
    assert!(sim.request(Request::CreateRoom(RoomCreate::new(name.clone())))[0].is_ok());
    let players: Vec<usize> = (0..4)
        .map(|i| sim.connect(&format!("p{i}"), "hall"))
        .collect();
    for &p in &players {
        sim.clients[p].speaking = Some(30);
    }
    sim.run_for(Duration::from_secs(10));
    assert!(spam_events(&sim).is_empty(), "{:?}", spam_events(&sim));
    let replies = sim.request(Request::UpdateRoom(RoomUpdate {
        spam_guard: Some(SpamGuard {
            continuous_s: 5,
            ..SpamGuard::default()
        }),
        ..RoomUpdate::new(name)
    }));
    assert!(replies[0].is_ok(), "{replies:?}");
    sim.run_for(Duration::from_secs(4));
    assert!(
        spam_events(&sim).is_empty(),
        "the window starts at the change"
    );
    sim.run_for(Duration::from_secs(2));
    let flagged = spam_events(&sim);
    assert_eq!(
        flagged.len(),
        4,
        "every speaker, on both shards: {flagged:?}"
    );
    assert!(flagged.iter().all(|(_, reason, _)| reason == "continuous"));
}
