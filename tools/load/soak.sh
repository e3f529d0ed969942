#!/usr/bin/env bash
# Soak test: a fresh node under a long mixed workload (chorus-load with churn: joins,
# leaves, mute toggles, speakers speaking), sampling the node's memory (VmRSS) and
# open file descriptors; fails when either grows after the warm-up.
#
#   tools/load/soak.sh            # 60 s window (the CI run: tools/test.sh)
#   tools/load/soak.sh 30m        # the BENCHMARKS.md run
#
# The window (chorus-load --duration) is DURATION; start-up and teardown add ~5 s.
# Every SAMPLE_EVERY seconds one JSON line goes to $OUT: the node's VmRSS, fd count and
# threads, chorus-load's own RSS and fds, and the phase and churn counters of
# chorus-load's last progress line; also one line before the first join ("idle") and
# one after chorus-load has exited and every client has left ("after"). The last two
# lines are chorus-load's result and the verdict.
#
# Verdict (exit 1 on FAIL). "Start" is the median of the first 3 samples taken at
# least WARMUP seconds into the window, "end" the median of the last 3 in the window:
#   - RSS: end − start must stay ≤ RSS_MAX_GROWTH_PCT % of start and ≤ RSS_MAX_GROWTH_MIB;
#   - fds: end − start ≤ FD_SLACK, and "after" − "idle" ≤ FD_SLACK (every socket the
#     clients held is closed again once they left), and the node counts no
#     participant any more ("after", from /metrics);
#   - chorus-load exited 0 (no failed join or rejoin), loss ≤ MAX_LOSS, and no packet
#     of a muted speaker was forwarded.
#
# Env: PROFILE (release; debug uses the test build), CHORUS_BIN and LOAD_BIN (run these
#   binaries instead of building target/$PROFILE's), OUT (target/bench/soak.jsonl),
#   SAMPLE_EVERY (5), WARMUP (DURATION/5, clamped to 10..120 s), ROOMS (4), PER_ROOM
#   (8), SPEAKERS (2), CHURN_EVERY (5s), SHARDS (2), RSS_MAX_GROWTH_PCT (20),
#   RSS_MAX_GROWTH_MIB (32), FD_SLACK (4), MAX_LOSS (0.001), SEED (from the clock).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
duration="${1:-60s}"
out="${OUT:-target/bench/soak.jsonl}"
profile="${PROFILE:-release}"
every="${SAMPLE_EVERY:-5}"
rooms="${ROOMS:-4}" per="${PER_ROOM:-8}" speakers="${SPEAKERS:-2}"
churn="${CHURN_EVERY:-5s}" shards="${SHARDS:-2}"
mkdir -p "$(dirname "$out")"
: >"$out"

secs="$(python3 -c '
import re, sys
m = re.fullmatch(r"([0-9.]+)\s*(us|ms|s|m|min)?", sys.argv[1].strip())
if not m: sys.exit("soak.sh: bad duration " + sys.argv[1])
v, u = float(m.group(1)), m.group(2) or "s"
print(int(v * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "min": 60}[u]))' "$duration")"
warmup="${WARMUP:-$(( secs / 5 < 10 ? 10 : (secs / 5 > 120 ? 120 : secs / 5) ))}"

if [ -z "${CHORUS_BIN:-}" ] || [ -z "${LOAD_BIN:-}" ]; then
  if [ "$profile" = release ]; then
    cargo build --release --locked -q -p chorus-signaling -p chorus-load
  else
    cargo build --locked -q -p chorus-signaling -p chorus-load
  fi
fi
chorus_bin="${CHORUS_BIN:-target/$profile/chorus}"
load_bin="${LOAD_BIN:-target/$profile/chorus-load}"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http="$(free_port)"; udp="$(free_port)"
work="$(mktemp -d)"
node_pid="" load_pid=""
cleanup() {
  [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null || true
  [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Node flags that newer nodes have: lift the per-IP join rate (all clients share
# 127.0.0.1).
node_extra=()
if "$chorus_bin" serve --help 2>/dev/null | grep -q -- '--join-rate-per-ip'; then
  node_extra+=(--join-rate-per-ip 0)
fi
"$chorus_bin" serve --dev --http "127.0.0.1:$http" --udp "127.0.0.1:$udp" --shards "$shards" \
  --max-connections-per-ip 0 --control none --log warn "${node_extra[@]}" 2>"$work/node.log" &
node_pid=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$http/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

t0="$(date +%s.%N)"
# sample PHASE [LOAD_PID]: one JSON line for the node (and chorus-load, when running).
sample() {
  local phase="$1" lpid="${2:-}"
  python3 - "$node_pid" "$lpid" "$phase" "$t0" "$work/load.err" "$http" <<'PY' >>"$out"
import json, os, re, sys, time, urllib.request
node, lpid, phase, t0, err, http = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5], sys.argv[6]
def proc(pid):
    try:
        status = open(f"/proc/{pid}/status").read()
        rss = int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1))
        threads = int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))
        return rss, len(os.listdir(f"/proc/{pid}/fd")), threads
    except (OSError, AttributeError):
        return None, None, None
