//! What one ICE consent check of a connected participant costs the shard: the
//! client's STUN binding request through `Shard::handle_datagram`, its answer drained
//! with `poll_transmit` (the buffer handed back with `recycle`, as the driver does).
//! At idle this is most of a node's own work (5,000 idle participants send ~2,700
//! checks a second; BENCHMARKS.md, issue 9).
//!
//! The request is a real one: a str0m client's, captured after it connected over the
//! simulated network of `chorus_tests::sim`, then given to the shard again and again
//! (an ICE agent answers every request that passes its integrity check; nothing
//! de-duplicates transactions).
//!
//! ```sh
//! cargo bench -p chorus-benches --bench consent
//! ```
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use chorus_protocol::demux::{classify, DatagramKind};
use chorus_tests::sim::Sim;
use criterion::{Criterion, Throughput};
use str0m::{Input, Output};

/// Simulated time between two checks: far below str0m's and the shard's timeouts
/// over a whole run, so nothing else falls due.
const STEP: Duration = Duration::from_micros(10);

fn main() {
    let mut sim = Sim::with_config(|c| c.video_slots = 0);
    let idx = sim.connect("checker", "bench");
    sim.run_for(Duration::from_millis(500));
    let request = capture_request(&mut sim, idx);
    let from = sim.clients[idx].addr;

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("consent");
    group.throughput(Throughput::Elements(1));
    let mut now = sim.now;
    let mut answered = 0u64;
    let mut checks = 0u64;
    group.bench_function("check", |b| {
        b.iter_custom(|iters| {
            let shard = &mut sim.shards[0];
            let start = Instant::now();
            for _ in 0..iters {
                now += STEP;
                shard.handle_datagram(now, from, &request);
                while let Some(t) = shard.poll_transmit() {
                    answered += u64::from(classify(&t.contents) == DatagramKind::Stun);
                    let t = black_box(t);
                    shard.recycle(t.contents);
                }
            }
            checks += iters;
            start.elapsed()
        });
    });
    group.finish();
    c.final_summary();
    assert_eq!(answered, checks, "every check answered");
}

/// Runs the client's timers until its str0m sends a STUN binding request (a consent
/// check on the nominated pair) and returns it, undelivered.
fn capture_request(sim: &mut Sim, idx: usize) -> Vec<u8> {
    let deadline = sim.now + Duration::from_secs(30);
    let mut now = sim.now;
    while now < deadline {
        let c = &mut sim.clients[idx];
        c.rtc
            .handle_input(Input::Timeout(now))
            .expect("client timeout");
        loop {
            match c.rtc.poll_output().expect("client output") {
                Output::Timeout(t) => {
                    now = t.max(now + Duration::from_millis(1));
                    break;
                }
                Output::Transmit(t) if classify(&t.contents) == DatagramKind::Stun => {
                    let contents: Vec<u8> = t.contents.into();
                    return contents;
                }
                Output::Transmit(_) | Output::Event(_) => {}
            }
        }
    }
    panic!("the client sent no consent check in 30 s");
}
