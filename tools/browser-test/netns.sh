#!/usr/bin/env bash
# A network namespace whose UDP to the host is refused, for the ICE-TCP browser test.
#
#   netns.sh up NAME N     # NAME reaches the host at 10.77.N.1 (it is 10.77.N.2); UDP
#                          # to 10.77.N.1 fails (policy routing: ipproto udp prohibit)
#   netns.sh down NAME N
#
# Needs root (the test command runs as root). Only iproute2: no iptables.
set -euo pipefail
cmd="$1"; ns="$2"; n="$3"
case "$cmd" in
  up)
    ip netns add "$ns"
    ip link add "chh$n" type veth peer name "chn$n"
    ip link set "chn$n" netns "$ns"
    ip addr add "10.77.$n.1/24" dev "chh$n"
    ip link set "chh$n" up
    ip netns exec "$ns" ip addr add "10.77.$n.2/24" dev "chn$n"
    ip netns exec "$ns" ip link set "chn$n" up
    ip netns exec "$ns" ip link set lo up
    ip netns exec "$ns" ip rule add ipproto udp to "10.77.$n.1" prohibit
    ;;
  down)
    ip netns del "$ns" 2>/dev/null || true
    ip link del "chh$n" 2>/dev/null || true
    ;;
  *) echo "usage: netns.sh up|down NAME N" >&2; exit 2 ;;
esac