rec = {"kind": "sample", "t_s": round(time.time() - t0, 1)}
rec["node_rss_kb"], rec["node_fds"], rec["node_threads"] = proc(node)
# The node's own view (/metrics): participants and rooms, summed over the shards.
try:
    text = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=2).read().decode()
    for name, key in (("chorus_participants", "node_participants"), ("chorus_rooms", "node_rooms")):
        vals = re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M)
        if vals:
            rec[key] = int(sum(float(v) for v in vals))
except (OSError, ValueError):
    pass
if lpid:
    rec["load_rss_kb"], rec["load_fds"], _ = proc(lpid)
    try:
        lines = [l for l in open(err, errors="replace").read().splitlines() if l.startswith("[")]
    except OSError:
        lines = []
    if lines:
        last = lines[-1]
        m = re.match(r"\[\s*([0-9.]+)s\]\s+(\w+)\s+connected (\d+)/", last)
        if m:
            rec["load_s"], phase, rec["connected"] = float(m.group(1)), m.group(2), int(m.group(3))
        for k in ("joins", "leaves", "mutes", "unmutes", "failed"):
            m = re.search(rf"\b{k} (\d+)", last)
            if m:
                rec[f"churn_{k}"] = int(m.group(1))
rec["phase"] = phase
print(json.dumps(rec))
PY
}

sample idle
echo "soak.sh: node pid $node_pid ($profile, $shards shards), window $duration (${secs} s), warm-up ${warmup} s," \
  "${rooms} rooms x ${per}, ${speakers} speakers, churn every $churn; samples every ${every} s to $out" >&2
load_args=(--url "http://127.0.0.1:$http" --rooms "$rooms" --per-room "$per" --speakers "$speakers"
  --duration "$duration" --churn-every "$churn" --node-pid "$node_pid")
[ -n "${SEED:-}" ] && load_args+=(--seed "$SEED")
"$load_bin" "${load_args[@]}" >"$work/load.json" 2>"$work/load.err" &
load_pid=$!
next="$(date +%s)"
while kill -0 "$load_pid" 2>/dev/null; do
  sample run "$load_pid"
  next=$((next + every))
  while kill -0 "$load_pid" 2>/dev/null && [ "$(date +%s)" -lt "$next" ]; do sleep 0.2; done
done
load_status=0
wait "$load_pid" || load_status=$?
load_pid=""
# The clients are gone: give the node a moment to close what they left.
sleep 2
sample after

if [ ! -s "$work/load.json" ]; then
  echo "soak.sh: chorus-load failed ($load_status) without a result" >&2
  tail -n 20 "$work/load.err" "$work/node.log" >&2
  exit 1
fi
tail -n 3 "$work/load.err" >&2
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r["kind"]="result"; print(json.dumps(r))' \
  "$work/load.json" >>"$out"

LOAD_STATUS="$load_status" WARMUP_S="$warmup" python3 - "$out" <<'PY'
import json, os, statistics, sys
path = sys.argv[1]
lines = [json.loads(l) for l in open(path)]
samples = [l for l in lines if l["kind"] == "sample"]
result = next(l for l in lines if l["kind"] == "result")
env = lambda k, d: float(os.environ.get(k, d))
warmup = float(os.environ["WARMUP_S"])
pct_max, mib_max = env("RSS_MAX_GROWTH_PCT", 20), env("RSS_MAX_GROWTH_MIB", 32)
fd_slack, max_loss = env("FD_SLACK", 4), env("MAX_LOSS", 0.001)
load_status = int(os.environ["LOAD_STATUS"])

idle = next(s for s in samples if s["phase"] == "idle")
after = next(s for s in samples if s["phase"] == "after")
window = [s for s in samples if s["phase"] == "measure" and s.get("node_rss_kb") is not None]
w0 = window[0]["load_s"] if window else 0
steady = [s for s in window if s["load_s"] - w0 >= warmup]
problems = []
verdict = {"kind": "verdict", "warmup_s": warmup, "samples_in_window": len(window),
           "samples_after_warmup": len(steady)}
if len(steady) < 4:
    problems.append(f"only {len(steady)} samples after the warm-up: run longer")
