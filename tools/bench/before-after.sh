#!/usr/bin/env bash
# Before/after, back to back: the load figures of issue 9 for two node binaries, each
# item run for "before" then "after" (fresh node per run) so the two sit next to each
# other in time, with the same load client for both. Summarise with
# tools/bench/summary.py OUTDIR.
#
#   BEFORE=/work/baseline/bin AFTER=/work/afterbin OUTDIR=target/bench/ba tools/bench/before-after.sh
#   ITEMS="standard small-room" ... tools/bench/before-after.sh     # a subset
#
# Env: BEFORE, AFTER (directories holding `chorus`), LOAD_BIN (default
#      $BEFORE/chorus-load: one load client for both), ITEMS (default: standard memory
#      big-silent latency250 small-room soak), STANDARD_SHARDS ("1 2"),
#      STANDARD_DURATION (60s), SOAK (120s), SMALL_RUNS (2), OUTDIR.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
: "${BEFORE:?}" "${AFTER:?}"
load_bin="${LOAD_BIN:-$BEFORE/chorus-load}"
outdir="${OUTDIR:-$repo/target/bench/before-after}"
mkdir -p "$outdir"
items="${ITEMS:-standard memory big-silent latency250 small-room soak}"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$outdir/log.txt" >&2; }

for item in $items; do
  for side in before after; do
    if [ "$side" = before ]; then dir="$BEFORE"; else dir="$AFTER"; fi
    log "$item $side ($dir/chorus)"
    common=(env CHORUS_BIN="$dir/chorus" LOAD_BIN="$load_bin" LABEL="$side" OUT="$outdir/load.jsonl")
    case "$item" in
      standard)   "${common[@]}" SHARDS="${STANDARD_SHARDS:-1 2}" DURATION="${STANDARD_DURATION:-60s}" "$repo/tools/load/bench.sh" standard ;;
      memory)     "${common[@]}" "$repo/tools/load/bench.sh" memory ;;
      big-silent) "${common[@]}" "$repo/tools/load/bench.sh" big-silent ;;
      latency250) "${common[@]}" SIZES=250 "$repo/tools/load/bench.sh" sweep ;;
      small-room) CHORUS_BIN="$dir/chorus" LABEL="$side" RUNS="${SMALL_RUNS:-2}" OUT="$outdir/small-room.jsonl" "$here/small-room.sh" ;;
      soak)       CHORUS_BIN="$dir/chorus" LOAD_BIN="$load_bin" OUT="$outdir/soak-$side.jsonl" "$here/soak-bin.sh" "${SOAK:-120s}" ;;
      *) log "unknown item $item"; continue ;;
    esac >>"$outdir/stdout.txt" 2>>"$outdir/stderr.txt"
    log "$item $side: exit $?"
  done
done
log done
