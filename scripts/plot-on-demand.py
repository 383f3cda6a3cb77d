#!/usr/bin/env python3
"""Draws `rivulet bench on-demand` result lines as SVG charts, one per server label.

Usage: scripts/plot-on-demand.py RESULTS.jsonl OUT_DIR

Per second: records offered, accepted and throttled (left axis, records/s) and open shards
(right axis). Writes OUT_DIR/on-demand-<label>.svg. Plain SVG, no plotting library, so it
runs on a fresh machine.
"""

import json
import sys
from pathlib import Path

WIDTH, HEIGHT = 760, 330
LEFT, RIGHT, TOP, BOTTOM = 62, 62, 34, 46
SERIES = [
    ("offered", "#888888", "offered"),
    ("accepted", "#1f77b4", "accepted"),
    ("throttled", "#d62728", "throttled"),
]
SHARDS_COLOUR = "#2ca02c"


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at or above `value`."""
    if value <= 0:
        return 1.0
    scale = 10 ** len(str(int(value))) / 10
    for step in (1, 2, 5, 10):
        if step * scale >= value:
            return step * scale
    return 10 * scale


def chart(label: str, rows: list[dict]) -> str:
    seconds = [r["second"] for r in rows]
    x_max = max(seconds)
    # Five gridlines of a round step, with room above the highest point.
    y_max = 5 * nice_ceiling(1.1 * max(max(r["offered"], r["accepted"]) for r in rows) / 5)
    s_max = 5 * nice_ceiling(1.1 * max(r["open_shards"] for r in rows) / 5)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(second: float) -> float:
        return LEFT + plot_w * second / x_max

    def y(value: float, top: float) -> float:
        return TOP + plot_h * (1 - value / top)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="18" font-size="13">{label}: records/s per second '
        f"(left) and open shards (right)</text>",
    ]
    for i in range(6):
        value = y_max * i / 5
        shards = s_max * i / 5
        yy = y(value, y_max)
        out.append(
            f'<line x1="{LEFT}" y1="{yy:.1f}" x2="{WIDTH - RIGHT}" y2="{yy:.1f}" '
            'stroke="#e6e6e6"/>'
        )
        out.append(
            f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end">{value:g}</text>'
        )
        out.append(
            f'<text x="{WIDTH - RIGHT + 6}" y="{yy + 4:.1f}" fill="{SHARDS_COLOUR}">'
            f"{shards:g}</text>"
        )
    ticks = nice_ceiling(x_max / 8)
    tick = 0.0
    while tick <= x_max:
        xx = x(tick)
        out.append(
            f'<line x1="{xx:.1f}" y1="{TOP + plot_h}" x2="{xx:.1f}" y2="{TOP + plot_h + 4}" '
            'stroke="#444"/>'
        )
        out.append(
            f'<text x="{xx:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{tick:g}</text>'
        )
        tick += ticks
    out.append(
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 8}" text-anchor="middle">'
        "second of the run</text>"
    )
    out.append(
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" '
        'stroke="#444"/>'
    )
    for key, colour, _ in SERIES:
        points = " ".join(f"{x(r['second']):.1f},{y(r[key], y_max):.1f}" for r in rows)
        out.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.6"/>'
        )
    steps = []
    previous = None
    for r in rows:
        xx, yy = x(r["second"]), y(r["open_shards"], s_max)
        if previous is not None:
            steps.append(f"{xx:.1f},{previous:.1f}")
        steps.append(f"{xx:.1f},{yy:.1f}")
        previous = yy
    out.append(
        f'<polyline points="{" ".join(steps)}" fill="none" stroke="{SHARDS_COLOUR}" '
        'stroke-width="2" stroke-dasharray="5,3"/>'
    )
    legend = [(name, colour, "") for _, colour, name in SERIES]
    legend.append(("open shards", SHARDS_COLOUR, ' stroke-dasharray="5,3"'))
    lx = LEFT + 10
    for name, colour, dash in legend:
        out.append(
            f'<line x1="{lx}" y1="{TOP + 12}" x2="{lx + 18}" y2="{TOP + 12}" '
            f'stroke="{colour}" stroke-width="2"{dash}/>'
        )
        out.append(f'<text x="{lx + 22}" y="{TOP + 16}">{name}</text>')
        lx += 30 + 7 * len(name)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    results, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    runs: dict[str, list[dict]] = {}
    for line in results.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("workload") == "on-demand":
            runs.setdefault(row["server"], []).append(row)
    for label, rows in runs.items():
        path = out_dir / f"on-demand-{label}.svg"
        path.write_text(chart(label, rows))
        print(path)


if __name__ == "__main__":
    main()
