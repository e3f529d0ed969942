#!/usr/bin/env bash
# Network namespaces for the browser tests: a Chromium inside one reaches the host
# only over a veth link, which the tests can cut, shape and make lossy.
#
#   netns.sh up NAME N          # NAME reaches the host at 10.77.N.1 (it is 10.77.N.2);
#                               # UDP to 10.77.N.1 fails (policy routing: ipproto udp
#                               # prohibit): the ICE-TCP test
#   netns.sh open NAME N        # the same link, UDP allowed: the video link tests
#   netns.sh rate NAME N RATE   # the host → NAME direction limited to RATE (tc tbf,
#                               # e.g. 400kbit); RATE `none` lifts it
#   netns.sh loss NAME N PCT    # NAME drops PCT % of the UDP it receives (nftables
#                               # numgen random); 0 stops
#   netns.sh down NAME N
#
# Needs root (the test command runs as root), iproute2 and nftables.
set -euo pipefail
cmd="$1"; ns="$2"; n="$3"
link() {
  ip netns add "$ns"
  ip link add "chh$n" type veth peer name "chn$n"
  ip link set "chn$n" netns "$ns"
  ip addr add "10.77.$n.1/24" dev "chh$n"
  ip link set "chh$n" up
  ip netns exec "$ns" ip addr add "10.77.$n.2/24" dev "chn$n"
  ip netns exec "$ns" ip link set "chn$n" up
  ip netns exec "$ns" ip link set lo up
}
case "$cmd" in
  up)
    link
    ip netns exec "$ns" ip rule add ipproto udp to "10.77.$n.1" prohibit
    ;;
  open)
    link
    ;;
  rate)
    if [ "$4" = none ]; then
      tc qdisc del dev "chh$n" root 2>/dev/null || true
    else
      tc qdisc replace dev "chh$n" root tbf rate "$4" burst 8kb latency 200ms
    fi
    ;;
  loss)
    ip netns exec "$ns" nft delete table inet chorus_loss 2>/dev/null || true
    if [ "$4" != 0 ]; then
      ip netns exec "$ns" nft add table inet chorus_loss
      ip netns exec "$ns" nft add chain inet chorus_loss input '{ type filter hook input priority 0; }'
      ip netns exec "$ns" nft add rule inet chorus_loss input meta l4proto udp numgen random mod 100 '<' "$4" drop
    fi
    ;;
  down)
    ip netns del "$ns" 2>/dev/null || true
    ip link del "chh$n" 2>/dev/null || true
    ;;
  *) echo "usage: netns.sh up|open|rate|loss|down NAME N [ARG]" >&2; exit 2 ;;
esac
