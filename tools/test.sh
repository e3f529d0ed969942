#!/usr/bin/env bash
# Runs every test Chorus has, from a clean checkout. `.ci/run` calls exactly this.
#
#   tools/test.sh
#
# Installs what the tests need when it is missing: cargo-fuzz (crates.io), Debian's
# libssl-dev, redis-server, chromium, coturn and GStreamer (tools/native-test/run.sh), and the browser
# test's npm packages (tools/browser-test/run.sh).
# Env: CHORUS_FUZZ_SECONDS  seconds each fuzz target runs (default 10; 0 skips running)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Each step prints the wall time since the start, so a slow run shows where it went.
step() { printf '\n==> [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }
trap 'printf "\n==> [%dm%02ds] tools/test.sh ended (status %d)\n" $((SECONDS / 60)) $((SECONDS % 60)) $?' EXIT
# tests/hostile_tcp.rs holds ~6,000 sockets at once (its attack and the node's side).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# srtp's OpenSSL interop test (tests/openssl_client.rs) links the system libssl.
if ! pkg-config --exists openssl 2>/dev/null; then
  step "installing libssl-dev and pkg-config (the OpenSSL DTLS interop test)"
  apt-get -o DPkg::Lock::Timeout=600 update
  apt-get -o DPkg::Lock::Timeout=600 install -y libssl-dev pkg-config
fi

# The cluster tests (cluster/tests, tests/cluster.rs) start real redis-servers.
if ! command -v redis-server >/dev/null 2>&1; then
  step "installing redis-server (the cluster's directory, for the cluster tests)"
  apt-get -o DPkg::Lock::Timeout=600 update
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y redis-server
  # Debian starts one on 6379 as a service: the tests start their own.
  (service redis-server stop || systemctl stop redis-server || true) >/dev/null 2>&1
fi

step "format"
cargo fmt --all -- --check

step "clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "docs (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

step "unit, engine simulation and signaling tests"
# One debug build of every binary and test: with --tests, the dependencies get the
# features the tests unify (dev-dependencies included), so `cargo test` and the steps
# below that run target/debug's binaries reuse it instead of building a second variant
# (`-p chorus-signaling` alone resolves other features and rebuilt ~100 crates). The
# cluster failure test runs target/debug/chorus as processes.
cargo build --workspace --locked --bins --tests
cargo test --workspace --locked
# What the smoke and soak steps run (bench.sh and soak.sh would build their own).
export CHORUS_BIN="$PWD/target/debug/chorus" LOAD_BIN="$PWD/target/debug/chorus-load"

step "benchmarks compile (run them by hand: see BENCHMARKS.md)"
# --workspace everywhere in release too: one feature set, one build (the release node
# of the video step below included).
cargo bench --workspace --locked --no-run

step "no allocation per forwarded copy (criterion forward_allocs at N = 1 and 100 fails otherwise)"
cargo bench --workspace --locked --bench forward_allocs -- 1 100

step "fuzz targets: build, then ${CHORUS_FUZZ_SECONDS:-10}s each (stable toolchain, no sanitizer)"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
(
  cd fuzz
  cargo fuzz build -s none
  for target in $(cargo fuzz list); do
    if [ "${CHORUS_FUZZ_SECONDS:-10}" -gt 0 ]; then
      # A scratch corpus: the committed seeds stay as they are.
      scratch="$(mktemp -d)"
      cargo fuzz run -s none "$target" "$scratch" "corpus/$target" -- \
        -max_total_time="${CHORUS_FUZZ_SECONDS:-10}" -print_final_stats=0 2>&1 | tail -n 2
      rm -rf "$scratch"
    fi
  done
)

step "load smoke: chorus-load (str0m clients, real UDP) against a 2-shard node"
PROFILE=debug OUT=target/bench/smoke.jsonl SHARDS=2 tools/load/bench.sh quick | python3 tools/load/check.py

step "load smoke over ICE-TCP: the same clients reaching the node over TCP only (RFC 4571 frames)"
PROFILE=debug OUT=target/bench/smoke-tcp.jsonl SHARDS=2 tools/load/bench.sh tcp-quick | python3 tools/load/check.py

step "load smoke with video: two VP8 simulcast cameras per room, every participant's video slots subscribed; over UDP, then over ICE-TCP"
PROFILE=debug OUT=target/bench/smoke-video.jsonl SHARDS=2 tools/load/bench.sh video-quick | python3 tools/load/check.py
PROFILE=debug OUT=target/bench/smoke-video-tcp.jsonl SHARDS=2 tools/load/bench.sh video-tcp-quick | python3 tools/load/check.py

step "signaling smoke: 200 WebSocket clients join and send 1,000 pings and mutes a second (no media); RSS per participant bounded"
PROFILE=debug OUT=target/bench/signaling-smoke.jsonl SHARDS=2 tools/load/bench.sh signaling-quick | MAX_RSS_KB_PER_PARTICIPANT=100 python3 tools/load/check.py

step "soak, short: 60 s of chorus-load churn (rejoins, mutes, speakers); node RSS and fds stay flat"
PROFILE=debug OUT=target/bench/soak-ci.jsonl bash tools/load/soak.sh 60s

step "browser: three headless Chromium clients through the demo page, 1 shard; three more relayed through a real coturn (TURN REST credentials); one whose UDP is blocked (network namespace) over ICE-TCP"
CHORUS_GAME_VOICE=0 CHORUS_ARGS="--shards 1" bash tools/browser-test/run.sh

step "browser: the same with 2 shards (a room spanning shards), and game voice (proximity, priority, whisper, spam guard: 4 pages + a tone page)"
CHORUS_TURN=0 CHORUS_ICE_TCP=0 CHORUS_ARGS="--shards 2" bash tools/browser-test/run.sh

step "browser: peer to peer (issue 13): two pages talk directly (the node gets no media), a third moves the room to the node and its leaving moves it back, both without an audible gap; join-to-first-audio in both modes"
CHORUS_ARGS="--shards 2" bash tools/browser-test/run.sh p2p.test.mjs

step "browser: a cluster (a redis-server, three nodes): pages joined at different nodes of a raid room hear each other, a join at the wrong node of a guild room follows its redirect, and the pages of a node killed with SIGKILL rejoin at another node (alternates) and hear the room again"
bash tools/browser-test/run.sh cluster.test.mjs

step "browser: video (release build): two simulcast cameras and a screen share in three pages, quality switches, E2EE transforms, a subscriber behind a 400 kbit/s then 5 % lossy link (network namespace, tc, nftables)"
# With --benches, the dev-dependencies' features are unified as in `cargo bench
# --workspace` above, so only the binary itself is compiled (without it, ~80 crates were).
cargo build --workspace --locked --release --bin chorus --benches
CHORUS_BIN="$PWD/target/release/chorus" bash tools/browser-test/run.sh video.test.mjs

step "browser: 2 shards, the node holding DTLS to AES_CM_128_HMAC_SHA1_80 (Chorus seals the slot streams in that profile)"
CHORUS_GAME_VOICE=0 CHORUS_TURN=0 CHORUS_ICE_TCP=0 CHORUS_ARGS="--shards 2 --srtp-profiles AES_CM_128_HMAC_SHA1_80" bash tools/browser-test/run.sh

step "native clients: two GStreamer webrtcbin clients (Debian's GStreamer 1.22, RSA DTLS certificates) hear each other's tone, as webrtcbin offers by default (max-bundle, no a=ssrc) and with a=ssrc, max-compat and the MID extension"
bash tools/native-test/run.sh
bash tools/native-test/run.sh --wait-for-caps --bundle-policy max-compat --mid-extension
