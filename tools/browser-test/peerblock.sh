#!/usr/bin/env bash
# Cuts the direct paths between local browsers while leaving their paths to the node:
# every UDP datagram between two ports that are both not the node's (and not below
# 1024, so DNS goes on) is dropped. The p2p test's "the direct path is lost mid-call".
#
#   peerblock.sh start NODE_PORT
#   peerblock.sh stop NODE_PORT
#
# Needs root (the test command runs as root) and nftables.
set -euo pipefail
cmd="$1"; port="$2"
table="chorus_peerblock_$port"
case "$cmd" in
  start)
    nft delete table inet "$table" 2>/dev/null || true
    nft add table inet "$table"
    nft add chain inet "$table" input '{ type filter hook input priority 0; policy accept; }'
    nft add rule inet "$table" input udp sport != "$port" udp dport != "$port" udp sport '>=' 1024 udp dport '>=' 1024 drop
    ;;
  stop)
    nft delete table inet "$table" 2>/dev/null || true
    ;;
  *)
    echo "usage: peerblock.sh start|stop NODE_PORT" >&2; exit 2 ;;
esac
