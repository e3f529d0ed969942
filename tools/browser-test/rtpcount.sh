#!/usr/bin/env bash
# Counts the RTP packets (not RTCP, STUN or DTLS: RFC 7983's first byte, RFC 5761's
# payload types) that arrive at a local UDP port: the p2p test's capture, proving the
# node receives no media while a call is peer to peer.
#
#   rtpcount.sh start PORT   # an nftables counter on packets to UDP PORT
#   rtpcount.sh read PORT    # prints the packets counted so far
#   rtpcount.sh stop PORT
#
# Needs root (the test command runs as root) and nftables.
set -euo pipefail
cmd="$1"; port="$2"
table="chorus_rtp_$port"
case "$cmd" in
  start)
    nft delete table inet "$table" 2>/dev/null || true
    nft add table inet "$table"
    nft add chain inet "$table" input '{ type filter hook input priority 0; policy accept; }'
    # Version 2 in the first byte's top bits, and a payload type (the second byte's
    # low 7 bits) outside RTCP's 72-95 (packet types 200-223 with the top bit set).
    nft add rule inet "$table" input udp dport "$port" '@th,64,2' 2 '@th,73,7' != 72-95 counter
    ;;
  read)
    nft list table inet "$table" | sed -n 's/.*counter packets \([0-9]*\) bytes.*/\1/p' | head -1
    ;;
  stop)
    nft delete table inet "$table" 2>/dev/null || true
    ;;
  *)
    echo "usage: rtpcount.sh start|read|stop PORT" >&2; exit 2 ;;
esac
