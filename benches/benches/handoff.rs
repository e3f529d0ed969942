//! The cross-shard hand-off.
//!
//! - `handoff/queue`: one speaker packet through the bounded ring a driver uses
//!   between two shard threads (`ArrayQueue::force_push` on one thread, `pop` on the
//!   other), per packet, payload shared (`Arc<[u8]>`), never copied.
//! - `handoff/shards/N` against `handoff/one_shard/N`: the in-process forward cost with
//!   the publisher on shard 0 and its N subscribers on shard 1, next to the same room on
//!   one shard; the difference is what crossing shards costs per publisher packet.
//!
//! ```sh
//! cargo bench -p chorus-benches --bench handoff -- --warm-up-time 1 --measurement-time 3
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_benches::ForwardRig;
use chorus_engine::SpeakerPacket;
use chorus_protocol::signal::{ParticipantId, RoomId};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use crossbeam_queue::ArrayQueue;

fn queue(c: &mut Criterion) {
    let ring: Arc<ArrayQueue<(RoomId, SpeakerPacket)>> = Arc::new(ArrayQueue::new(8192));
    let room = RoomId::new("bench").expect("valid room");
    let packet = SpeakerPacket {
        speaker: ParticipantId(1),
        csrc: 1,
        seq: 1,
        timestamp: 960,
        marker: false,
        audio_level: Some(-30),
        voice_activity: Some(true),
        priority: false,
        audience: None,
        payload: Arc::from(vec![0u8; 80]),
        received: std::time::Instant::now(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (ring, stop) = (ring.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match ring.pop() {
                    Some(p) => {
                        n += 1;
                        std::hint::black_box(p);
                    }
                    None => std::hint::spin_loop(),
                }
            }
            n
        })
    };
    let mut group = c.benchmark_group("handoff");
    group.throughput(Throughput::Elements(1));
    group.bench_function("queue", |b| {
        b.iter(|| {
            // Full ring: the oldest is dropped, as the driver does under overload.
            std::hint::black_box(ring.force_push((room.clone(), packet.clone())));
        })
    });
    group.finish();
    stop.store(true, Ordering::Relaxed);
    let _ = consumer.join();
}

fn shards(c: &mut Criterion, summary: &mut Vec<(usize, Duration, Duration)>) {
    let mut group = c.benchmark_group("handoff");
    group.sampling_mode(SamplingMode::Flat);
    for n in [10, 100] {
        group.throughput(Throughput::Elements(n as u64));
        let mut one = ForwardRig::new(n);
        group.bench_function(BenchmarkId::new("one_shard", n), |b| {
            b.iter_custom(|iters| one.measure(iters));
        });
        let mut two = ForwardRig::across_shards(n);
        group.bench_function(BenchmarkId::new("shards", n), |b| {
            b.iter_custom(|iters| two.measure(iters));
        });
        summary.push((n, one.per_subscriber_packet(), two.per_subscriber_packet()));
    }
    group.finish();
}

fn main() {
    let start = Instant::now();
    let mut c = Criterion::default().configure_from_args();
    queue(&mut c);
    let mut summary = Vec::new();
    shards(&mut c, &mut summary);
    c.final_summary();
    if !summary.is_empty() {
        eprintln!("\nhandoff: µs per subscriber packet (mean over every timed packet)");
        eprintln!(
            "{:>5} {:>10} {:>10} {:>8}",
            "N", "one shard", "2 shards", "ratio"
        );
        for (n, one, two) in summary {
            eprintln!(
                "{n:>5} {:>10.3} {:>10.3} {:>8.2}",
                one.as_secs_f64() * 1e6,
                two.as_secs_f64() * 1e6,
                two.as_secs_f64() / one.as_secs_f64()
            );
        }
        eprintln!("total {:.0}s", start.elapsed().as_secs_f64());
    }
}
