//! The engine's cost of a `room.set_positions` batch: N members of a proximity room
//! on one shard (the room's home, which also holds their media: every member is a
//! listener in the shard's spatial index), every one of them moving a step. One
//! iteration is one batch, taken by `Shard::handle_request` and applied (home side,
//! then the shard's `Space`: re-indexing, listeners left behind, who is owed
//! `speakers`), its reply drained. JSON decoding on the control socket is not in it
//! (chorus-load's `--proximity` run measures the batch end to end).
//!
//! ```sh
//! cargo bench -p chorus-benches --bench positions -- --warm-up-time 1 --measurement-time 3
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chorus_engine::{Command, Permissions, Request, RequestId, Shard, ShardConfig};
use chorus_protocol::control::{
    Call, PositionSource, Proximity, Request as RpcRequest, RoomCreate, RoomSetPositions,
};
use chorus_protocol::signal::{DisplayName, ParticipantId, RoomId};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};

const SIZES: [usize; 2] = [100, 1000];
/// The world: a square this wide, the radius a fifth of it (a listener hears ~12 %
/// of the room).
const WORLD: f64 = 500.0;
const RADIUS: f64 = 100.0;

struct Rig {
    shard: Shard,
    now: Instant,
    room: RoomId,
    ids: Vec<ParticipantId>,
    at: Vec<[f64; 3]>,
    step: u64,
    next_request: u64,
}

impl Rig {
    fn new(n: usize) -> Rig {
        let now = Instant::now();
        let local: SocketAddr = "10.0.0.1:7882".parse().expect("address");
        let mut shard = Shard::new(ShardConfig::new(local), now).expect("shard");
        let room = RoomId::new("world").expect("room id");
        shard.handle_request(
            now,
            RequestId(0),
            Request::CreateRoom(RoomCreate {
                max_participants: Some(n),
                proximity: Some(Proximity {
                    radius: RADIUS,
                    positions: PositionSource::Backend,
                }),
                ..RoomCreate::new(room.clone())
            }),
        );
        let mut ids = Vec::with_capacity(n);
        let mut at = Vec::with_capacity(n);
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        for i in 0..n {
            let participant = chorus_engine::participant_id(i as u64 + 1, 0);
            shard.handle_command(
                now,
                Command::Join {
                    participant,
                    room: room.clone(),
                    name: DisplayName::new(&format!("p{i}")).expect("name"),
                    identity: None,
                    permissions: Permissions::ALL,
                    p2p: false,
                },
            );
            while shard.poll_event().is_some() {}
            ids.push(participant);
            at.push([uniform(&mut rng) * WORLD, 0.0, uniform(&mut rng) * WORLD]);
        }
        let mut rig = Rig {
            shard,
            now,
            room,
            ids,
            at,
            step: 0,
            next_request: 1,
        };
        let first = rig.batch();
        rig.apply(first);
        rig
    }

    /// Everyone takes a step of 0.1 (walking speed at 20 batches a second) on a
    /// circle of their own, so every position changes and some cross cells.
    fn batch(&mut self) -> RoomSetPositions {
        self.batch_of(self.ids.len())
    }

    /// The same for the next `n` members only (round robin): a backend sending only
    /// who moved.
    fn batch_of(&mut self, n: usize) -> RoomSetPositions {
        self.step += 1;
        let t = self.step as f64 * 0.1;
        let first = (self.step as usize * n) % self.ids.len().max(1);
        let positions: BTreeMap<ParticipantId, [f64; 3]> = self
            .ids
            .iter()
            .zip(&self.at)
            .enumerate()
            .cycle()
            .skip(first)
            .take(n.min(self.ids.len()))
            .map(|(i, (id, p))| {
                let phase = t + i as f64;
                (
                    *id,
                    [p[0] + 20.0 * phase.cos(), 0.0, p[2] + 20.0 * phase.sin()],
                )
            })
            .collect();
        RoomSetPositions {
            room: self.room.clone(),
            positions,
        }
    }