else:
    med = lambda xs: statistics.median(xs)
    head, tail = steady[:3], steady[-3:]
    rss0, rss1 = med([s["node_rss_kb"] for s in head]), med([s["node_rss_kb"] for s in tail])
    fd0, fd1 = med([s["node_fds"] for s in head]), med([s["node_fds"] for s in tail])
    growth = rss1 - rss0
    growth_pct = 100.0 * growth / rss0
    # Least-squares slope of RSS over the steady samples, KiB per minute.
    ts = [s["t_s"] for s in steady]
    rs = [s["node_rss_kb"] for s in steady]
    tm, rm = statistics.fmean(ts), statistics.fmean(rs)
    den = sum((t - tm) ** 2 for t in ts) or 1.0
    slope = sum((t - tm) * (r - rm) for t, r in zip(ts, rs)) / den * 60.0
    joins = (steady[-1].get("churn_joins", 0) - steady[0].get("churn_joins", 0))
    verdict.update({
        "rss_kb": {"idle": idle["node_rss_kb"], "start": rss0, "end": rss1,
                   "max": max(s["node_rss_kb"] for s in window), "after": after["node_rss_kb"],
                   "growth": growth, "growth_pct": round(growth_pct, 2),
                   "slope_kb_per_min": round(slope, 1),
                   "growth_per_rejoin_kb": round(growth / joins, 3) if joins else None},
        "fds": {"idle": idle["node_fds"], "start": fd0, "end": fd1,
                "min": min(s["node_fds"] for s in window), "max": max(s["node_fds"] for s in window),
                "after": after["node_fds"]},
        "threads": {"start": steady[0]["node_threads"], "end": steady[-1]["node_threads"]},
        "after": {"participants": after.get("node_participants"), "rooms": after.get("node_rooms")},
        "load_rss_kb": {"start": steady[0].get("load_rss_kb"), "end": steady[-1].get("load_rss_kb")},
        "load_fds": {"start": steady[0].get("load_fds"), "end": steady[-1].get("load_fds")},
        "rejoins_after_warmup": joins,
    })
    if growth_pct > pct_max:
        problems.append(f"node RSS grew {growth_pct:.1f} % after the warm-up (> {pct_max:g} %)")
    if growth > mib_max * 1024:
        problems.append(f"node RSS grew {growth / 1024:.1f} MiB after the warm-up (> {mib_max:g} MiB)")
    if fd1 - fd0 > fd_slack:
        problems.append(f"node fds grew from {fd0:g} to {fd1:g} (> {fd_slack:g})")
if after["node_fds"] is None or after["node_fds"] - idle["node_fds"] > fd_slack:
    problems.append(f"node fds after every client left: {after['node_fds']}, idle before: {idle['node_fds']}")
if after.get("node_participants"):
    problems.append(f"the node still counts {after['node_participants']} participants after every client left")
if load_status != 0:
    problems.append(f"chorus-load exited {load_status} (join failures: {result['join_failures']}, "
                    f"failed rejoins: {(result.get('churn') or {}).get('failed_joins')})")
if result["loss"] > max_loss:
    problems.append(f"loss {result['loss']:.2g} > {max_loss:g}")
churn = result.get("churn") or {}
if result["expected"] == 0:
    print("soak: warning: no packet was expected (is CHURN_EVERY under 4x the 1 s guard?): "
          "loss checks nothing", file=sys.stderr)
if churn.get("forwarded_while_muted"):
    problems.append(f"{churn['forwarded_while_muted']} packets of muted speakers forwarded")
verdict["problems"] = problems
verdict["verdict"] = "FAIL" if problems else "PASS"
with open(path, "a") as f:
    f.write(json.dumps(verdict) + "\n")

r, fd = verdict.get("rss_kb", {}), verdict.get("fds", {})
print(f"soak: {result['participants']} participants, {result['duration_s']:g} s window, churn: "
      f"{churn.get('joins')} rejoins, {churn.get('leaves')} leaves, {churn.get('mutes')} mutes, "
      f"{churn.get('unmutes')} unmutes, {churn.get('failed_joins')} failed joins; "
      f"loss {result['loss']:.2g} ({result['lost']} of {result['expected']} expected), "
      f"p99 {result['latency_ms']['p99']} ms, max {result['latency_ms']['max']} ms")
if r:
    print(f"soak: node RSS (KiB) idle {r['idle']}, after warm-up {r['start']:g}, end {r['end']:g} "
          f"({r['growth']:+g}, {r['growth_pct']:+.1f} %, slope {r['slope_kb_per_min']:+g} KiB/min), "
          f"max {r['max']}, after all left {r['after']}")
    print(f"soak: node fds idle {fd['idle']}, after warm-up {fd['start']:g}, end {fd['end']:g}, "
          f"min {fd['min']}, max {fd['max']}, after all left {fd['after']}; after all left the node "
          f"counts {after.get('node_participants')} participants in {after.get('node_rooms')} rooms")
print(f"soak: {verdict['verdict']}" + "".join(f"\n  - {p}" for p in problems))
sys.exit(1 if problems else 0)
PY
