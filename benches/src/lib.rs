//! Shared set-up for the Chorus benchmarks.
//!
//! [`ForwardRig`] is one shard with a publisher and `n` subscribers, all real str0m
//! clients connected through ICE, DTLS and SRTP over the simulated network of
//! [`chorus_tests::sim`]. It measures what a driver does with the publisher's media:
//! `handle_datagram` for each SRTP packet, draining `poll_transmit` (handing each
//! buffer back with `recycle`, as the driver does), `poll_event` and
//! `poll_shard_message`, and `handle_timeout` whenever `poll_timeout` is due, with the
//! clock advancing one Opus frame (20 ms) per packet. Everything else, producing the
//! publisher's packets and keeping the clients alive, happens outside the timed region.
//!
//! [`ForwardRig::across_shards`] puts the publisher on shard 0 and every subscriber on
//! shard 1: each packet is then handed from one shard to the other (in process, the
//! message a driver would queue) and fanned out there.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_engine::shard::Shard;
use chorus_protocol::demux::{classify, DatagramKind};
use chorus_tests::sim::{Sim, FRAME};
use str0m::media::{Mid, Pt};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Input, Output};

/// Packets forwarded between two keep-alive rounds: 100 frames are 2 s of simulated
/// time, well inside str0m's ICE consent (15 s) and the shard's disconnect timeout.
pub const CHUNK: usize = 100;
/// Opus at ~32 kbit/s: 80 bytes per 20 ms frame.
pub const OPUS_PAYLOAD: usize = 80;
/// The publisher's level, RFC 6464 -dBov (loud enough to hold its slot).
const LEVEL_DBOV: i8 = 30;

/// Marks the part of [`ForwardRig::forward_probed`] that is one packet's own work.
pub trait Probe {
    fn enter(&mut self);
    fn leave(&mut self);
}

impl Probe for () {
    fn enter(&mut self) {}
    fn leave(&mut self) {}
}

/// One publisher SRTP packet, ready for the shard.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub at: Instant,
    pub contents: Vec<u8>,
}

/// A room of `1 + n` connected clients on one shard; only the publisher speaks.
pub struct ForwardRig {
    pub sim: Sim,
    pub n: usize,
    publisher: usize,
    publisher_addr: SocketAddr,
    mic: Mid,
    pt: Pt,
    /// Frames the publisher produced.
    frames: u32,
    /// Time of the last produced frame (the publisher's clock).
    clock: Instant,
    /// What the publisher sent besides RTP (STUN, RTCP): delivered between chunks.
    other: Vec<Vec<u8>>,
    /// Timed packets and time, over the rig's life.
    pub packets: u64,
    pub timed: Duration,
}

impl ForwardRig {
    /// Connects the publisher and `n` subscribers in one room (8 audio slots each),
    /// then forwards a few packets so every subscriber has the publisher on a slot.
    pub fn new(n: usize) -> ForwardRig {
        ForwardRig::build(n, 1)
    }

    /// Like [`ForwardRig::new`], with the publisher on shard 0 and the subscribers on
    /// shard 1.
    pub fn across_shards(n: usize) -> ForwardRig {
        ForwardRig::build(n, 2)
    }

    fn build(n: usize, shards: usize) -> ForwardRig {
        // A voice room (no video slots): what the voice figures have always measured.
        let mut sim = Sim::with_shards(shards, |c| {
            c.max_participants = n + 1;
            c.video_slots = 0;
        });
        let publisher = sim.connect_on("publisher", "bench", 0);
        for i in 0..n {
            sim.connect_on(&format!("sub{i}"), "bench", shards - 1);
        }
        sim.run_for(Duration::from_millis(200));
        let c = &mut sim.clients[publisher];
        let mic = c.mic.expect("the publisher offered a microphone");
        let pt = c.mic_pt.expect("Opus negotiated");
        let mut rig = ForwardRig {
            publisher_addr: c.addr,
            clock: sim.now,
            sim,
            n,
            publisher,
            mic,
            pt,
            frames: 0,
            other: Vec::new(),
            packets: 0,
            timed: Duration::ZERO,
        };
        rig.run_chunk(CHUNK);
        let forwarded: u64 = rig.sim.shards.iter().map(|s| s.stats().rtp_forwarded).sum();
        assert!(
            forwarded >= (n * (CHUNK - 5)) as u64,
            "set-up: only {forwarded} copies forwarded to {n} subscribers"
        );
        rig.packets = 0;
        rig.timed = Duration::ZERO;
        rig
    }

