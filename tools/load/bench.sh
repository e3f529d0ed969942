#!/usr/bin/env bash
# Runs chorus-load against fresh release nodes and appends one JSON line per run to
# $OUT (default target/bench/load.jsonl), tagged with the node's shard count. The
# figures in BENCHMARKS.md come from this script.
#
#   tools/load/bench.sh standard     # 50 rooms x 10 participants x 3 speakers, 60 s, shards 1 then 2
#   tools/load/bench.sh big          # 5,000 participants, 5% speaking, 2 shards
#   tools/load/bench.sh big-silent   # 5,000 connected participants, nobody speaking
#   tools/load/bench.sh sweep        # participants 100..1000 (SIZES), 2 shards (for the plot)
#   tools/load/bench.sh quick        # 2 rooms x 4, 5 s: a smoke test (used by tools/test.sh)
#   tools/load/bench.sh memory       # 1,000 silent participants: memory per participant
#   tools/load/bench.sh signaling    # --signaling-only: 1,000 then 5,000 WebSocket clients in
#                                    # rooms of 10, 10,000 messages/s (10 % mute toggles)
#   tools/load/bench.sh signaling-quick  # 200 clients, 5 s, 1,000 messages/s: a smoke test
#   tools/load/bench.sh proximity    # one raid room of 1,000 (1 audio slot), 30 speakers: plain,
#                                    # then proximity (radius 30, world 90, positions at 20 Hz)
#   tools/load/bench.sh tcp          # 50 rooms x 10 x 3 speakers, clients over UDP then ICE-TCP
#   tools/load/bench.sh proximity-batch  # the same 1,000 silent, without then with positions:
#                                    # the node's CPU per position batch
#   tools/load/bench.sh video        # the audio standard load, then the video standard load
#                                    # (10 rooms x 6, 2 cameras each, slots at medium and high)
#                                    # without and with 2 speakers: CPU per video packet
#   tools/load/bench.sh video-quick  # 2 rooms x 4, 2 cameras, 5 s: a smoke test
#   tools/load/bench.sh video-tcp-quick  # the same over ICE-TCP
#
# Env: DURATION (default 60s), SHARDS (override the shard list), SIZES (sweep), OUT,
#      CHORUS_BIN / LOAD_BIN (run these binaries instead of building target/$PROFILE's;
#      e.g. a baseline build for a before/after comparison), LABEL (added to each line),
#      TAG (recorded as "build" in each line), and for the signaling modes CLIENTS (the
#      sizes), RATE (messages/s), MUTE_SHARE, RAMP (joins/s).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
mode="${1:-standard}"
out="${OUT:-target/bench/load.jsonl}"
mkdir -p "$(dirname "$out")"
profile="${PROFILE:-release}"
bin="target/$profile"
chorus_bin="${CHORUS_BIN:-$bin/chorus}"
load_bin="${LOAD_BIN:-$bin/chorus-load}"
if [ -z "${CHORUS_BIN:-}" ] || [ -z "${LOAD_BIN:-}" ]; then
  if [ "$profile" = release ]; then
    cargo build --release --locked -q -p chorus-signaling -p chorus-load
  else
    cargo build --locked -q -p chorus-signaling -p chorus-load
  fi
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# All clients share 127.0.0.1: lift the per-IP join rate on nodes that have one.
node_extra=()
if "$chorus_bin" serve --help 2>/dev/null | grep -q -- '--join-rate-per-ip'; then
  node_extra+=(--join-rate-per-ip 0)
fi
if "$chorus_bin" serve --help 2>/dev/null | grep -q -- '--tcp-connections-per-ip'; then
  node_extra+=(--tcp-connections-per-ip 0)
fi
# No control socket: the default path (/tmp/chorus/control.sock) is shared with any
# other node on the machine, and a node that cannot take it does not start.
# The proximity modes create their rooms through a control socket of their own.
control_dir=""
if [[ "$mode" == proximity* ]]; then
  control_dir="$(mktemp -d)"
  trap 'rm -rf "$control_dir"' EXIT
  node_extra+=(--control "$control_dir/control.sock")
elif "$chorus_bin" serve --help 2>/dev/null | grep -q -- '--control '; then
  node_extra+=(--control none)
fi
case "$mode" in
  signaling*)
    # Lift the per-socket message rate too (the load stays far below it anyway).
    node_extra+=(--client-message-rate 100000) ;;
esac

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run SHARDS ROOMS PER_ROOM SPEAKERS DURATION [extra chorus-load args...]
run() {
  local shards="$1" rooms="$2" per="$3" speakers="$4" duration="$5"; shift 5
  local http udp node_log
  http="$(free_port)"; udp="$(free_port)"
  node_log="$(mktemp)"
  "$chorus_bin" serve --dev --shards "$shards" --http "127.0.0.1:$http" --udp "127.0.0.1:$udp" \
    --max-participants 100000 --max-connections-per-ip 0 --log warn "${node_extra[@]}" 2>"$node_log" &
  local pid=$!
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$http/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  local line status=0
  local control_args=()
  if [ -n "$control_dir" ]; then
    for _ in $(seq 50); do [ -S "$control_dir/control.sock" ] && break; sleep 0.1; done
    control_args=(--control "$control_dir/control.sock")
  fi
  line="$("$load_bin" "${control_args[@]}" --url "http://127.0.0.1:$http" --rooms "$rooms" --per-room "$per" \
    --speakers "$speakers" --duration "$duration" --node-pid "$pid" "$@")" || status=$?
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ -z "$line" ]; then
    echo "bench.sh: chorus-load failed ($status) without a summary; node log:" >&2
    tail -n 20 "$node_log" >&2
    rm -f "$node_log"
    return 1
  fi
  if [ "$status" -ne 0 ]; then
    # An overloaded run (joins failed) still says where the limit is: keep it, marked.
    echo "bench.sh: chorus-load exited $status (see join_failures); recorded" >&2
  fi
  rm -f "$node_log"
  local label=""
  [ -n "${LABEL:-}" ] && label="\"label\":\"$LABEL\","
  line="{${label}\"shards\":$shards,\"mode\":\"$mode\",\"exit_status\":$status,${TAG:+\"build\":\"$TAG\",}${line#\{}"
  echo "$line" | tee -a "$out"
}

