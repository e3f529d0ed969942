//! Heap allocations per forwarded packet: the `forward` bench's timed region, counted
//! by a wrapping global allocator (kept out of the `forward` binary so its timings
//! carry no counting overhead).
//!
//! It asserts the engine's promise: no allocation per forwarded copy. What a speaker's
//! packet costs on the way in (str0m's decrypted payload, one buffer per packet) does
//! not grow with the number of subscribers; the run fails if allocations per packet
//! at any N exceed those at the smallest N by more than [`PER_COPY_SLACK`] per copy.
//!
//! ```sh
//! cargo bench -p chorus-benches --bench forward_allocs            # N = 1, 10, 100, 500
//! cargo bench -p chorus-benches --bench forward_allocs -- 1 100   # chosen sizes
//! ```

use std::alloc::System;

use chorus_benches::{ForwardRig, CHUNK};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Chunks counted per size (after the rig's own warm-up).
const CHUNKS: usize = 10;
/// Allocations per copy tolerated above the smallest room's (rounding: a queue that
/// grows once during the count).
const PER_COPY_SLACK: f64 = 0.01;

fn main() {
    let mut sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if sizes.is_empty() {
        sizes = vec![1, 10, 100, 500];
    }
    println!(
        "{:>5} {:>14} {:>14} {:>16} {:>14}",
        "N", "allocs/packet", "allocs/copy", "bytes/copy", "reallocs/copy"
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
        let (mut allocs, mut reallocs, mut bytes, mut packets) = (0, 0, 0, 0);
        for _ in 0..CHUNKS {
            let batch = rig.produce(CHUNK);
            let region = Region::new(GLOBAL);
            rig.forward(&batch);
            let change = region.change();
            rig.keep_alive();
            allocs += change.allocations;
            reallocs += change.reallocations;
            bytes += change.bytes_allocated;
            packets += batch.len();
        }
        let copies = (packets * n) as f64;
        println!(
            "{n:>5} {:>14.2} {:>14.2} {:>16.1} {:>14.3}",
            allocs as f64 / packets as f64,
            allocs as f64 / copies,
            bytes as f64 / copies,
            reallocs as f64 / copies,
        );
        let per_packet = allocs as f64 / packets as f64;
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
    if failed {
        std::process::exit(1);
    }
    println!("ok: no allocation per forwarded copy");
}
