//! What a voice participant holds on its shard, counted by the allocator: a voice
//! client in a room with video slots (a guild room, a party) costs what it costs in
//! a voice room. Its video slots' state comes only when a subscription or an offer
//! that negotiates video needs it (`Participant::video`).
//!
//! One test in its own binary: the allocator's counts are global.

use std::alloc::System;

use chorus_engine::{Command, Permissions};
use chorus_protocol::signal::{DisplayName, RoomId};
use chorus_tests::held::held;
use chorus_tests::sim::Sim;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes held per participant, whole simulation (shard and clients), after `n`
/// participants of one room joined and negotiated a voice offer (a microphone and
/// 8 audio slots). Counting the whole simulation includes what the shard queued and
/// the clients then freed, so it measures only what stays.
fn held_per_voice_participant(video_slots: u8, n: usize) -> isize {
    let mut sim = Sim::with_config(|c| c.video_slots = video_slots);
    // Lazily initialised state (crypto provider, certificate) is not the participant's.
    sim.connect("warm", "warm");
    let region = Region::new(GLOBAL);
    for i in 0..n {
        let idx = sim.join_detached(&format!("p{i}"), "room");
        sim.command(Command::Join {
            participant: sim.clients[idx].id,
            room: RoomId::new("room").expect("valid"),
            name: DisplayName::new("p").expect("valid"),
            identity: None,
            permissions: Permissions::ALL,
            p2p: false,
        });
        sim.offer(idx, 8);
    }
    held(&region) / n as isize
}

#[test]
fn a_voice_client_pays_nothing_for_video_slots_it_does_not_use() {
    let voice_room = held_per_voice_participant(0, 20);
    let video_room = held_per_voice_participant(4, 20);
    // Four video slots' state is ~1.5 KB. The voice client of the video room gets
    // the same voice `Rtc` (rebuilt at its offer) and no slot state: the same bytes
    // to within a few.
    assert!(
        (video_room - voice_room).abs() < 64,
        "a voice participant holds {video_room} B in a room with 4 video slots, \
         {voice_room} B in a voice room"
    );
}
