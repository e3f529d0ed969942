#!/usr/bin/env bash
# Rooms across nodes (issue 14): chorus-load against one node alone and against two
# nodes of a cluster (a redis-server of its own, QUIC relay on loopback), in ONE
# invocation, so that the figures are ratios of runs on the same machine minutes apart.
# Appends one JSON line per run to $OUT (default target/bench/cluster.jsonl), then one
# line of derived figures ("derived": true).
#
#   tools/load/cluster-bench.sh            # standard: ROOMS x PER_ROOM, SPEAKERS, DURATION;
#                                          # runs one, spread, speakers-on-a, one (RUNS)
#   tools/load/cluster-bench.sh quick      # 2 rooms x 4, 2 speakers, 5 s, spread only
#
# The runs (each on fresh nodes and a fresh redis-server):
#   one           one node without --redis: every listener on the speaker's node
#   spread        two nodes; each room's participants dealt round-robin over them
#                 (positions 0, 2, 4, ... at A, 1, 3, 5, ... at B: 5 + 5 of 10, the
#                 speakers at A, B, A): every speaker packet relayed once, to the other node
#   speakers-on-a two nodes; the first SPEAKERS positions of each room at A, the others
#                 at B (chorus-load --url A,A,A,B,B,...): B only receives relayed packets
#                 and fans them out to its listeners: the receiving node's cost
#
# Each node runs 1 shard pinned to a core of its own with taskset (PIN=0 to not pin):
# A (and the lone node) on CPU 0, B on CPU 1; chorus-load and redis-server are not
# pinned. Node CPU is user+sys from /proc/PID/stat: over the measurement window
# (chorus-load --node-pid, per node in "nodes") and over the whole run ("run": from
# before the first join to after chorus-load exited), with the relay counters from
# each node's /metrics (window: chorus-load; run: here) and, as root with nftables,
# the relay's UDP bytes on the wire (IP packets from each relay port, ACKs and
# stream frames included).
#
# Env: DURATION (30s), ROOMS (20), PER_ROOM (10), SPEAKERS (3), RAMP (100 joins/s),
#      MAX_OTHER_CPU (10: runs disturbed by other processes beyond this are left out),
#      RUNS ("one spread speakers-on-a one"), PIN (1), OUT, CHORUS_BIN / LOAD_BIN (run
#      these binaries instead of building target/release's), TAG (recorded as "build").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
mode="${1:-standard}"
out="${OUT:-target/bench/cluster.jsonl}"
mkdir -p "$(dirname "$out")"
chorus_bin="${CHORUS_BIN:-target/release/chorus}"
load_bin="${LOAD_BIN:-target/release/chorus-load}"
if [ -z "${CHORUS_BIN:-}" ] || [ -z "${LOAD_BIN:-}" ]; then
  cargo build --release --locked -q -p chorus-signaling -p chorus-load
fi
command -v redis-server >/dev/null || { echo "cluster-bench.sh: redis-server not found" >&2; exit 2; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

case "$mode" in
  standard)
    rooms="${ROOMS:-20}" per="${PER_ROOM:-10}" speakers="${SPEAKERS:-3}"
    duration="${DURATION:-30s}" runs="${RUNS:-one spread speakers-on-a one}" ;;
  quick)
    rooms="${ROOMS:-2}" per="${PER_ROOM:-4}" speakers="${SPEAKERS:-2}"
    duration="${DURATION:-5s}" runs="${RUNS:-spread}" ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
esac
ramp="${RAMP:-100}"
pin="${PIN:-1}"

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  nft delete table inet chorus_relay_bench 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket
while True:
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p))
    except OSError:
        continue
    print(p); break'
}
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
relay_counters() {  # URL -> "packets_out packets_in bytes_out bytes_in" (zeros without a relay)
  curl -fs "$1/metrics" | awk '
    $1 == "chorus_relay_packets_out_total" { po = $2 } $1 == "chorus_relay_packets_in_total" { pi = $2 }
    $1 == "chorus_relay_bytes_out_total" { bo = $2 } $1 == "chorus_relay_bytes_in_total" { bi = $2 }
    END { printf "%d %d %d %d\n", po, pi, bo, bi }'
}
wire_start() {  # RELAY_PORT... : an nftables counter of UDP packets from each relay port
  [ "$(id -u)" = 0 ] && command -v nft >/dev/null || return 0
  nft delete table inet chorus_relay_bench 2>/dev/null || true
  nft add table inet chorus_relay_bench || return 0
  nft add chain inet chorus_relay_bench out '{ type filter hook output priority 0; policy accept; }'
  for p in "$@"; do nft add rule inet chorus_relay_bench out udp sport "$p" counter; done
}
wire_read() {  # RELAY_PORT -> "packets bytes" from the rule of that port
  nft list table inet chorus_relay_bench 2>/dev/null |
    sed -n "s/.*udp sport $1 counter packets \([0-9]*\) bytes \([0-9]*\).*/\1 \2/p" | head -1
}

