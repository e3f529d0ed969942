#!/usr/bin/env bash
# Real-browser end-to-end test of a Chorus node (see call.test.mjs).
#
#   bash tools/browser-test/run.sh [TEST_FILE...]    (default: call.test.mjs)
#
# Env: CHORUS_BIN  the chorus binary (default: <repo>/target/debug/chorus)
#      CHORUS_ARGS extra arguments for `chorus serve` (e.g. "--shards 2"); the test
#                  adds --dev, --http, --udp, --control (a socket in a fresh temp dir)
#                  and --quality-interval 1 itself
# Installs what is missing: Debian's chromium, coturn, redis-server, iproute2 and nftables (as root) and the npm
# packages (npm ci, playwright-core only: it drives the system Chromium and never
# downloads a browser).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

if [ ! -x /usr/bin/chromium ]; then
  echo "run.sh: installing chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Waits for the dpkg/apt locks if another install is running.
  apt-get -o DPkg::Lock::Timeout=600 update
  apt-get -o DPkg::Lock::Timeout=600 install -y chromium
fi

if ! command -v ip >/dev/null 2>&1; then
  echo "run.sh: installing iproute2 (the ICE-TCP test's network namespace)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update
  apt-get -o DPkg::Lock::Timeout=600 install -y iproute2
fi

if ! command -v nft >/dev/null 2>&1; then
  echo "run.sh: installing nftables (the video test's lossy link)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update
  apt-get -o DPkg::Lock::Timeout=600 install -y nftables
fi

if ! command -v turnserver >/dev/null 2>&1; then
  echo "run.sh: installing coturn" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update
  apt-get -o DPkg::Lock::Timeout=600 install -y coturn
fi

if ! command -v redis-server >/dev/null 2>&1; then
  echo "run.sh: installing redis-server (the cluster test's directory)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update
  apt-get -o DPkg::Lock::Timeout=600 install -y redis-server
  # Debian starts one on 6379 as a service: the test starts its own.
  (service redis-server stop || systemctl stop redis-server || true) >/dev/null 2>&1
fi

cd "$here"
if [ ! -d node_modules ]; then
  echo "run.sh: npm ci" >&2
  npm ci --no-audit --no-fund
fi

export CHORUS_BIN="${CHORUS_BIN:-$repo/target/debug/chorus}"
export CHORUS_ARGS="${CHORUS_ARGS:-}"
if [ ! -x "$CHORUS_BIN" ]; then
  echo "run.sh: no chorus binary at $CHORUS_BIN (build it: cargo build -p chorus-signaling)" >&2
  exit 1
fi

# The test files to run: call.test.mjs unless named (e.g. video.test.mjs).
if [ "$#" -eq 0 ]; then set -- call.test.mjs; fi
exec node --test "$@"
