#!/usr/bin/env python3
"""Plots CPU per forwarded packet and p99 latency against participants from the JSON
lines tools/load/bench.sh writes. Standard library only; writes an SVG.

    python3 tools/load/plot.py target/bench/load.jsonl docs/load.svg [mode]
"""
import json
import sys

W, H, PAD = 760, 360, 60


def scale(values, lo_px, hi_px):
    lo, hi = 0.0, max(values) * 1.15 or 1.0
    return lambda v: hi_px - (v - lo) / (hi - lo) * (hi_px - lo_px), hi


def main():
    src, dst = sys.argv[1], sys.argv[2]
    mode = sys.argv[3] if len(sys.argv) > 3 else "sweep"
    runs = [json.loads(l) for l in open(src) if l.strip()]
    runs = [r for r in runs if r.get("mode") == mode and r.get("cpu_us_per_packet") is not None]
    # Overloaded runs (loss above 1 %) are in the tables, not the plot: their seconds of
    # queueing would flatten every other point.
    overloaded = [r for r in runs if r["loss"] > 0.01]
    runs = [r for r in runs if r["loss"] <= 0.01]
    series = {}
    for r in runs:
        series.setdefault(r["shards"], []).append(r)
    if not series:
        sys.exit(f"no runs of mode {mode!r} with CPU figures in {src}")
    xs = [r["participants"] for r in runs]
    cpu = [r["cpu_us_per_packet"] for r in runs]
    p99 = [r["latency_ms"]["p99"] for r in runs]
    x_hi = max(xs) * 1.05
    sx = lambda v: PAD + v / x_hi * (W - 2 * PAD)
    sy_cpu, cpu_hi = scale(cpu, PAD, H - PAD)
    sy_lat, lat_hi = scale(p99, PAD, H - PAD)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W/2}" y="24" text-anchor="middle" font-size="15">Chorus under chorus-load: CPU per forwarded packet and p99 latency</text>',
           f'<line x1="{PAD}" y1="{H-PAD}" x2="{W-PAD}" y2="{H-PAD}" stroke="black"/>',
           f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H-PAD}" stroke="#1f77b4"/>',
           f'<line x1="{W-PAD}" y1="{PAD}" x2="{W-PAD}" y2="{H-PAD}" stroke="#d62728"/>',
           f'<text x="{W/2}" y="{H-20}" text-anchor="middle">participants (10 per room, 3 speakers per room)</text>',
           f'<text x="16" y="{H/2}" transform="rotate(-90 16 {H/2})" text-anchor="middle" fill="#1f77b4">node CPU µs per forwarded packet</text>',
           f'<text x="{W-12}" y="{H/2}" transform="rotate(90 {W-12} {H/2})" text-anchor="middle" fill="#d62728">p99 latency, ms</text>']
    for i in range(5):
        v = cpu_hi * i / 4
        out.append(f'<text x="{PAD-6}" y="{sy_cpu(v)+4:.1f}" text-anchor="end" fill="#1f77b4">{v:.1f}</text>')
        v = lat_hi * i / 4
        out.append(f'<text x="{W-PAD+6}" y="{sy_lat(v)+4:.1f}" fill="#d62728">{v:.1f}</text>')
    for x in sorted(set(xs)):
        out.append(f'<text x="{sx(x):.1f}" y="{H-PAD+16}" text-anchor="middle">{x}</text>')
    dashes = {1: "", 2: ' stroke-dasharray="6 4"'}
    for shards, rs in sorted(series.items()):
        rs.sort(key=lambda r: r["participants"])
        for key, sy, color in (("cpu", sy_cpu, "#1f77b4"), ("p99", sy_lat, "#d62728")):
            pts = " ".join(f'{sx(r["participants"]):.1f},{sy(r["cpu_us_per_packet"] if key == "cpu" else r["latency_ms"]["p99"]):.1f}' for r in rs)
            out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"{dashes.get(shards, "")}/>')
            for p in pts.split():
                x, y = p.split(",")
                out.append(f'<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>')
        out.append(f'<text x="{PAD+10}" y="{PAD-8 + 14*(shards-1)}">{shards} shard(s): {"solid" if shards == 1 else "dashed"}</text>')
    if overloaded:
        sizes = sorted({r["participants"] for r in overloaded})
        out.append(f'<text x="{W-PAD-10}" y="{PAD-8}" text-anchor="end">not shown, overloaded (loss &gt; 1 %): {", ".join(map(str, sizes))} participants</text>')
    out.append("</svg>")
    open(dst, "w").write("\n".join(out))


if __name__ == "__main__":
    main()