case "$mode" in
  quick)
    run "${SHARDS:-2}" 2 4 2 "${DURATION:-5s}" ;;
  memory)
    for s in ${SHARDS:-2}; do run "$s" 20 50 0 "${DURATION:-5s}" --ramp 250; done ;;
  standard)
    for s in ${SHARDS:-1 2}; do run "$s" 50 10 3 "${DURATION:-60s}" --ramp 200; done ;;
  big)
    # 5,000 participants, 5% speaking: 250 rooms of 20, one speaker each.
    for s in ${SHARDS:-2}; do run "$s" 250 20 1 "${DURATION:-30s}" --ramp 250; done ;;
  big-silent)
    # 5,000 connected participants, nobody speaking: memory and fixed cost.
    for s in ${SHARDS:-2}; do run "$s" 100 50 0 "${DURATION:-30s}" --ramp 250; done ;;
  sweep)
    for p in ${SIZES:-100 250 500 1000}; do
      for s in ${SHARDS:-2}; do run "$s" $((p / 10)) 10 3 "${DURATION:-20s}" --ramp 250; done
    done ;;
  signaling)
    # WebSocket clients only (no offer, no media), rooms of 10.
    for n in ${CLIENTS:-1000 5000}; do
      for s in ${SHARDS:-2}; do
        run "$s" $((n / 10)) 10 0 "${DURATION:-30s}" --signaling-only --ramp "${RAMP:-250}" \
          --message-rate "${RATE:-10000}" --mute-share "${MUTE_SHARE:-0.1}"
      done
    done ;;
  proximity)
    # The same raid room of 1,000 (one slot each: 50k copies/s, what this machine can
    # take with the clients on it), plain then proximity, each on a fresh node.
    for s in ${SHARDS:-2}; do
      LABEL=plain run "$s" 1 1000 30 "${DURATION:-30s}" --ramp 250 --audio-slots 1
      LABEL=proximity run "$s" 1 1000 30 "${DURATION:-30s}" --ramp 250 --audio-slots 1 \
        --proximity "${RADIUS:-30}" --world "${WORLD:-90}" --positions-hz "${HZ:-20}"
    done ;;
  proximity-batch)
    # What a batch costs the node, all in (control socket, JSON, engine): 1,000 connected
    # and silent, without then with positions at 20 Hz; the CPU difference per batch.
    for s in ${SHARDS:-2}; do
      LABEL=silent run "$s" 1 1000 0 "${DURATION:-30s}" --ramp 250 --audio-slots 1
      LABEL=silent-positions run "$s" 1 1000 0 "${DURATION:-30s}" --ramp 250 --audio-slots 1 \
        --proximity "${RADIUS:-30}" --world "${WORLD:-90}" --positions-hz "${HZ:-20}"
    done ;;
  tcp)
    # The standard load's shape, clients over UDP then over ICE-TCP, each on a fresh node.
    for s in ${SHARDS:-2}; do
      LABEL=udp run "$s" 50 10 3 "${DURATION:-30s}" --ramp 200
      LABEL=tcp run "$s" 50 10 3 "${DURATION:-30s}" --ramp 200 --transport tcp
    done ;;
  tcp-quick)
    run "${SHARDS:-2}" 2 4 2 "${DURATION:-5s}" --transport tcp ;;
  video)
    # One node per run, same DURATION: the ratio of the video figure to the audio one
    # comes from one invocation. The settle time lets the bandwidth estimates grow to
    # the layers asked for (they start at 800 kbit/s).
    for s in ${SHARDS:-1 2}; do
      LABEL=audio run "$s" 50 10 3 "${DURATION:-30s}" --ramp 200
      LABEL=video run "$s" 10 6 0 "${DURATION:-30s}" --cameras 2 --settle "${SETTLE:-10s}"
      LABEL=video+voice run "$s" 10 6 2 "${DURATION:-30s}" --cameras 2 --settle "${SETTLE:-10s}"
    done ;;
  video-quick)
    run "${SHARDS:-2}" 2 4 1 "${DURATION:-5s}" --cameras 2 --settle 3s ;;
  video-tcp-quick)
    run "${SHARDS:-2}" 2 4 1 "${DURATION:-5s}" --cameras 2 --settle 3s --transport tcp ;;
  proximity-quick)
    run "${SHARDS:-2}" 1 20 4 "${DURATION:-5s}" --audio-slots 2 --proximity 30 --world 60 ;;
  signaling-quick)
    run "${SHARDS:-2}" 20 10 0 "${DURATION:-5s}" --signaling-only --ramp "${RAMP:-200}" \
      --message-rate "${RATE:-1000}" --mute-share "${MUTE_SHARE:-0.1}" ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
esac
