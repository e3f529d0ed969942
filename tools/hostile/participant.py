#!/usr/bin/env python3
"""A minimal participant of a --dev Chorus node, to give chorus-hostile a real ufrag.

Joins ROOM over the WebSocket, offers one sendonly Opus microphone (a canned SDP: it
never does DTLS and sends no media), prints the node's ICE ufrag for it on stdout
(`a=ice-ufrag:` of the answer), then keeps the participant alive: an ICE Binding
request with the right MESSAGE-INTEGRITY (HMAC-SHA1 keyed with the node's ice-pwd)
every second from its UDP socket, which refreshes the node's disconnect timer. Runs
for SECONDS (default 120) or until killed. Python 3 standard library only.

    python3 tools/hostile/participant.py --http 127.0.0.1:7880 --room hostile-target
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import random
import socket
import struct
import sys
import time
import zlib

OFFER = """v=0\r
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r
s=-\r
t=0 0\r
a=group:BUNDLE 0\r
a=msid-semantic: WMS\r
m=audio 9 UDP/TLS/RTP/SAVPF 111\r
c=IN IP4 0.0.0.0\r
a=rtcp:9 IN IP4 0.0.0.0\r
a=ice-ufrag:{ufrag}\r
a=ice-pwd:{pwd}\r
a=ice-options:trickle\r
a=fingerprint:sha-256 {fingerprint}\r
a=setup:actpass\r
a=mid:0\r
a=sendonly\r
a=rtcp-mux\r
a=rtpmap:111 opus/48000/2\r
a=fmtp:111 minptime=10;useinbandfec=1\r
a=ssrc:{ssrc} cname:hostile-target\r
a=candidate:1 1 udp 2130706431 {ip} {port} typ host\r
"""


def ws_connect(host, port, path):
    s = socket.create_connection((host, port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            raise SystemExit("WebSocket handshake: connection closed")
        head += chunk
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise SystemExit(f"WebSocket handshake refused: {head!r}")
    return s


def ws_send(s, text):
    data = text.encode()
    mask = os.urandom(4)
    if len(data) < 126:
        header = struct.pack("!BB", 0x81, 0x80 | len(data))
    elif len(data) < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, len(data))
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, len(data))
    s.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise SystemExit("WebSocket closed")
        out += chunk
    return out


def ws_recv(s):
    """The next text message (pings and other frames are skipped)."""
    while True:
        b0, b1 = recv_exact(s, 2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", recv_exact(s, 2))
        elif n == 127:
            (n,) = struct.unpack("!Q", recv_exact(s, 8))
        payload = recv_exact(s, n)
        if b0 & 0x0F == 0x8:
            raise SystemExit(f"WebSocket closed by the node: {payload[2:]!r}")
        if b0 & 0x0F == 0x1:
            return json.loads(payload)


def expect(s, kind):
    while True:
        m = ws_recv(s)
        if m.get("type") == kind:
            return m
        if m.get("type") == "error":
            raise SystemExit(f"error before {kind}: {m}")


def stun_attr(ty, value):
    pad = (4 - len(value) % 4) % 4
    return struct.pack("!HH", ty, len(value)) + value + b"\0" * pad


def binding_request(node_ufrag, ufrag, node_pwd):
    txid = os.urandom(12)
    attrs = stun_attr(0x0006, f"{node_ufrag}:{ufrag}".encode())
    attrs += stun_attr(0x0024, struct.pack("!I", 1845501695))
    attrs += stun_attr(0x802A, os.urandom(8))
    attrs += stun_attr(0x0025, b"")
    # MESSAGE-INTEGRITY: the length covers it (24 bytes) when the HMAC is computed.
    header = struct.pack("!HHI", 0x0001, len(attrs) + 24, 0x2112A442) + txid
    mac = hmac.new(node_pwd.encode(), header + attrs, hashlib.sha1).digest()
    attrs += stun_attr(0x0008, mac)
    header = struct.pack("!HHI", 0x0001, len(attrs) + 8, 0x2112A442) + txid
    crc = (zlib.crc32(header + attrs) ^ 0x5354554E) & 0xFFFFFFFF
    attrs += stun_attr(0x8028, struct.pack("!I", crc))
    return header + attrs


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--http", default="127.0.0.1:7880", help="the node's HTTP address")
    p.add_argument("--room", default="hostile-target")
    p.add_argument("--seconds", type=float, default=120)
    args = p.parse_args()
    host, port = args.http.rsplit(":", 1)

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((host, 0))
    udp.settimeout(0.2)
    ip, uport = udp.getsockname()
    ws = ws_connect(host, int(port), "/v1/signal")
    ws_send(ws, json.dumps({"type": "join", "room": args.room, "name": "target"}))
    joined = expect(ws, "joined")
    ufrag = "".join(random.choice("abcdefghijklmnop") for _ in range(8))
    pwd = "".join(random.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(24))
    fingerprint = ":".join(f"{b:02X}" for b in os.urandom(32))
    sdp = OFFER.format(
        ufrag=ufrag, pwd=pwd, fingerprint=fingerprint, ssrc=random.getrandbits(31), ip=ip, port=uport
    )
    ws_send(ws, json.dumps({"type": "offer", "sdp": sdp}))
    answer = expect(ws, "answer")["sdp"]
    node_ufrag = next(l.split(":", 1)[1].strip() for l in answer.splitlines() if l.startswith("a=ice-ufrag:"))
    node_pwd = next(l.split(":", 1)[1].strip() for l in answer.splitlines() if l.startswith("a=ice-pwd:"))
    node_udp = next(
        (l.split()[4], int(l.split()[5])) for l in answer.splitlines() if l.startswith("a=candidate:")
    )
    print(json.dumps({"participant_id": joined["participant_id"], "ufrag": node_ufrag}), flush=True)

    ws.settimeout(0.01)
    answered = 0
    end = time.time() + args.seconds
    while time.time() < end:
        udp.sendto(binding_request(node_ufrag, ufrag, node_pwd), node_udp)
        deadline = time.time() + 1
        while time.time() < deadline:
            try:
                data, _ = udp.recvfrom(2048)
                if data[:2] == b"\x01\x01":  # Binding success
                    answered += 1
            except socket.timeout:
                pass
            try:
                ws.recv(65536)  # drain speakers and the like; never answered
            except (socket.timeout, BlockingIOError):
                pass
    print(json.dumps({"binding_successes": answered}), file=sys.stderr)


if __name__ == "__main__":
    main()
