#!/usr/bin/env bash
# The machine's floor under the node's per-datagram figures: chorus-floor's null
# forwarder (Chorus's socket layer, mio, recvmmsg/sendmmsg, one copy per listener, no
# media work) moving the datagrams of the standard load or of the small room. Its CPU
# per datagram sent is what any forwarder pays on this machine before doing anything
# with the media. One JSON line per run, appended to $OUT.
#
#   tools/bench/floor.sh standard      # 50 rooms × 10, 3 speakers, loopback; 1 and 2 threads
#   tools/bench/floor.sh small-room    # 1 room of 6, all speaking; forwarder alone in its
#                                      # own network namespace, clients in another (root)
#
# Env: THREADS (forwarder threads; standard: "1 2", small-room: "1 2"), CLIENT_THREADS
#      (standard 2, small-room 1: one network thread, as Chromium's), WARMUP (4 s),
#      WINDOW (20 s), OUT (target/bench/floor.jsonl), LABEL, FLOOR_BIN (built if unset).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
# shellcheck source=veth-pair.sh
. "$here/veth-pair.sh"

mode="${1:-standard}"
out="${OUT:-target/bench/floor.jsonl}"
warmup="${WARMUP:-4}"; window="${WINDOW:-20}"
mkdir -p "$(dirname "$out")"
if [ -z "${FLOOR_BIN:-}" ]; then
  cargo build --release --locked -q -p chorus-benches --bin chorus-floor
  FLOOR_BIN="$repo/target/release/chorus-floor"
fi
seconds=$(( warmup + window + 3 ))

# Whatever way the script ends (clients failing included), the forwarder and the
# namespaces go with it.
pid=""; fwd=""; ns_node=""; ns_cli=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  [ -z "$fwd" ] || rm -f "$fwd"
  [ -z "$ns_node" ] || ip netns del "$ns_node" 2>/dev/null || true
  [ -z "$ns_cli" ] || ip netns del "$ns_cli" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

emit() { # forwarder-json clients-json threads
  local label=""; [ -n "${LABEL:-}" ] && label="\"label\":\"$LABEL\","
  echo "{${label}\"mode\":\"$mode\",\"forwarder\":$1,\"clients\":$2}" | tee -a "$out"
}

case "$mode" in
  standard)
    for t in ${THREADS:-1 2}; do
      fwd="$(mktemp)"
      "$FLOOR_BIN" forward --bind 127.0.0.1:19000 --threads "$t" \
        --warmup "$warmup" --window "$window" >"$fwd" &
      pid=$!
      sleep 0.3
      cli="$("$FLOOR_BIN" clients --node 127.0.0.1:19000 --rooms 50 --per-room 10 \
        --speakers 3 --threads "${CLIENT_THREADS:-2}" --seconds "$seconds")"
      wait "$pid"; pid=""
      emit "$(cat "$fwd")" "$cli"
      rm -f "$fwd"; fwd=""
    done ;;
  small-room)
    ns_node="chfl-node-$$"; ns_cli="chfl-cli-$$"
    sub=$(( $$ % 250 + 1 ))
    ip_node="10.232.$sub.1"; ip_cli="10.232.$sub.2"
    # As small-room.sh sets it up (tools/bench/veth-pair.sh).
    veth_pair "$ns_node" "$ns_cli" "$ip_node" "$ip_cli"
    for t in ${THREADS:-1 2}; do
      fwd="$(mktemp)"
      ip netns exec "$ns_node" "$FLOOR_BIN" forward --bind "$ip_node:19000" --threads "$t" \
        --warmup "$warmup" --window "$window" >"$fwd" &
      pid=$!
      sleep 0.3
      cli="$(ip netns exec "$ns_cli" "$FLOOR_BIN" clients --node "$ip_node:19000" \
        --bind "$ip_cli" --rooms 1 --per-room "${PAGES:-6}" --speakers "${PAGES:-6}" \
        --threads "${CLIENT_THREADS:-1}" --seconds "$seconds")"
      wait "$pid"; pid=""
      emit "$(cat "$fwd")" "$cli"
      rm -f "$fwd"; fwd=""
    done ;;
  *) echo "floor.sh: standard or small-room" >&2; exit 2 ;;
esac