    /// Criterion's `iter_custom`: forwards `iters` publisher packets, timing only the
    /// shard's work.
    pub fn measure(&mut self, iters: u64) -> Duration {
        in_chunks(iters, |k| self.run_chunk(k))
    }

    /// Produces `k` packets, forwards them (timed), then keeps the clients alive.
    pub fn run_chunk(&mut self, k: usize) -> Duration {
        let batch = self.produce(k);
        let start = Instant::now();
        self.forward(&batch);
        let elapsed = start.elapsed();
        self.packets += k as u64;
        self.timed += elapsed;
        self.keep_alive();
        elapsed
    }

    /// The publisher's str0m writes `k` frames, one each 20 ms, and encrypts them.
    pub fn produce(&mut self, k: usize) -> Vec<Datagram> {
        let mut out = Vec::with_capacity(k);
        let c = &mut self.sim.clients[self.publisher];
        for _ in 0..k {
            self.clock += FRAME;
            let now = self.clock;
            let mut payload = vec![0u8; OPUS_PAYLOAD];
            payload[0] = 0x78; // Opus TOC: SILK+CELT hybrid, 20 ms
            payload[1..5].copy_from_slice(&self.frames.to_be_bytes());
            let ext = ExtensionValues {
                audio_level: Some(-LEVEL_DBOV),
                voice_activity: Some(true),
                ..Default::default()
            };
            let seq = 1000 + u64::from(self.frames);
            let ts = 5000u32.wrapping_add(self.frames.wrapping_mul(960));
            let write = RtpWrite::new(self.pt, seq.into(), ts, now, Arc::<[u8]>::from(payload))
                .ext_vals(ext);
            let mut api = c.rtc.direct_api();
            let tx = api
                .stream_tx_by_mid(self.mic, None)
                .expect("microphone stream");
            tx.write_rtp(write);
            self.frames += 1;
            flush_publisher(&mut c.rtc, now, &mut out, &mut self.other, |_| {});
        }
        assert_eq!(out.len(), k, "one RTP datagram per frame");
        out
    }

    /// The timed region: what a driver does for each received packet (on every
    /// shard, with shard messages delivered in process).
    #[inline(never)]
    pub fn forward(&mut self, batch: &[Datagram]) {
        self.forward_probed(batch, &mut ());
    }

    /// [`ForwardRig::forward`], with `probe` entered around each packet's own work
    /// (the datagram, its copies and hand-offs) and left around the timers that fall
    /// due in between (str0m's, the shard's tick: work per participant and second,
    /// not per packet).
    #[inline(never)]
    pub fn forward_probed(&mut self, batch: &[Datagram], probe: &mut impl Probe) {
        drive(&mut self.sim.shards, self.publisher_addr, batch, probe);
    }

    /// Untimed: the publisher's STUN and RTCP reach the shard, and every client runs
    /// its timers (consent checks, reports) so nobody times out.
    pub fn keep_alive(&mut self) {
        keep_alive(
            &mut self.sim,
            &mut self.other,
            self.publisher_addr,
            &mut self.clock,
        );
    }

    /// Mean time per subscriber packet over every timed packet so far.
    pub fn per_subscriber_packet(&self) -> Duration {
        let copies = self.packets.saturating_mul(self.n as u64).max(1);
        self.timed.div_f64(copies as f64)
    }
}

/// Runs `iters` packets (or frames) through `chunk` in chunks of at most [`CHUNK`];
/// returns the time it timed.
fn in_chunks(iters: u64, mut chunk: impl FnMut(usize) -> Duration) -> Duration {
    let mut left = iters as usize;
    let mut timed = Duration::ZERO;
    while left > 0 {
        let k = left.min(CHUNK);
        timed += chunk(k);
        left -= k;
    }
    timed
}

/// The publisher's str0m, after its writes at `now`: its RTP goes to `out`, what else
/// it sends (STUN, RTCP) to `other`, its events to `on_event`.
fn flush_publisher(
    rtc: &mut str0m::Rtc,
    now: Instant,
    out: &mut Vec<Datagram>,
    other: &mut Vec<Vec<u8>>,
    mut on_event: impl FnMut(str0m::Event),
) {
    rtc.handle_input(Input::Timeout(now))
        .expect("publisher timeout");
    loop {
        match rtc.poll_output().expect("publisher output") {
            Output::Timeout(_) => break,
            Output::Transmit(t) => {
                let contents: Vec<u8> = t.contents.into();
                if classify(&contents) == DatagramKind::Rtp {
                    out.push(Datagram { at: now, contents });
                } else {
                    other.push(contents);
                }
            }
            Output::Event(e) => on_event(e),
        }
    }
}

