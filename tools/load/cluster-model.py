#!/usr/bin/env python3
"""A model of a Chorus cluster (issue 14): per-node CPU, relay bandwidth and the Redis
directory's load for a room mix, from per-packet costs measured on one machine.

    python3 tools/load/cluster-model.py                 # the table in BENCHMARKS.md
    python3 tools/load/cluster-model.py --cores 16 --copy-us 4.25 --join-rate 500

Costs (defaults: BENCHMARKS.md, "Rooms across nodes"; all node CPU, user+sys, all in):
  --copy-us       a forwarded copy to a client at a node (its share of the speaker's
                  ingress, SRTP, the send, timers): chorus-load's cpu_us_per_packet on
                  one node
  --send-us       a relayed packet at the sending node, beyond its local copies
                  (encode, QUIC datagram, the wake-ups)
  --recv-us       a relayed packet at a receiving node, beyond the local copies it
                  then makes (QUIC, decode, hand-off to the shard)
  --ingress-us    a packet in from a sender nobody hears (beyond the slots): assumed
                  to cost about what a copy costs (recvmmsg share, SRTP, the level)
  --idle-us       a connected participant's fixed cost per second (ICE consent, RTCP)
  --wire-bytes    IP bytes on the relay per relayed packet (an 80-byte Opus payload;
                  QUIC, UDP/IP and the peer's ACKs included)
  --copy-bytes    IP bytes of a copy to a client (80 B payload, RTP header and
                  extensions, SRTP tag, UDP/IP)

Rooms are spread evenly: each node holds 1/NODES of every kind of room's members; a room
that spans k nodes sends each speaker packet once to each of the k - 1 other nodes, so a
node sends and receives (k - 1)/k of its speakers' and the room's packets. A listener
hears at most `slots` speakers (loudest-N). A sender's packet is relayed whether or not
it is loud enough to take a slot: an open microphone costs relay traffic even when
silent (the engine relays every unmuted packet; the receiving node picks the slots).

Redis commands (cluster/src/directory.rs, node.rs, task.rs; signaling/src/cluster.rs):
  node heartbeat, every second per node: EVALSHA heartbeat (GET/SET/PEXPIRE/SET/SADD
      inside), SMEMBERS nodes, MGET of every node's record (~230 B each)      = 3
  join: HMGET room (place_join); SADD room_nodes when it is the node's first member
      of the room; EVALSHA claim for a room no node has (rooms made by a join)
  leave: SREM room_nodes when it was the node's last member of the room
  room.create: HMGET (room_home) + EVALSHA claim;  room close at its home: EVALSHA remove
  any room method through the control plane (room.get, room.update, room.set_positions,
  ...): HMGET (route -> room_home) before it runs or is forwarded
"""
import argparse
import math


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a = p.add_argument
    a("--nodes", type=int, default=10)
    a("--cores", type=int, default=8, help="cores per node")
    a("--headroom", type=float, default=0.7, help="share of a node's cores to plan for")
    a("--copy-us", type=float, default=3.4)
    a("--send-us", type=float, default=21.0)
    a("--recv-us", type=float, default=9.0)
    a("--ingress-us", type=float, default=None, help="default: --copy-us")
    a("--idle-us", type=float, default=17.0)
    a("--wire-bytes", type=float, default=160.0)
    a("--copy-bytes", type=float, default=144.0)
    a("--pps", type=float, default=50.0, help="packets per second of a speaker (20 ms)")
    a("--slots", type=int, default=6, help="audio slots per listener (raid default)")
    a("--join-rate", type=float, default=28.0,
      help="joins (and leaves) per second, steady: 50,000 with 30-minute sessions")
    a("--storm-joins", type=float, default=500.0,
      help="joins per second when a dead node's participants come back (5,000 in 10 s)")
    a("--room-rate", type=float, default=1.4, help="room.create and closes per second")
    a("--positions-rooms", type=int, default=10,
      help="rooms whose backend sends room.set_positions")
    a("--positions-hz", type=float, default=20.0)
    a("--redis-ops", type=float, default=100_000.0,
      help="what one redis-server core answers per second (redis-benchmark here)")
    return p.parse_args()


class Mix:
    """A room mix: (count, size, senders, heard, span) per kind of room, where
    `senders` send packets (speakers, or every open microphone), `heard` are the
    speakers a listener can hear (loudest-N takes at most `slots`) and `span` the nodes
    each room's members are spread over."""

    def __init__(self, name, kinds):
        self.name = name
        self.kinds = kinds

    def participants(self):
        return sum(n * size for n, size, *_ in self.kinds)


