#!/usr/bin/env bash
# tools/load/soak.sh against given binaries instead of this tree's build (a before/after
# comparison): runs a copy of soak.sh in a scratch directory whose target/release holds
# links to CHORUS_BIN and LOAD_BIN, with `cargo` shimmed to do nothing.
#
#   CHORUS_BIN=/work/baseline/bin/chorus LOAD_BIN=/work/baseline/bin/chorus-load \
#     OUT=target/bench/soak-before.jsonl tools/bench/soak-bin.sh 120s
#
# Every other soak.sh variable (SHARDS, ROOMS, CHURN_EVERY, ...) passes through; OUT is
# made absolute.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
: "${CHORUS_BIN:?CHORUS_BIN is required}" "${LOAD_BIN:?LOAD_BIN is required}"
out="${OUT:-$repo/target/bench/soak-bin.jsonl}"
case "$out" in /*) ;; *) out="$repo/$out" ;; esac
mkdir -p "$(dirname "$out")"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/tools/load" "$scratch/target/release" "$scratch/shim"
cp "$repo/tools/load/soak.sh" "$scratch/tools/load/soak.sh"
ln -s "$(readlink -f "$CHORUS_BIN")" "$scratch/target/release/chorus"
ln -s "$(readlink -f "$LOAD_BIN")" "$scratch/target/release/chorus-load"
printf '#!/bin/sh\nexit 0\n' >"$scratch/shim/cargo"; chmod +x "$scratch/shim/cargo"
PATH="$scratch/shim:$PATH" OUT="$out" PROFILE=release bash "$scratch/tools/load/soak.sh" "$@"