/// Untimed, between chunks: what the publisher sent besides RTP reaches the shard,
/// every client runs its timers (consent checks, reports) so nobody times out, and
/// what the clients received is dropped (of no interest here: memory stays flat).
fn keep_alive(sim: &mut Sim, other: &mut Vec<Vec<u8>>, publisher: SocketAddr, clock: &mut Instant) {
    sim.now = sim.now.max(*clock);
    let now = sim.now;
    for d in std::mem::take(other) {
        sim.shards[0].handle_datagram(now, publisher, &d);
    }
    sim.pump();
    sim.run_for(Duration::from_millis(1));
    *clock = sim.now;
    for c in &mut sim.clients {
        c.received.clear();
        c.inbox.clear();
    }
}

/// VP8 payload bytes per video packet (a 720p frame at ~1 Mbit/s is a few of these).
pub const VIDEO_PAYLOAD: usize = 1100;

/// What a driver does with a batch of the publisher's datagrams (it sent them from
/// `from`, and they arrive at the first shard): the timers due by each, the datagram,
/// then every shard's transmits (their buffers go back, as after `sendmmsg`), events
/// and hand-offs. `probe` is entered around each packet's own work and left around
/// the timers (work per participant and second, not per packet).
fn drive(shards: &mut [Shard], from: SocketAddr, batch: &[Datagram], probe: &mut impl Probe) {
    for d in batch {
        for shard in shards.iter_mut() {
            if shard.poll_timeout().is_some_and(|t| t <= d.at) {
                shard.handle_timeout(d.at);
            }
        }
        probe.enter();
        shards[0].handle_datagram(d.at, from, &d.contents);
        for k in 0..shards.len() {
            while let Some(t) = shards[k].poll_transmit() {
                let t = black_box(t);
                shards[k].recycle(t.contents);
            }
            while let Some(e) = shards[k].poll_event() {
                black_box(e);
            }
            while let Some((to, m)) = shards[k].poll_shard_message() {
                shards[to].handle_shard_message(d.at, m);
            }
        }
        probe.leave();
    }
}

/// One video frame (30 fps).
pub const VIDEO_FRAME: Duration = Duration::from_millis(33);
/// The publisher's simulcast layers, lowest first.
const RIDS: [&str; 3] = ["q", "h", "f"];

/// A video room on one shard: a publisher sending a three-layer VP8 simulcast camera
/// (one packet per layer and frame) and `n` subscribers with one video slot each,
/// half asking for `high`, half for `medium`; the low layer goes to no one. The timed
/// region is what a driver does (as [`ForwardRig::forward`]); copies are counted by
/// the shard (`video_forwarded`).
pub struct VideoRig {
    pub sim: Sim,
    pub n: usize,
    publisher: usize,
    publisher_addr: SocketAddr,
    camera: Mid,
    pt: Pt,
    frames: u32,
    keyframe_due: [bool; 3],
    clock: Instant,
    other: Vec<Vec<u8>>,
    /// Copies and time, timed region only, over the rig's life.
    pub copies: u64,
    pub packets: u64,
    pub timed: Duration,
}

