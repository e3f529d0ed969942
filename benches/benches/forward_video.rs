//! The in-process cost of forwarding video: one publisher (VP8 simulcast, three
//! layers, one packet per layer and frame) and N subscribers with one video slot each
//! (half at high, half at medium). Per iteration one frame's packets go through
//! `Shard::handle_datagram` (demux, str0m decrypt, layer choice, rewriting, and
//! Chorus's write of every copy: the VP8 patch, transport-cc number, SRTP seal into a
//! pooled buffer, the slot's NACK history). The figure is time per forwarded copy. See
//! `chorus_benches::VideoRig`.
//!
//! ```sh
//! cargo bench -p chorus-benches --bench forward_video -- --warm-up-time 1 --measurement-time 3
//! ```

use std::time::{Duration, Instant};

use chorus_benches::VideoRig;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};

const SIZES: [usize; 3] = [2, 10, 50];

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut summary: Vec<(usize, Duration, Duration)> = Vec::new();
    let mut group = c.benchmark_group("forward_video");
    group.sampling_mode(SamplingMode::Flat);
    for n in SIZES {
        // Per frame, half the subscribers get the high and half the medium packet.
        group.throughput(Throughput::Elements(n as u64));
        let mut rig: Option<VideoRig> = None;
        let mut setup = Duration::ZERO;
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            let rig = rig.get_or_insert_with(|| {
                let start = Instant::now();
                let rig = VideoRig::new(n);
                setup = start.elapsed();
                rig
            });
            b.iter_custom(|iters| rig.measure(iters));
        });
        if let Some(rig) = rig {
            summary.push((n, rig.per_copy(), setup));
        }
    }
    group.finish();
    c.final_summary();
    if !summary.is_empty() {
        eprintln!("\nforward_video: mean over every timed frame (warm-up excluded)");
        eprintln!("{:>5} {:>22} {:>12}", "N", "µs / video copy", "set-up");
        for (n, per, setup) in summary {
            eprintln!(
                "{n:>5} {:>22.3} {:>11.1}s",
                per.as_secs_f64() * 1e6,
                setup.as_secs_f64()
            );
        }
    }
}
