#!/usr/bin/env bash
# Native-client end-to-end test of a Chorus node: two GStreamer webrtcbin clients join
# one room and must each hear the other's tone (see webrtcbin_client.py).
#
#   bash tools/native-test/run.sh [webrtcbin_client.py options, e.g. --mid-extension]
#
# Env: CHORUS_BIN  the chorus binary (default: <repo>/target/debug/chorus; built with
#                  `cargo build -p chorus-signaling --bin chorus` when it is missing)
#      CHORUS_ARGS extra arguments for `chorus serve`; the script adds --dev, --http
#                  (a free loopback port), --udp (a free port on MEDIA_IP), --control (a
#                  socket in a temp dir) and --drain-timeout 1
#      MEDIA_IP    the node's media address (default: this host's own IPv4 address, see
#                  below; 127.0.0.1 makes webrtcbin fall back to ICE-TCP)
#      TIMEOUT     the test's overall limit in seconds (default 60)
#      NODE_LOG    keep the node's whole log at this path (e.g. with CHORUS_ARGS="--log debug")
# Installs what is missing (as root, Debian packages only): GStreamer 1.22 with
# webrtcbin and libnice, its Python bindings and python3-websockets. Uses Debian's
# /usr/bin/python3 (a pyenv or venv python does not see python3-gi).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python=/usr/bin/python3

packages=(gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
          gstreamer1.0-nice gir1.2-gst-plugins-base-1.0 gir1.2-gst-plugins-bad-1.0
          python3-gi python3-websockets)
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "run.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Waits for the dpkg/apt locks if another install is running.
  apt-get -o DPkg::Lock::Timeout=600 update
  apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}"
fi
"$python" -c '
import gi, websockets
gi.require_version("Gst", "1.0"); gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0"); gi.require_version("GstRtp", "1.0")
from gi.repository import Gst, GstWebRTC, GstSdp, GstRtp
Gst.init(None)
for e in ("webrtcbin", "nicesrc", "dtlssrtpenc", "opusenc", "rtpopuspay", "rtpopusdepay"):
    assert Gst.ElementFactory.find(e), "GStreamer element %s is missing" % e
'

CHORUS_BIN="${CHORUS_BIN:-$repo/target/debug/chorus}"
CHORUS_ARGS="${CHORUS_ARGS:-}"
if [ ! -x "$CHORUS_BIN" ]; then
  echo "run.sh: no chorus binary at $CHORUS_BIN: cargo build -p chorus-signaling --bin chorus" >&2
  (cd "$repo" && cargo build -p chorus-signaling --bin chorus)
fi

# The media address. Not 127.0.0.1 by default: libnice binds its UDP host candidates
# to their interface (IP_UNICAST_IF) and gathers none on lo, so its UDP checks to a
# loopback node never arrive and ICE falls back to ICE-TCP after ~2 s. This host's own
# address is as local (the kernel delivers it via lo) and gets UDP. MEDIA_IP=127.0.0.1
# tests the ICE-TCP fallback instead.
media_ip="${MEDIA_IP:-$("$python" -c '
import socket
s = socket.socket(type=socket.SOCK_DGRAM)
try:
    s.connect(("198.51.100.1", 9))  # sends nothing: only picks the source address
    print(s.getsockname()[0])
except OSError:
    print("127.0.0.1")')}"

# Free ports (a race with other programs is possible but unlikely).
read -r http_port udp_port < <("$python" -c '
import socket, sys
t = socket.socket(); t.bind(("127.0.0.1", 0))
u = socket.socket(type=socket.SOCK_DGRAM); u.bind((sys.argv[1], 0))
print(t.getsockname()[1], u.getsockname()[1])' "$media_ip")

dir="$(mktemp -d /tmp/chorus-native-XXXXXX)"
node_log="$dir/node.log"
node_pid=""
stop_node() {
  if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
    kill -TERM "$node_pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$node_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$node_pid" 2>/dev/null || true
  fi
  if [ -n "${NODE_LOG:-}" ]; then cp "$node_log" "$NODE_LOG"; fi
  rm -rf "$dir"
}
trap stop_node EXIT
trap 'exit 130' INT TERM

# A short drain: SIGTERM should not keep the node 30 s.
# shellcheck disable=SC2086
"$CHORUS_BIN" serve --dev --http "127.0.0.1:$http_port" --udp "$media_ip:$udp_port" \
  --control "$dir/control.sock" --drain-timeout 1 $CHORUS_ARGS >"$node_log" 2>&1 &
node_pid=$!
echo "run.sh: chorus (pid $node_pid) on http 127.0.0.1:$http_port, udp $media_ip:$udp_port" >&2

healthy() {
  "$python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
    "http://127.0.0.1:$http_port/healthz" 2>/dev/null
}
for _ in $(seq 300); do
  if healthy; then break; fi
  if ! kill -0 "$node_pid" 2>/dev/null; then
    echo "run.sh: chorus exited early:" >&2; cat "$node_log" >&2; exit 1
  fi
  sleep 0.1
done
if ! healthy; then
  echo "run.sh: chorus did not answer /healthz within 30 s:" >&2; cat "$node_log" >&2; exit 1
fi

# The client stops itself at TIMEOUT (and dumps its stacks 15 s later if wedged);
# timeout(1) is the last resort.
limit="${TIMEOUT:-60}"
status=0
timeout --kill-after=5 "$((limit + 30))" "$python" -u "$here/webrtcbin_client.py" \
  --url "ws://127.0.0.1:$http_port/v1/signal" --timeout "$limit" "$@" || status=$?
if [ "$status" -ne 0 ]; then
  ctl="$(dirname "$CHORUS_BIN")/chorusctl"
  if [ -x "$ctl" ]; then
    echo "--- chorus node.stats (non-zero counters) ---" >&2
    "$ctl" --socket "$dir/control.sock" --json node stats 2>&1 | "$python" -c '
import json, sys
d = json.load(sys.stdin)
print({k: v for k, v in {**d["totals"], **d["driver"]}.items() if v})' >&2 || true
  fi
  echo "--- chorus log (last 60 lines) ---" >&2
  tail -n 60 "$node_log" | sed 's/\x1b\[[0-9;]*m//g' >&2
fi
exit "$status"
