//! Heap allocations per forwarded packet: the `forward` bench's timed region, counted
//! by a wrapping global allocator (kept out of the `forward` binary so its timings
//! carry no counting overhead).
//!
//! It asserts the engine's promise: no allocation per forwarded copy. Counted is each
//! packet's own work (the datagram, str0m's decryption, every copy written, sealed and
//! queued; `ForwardRig::forward_probed`); the timers that fall due in between (str0m's
//! per-participant timers, the shard's tick with its sender reports) are work per
//! participant and second and are shown apart. What a speaker's packet costs on the
//! way in (str0m's decrypted payload) does not grow with the number of subscribers:
//! the run fails if allocations per packet at any N exceed those at the smallest N by
//! more than [`PER_COPY_SLACK`] per copy.
//!
//! The same for video (`VideoRig`: one simulcast publisher, N subscribers with one
//! video slot each): allocations per packet may not grow with the video copies
//! either.
//!
//! ```sh
//! cargo bench -p chorus-benches --bench forward_allocs            # N = 1, 10, 100, 500
//! cargo bench -p chorus-benches --bench forward_allocs -- 1 100   # chosen sizes
//! ```

use std::alloc::System;

use chorus_benches::{ForwardRig, Probe, VideoRig, CHUNK};
use stats_alloc::{Region, Stats, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Chunks counted per size (after one untimed warm-up chunk).
const CHUNKS: usize = 10;
/// Allocations per copy tolerated above the smallest room's (rounding: a queue that
/// grows once during the count).
const PER_COPY_SLACK: f64 = 0.005;

/// Sums the allocator's counts over the packets' own work only.
#[derive(Default)]
struct Counted {
    open: Option<Stats>,
    allocations: usize,
    reallocations: usize,
    bytes: usize,
}

impl Probe for Counted {
    fn enter(&mut self) {
        self.open = Some(GLOBAL.stats());
    }

    fn leave(&mut self) {
        if let Some(start) = self.open.take() {
            let now = GLOBAL.stats();
            self.allocations += now.allocations - start.allocations;
            self.reallocations += now.reallocations - start.reallocations;
            self.bytes += now.bytes_allocated - start.bytes_allocated;
        }
    }
}

fn main() {
    let mut sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if sizes.is_empty() {
        sizes = vec![1, 10, 100, 500];
    }
    println!(
        "{:>5} {:>14} {:>14} {:>16} {:>14} {:>18}",
        "N", "allocs/packet", "allocs/copy", "bytes/copy", "reallocs/copy", "timer allocs/pkt"
    );
    let mut baseline: Option<(usize, f64)> = None;
    let mut failed = false;
    sizes.sort_unstable();
    for n in sizes {
        let mut rig = ForwardRig::new(n);
        // One untimed chunk fills the buffer pool and the queues.
        let warm = rig.produce(CHUNK);
        rig.forward(&warm);
        rig.keep_alive();
        let mut counted = Counted::default();
        let mut everything = 0;
        let mut packets = 0;
        for _ in 0..CHUNKS {
            let batch = rig.produce(CHUNK);
            let region = Region::new(GLOBAL);
            rig.forward_probed(&batch, &mut counted);
            everything += region.change().allocations;
            rig.keep_alive();
            packets += batch.len();
        }
        let copies = (packets * n) as f64;
        let per_packet = counted.allocations as f64 / packets as f64;
        let timers = everything.saturating_sub(counted.allocations) as f64 / packets as f64;
        println!(
            "{n:>5} {:>14.2} {:>14.3} {:>16.1} {:>14.3} {:>18.2}",
            per_packet,
            counted.allocations as f64 / copies,
            counted.bytes as f64 / copies,
            counted.reallocations as f64 / copies,
            timers,
        );
        match baseline {
            None => baseline = Some((n, per_packet)),
            Some((n0, base)) => {
                let extra_per_copy = (per_packet - base) / n as f64;
                if extra_per_copy > PER_COPY_SLACK {
                    eprintln!(
                        "FAIL: N = {n}: {per_packet:.2} allocations per packet against {base:.2} at N = {n0}: {extra_per_copy:.3} per forwarded copy"
                    );
                    failed = true;
                }
            }
        }
    }
    failed |= video();
    if failed {
        std::process::exit(1);
    }
    println!("ok: no allocation per forwarded copy");
}

/// Video subscribers for the video count.
const VIDEO_SIZES: [usize; 3] = [2, 10, 50];

/// The count for video copies; returns whether it failed.
fn video() -> bool {
    println!(
        "\nvideo: {:>5} {:>14} {:>14} {:>16}",
        "N", "allocs/packet", "allocs/copy", "bytes/copy"
    );
    let mut baseline: Option<(usize, f64)> = None;
    let mut failed = false;
    for n in VIDEO_SIZES {
        let mut rig = VideoRig::new(n);
        rig.run_chunk(CHUNK);
        let mut counted = Counted::default();
        let (copies_before, packets_before) = (rig.copies, rig.packets);
        for _ in 0..CHUNKS {
            rig.run_chunk_probed(CHUNK, &mut counted);
        }
        let copies = (rig.copies - copies_before) as f64;
        let packets = (rig.packets - packets_before) as f64;
        let per_packet = counted.allocations as f64 / packets;
        println!(
            "       {n:>5} {:>14.2} {:>14.3} {:>16.1}",
            per_packet,
            counted.allocations as f64 / copies,
            counted.bytes as f64 / copies,
        );
        match baseline {
            None => baseline = Some((n, per_packet)),
            Some((n0, base)) => {
                // Half the subscribers get each of two layers' packets: copies per
                // packet are about n / 3.
                let extra_per_copy = (per_packet - base) / (copies / packets);
                if extra_per_copy > PER_COPY_SLACK {
                    eprintln!(
                        "FAIL: video, N = {n}: {per_packet:.2} allocations per packet against {base:.2} at N = {n0}: {extra_per_copy:.3} per forwarded copy"
                    );
                    failed = true;
                }
            }
        }
    }
    failed
}