def per_node(mix, m):
    """Per node: participants, copies/s, relayed packets out/s and in/s, and packets
    in from senders beyond the ones heard (whose ingress no copy pays for)."""
    n = m.nodes
    parts = copies = out = inn = unheard = 0.0
    for count, size, senders, heard, span in mix.kinds:
        span = min(span, n)
        parts += count * size / n
        # Every listener gets up to `slots` of the speakers it can hear (not itself).
        h = min(heard, m.slots)
        speakers = min(heard, size)
        listeners_hearing = size * h - speakers * (1 if h >= heard else 0)
        copies += count * listeners_hearing * m.pps / n
        # Each sender's packet goes once to each other node of the room.
        relayed = count * senders * m.pps * (span - 1)
        out += relayed / n
        inn += relayed / n
        unheard += count * max(senders - h, 0) * m.pps / n
    return parts, copies, out, inn, unheard


def redis_rows(mix, m):
    """Redis commands per second, cluster-wide, for `mix`: (what, commands/s) rows."""
    # The share of joins that are a node's first member of their room (SADD) and of
    # leaves that are its last (SREM): span / size per room, weighted by members.
    members = mix.participants()
    first = sum(n * min(span, m.nodes) for n, _, _, _, span in mix.kinds) / members
    heartbeat = 3 * m.nodes
    joins = m.join_rate * ((1 + first) + first)
    rooms = m.room_rate * (2 + 1)  # create: HMGET + claim; close: remove
    positions = m.positions_rooms * m.positions_hz
    steady = heartbeat + joins + rooms + positions
    storm = heartbeat + m.storm_joins * (1 + first) + positions
    return [
        (f"heartbeats: {m.nodes} nodes x (EVALSHA + SMEMBERS + MGET) per second", heartbeat),
        (f"{m.join_rate:g} joins and {m.join_rate:g} leaves/s (HMGET each; SADD / SREM for "
         f"a node's first / last member of a room: {first:.0%})", joins),
        (f"{m.room_rate:g} room.create and {m.room_rate:g} closes/s (HMGET + claim; remove)", rooms),
        (f"room.set_positions in {m.positions_rooms} rooms at {m.positions_hz:g} Hz (HMGET each)",
         positions),
        ("steady, all of the above", steady),
        (f"a join storm: {m.storm_joins:g} joins/s (a dead node's 5,000 back in 10 s), with "
         f"heartbeats and positions", storm),
        (f"proximity at scale: 1,000 rooms' room.set_positions at {m.positions_hz:g} Hz",
         1000 * m.positions_hz),
    ]


