#!/usr/bin/env python3
"""Summarise tools/bench/before-after.sh output: one row per measurement, before /
after / ratio (before ÷ after for costs, so > 1 means the after build is cheaper).

    python3 tools/bench/summary.py target/bench/before-after
"""
import json
import statistics
import sys
from pathlib import Path

d = Path(sys.argv[1] if len(sys.argv) > 1 else "target/bench/before-after")


def lines(p):
    if not p.exists():
        return []
    out = []
    for l in p.read_text().splitlines():
        l = l.strip()
        if l.startswith("{"):
            try:
                out.append(json.loads(l))
            except json.JSONDecodeError:
                pass
    return out


load = lines(d / "load.jsonl")
rows = []


def pick(mode, side, shards=None, participants=None):
    return [r for r in load if r.get("mode") == mode and r.get("label") == side
            and (shards is None or r.get("shards") == shards)
            and (participants is None or r.get("participants") == participants)]


def row(name, before, after, fmt="{:.2f}", lower_better=True):
    def agg(v):
        v = [x for x in v if x is not None]
        return statistics.median(v) if v else None
    b, a = agg(before), agg(after)
    ratio = ""
    if b is not None and a not in (None, 0) and b != 0:
        ratio = f"{(b / a if lower_better else a / b):.2f}×"
    f = lambda x: "—" if x is None else fmt.format(x)
    n = f" (n={len(before)}/{len(after)})" if max(len(before), len(after)) > 1 else ""
    rows.append((name + n, f(b), f(a), ratio))


for s in (1, 2):
    b, a = pick("standard", "before", s), pick("standard", "after", s)
    if b or a:
        row(f"standard, {s} shard(s): node µs CPU / forwarded pkt", [r["cpu_us_per_packet"] for r in b], [r["cpu_us_per_packet"] for r in a])
        row(f"standard, {s} shard(s): forwarded pps", [r["forwarded_pps"] for r in b], [r["forwarded_pps"] for r in a], "{:.0f}", False)
        row(f"standard, {s} shard(s): node CPU %", [r["node_cpu_pct"] for r in b], [r["node_cpu_pct"] for r in a], "{:.1f}")
        row(f"standard, {s} shard(s): load clients CPU %", [r["client_cpu_pct"] for r in b], [r["client_cpu_pct"] for r in a], "{:.1f}")
        row(f"standard, {s} shard(s): p50 latency ms", [r["latency_ms"]["p50"] for r in b], [r["latency_ms"]["p50"] for r in a], "{:.2f}")
        row(f"standard, {s} shard(s): p99 latency ms", [r["latency_ms"]["p99"] for r in b], [r["latency_ms"]["p99"] for r in a], "{:.2f}")
        row(f"standard, {s} shard(s): loss %", [100 * r["loss"] for r in b], [100 * r["loss"] for r in a], "{:.3f}")
for mode, label in (("memory", "1,000 idle"), ("big-silent", "5,000 idle")):
    b, a = pick(mode, "before"), pick(mode, "after")
    if b or a:
        row(f"{label}: RSS KB / participant", [r["rss_kb_per_participant"] for r in b], [r["rss_kb_per_participant"] for r in a], "{:.1f}")
        row(f"{label}: connected", [r["connected"] for r in b], [r["connected"] for r in a], "{:.0f}", False)
        row(f"{label}: node CPU % of a core", [r["node_cpu_pct"] for r in b], [r["node_cpu_pct"] for r in a], "{:.1f}")
b, a = pick("sweep", "before"), pick("sweep", "after")
if b or a:
    row("250 participants: p50 latency ms", [r["latency_ms"]["p50"] for r in b], [r["latency_ms"]["p50"] for r in a])
    row("250 participants: p99 latency ms", [r["latency_ms"]["p99"] for r in b], [r["latency_ms"]["p99"] for r in a])
    row("250 participants: loss %", [100 * r["loss"] for r in b], [100 * r["loss"] for r in a], "{:.3f}")
    row("250 participants: node µs CPU / forwarded pkt", [r["cpu_us_per_packet"] for r in b], [r["cpu_us_per_packet"] for r in a])
sr = lines(d / "small-room.jsonl")
b = [r for r in sr if r.get("label") == "before"]
a = [r for r in sr if r.get("label") == "after"]
if b or a:
    row("small room: node µs CPU / sent datagram", [r["cpu_us_per_sent_datagram"] for r in b], [r["cpu_us_per_sent_datagram"] for r in a])
    row("small room: node CPU %", [r["node_cpu_pct"] for r in b], [r["node_cpu_pct"] for r in a])
    row("small room: sent datagrams / s", [r["udp_out_per_s"] for r in b], [r["udp_out_per_s"] for r in a], "{:.0f}", False)
    row("small room: browsers' slot packets / s", [r["browsers_slot_pps"] for r in b], [r["browsers_slot_pps"] for r in a], "{:.0f}", False)
for side in ("before", "after"):
    s = lines(d / f"soak-{side}.jsonl")
    res = [r for r in s if r.get("kind") == "result"]
    ver = [r for r in s if r.get("kind") == "verdict"]
    if res:
        r = res[-1]
        print(f"soak {side}: verdict {ver[-1]['verdict'] if ver else '?'} {ver[-1].get('problems') if ver else ''}; "
              f"loss {r.get('loss')} ({r.get('lost')} of {r.get('expected')}), p99 {r['latency_ms']['p99']} ms, "
              f"node CPU {r.get('node_cpu_pct')} %, churn {r.get('churn', {}).get('joins')} rejoins, "
              f"failed {r.get('churn', {}).get('failed_joins')}, rss_kb_end {r.get('rss_kb_end')}")

w = max(len(r[0]) for r in rows) if rows else 10
print(f"{'measurement':<{w}} | {'before':>10} | {'after':>10} | ratio")
for r in rows:
    print(f"{r[0]:<{w}} | {r[1]:>10} | {r[2]:>10} | {r[3]}")
