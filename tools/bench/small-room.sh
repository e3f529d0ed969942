#!/usr/bin/env bash
# The small real room (issue 9): 6 headless Chromium pages in one room, each publishing
# the fake microphone and hearing the other 5, against a release node that runs alone in
# its own network namespace. Reports node CPU time (utime + stime over a 30 s window)
# per UDP datagram the node sent (Udp OutDatagrams of the node's namespace), one JSON
# line per run, appended to $OUT.
#
#   tools/bench/small-room.sh                         # target/release/chorus, 2 shards
#   CHORUS_BIN=/work/baseline/bin/chorus tools/bench/small-room.sh
#   RUNS=3 tools/bench/small-room.sh                  # three fresh nodes in a row
#
# Env: CHORUS_BIN (default target/release/chorus; built if it is the default), SHARDS (2),
#      PAGES (6), WINDOW (30 s), WARMUP (5 s), RUNS (1), OUT (target/bench/small-room.jsonl),
#      LABEL (added to each line), CHROMIUM (/usr/bin/chromium).
# Network: two namespaces made here (chsr-node-$$, chsr-cli-$$) joined by a veth pair
# with 10.231.<n>.1/30 (node) and .2 (Chromium); nothing is added to the host's own
# namespace, and both are deleted on exit. Needs root (ip netns).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
# shellcheck source=veth-pair.sh
. "$here/veth-pair.sh"

shards="${SHARDS:-2}"; runs="${RUNS:-1}"
out="${OUT:-target/bench/small-room.jsonl}"
mkdir -p "$(dirname "$out")"
if [ -z "${CHORUS_BIN:-}" ]; then
  cargo build --release --locked -q -p chorus-signaling
  CHORUS_BIN="$repo/target/release/chorus"
fi
CHORUS_BIN="$(readlink -f "$CHORUS_BIN")"
[ -x /usr/bin/chromium ] || { echo "small-room.sh: apt-get install -y chromium" >&2; exit 1; }
[ -d tools/browser-test/node_modules/playwright-core ] || (cd tools/browser-test && npm ci --no-audit --no-fund)

ns_node="chsr-node-$$"; ns_cli="chsr-cli-$$"
sub=$(( $$ % 250 + 1 ))
ip_node="10.231.$sub.1"; ip_cli="10.231.$sub.2"
node_pid=""
cleanup() {
  if [ -n "$node_pid" ]; then kill "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; fi
  ip netns del "$ns_node" 2>/dev/null || true
  ip netns del "$ns_cli" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

veth_pair "$ns_node" "$ns_cli" "$ip_node" "$ip_cli"

node_extra=()
if "$CHORUS_BIN" serve --help 2>/dev/null | grep -q -- '--control'; then node_extra+=(--control none); fi

for run in $(seq "$runs"); do
  http=18080; udp=18082
  log="$(mktemp)"
  ip netns exec "$ns_node" "$CHORUS_BIN" serve --dev --shards "$shards" \
    --http "$ip_node:$http" --udp "$ip_node:$udp" --log warn "${node_extra[@]}" 2>"$log" &
  node_pid=$!
  for _ in $(seq 100); do
    ip netns exec "$ns_cli" curl -fs "http://$ip_node:$http/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  # The node is the only process in its namespace: check that, then run the pages.
  others="$(ip netns pids "$ns_node" | grep -vx "$node_pid" || true)"
  [ -z "$others" ] || echo "small-room.sh: other processes in $ns_node: $others" >&2
  line="$(ip netns exec "$ns_cli" env BASE="http://$ip_node:$http" NODE_PID="$node_pid" \
    PAGES="${PAGES:-6}" WINDOW="${WINDOW:-30}" WARMUP="${WARMUP:-5}" \
    CHROMIUM="${CHROMIUM:-/usr/bin/chromium}" node "$here/small-room.mjs")" || {
      echo "small-room.sh: run $run failed; node log:" >&2; tail -n 20 "$log" >&2; rm -f "$log"; exit 1; }
  # Cross-check from the namespace itself (the window's figures come from the .mjs).
  snmp_out="$(ip netns exec "$ns_node" awk '/^Udp:/ {n++; if (n==2) print $5}' /proc/net/snmp)"
  kill "$node_pid"; wait "$node_pid" 2>/dev/null || true; node_pid=""
  rm -f "$log"
  label=""; [ -n "${LABEL:-}" ] && label="\"label\":\"$LABEL\","
  line="{${label}\"bin\":\"$CHORUS_BIN\",\"shards\":$shards,\"run\":$run,\"ns_udp_out_total\":$snmp_out,${line#\{}"
  echo "$line" | tee -a "$out"
done
