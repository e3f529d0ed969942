//! The in-process forward cost: one publisher, N subscribers, SRTP both ways.
//!
//! Per iteration one publisher SRTP packet goes through `Shard::handle_datagram`
//! (demux, str0m decrypt, slot routing and rewriting, one str0m write and flush per
//! subscriber: SRTP encrypt of every copy) and the transmits are drained; the
//! throughput is in subscriber packets. See `chorus_benches::ForwardRig`.
//!
//! ```sh
//! cargo bench -p chorus-benches --bench forward -- --warm-up-time 1 --measurement-time 3
//! ```

use std::time::{Duration, Instant};

use chorus_benches::ForwardRig;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};

const SIZES: [usize; 4] = [1, 10, 100, 500];

fn forward(c: &mut Criterion, summary: &mut Vec<(usize, Duration, Duration)>) {
    let mut group = c.benchmark_group("forward");
    group.sampling_mode(SamplingMode::Flat);
    for n in SIZES {
        if n >= 500 {
            // ~1 ms per iteration: fewer samples keep the run short.
            group.sample_size(10);
        }
        group.throughput(Throughput::Elements(n as u64));
        let mut rig: Option<ForwardRig> = None;
        let mut setup = Duration::ZERO;
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            let rig = rig.get_or_insert_with(|| {
                let start = Instant::now();
                let rig = ForwardRig::new(n);
                setup = start.elapsed();
                rig
            });
            b.iter_custom(|iters| rig.measure(iters));
        });
        if let Some(rig) = rig {
            summary.push((n, rig.per_subscriber_packet(), setup));
        }
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut summary = Vec::new();
    forward(&mut c, &mut summary);
    c.final_summary();
    if !summary.is_empty() {
        eprintln!("\nforward: mean over every timed packet (warm-up included)");
        eprintln!(
            "{:>5} {:>22} {:>12}",
            "N", "µs / subscriber packet", "set-up"
        );
        for (n, per, setup) in summary {
            eprintln!(
                "{n:>5} {:>22.3} {:>11.1}s",
                per.as_secs_f64() * 1e6,
                setup.as_secs_f64()
            );
        }
    }
}
