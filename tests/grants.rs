//! A token's grants are enforced where media is forwarded: a participant without
//! `publish` is never heard, one without `subscribe` never receives.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chorus_engine::Permissions;
use chorus_tests::sim::Sim;

#[test]
fn subscribe_only_is_never_heard_and_publish_only_hears_nothing() {
    let mut sim = Sim::with_shards(2, |_| {});
    let full = sim.connect("full", "r");
    let listener = sim.connect_with_permissions(
        "listener",
        "r",
        Permissions {
            publish: false,
            subscribe: true,
            priority: false,
            sources: chorus_engine::Sources::ALL,
        },
    );
    let speaker = sim.connect_with_permissions(
        "speaker",
        "r",
        Permissions {
            publish: true,
            subscribe: false,
            priority: false,
            sources: chorus_engine::Sources::ALL,
        },
    );
    for i in [full, listener, speaker] {
        sim.clients[i].speaking = Some(20);
    }
    sim.run_for(Duration::from_secs(2));
    // The subscribe-only participant sends, and nobody gets a packet of it.
    assert!(sim.clients[listener].sent > 90);
    assert_eq!(sim.clients[full].from(listener).count(), 0);
    assert_eq!(sim.clients[speaker].from(listener).count(), 0);
    let dropped: u64 = sim
        .shards
        .iter()
        .map(|s| s.stats().dropped_not_permitted)
        .sum();
    assert!(dropped >= 90, "counted: {dropped}");
    // The publish-only participant is heard, and receives nothing.
    assert!(sim.clients[full].from(speaker).count() > 90);
    assert!(sim.clients[listener].from(speaker).count() > 90);
    assert!(sim.clients[speaker].received.is_empty());
    // The full participant is heard by the listener, not by the publish-only one.
    assert!(sim.clients[listener].from(full).count() > 90);
}

#[test]
fn sources_without_the_microphone_are_not_heard_until_granted() {
    use chorus_engine::{Reply, Request, Sources};
    use chorus_protocol::control::ParticipantSetPermissions;
    use chorus_protocol::signal::{RoomId, ServerMessage, Source};

    let mut sim = Sim::with_shards(2, |_| {});
    let listener = sim.connect("listener", "src");
    // Publish, but from the camera and screen only (a video-only publisher).
    let camera = sim.connect_with_permissions(
        "camera",
        "src",
        Permissions {
            sources: Sources {
                microphone: false,
                ..Sources::ALL
            },
            ..Permissions::ALL
        },
    );
    sim.clients[camera].speaking = Some(20);
    assert_eq!(sim.heard_over(listener, camera, Duration::from_secs(1)), 0);
    // The backend grants the microphone: heard from then on; everyone sees it.
    let replies = sim.request(Request::SetPermissions(ParticipantSetPermissions {
        room: RoomId::new("src").unwrap(),
        participant_id: sim.clients[camera].id,
        publish: None,
        subscribe: None,
        priority: None,
        sources: Some(vec![Source::Microphone, Source::Camera]),
    }));
    let [Ok(Reply::Participant(p))] = &replies[..] else {
        panic!("{replies:?}");
    };
    assert_eq!(p.sources, vec![Source::Microphone, Source::Camera]);
    assert!(p.publish, "publish stays as it was");
    assert!(sim.clients[camera]
        .inbox
        .contains(&ServerMessage::Permissions {
            publish: true,
            subscribe: true,
            priority: false,
            sources: vec![Source::Microphone, Source::Camera],
        }));
    assert!(sim.heard_over(listener, camera, Duration::from_secs(1)) >= 45);
    // Absent `sources` leaves them as they are.
    let replies = sim.request(Request::SetPermissions(ParticipantSetPermissions {
        room: RoomId::new("src").unwrap(),
        participant_id: sim.clients[camera].id,
        publish: None,
        subscribe: None,
        priority: Some(true),
        sources: None,
    }));
    let [Ok(Reply::Participant(p))] = &replies[..] else {
        panic!("{replies:?}");
    };
    assert_eq!(p.sources, vec![Source::Microphone, Source::Camera]);
}