# start_node NAME CPU [cluster args...]: sets $NAME_pid, $NAME_url, $NAME_sock
start_node() {
  local name="$1" cpu="$2"; shift 2
  local http udp
  http="$(free_port)"; udp="$(free_port)"
  local pin_cmd=()
  [ "$pin" = 1 ] && pin_cmd=(taskset -c "$cpu")
  "${pin_cmd[@]}" "$chorus_bin" serve --dev --shards 1 --http "127.0.0.1:$http" --udp "127.0.0.1:$udp" \
    --control "$work/$name.sock" --max-participants 100000 --max-connections-per-ip 0 \
    --join-rate-per-ip 0 --tcp-connections-per-ip 0 --log warn "$@" 2>"$work/$name.log" &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$http/healthz" >/dev/null 2>&1 && [ -S "$work/$name.sock" ] && break
    sleep 0.1
  done
  printf -v "${name}_pid" %s "$pid"
  printf -v "${name}_url" %s "http://127.0.0.1:$http"
  printf -v "${name}_sock" %s "$work/$name.sock"
}

stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  nft delete table inet chorus_relay_bench 2>/dev/null || true
}

# run LABEL: one run on fresh processes; prints and appends its JSON line
run() {
  local label="$1" urls=() load_urls controls=() node_pids=() relay_ports=() redis_pid=""
  if [ "$label" = one ]; then
    start_node a 0
    urls=("$a_url"); controls=(--control "$a_sock"); node_pids=("$a_pid")
    load_urls="$a_url"
  else
    local rport
    rport="$(free_port)"
    redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
      --logfile "$work/redis.log" &
    redis_pid=$!
    pids+=("$redis_pid")
    for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
    local ra rb
    ra="$(free_port)"; rb="$(free_port)"
    relay_ports=("$ra" "$rb")
    start_node a 0 --redis "redis://127.0.0.1:$rport" --relay "127.0.0.1:$ra" --cluster-secret bench-secret
    start_node b 1 --redis "redis://127.0.0.1:$rport" --relay "127.0.0.1:$rb" --cluster-secret bench-secret
    urls=("$a_url" "$b_url"); controls=(--control "$a_sock" --control "$b_sock")
    node_pids=("$a_pid" "$b_pid")
    # Both nodes see each other (heartbeats every second) before any room is made.
    for _ in $(seq 50); do
      [ "$(curl -fs "$a_url/metrics" | awk '$1 == "chorus_relay_peers" { print $2 }')" = 1 ] &&
        [ "$(curl -fs "$b_url/metrics" | awk '$1 == "chorus_relay_peers" { print $2 }')" = 1 ] && break
      sleep 0.2
    done
    if [ "$label" = spread ]; then
      load_urls="$a_url,$b_url"
    else  # speakers-on-a: the first $speakers positions at A, the rest at B
      load_urls="$(python3 -c "import sys; s, p, a, b = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]; print(','.join([a] * s + [b] * (p - s)))" "$speakers" "$per" "$a_url" "$b_url")"
    fi
    wire_start "${relay_ports[@]}"
  fi
  local cpu0=() relay0=() redis0=""
  for p in "${node_pids[@]}"; do cpu0+=("$(cpu_ticks "$p")"); done
  for u in "${urls[@]}"; do relay0+=("$(relay_counters "$u")"); done
  [ -n "$redis_pid" ] && redis0="$(cpu_ticks "$redis_pid")"
  local line status=0
  line="$("$load_bin" --url "$load_urls" "${controls[@]}" --node-pid "$(IFS=,; echo "${node_pids[*]}")" \
    --rooms "$rooms" --per-room "$per" --speakers "$speakers" --duration "$duration" \
    --ramp "$ramp")" || status=$?
  local cpu1=() relay1=() wire=() redis1=""
  for p in "${node_pids[@]}"; do cpu1+=("$(cpu_ticks "$p")"); done
  for u in "${urls[@]}"; do relay1+=("$(relay_counters "$u")"); done
  [ -n "$redis_pid" ] && redis1="$(cpu_ticks "$redis_pid")"
  for p in "${relay_ports[@]}"; do wire+=("$(wire_read "$p")"); done
  stop_all
  if [ -z "$line" ]; then
    echo "cluster-bench.sh: chorus-load failed ($status) without a summary; node logs:" >&2
    tail -n 20 "$work"/*.log >&2
    return 1
  fi
  [ "$status" -ne 0 ] && echo "cluster-bench.sh: chorus-load exited $status; recorded" >&2
  # The whole run, as seen from outside chorus-load.
  local run_json="" i tck
  tck="$(getconf CLK_TCK)"
  for i in "${!node_pids[@]}"; do
    local po0 pi0 bo0 bi0 po1 pi1 bo1 bi1 wp wb w=""
    read -r po0 pi0 bo0 bi0 <<<"${relay0[$i]}"
    read -r po1 pi1 bo1 bi1 <<<"${relay1[$i]}"
    if [ -n "${wire[$i]:-}" ]; then
      read -r wp wb <<<"${wire[$i]}"
      w=",\"wire\":{\"udp_packets_out\":$wp,\"ip_bytes_out\":$wb}"
    fi
    run_json+="${run_json:+,}{\"cpu_s\":$(awk -v a="${cpu0[$i]}" -v b="${cpu1[$i]}" -v t="$tck" 'BEGIN { printf "%.3f", (b - a) / t }')"
    run_json+=",\"relay\":{\"packets_out\":$((po1 - po0)),\"packets_in\":$((pi1 - pi0)),\"bytes_out\":$((bo1 - bo0)),\"bytes_in\":$((bi1 - bi0))}$w}"
  done
  run_json="{\"nodes\":[$run_json]"
  if [ -n "$redis_pid" ]; then
    run_json+=",\"redis_cpu_s\":$(awk -v a="$redis0" -v b="$redis1" -v t="$tck" 'BEGIN { printf "%.3f", (b - a) / t }')"
  fi
  run_json+="}"
  line="{\"label\":\"$label\",\"mode\":\"$mode\",\"pinned\":$([ "$pin" = 1 ] && echo true || echo false),\"exit_status\":$status,${TAG:+\"build\":\"$TAG\",}\"run\":$run_json,${line#\{}"
  echo "$line" | tee -a "$out"
  lines+=("$line")
}

lines=()
for r in $runs; do
  case "$r" in
    one|spread|speakers-on-a) run "$r" ;;
    *) echo "unknown run $r" >&2; exit 2 ;;
  esac
done

# Derived figures from this invocation's lines; a run repeated (RUNS) gives each
# repetition's figure and their median. Runs during which other processes used more
# than MAX_OTHER_CPU % of a core (chorus-load's other_cpu_pct) are left out and listed.
printf '%s\n' "${lines[@]}" | MAX_OTHER_CPU="${MAX_OTHER_CPU:-10}" python3 -c '
import json, os, statistics, sys
every = [json.loads(l) for l in sys.stdin if l.strip()]
limit = float(os.environ["MAX_OTHER_CPU"])
runs = [r for r in every if (r.get("other_cpu_pct") or 0) <= limit]
disturbed = [r["label"] + "#" + str(i) for i, r in enumerate(every) if r not in runs]
if not runs:
    sys.exit("cluster-bench.sh: every run was disturbed (other_cpu_pct > MAX_OTHER_CPU)")
by = lambda label: [r for r in runs if r["label"] == label]
one, spread, asym = by("one"), by("spread"), by("speakers-on-a")
def us(r, pct):  # a CPU share of the window in microseconds
    return pct / 100 * r["duration_s"] * 1e6
def figure(values, digits=2):
    values = [round(v, digits) for v in values if v is not None]
    return {"runs": values, "median": round(statistics.median(values), digits)} if values else None
first = runs[0]
d = {"derived": True, "rooms": first["rooms"], "per_room": first["per_room"],
     "speakers": first["speakers"], "duration_s": first["duration_s"]}
if first.get("build"):
    d["build"] = first["build"]
d["loss"] = max(r["loss"] for r in runs)
d["other_cpu_pct"] = {r["label"] + "#" + str(i): r["other_cpu_pct"] for i, r in enumerate(every)}
d["left_out"] = disturbed
per_copy = statistics.median([r["cpu_us_per_packet"] for r in one]) if one else None
base_us = statistics.median([us(r, r["node_cpu_pct"]) for r in one]) if one else None
if one:
    d["one_node"] = {"cpu_pct": figure([r["node_cpu_pct"] for r in one], 3),
                     "cpu_us_per_copy": figure([r["cpu_us_per_packet"] for r in one], 3)}
if spread:
    hop = lambda q: figure([r["latency_cross_node_ms"][q] - r["latency_same_node_ms"][q] for r in spread], 3)
    d["hop_added_ms"] = {"p50": hop("p50"), "p99": hop("p99")}
    d["latency_same_node_ms"] = [r["latency_same_node_ms"] for r in spread]
    d["latency_cross_node_ms"] = [r["latency_cross_node_ms"] for r in spread]
    s = spread[0]
    rel = [r["relay"] for r in spread]
    d["relay"] = {
        "packets_out": [x["packets_out"] for x in rel],
        "expected_packets_out": [x["expected_packets_out"] for x in rel],
        "out_per_expected": [x["out_per_expected"] for x in rel],
        "speaker_packets_nominal": round(s["speakers"] * s["rooms"] * s["duration_s"] * 1000 / s["interval_ms"]),
        "payload_bytes_per_packet": [x["bytes_out_per_packet"] for x in rel],
        "payload_bytes_out_per_s": [round(x["bytes_out"] / s["duration_s"]) for x in rel],
    }
    wires = []
    for r in spread:
        w = [n.get("wire") for n in r["run"]["nodes"]]
        pk = sum(n["relay"]["packets_out"] for n in r["run"]["nodes"])
        if all(w) and pk:
            wires.append((sum(x["ip_bytes_out"] for x in w) / pk, sum(x["udp_packets_out"] for x in w) / pk))
    if wires:
        d["relay"]["wire_ip_bytes_per_relayed_packet"] = figure([w[0] for w in wires], 1)
        d["relay"]["wire_udp_packets_per_relayed_packet"] = figure([w[1] for w in wires], 3)
    d["spread"] = {"cpu_pct": [[n["cpu_pct"] for n in r["nodes"]] for r in spread],
                   "cpu_us_per_copy": figure([r["cpu_us_per_packet"] for r in spread], 3)}
    if one:
        d["relay_cpu_us_per_relayed_packet"] = figure(
            [(us(r, r["node_cpu_pct"]) - base_us) / r["relay"]["packets_out"] for r in spread])
        d["spread_over_one_cpu"] = figure([r["node_cpu_pct"] / statistics.median([o["node_cpu_pct"] for o in one]) for r in spread], 3)
if asym:
    rcv, snd, both = [], [], []
    for a in asym:
        na, nb = a["nodes"][0], a["nodes"][1]
        listeners = a["per_room"] - a["speakers"]
        pin, pout = nb["relay"]["packets_in"], na["relay"]["packets_out"]
        copies_b = pin * listeners  # each relayed packet to every listener at B
        # At A the speakers hear each other: speakers - 1 copies of each packet.
        copies_a = pout * (a["speakers"] - 1)
        r = {"receiving_cpu_pct": nb["cpu_pct"], "sending_cpu_pct": na["cpu_pct"], "packets": pin,
             "receiving_us_per_relayed_packet_with_fanout": us(a, nb["cpu_pct"]) / pin,
             "receiving_us_per_copy": us(a, nb["cpu_pct"]) / copies_b}
        if per_copy is not None:
            r["receiving_us_beyond_local_copies"] = (us(a, nb["cpu_pct"]) - copies_b * per_copy) / pin
            r["sending_us_beyond_local_copies"] = (us(a, na["cpu_pct"]) - copies_a * per_copy) / pout
            r["both_over_one_node_us"] = (us(a, a["node_cpu_pct"]) - base_us) / pout
        rcv.append(r)
    keys = [k for k in rcv[0] if k.endswith("_us") or "_us_" in k]
    d["speakers_on_a"] = {k: figure([r.get(k) for r in rcv], 3 if "per_copy" in k else 2) for k in keys}
    d["speakers_on_a"]["cpu_pct_a_b"] = [[r["sending_cpu_pct"], r["receiving_cpu_pct"]] for r in rcv]
    d["speakers_on_a"]["listeners_per_room_at_b"] = asym[0]["per_room"] - asym[0]["speakers"]
print(json.dumps(d))
' | tee -a "$out"