def main():
    m = parse()
    if m.ingress_us is None:
        m.ingress_us = m.copy_us
    n = m.nodes
    mixes = [
        Mix("5,000 rooms of 10 (3 speakers), each on 1 node", [(5000, 10, 3, 3, 1)]),
        Mix("the same, each room over 2 nodes", [(5000, 10, 3, 3, 2)]),
        Mix("the same, each room over 3 nodes", [(5000, 10, 3, 3, 3)]),
        Mix("4,500 rooms of 10 on 1 node + 10 raids of 500 over all nodes, 6 speakers "
            "(push to talk)", [(4500, 10, 3, 3, 1), (10, 500, 6, 6, n)]),
        Mix("the same, raids with 30 speakers (6 heard)",
            [(4500, 10, 3, 3, 1), (10, 500, 30, 30, n)]),
        Mix("the same, raids with 500 open microphones (6 heard)",
            [(4500, 10, 3, 3, 1), (10, 500, 500, 6, n)]),
    ]
    print(f"# {n} nodes of {m.cores} cores; per copy {m.copy_us} us, relay send {m.send_us} us, "
          f"relay receive {m.recv_us} us (beyond local copies), idle {m.idle_us} us/s per "
          f"participant, relay {m.wire_bytes:.0f} B per packet on the wire, {m.slots} slots")
    header = ("mix", "participants", "per node", "copies/s/node", "relay out/s/node",
              "relay in/s/node", "CPU cores/node", "of which relay", "relay Mbit/s out/node",
              "client Mbit/s out/node", "participants/node at headroom")
    table = []
    for mix in mixes:
        parts, copies, out, inn, unheard = per_node(mix, m)
        copy_s = (copies * m.copy_us + unheard * m.ingress_us) / 1e6
        relay_s = (out * m.send_us + inn * m.recv_us) / 1e6
        idle_s = parts * m.idle_us / 1e6
        cores = copy_s + relay_s + idle_s
        relay_mbps = out * m.wire_bytes * 8 / 1e6
        client_mbps = copies * m.copy_bytes * 8 / 1e6
        capacity = parts * m.cores * m.headroom / cores if cores else math.inf
        table.append((mix.name, f"{mix.participants():,}", f"{parts:,.0f}", f"{copies:,.0f}",
                     f"{out:,.0f}", f"{inn:,.0f}", f"{cores:.2f}", f"{relay_s / cores:.0%}",
                     f"{relay_mbps:,.0f}", f"{client_mbps:,.0f}", f"{capacity:,.0f}"))
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in table:
        print("| " + " | ".join(r) + " |")

    print()
    print(f"Directory (Redis), cluster-wide, for \"{mixes[3].name}\":")
    print("| load | commands/s | of one redis-server core |")
    print("|---|---|---|")
    rows = redis_rows(mixes[3], m)
    for what, ops in rows:
        print(f"| {what} | {ops:,.0f} | {ops / m.redis_ops:.2%} |")
    hb_bytes = n * (230 + n * 230)
    print(f"\nHeartbeat traffic: {hb_bytes / 1e3:.1f} kB/s in all ({n} writes of ~230 B, {n} reads of "
          f"{n} records). Joins one redis core takes: ~{m.redis_ops / 2:,.0f}/s (HMGET + SADD "
          f"each, at worst).")

    # Limits.
    print("\nLimits:")
    _, copies1, _, _, _ = per_node(mixes[0], m)
    per_participant = (copies1 * m.copy_us / 1e6 + mixes[0].participants() / n * m.idle_us / 1e6) / (mixes[0].participants() / n)
    print(f"- A node's cores: rooms of 10 with 3 speakers cost {per_participant * 1e6:.0f} us/s per "
          f"participant on one node, so {m.cores} cores at {m.headroom:.0%} hold "
          f"~{m.cores * m.headroom / per_participant:,.0f} participants; the cluster of {n} "
          f"~{n * m.cores * m.headroom / per_participant:,.0f}.")
    per_participant_bits = copies1 * m.copy_bytes * 8 / (mixes[0].participants() / n)
    print(f"- A node's network: each participant of such rooms receives "
          f"{per_participant_bits / 1e3:.0f} kbit/s, so 1 Gbit/s of egress is full at "
          f"~{1e9 / per_participant_bits:,.0f} participants, before the cores of an 8-core node "
          f"(10 Gbit/s: ~{1e10 / per_participant_bits:,.0f}).")
    relay_per_speaker_pkt = m.send_us + m.recv_us
    print(f"- Spreading a small room costs (k - 1) x {relay_per_speaker_pkt:.0f} us per speaker packet "
          f"against 9 x {m.copy_us} us for its copies: a room of 10 over 2 nodes costs "
          f"{1 + relay_per_speaker_pkt / (9 * m.copy_us):.1f}x what it costs on one. Small rooms "
          f"belong on one node (a room that does not span is redirected to its home).")
    raid_open = 500 * m.pps * (n - 1)
    print(f"- A raid of 500 over {n} nodes: each sender's packet goes {n - 1} times over the relay; "
          f"with every microphone open that is {raid_open:,.0f} datagrams/s for one raid "
          f"({raid_open / n:,.0f} out and in per node: "
          f"{raid_open / n * relay_per_speaker_pkt / 1e6:.2f} cores per node) while its listeners "
          f"hear {m.slots} voices ({500 * m.slots * m.pps / n * m.copy_us / 1e6:.2f} cores of copies "
          f"per node). The relay is what saturates: push to talk, or not relaying packets below "
          f"the speaking threshold, keeps a raid's relay at its speakers.")
    storm = rows[5][1]
    print(f"- Redis is far from its limit: {storm:,.0f} commands/s in a join storm, "
          f"{storm / m.redis_ops:.1%} of one core. What could load it is the control plane: "
          f"every room method looks the room's home up first (one HMGET), so "
          f"{m.redis_ops / m.positions_hz:,.0f} proximity rooms sending positions at "
          f"{m.positions_hz:g} Hz would fill a core. The heartbeat's bytes grow as nodes^2 "
          f"(each node reads every record each second) and stay small at {n}.")


if __name__ == "__main__":
    main()
