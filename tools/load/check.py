#!/usr/bin/env python3
"""Reads chorus-load JSON lines on stdin and fails unless the last run was clean:
everyone connected, no join failure, no loss, packets forwarded."""
import json
import sys

r = json.loads(sys.stdin.read().strip().splitlines()[-1])
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
sys.exit(0 if ok else "load smoke failed: " + json.dumps(r))
