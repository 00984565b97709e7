"""Markdown table and SVG plot from benches/peers/peers.py --json lines.

    python3 benches/plot.py RESULTS.jsonl --table OUT.md --svg OUT.svg

The plot: amla GFLOP/s against N (log axis), one line per (B, H), and the
measured peak (median over the runs of `amlac bench`'s peak samples) as a
dashed line. No dependencies beyond the standard library.
"""

import argparse
import json
import math
import statistics


def table(rows):
    peers = sorted({p for r in rows for p in r["ratio"]})
    head = "| H | B | N | amla GFLOP/s | fu | peak GFLOP/s | " + " | ".join(
        f"{p} GFLOP/s | amla / {p}" for p in peers) + " |"
    sep = "|" + "---|" * (6 + 2 * len(peers))
    out = [head, sep]
    for r in sorted(rows, key=lambda r: (-r["H"], r["B"], r["N"])):
        cells = [str(r["H"]), str(r["B"]), str(r["N"]), f"{r['gflops']['amla']:.1f}",
                 f"{r['fu']:.3f}", f"{r['peak_gflops']:.1f}"]
        for p in peers:
            cells += [f"{r['gflops'][p]:.1f}", f"{r['ratio'][p]:.2f}x"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def svg(rows):
    w, h, ml, mr, mt, mb = 720, 440, 70, 170, 30, 50
    ns = sorted({r["N"] for r in rows})
    peak = statistics.median(r["peak_gflops"] for r in rows)
    ymax = max([peak] + [r["gflops"]["amla"] for r in rows]) * 1.1
    lx0, lx1 = math.log2(ns[0]), math.log2(ns[-1]) if len(ns) > 1 else math.log2(ns[0]) + 1

    def x(n):
        return ml + (math.log2(n) - lx0) / max(lx1 - lx0, 1e-9) * (w - ml - mr)

    def y(g):
        return h - mb - g / ymax * (h - mt - mb)

    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
              "#7f7f7f"]
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
         f'font-family="sans-serif" font-size="12">',
         f'<rect width="{w}" height="{h}" fill="white"/>',
         f'<line x1="{ml}" y1="{h-mb}" x2="{w-mr}" y2="{h-mb}" stroke="black"/>',
         f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{h-mb}" stroke="black"/>',
         f'<text x="{(ml + w - mr) / 2}" y="{h - 12}" text-anchor="middle">N (KV tokens)</text>',
         f'<text x="16" y="{(mt + h - mb) / 2}" transform="rotate(-90 16 {(mt + h - mb) / 2})" '
         f'text-anchor="middle">GFLOP/s</text>',
         f'<text x="{ml}" y="18">MLA decode, Sq = 1: amla GFLOP/s and the measured peak</text>']
    for n in ns:
        s.append(f'<text x="{x(n):.1f}" y="{h-mb+16}" text-anchor="middle">{n}</text>')
    for i in range(6):
        g = ymax * i / 5
        s.append(f'<text x="{ml-6}" y="{y(g)+4:.1f}" text-anchor="end">{g:.0f}</text>')
        s.append(f'<line x1="{ml}" y1="{y(g):.1f}" x2="{w-mr}" y2="{y(g):.1f}" stroke="#eee"/>')
    s.append(f'<line x1="{ml}" y1="{y(peak):.1f}" x2="{w-mr}" y2="{y(peak):.1f}" '
             f'stroke="black" stroke-dasharray="6,4"/>')
    s.append(f'<text x="{w-mr+6}" y="{y(peak)+4:.1f}">peak {peak:.0f}</text>')
    series = sorted({(r["H"], r["B"]) for r in rows}, key=lambda t: (-t[0], t[1]))
    for k, (hh, b) in enumerate(series):
        pts = sorted((r["N"], r["gflops"]["amla"]) for r in rows if (r["H"], r["B"]) == (hh, b))
        c = colors[k % len(colors)]
        s.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (
            c, " ".join(f"{x(n):.1f},{y(g):.1f}" for n, g in pts)))
        for n, g in pts:
            s.append(f'<circle cx="{x(n):.1f}" cy="{y(g):.1f}" r="3" fill="{c}"/>')
        ly = mt + 20 + 18 * k
        s.append(f'<line x1="{w-mr+6}" y1="{ly}" x2="{w-mr+26}" y2="{ly}" stroke="{c}" '
                 f'stroke-width="2"/><text x="{w-mr+30}" y="{ly+4}">H={hh} B={b}</text>')
    s.append("</svg>")
    return "\n".join(s) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--table")
    ap.add_argument("--svg")
    a = ap.parse_args()
    rows = [json.loads(l) for l in open(a.results) if l.strip()]
    t = table(rows)
    if a.table:
        open(a.table, "w").write(t)
    else:
        print(t, end="")
    if a.svg:
        open(a.svg, "w").write(svg(rows))


if __name__ == "__main__":
    main()