    fn apply(&mut self, batch: RoomSetPositions) {
        self.next_request += 1;
        self.shard.handle_request(
            self.now,
            RequestId(self.next_request),
            Request::SetPositions(batch),
        );
        while self.shard.poll_event().is_some() {}
        while self.shard.poll_transmit().is_some() {}
    }

    fn measure(&mut self, iters: u64, movers: usize) -> Duration {
        let batches: Vec<RoomSetPositions> = (0..iters).map(|_| self.batch_of(movers)).collect();
        let start = Instant::now();
        for b in batches {
            self.apply(b);
        }
        start.elapsed()
    }
}

/// Benchmarks batches moving `movers` of `members`; returns the mean per batch.
fn batches(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    members: usize,
    movers: usize,
) -> Option<Duration> {
    group.throughput(Throughput::Elements(movers as u64));
    let mut rig: Option<Rig> = None;
    let mut total = (Duration::ZERO, 0u64);
    group.bench_function(BenchmarkId::from_parameter(members), |b| {
        let rig = rig.get_or_insert_with(|| Rig::new(members));
        b.iter_custom(|iters| {
            let d = rig.measure(iters, movers);
            total.0 += d;
            total.1 += iters;
            d
        });
    });
    (total.1 > 0).then(|| total.0 / total.1 as u32)
}

/// xorshift64 as a number in [0, 1).
fn uniform(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut summary = Vec::new();
    let mut group = c.benchmark_group("positions");
    group.sampling_mode(SamplingMode::Flat);
    for n in SIZES {
        if let Some(per) = batches(&mut group, n, n) {
            summary.push((n, per));
        }
    }
    group.finish();

    // A backend that sends only who moved: 10 of 1,000 per batch.
    let mut small = c.benchmark_group("positions_10_of");
    let small_summary: Vec<(usize, Duration)> = batches(&mut small, 1000, 10)
        .map(|per| (1000, per))
        .into_iter()
        .collect();
    small.finish();

    // What the control socket adds: decoding the JSON-RPC line of a batch (the
    // engine's request is built from it).
    let mut decode = c.benchmark_group("positions_decode");
    let mut decoded = Vec::new();
    for n in SIZES {
        let mut rig = Rig {
            ids: (0..n as u64)
                .map(|i| chorus_engine::participant_id(i + 1, 0))
                .collect(),
            at: (0..n)
                .map(|i| [i as f64, 0.0, (i * 7 % 500) as f64])
                .collect(),
            ..Rig::new(1)
        };
        let batch = rig.batch();
        let line = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"room.set_positions","params":{}}}"#,
            serde_json::to_string(&batch).expect("json")
        );
        decode.throughput(Throughput::Elements(n as u64));
        let mut total = (Duration::ZERO, 0u64);
        decode.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let r = RpcRequest::decode(&line).expect("request");
                    let call = Call::decode(&r.method, r.params).expect("call");
                    std::hint::black_box(call);
                }
                let d = start.elapsed();
                total.0 += d;
                total.1 += iters;
                d
            });
        });
        if total.1 > 0 {
            decoded.push((n, line.len(), total.0 / total.1 as u32));
        }
    }
    decode.finish();
    c.final_summary();
    for (n, bytes, per) in decoded {
        eprintln!(
            "{n:>5} positions: {bytes} bytes of JSON-RPC, decoded in {:>8.1} µs",
            per.as_secs_f64() * 1e6
        );
    }
    eprintln!("\npositions: mean per batch (every member moved), warm-up included");
    for (n, per) in summary {
        eprintln!(
            "{n:>5} members: {:>8.1} µs per batch, {:>6.3} µs per position",
            per.as_secs_f64() * 1e6,
            per.as_secs_f64() * 1e6 / n as f64
        );
    }
    for (n, per) in small_summary {
        eprintln!(
            "{n:>5} members, 10 moved: {:>8.1} µs per batch",
            per.as_secs_f64() * 1e6
        );
    }
}