impl VideoRig {
    pub fn new(n: usize) -> VideoRig {
        let mut sim = Sim::with_config(|c| {
            c.max_participants = n + 1;
            c.video_slots = 1;
        });
        let publisher = sim.connect_video("publisher", "bench", Some(&RIDS));
        let subs: Vec<usize> = (0..n)
            .map(|i| sim.connect_video(&format!("sub{i}"), "bench", None))
            .collect();
        for (i, s) in subs.into_iter().enumerate() {
            let quality = if i % 2 == 0 {
                chorus_engine::VideoQuality::High
            } else {
                chorus_engine::VideoQuality::Medium
            };
            sim.subscribe(s, 0, Some(publisher), quality);
        }
        sim.run_for(Duration::from_millis(200));
        let c = &sim.clients[publisher];
        let camera = c.camera.mid.expect("the publisher offered a camera");
        let pt = c
            .rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == str0m::format::Codec::Vp8)
            .map(|p| p.pt())
            .expect("VP8 negotiated");
        let mut rig = VideoRig {
            publisher_addr: c.addr,
            clock: sim.now,
            sim,
            n,
            publisher,
            camera,
            pt,
            frames: 0,
            keyframe_due: [true; 3],
            other: Vec::new(),
            copies: 0,
            packets: 0,
            timed: Duration::ZERO,
        };
        // Warm-up: slots start on keyframes, the allocation settles on measured rates.
        for _ in 0..3 {
            rig.run_chunk(CHUNK);
        }
        let layers = rig.sim.shards[0].stats().video_forwarded;
        assert!(
            layers >= (n * CHUNK) as u64,
            "set-up: only {layers} video copies to {n} subscribers"
        );
        rig.copies = 0;
        rig.packets = 0;
        rig.timed = Duration::ZERO;
        rig
    }

    /// Criterion's `iter_custom`: `iters` frames (three packets each), timing only
    /// the shard's work. Throughput is per copy: see [`VideoRig::per_copy`].
    pub fn measure(&mut self, iters: u64) -> Duration {
        in_chunks(iters, |k| self.run_chunk(k))
    }

    /// Produces `k` frames, forwards them (timed), then keeps the clients alive.
    pub fn run_chunk(&mut self, k: usize) -> Duration {
        self.run_chunk_probed(k, &mut ())
    }

    /// [`VideoRig::run_chunk`] with `probe` around each packet's own work (as
    /// [`ForwardRig::forward_probed`]).
    pub fn run_chunk_probed(&mut self, k: usize, probe: &mut impl Probe) -> Duration {
        let batch = self.produce(k);
        let before = self.sim.shards[0].stats().video_forwarded;
        let start = Instant::now();
        drive(&mut self.sim.shards, self.publisher_addr, &batch, probe);
        let elapsed = start.elapsed();
        self.copies += self.sim.shards[0].stats().video_forwarded - before;
        self.packets += batch.len() as u64;
        self.timed += elapsed;
        self.keep_alive();
        elapsed
    }

    /// The publisher's str0m writes `k` frames of its three layers and encrypts them.
    fn produce(&mut self, k: usize) -> Vec<Datagram> {
        let mut out = Vec::with_capacity(k * RIDS.len());
        let c = &mut self.sim.clients[self.publisher];
        for _ in 0..k {
            self.clock += VIDEO_FRAME;
            let now = self.clock;
            for (layer, rid) in RIDS.iter().enumerate() {
                let key = std::mem::take(&mut self.keyframe_due[layer]);
                let picture_id = (self.frames as u16) & 0x7fff;
                let mut payload = vec![0u8; VIDEO_PAYLOAD];
                payload[..6].copy_from_slice(&[
                    0x90,
                    0xe0,
                    0x80 | (picture_id >> 8) as u8,
                    picture_id as u8,
                    self.frames as u8,
                    0x00,
                ]);
                payload[6] = if key { 0x00 } else { 0x01 };
                let seq = 10_000 * (layer as u64 + 1) + u64::from(self.frames);
                let ts = self.frames.wrapping_mul(3000);
                let write = RtpWrite::new(self.pt, seq.into(), ts, now, Arc::<[u8]>::from(payload))
                    .marker(true);
                let mut api = c.rtc.direct_api();
                let tx = api
                    .stream_tx_by_mid(self.camera, Some(str0m::media::Rid::from(*rid)))
                    .expect("camera layer stream");
                tx.write_rtp(write);
            }
            self.frames += 1;
            let keyframe_due = &mut self.keyframe_due;
            flush_publisher(&mut c.rtc, now, &mut out, &mut self.other, |e| {
                if let str0m::Event::KeyframeRequest(r) = e {
                    let layer = r
                        .rid
                        .and_then(|rid| RIDS.iter().position(|x| **x == *rid))
                        .unwrap_or(0);
                    keyframe_due[layer] = true;
                }
            });
        }
        out
    }

    /// As [`ForwardRig::keep_alive`].
    fn keep_alive(&mut self) {
        keep_alive(
            &mut self.sim,
            &mut self.other,
            self.publisher_addr,
            &mut self.clock,
        );
    }

    /// Mean time per forwarded video copy over every timed frame so far.
    pub fn per_copy(&self) -> Duration {
        self.timed.div_f64(self.copies.max(1) as f64)
    }
}
