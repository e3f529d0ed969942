//! `GET /metrics`: Prometheus text exposition of the node's counters.
//!
//! Shard threads publish a snapshot of their counters twice a second
//! ([`chorus_engine::ShardSnapshot`]); a scrape renders the latest snapshots, labelled
//! by shard, plus the driver's drop counters, each shard's forwarding latency
//! histogram, and the joins by result counted by signaling. Nothing here is on the
//! media path.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use chorus_engine::latency::LatencySnapshot;
use chorus_engine::CommandSender;
use parking_lot::Mutex;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabel {
    shard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabel {
    shard: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabel {
    shard: String,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Join attempts by how they ended: `ok`, or the error code the client got.
#[derive(Debug, Default)]
pub(crate) struct JoinCounters(Mutex<BTreeMap<&'static str, u64>>);

impl JoinCounters {
    pub fn count(&self, result: &'static str) {
        *self.0.lock().entry(result).or_default() += 1;
    }
}

/// A latency histogram as the engine recorded it.
#[derive(Debug)]
struct Latency(LatencySnapshot);

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(
            self.0.sum_seconds,
            self.0.count,
            &self.0.buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Renders the current figures.
pub(crate) fn render(
    engine: &CommandSender,
    joins: &JoinCounters,
    cluster: Option<&chorus_cluster::Cluster>,
) -> String {
    let mut registry = Registry::with_prefix("chorus");
    let participants = Family::<ShardLabel, Gauge>::default();
    let rooms = Family::<ShardLabel, Gauge>::default();
    let rooms_by_mode = Family::<ModeLabel, Gauge>::default();
    let datagrams_in = Family::<ShardLabel, Counter>::default();
    let rtp_in = Family::<ShardLabel, Counter>::default();
    let forwarded = Family::<ShardLabel, Counter>::default();
    let transmits = Family::<ShardLabel, Counter>::default();
    let bytes_in = Family::<ShardLabel, Counter>::default();
    let bytes_out = Family::<ShardLabel, Counter>::default();
    let joins_total = Family::<ResultLabel, Counter>::default();
    let handoffs_out = Family::<ShardLabel, Counter>::default();
    let handoffs_in = Family::<ShardLabel, Counter>::default();
    let migrations = Family::<ShardLabel, Counter>::default();
    let dropped = Family::<DropLabel, Counter>::default();
    let driver_dropped = Family::<ReasonLabel, Counter>::default();

    for (i, snap) in engine.snapshots().into_iter().enumerate() {
        let shard = ShardLabel {
            shard: i.to_string(),
        };
        let s = &snap.stats;
        participants
            .get_or_create(&shard)
            .set(snap.participants as i64);
        rooms.get_or_create(&shard).set(snap.rooms as i64);
        for (mode, n) in [
            ("p2p", snap.p2p_rooms),
            ("sfu", snap.rooms.saturating_sub(snap.p2p_rooms)),
        ] {
            rooms_by_mode
                .get_or_create(&ModeLabel {
                    shard: shard.shard.clone(),
                    mode,
                })
                .set(n as i64);
        }
        datagrams_in.get_or_create(&shard).inc_by(s.datagrams_in);
        rtp_in.get_or_create(&shard).inc_by(s.rtp_in);
        forwarded.get_or_create(&shard).inc_by(s.rtp_forwarded);
        transmits.get_or_create(&shard).inc_by(s.transmits_out);
        bytes_in.get_or_create(&shard).inc_by(s.bytes_in);
        bytes_out.get_or_create(&shard).inc_by(s.bytes_out);
        handoffs_out.get_or_create(&shard).inc_by(s.handoffs_out);
        handoffs_in.get_or_create(&shard).inc_by(s.handoffs_in);
        migrations.get_or_create(&shard).inc_by(s.migrations_in);
        for (reason, n) in [
            ("unknown_source", s.dropped_unknown_source),
            ("malformed", s.dropped_malformed),
            ("rejected", s.dropped_rejected),
            ("unauthenticated", s.dropped_unauthenticated),
            ("muted", s.dropped_muted),
            ("not_permitted", s.dropped_not_permitted),
            ("not_audio", s.dropped_not_audio),
            ("no_slot", s.dropped_no_slot),
            ("late", s.dropped_late),
            ("bad_claim", s.dropped_bad_claim),
        ] {
            dropped
                .get_or_create(&DropLabel {
                    shard: shard.shard.clone(),
                    reason,
                })
                .inc_by(n);
        }
    }
    let d = engine.driver_stats();
    for (reason, n) in [
        (
            "handoff_overflow",
            d.dropped_handoff.load(Ordering::Relaxed),
        ),
        (
            "video_handoff_overflow",
            d.dropped_video_handoff.load(Ordering::Relaxed),
        ),
        (
            "control_overflow",
            d.dropped_control.load(Ordering::Relaxed),
        ),
        ("send", d.dropped_send.load(Ordering::Relaxed)),
    ] {
        driver_dropped
            .get_or_create(&ReasonLabel { reason })
            .inc_by(n);
    }

    let tcp = Family::<ReasonLabel, Counter>::default();
    for (name, n) in engine.tcp_stats().counters() {
        let reason = name.trim_start_matches("tcp_");
        tcp.get_or_create(&ReasonLabel { reason }).inc_by(n);
    }
    registry.register(
        "ice_tcp",
        "ICE-TCP connections (accepted, refused, closed_limit) and frames (frames_in, frames_out, dropped_in, dropped_out)",
        tcp,
    );
    registry.register(
        "participants",
        "Participants whose media is on the shard",
        participants,
    );
    registry.register("rooms", "Rooms whose roster the shard keeps", rooms);
    registry.register(
        "rooms_by_mode",
        "Rooms whose roster the shard keeps, by the tier carrying their audio (p2p, sfu)",
        rooms_by_mode,
    );
    registry.register("datagrams_in", "UDP datagrams received", datagrams_in);
    registry.register("rtp_in", "RTP packets received from speakers", rtp_in);
    registry.register("rtp_forwarded", "RTP copies sent to subscribers", forwarded);
    registry.register("datagrams_out", "UDP datagrams sent", transmits);
    registry.register("bytes_in", "Bytes of UDP datagrams received", bytes_in);
    registry.register("bytes_out", "Bytes of UDP datagrams sent", bytes_out);
    for (result, n) in joins.0.lock().iter() {
        joins_total
            .get_or_create(&ResultLabel { result })
            .inc_by(*n);
    }
    registry.register(
        "joins",
        "Join attempts by result (ok, or the error code sent)",
        joins_total,
    );
    for (i, h) in engine.forwarding_latency().into_iter().enumerate() {
        registry
            .sub_registry_with_label(("shard".into(), i.to_string().into()))
            .register_with_unit(
                "forwarding_latency",
                "From a speaker's datagram leaving the socket (or another shard's hand-off ring) to its copies being handed to the kernel",
                prometheus_client::registry::Unit::Seconds,
                Latency(h),
            );
    }
    registry.register(
        "handoffs_out",
        "Speaker packets handed to other shards",
        handoffs_out,
    );
    registry.register(
        "handoffs_in",
        "Speaker packets received from other shards",
        handoffs_in,
    );
    registry.register(
        "migrations",
        "Participants whose media moved to the shard",
        migrations,
    );
    registry.register(
        "dropped",
        "Packets dropped by the shard, by reason",
        dropped,
    );
    registry.register(
        "driver_dropped",
        "Messages the I/O driver dropped (full queues or sockets), by reason",
        driver_dropped,
    );
    if let Some(cluster) = cluster {
        let s = cluster.stats();
        let nodes = Gauge::<i64>::default();
        nodes.set(cluster.nodes().len() as i64);
        registry.register(
            "cluster_nodes",
            "Live nodes of the cluster, this one included",
            nodes,
        );
        let peers = Gauge::<i64>::default();
        peers.set(s.peers as i64);
        registry.register("relay_peers", "Nodes connected over the relay", peers);
        for (name, help, n) in [
            ("relay_packets_out", "Speaker packet copies sent to other nodes (one per packet per node with listeners)", s.packets_out),
            ("relay_packets_in", "Speaker packets received from other nodes", s.packets_in),
            ("relay_video_out", "Video packet copies sent to other nodes", s.video_out),
            ("relay_video_in", "Video packets received from other nodes", s.video_in),
            ("relay_video_dropped", "Video packets not sent to another node: the link's room was kept for voice", s.video_dropped),
            ("relay_bytes_out", "Bytes sent on the relay (datagrams and frames)", s.bytes_out),
            ("relay_bytes_in", "Bytes received on the relay (datagrams and frames)", s.bytes_in),
            ("relay_bad_datagrams", "Relayed datagrams that did not parse", s.bad_datagrams),
            ("relay_auth_failures", "Relay connections that did not prove the cluster secret", s.auth_failures),
        ] {
            let c = Counter::<u64>::default();
            c.inc_by(n);
            registry.register(name, help, c);
        }
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}
