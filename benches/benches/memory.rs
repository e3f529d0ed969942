//! Heap held by the shard per participant, counted by the allocator: what `Join`
//! (str0m `Rtc` creation) and `Offer` (negotiating 1 microphone + 8 slots) leave
//! allocated, then what connecting (ICE, DTLS, SRTP) and a second of audio add,
//! for the whole simulation (clients included) for comparison.
//!
//! ```sh
//! cargo bench -p chorus-benches --bench memory          # 1 microphone + 8 slots
//! cargo bench -p chorus-benches --bench memory -- 2     # + 2 slots
//! ```

use std::alloc::System;
use std::time::Duration;

use chorus_engine::Command;
use chorus_protocol::signal::{DisplayName, RoomId};
use chorus_tests::held::held;
use chorus_tests::sim::Sim;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn main() {
    const N: usize = 50;
    // `cargo bench --bench memory -- SLOTS`: the slots offered (default 8).
    let slots: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(8);
    // Voice rooms (no video slots): a participant of a video room costs str0m's
    // video machinery (BWE, transport-cc) besides; see BENCHMARKS.md.
    let mut sim = Sim::with_config(|c| c.video_slots = 0);
    // Warm up lazily initialised state (crypto provider, certificate).
    sim.connect("warm", "warm");

    let mut join = 0isize;
    let mut offer = 0isize;
    let whole = Region::new(GLOBAL);
    for i in 0..N {
        let idx = sim.join_detached(&format!("p{i}"), "room");
        let id = sim.clients[idx].id;
        let region = Region::new(GLOBAL);
        sim.shards[0].handle_command(
            sim.now,
            Command::Join {
                participant: id,
                room: RoomId::new("room").expect("valid"),
                name: DisplayName::new("p").expect("valid"),
                identity: None,
                permissions: chorus_engine::Permissions::ALL,
                p2p: false,
            },
        );
        join += held(&region);
        sim.pump();
        let sdp = sim.make_offer(idx, slots);
        let region = Region::new(GLOBAL);
        sim.shards[0].handle_command(
            sim.now,
            Command::Offer {
                participant: id,
                sdp,
                sources: Vec::new(),
            },
        );
        offer += held(&region);
        sim.pump();
        sim.accept_answer(idx);
    }
    let before_connect = held(&whole);
    sim.run_for(Duration::from_secs(2));
    for c in &mut sim.clients {
        c.speaking = Some(30);
    }
    sim.run_for(Duration::from_secs(1));
    for c in &mut sim.clients {
        c.received.clear();
        c.inbox.clear();
    }
    let after = held(&whole);
    println!("memory per participant over {N} participants (bytes held, allocator-counted):");
    println!(
        "  shard, Join (Rtc created):          {:>8}",
        join / N as isize
    );
    println!(
        "  shard, Offer (1 mic + {slots} slots):     {:>8}",
        offer / N as isize
    );
    println!(
        "  whole sim (shard + client) joined:  {:>8}",
        before_connect / N as isize
    );
    println!(
        "  whole sim after connect + 1 s audio:{:>8}",
        after / N as isize
    );
}
