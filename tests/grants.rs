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
        },
    );
    let speaker = sim.connect_with_permissions(
        "speaker",
        "r",
        Permissions {
            publish: true,
            subscribe: false,
            priority: false,
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
