#!/usr/bin/env python3
"""Reads chorus-load JSON lines on stdin and fails unless the last run was clean.

Media runs: everyone connected, no join failure, no loss, packets forwarded; with
cameras (--cameras), every video slot subscribed, video forwarded, no error after
joining.
Signaling-only runs (--signaling-only): everyone joined, every message answered, no
socket closed early and no error after joining; with MAX_ANSWER_P99_MS,
MAX_JOIN_P99_MS or MAX_RSS_KB_PER_PARTICIPANT in the environment, also those bounds
(the RSS one on the node's growth per joined client at the end of the window)."""
import json
import os
import sys

r = json.loads(sys.stdin.read().strip().splitlines()[-1])
if r.get("signaling_only"):
    print(
        f"signaling smoke: {r['joined']}/{r['participants']} joined on {r.get('shards', '?')} "
        f"shard(s), join p99 {r['join_ms']['p99']} ms, {r['answered']}/{r['sent']} messages "
        f"answered, answer p99 {r['answer_ms']['p99']} ms, "
        f"{r['rss_kb_per_participant_end']} KB RSS per participant"
    )
    ok = (
        r["joined"] == r["participants"]
        and r["join_failures"] == 0
        and r["sent"] > 0
        and r["unanswered"] == 0
        and not r["early_closes"]
        and not r["errors_after_join"]
    )
    for key, value in (
        ("MAX_ANSWER_P99_MS", r["answer_ms"]["p99"]),
        ("MAX_JOIN_P99_MS", r["join_ms"]["p99"]),
        ("MAX_RSS_KB_PER_PARTICIPANT", r["rss_kb_per_participant_end"]),
    ):
        bound = os.environ.get(key)
        if bound is not None and (value is None or value > float(bound)):
            print(f"signaling smoke: {key}={bound} exceeded: {value}")
            ok = False
    sys.exit(0 if ok else "signaling smoke failed: " + json.dumps(r))

print(
    f"load smoke: {r['participants']} participants on {r.get('shards', '?')} shard(s), "
    f"{r['forwarded_pps']:.0f} pps forwarded, loss {r['loss']}, p99 {r['latency_ms']['p99']} ms"
)
ok = (
    r["connected"] == r["participants"]
    and r["join_failures"] == 0
    and r["loss"] == 0
    and r["forwarded_pps"] > 0
)
v = r.get("video")
if v:
    cams, per, rooms = v["cameras_per_room"], r["per_room"], r["rooms"]
    expected = rooms * (cams * (cams - 1) + (per - cams) * cams)
    print(
        f"video: {v['subscriptions']}/{expected} slots subscribed, {v['forwarded_pps']:.0f} pps "
        f"({v['forwarded_mbps']} Mbit/s) forwarded, layers {v['forwarded_layers']}, "
        f"p99 {v['latency_ms']['p99']} ms"
    )
    ok = (
        ok
        and v["subscriptions"] == expected
        and v["forwarded_pps"] > 0
        and not r["errors_after_join"]
    )
sys.exit(0 if ok else "load smoke failed: " + json.dumps(r))
