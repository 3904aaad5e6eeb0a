"""The scale benchmark's curves as one SVG: control-plane memory and the worst mutating call's
p99 against the number of nodes, per datastore, mke and by hand (docs/performance.md).

    nox -s bench -- bench_scale | tee scale.log          # any steps, stores and sides
    python -m tests.bench.scale_plot -o scale.svg 10.log 100.log 500.log

It reads what bench_scale prints (the ``-- N nodes / P pods, STORE: ...`` tables), so the logs of
several runs can make one figure; a later log's figure replaces an earlier one of the same step,
store and side. The SVG is written by hand here: a two-panel line chart is a hundred lines of
text, where matplotlib would add eight pinned packages (about 40 MB) to every test venv for one
figure of the docs.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from mke.node.files import write_file_atomic

RSS = "RSS control plane + mke"
WORST = "apiserver worst mutating pair p99"
SIDES = ("mke", "by hand")
STORES = ("etcd", "sqlite", "postgres", "mariadb")
COLOURS = {"etcd": "#1f77b4", "sqlite": "#2ca02c", "postgres": "#9467bd", "mariadb": "#d62728"}
NAMES = {"etcd": "etcd", "sqlite": "SQLite", "postgres": "PostgreSQL", "mariadb": "MariaDB"}

_STEP = re.compile(r"^-- (\d+) nodes / \d+ pods, (\w+):")
_VALUE = re.compile(r"^(-?\d+(?:\.\d+)?) (s|MiB)$")

#: (store, nodes, side) -> row label -> value (seconds or MiB)
Figures = dict[tuple[str, int, str], dict[str, float]]


class PlotError(Exception):
    """Bad input: one line naming the file and what to do."""


def parse_log(text: str) -> Figures:
    """The figures of every step table in one bench_scale output."""
    out: Figures = {}
    step: tuple[str, int] | None = None
    for line in text.splitlines():
        m = _STEP.match(line)
        if m:
            step = (m.group(2), int(m.group(1)))
            continue
        if line.startswith(("==", "nox >")):
            step = None  # past the step's table
        if step is None:
            continue
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) != 4 or not all(c == "-" or _VALUE.match(c) for c in cells[1:3]):
            continue  # the header, the rule, a note
        label = re.sub(r" \(.*\)$", "", cells[0])  # the worst pair's names
        for side, cell in zip(SIDES, cells[1:3], strict=True):
            if v := _VALUE.match(cell):
                out.setdefault((step[0], step[1], side), {})[label] = float(v.group(1))
    return out


def merge(figures: Iterable[Figures]) -> Figures:
    out: Figures = {}
    for f in figures:
        for key, rows in f.items():
            out.setdefault(key, {}).update(rows)
    return out


def _series(fig: Figures, label: str) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """(store, side) -> [(nodes, value)] sorted by nodes."""
    out: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for (store, nodes, side), rows in sorted(fig.items(), key=lambda kv: kv[0][1]):
        if label in rows:
            out.setdefault((store, side), []).append((nodes, rows[label]))
    return out


def _nice_ticks(top: float, n: int = 5) -> list[float]:
    """0 and round steps up to the first at or above ``top``."""
    raw = top / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def _panel(x0: float, title: str, series: dict[tuple[str, str], list[tuple[int, float]]], nodes: Sequence[int],
           *, log_y: bool, unit_scale: float, y_label: str, slo: float | None) -> list[str]:
    w, h, top, left = 360.0, 240.0, 40.0, 60.0
    px0, py0 = x0 + left, top + h  # the plot's origin (bottom left)
    lo_n, hi_n = math.log10(min(nodes)), math.log10(max(nodes))
    span_n = (hi_n - lo_n) or 1.0

    def x(n: float) -> float:
        return px0 + 20 + (math.log10(n) - lo_n) / span_n * (w - 40)

    values = [v * unit_scale for pts in series.values() for _, v in pts] + ([slo * unit_scale] if slo else [])
    if log_y:
        lo_y = 10 ** math.floor(math.log10(max(min(values), 1e-9)))
        hi_y = max(values) * 1.6  # room above the highest point (the SLO's line and label)
        ticks = [10 ** e for e in range(round(math.log10(lo_y)), math.floor(math.log10(hi_y)) + 1)]

        def y(v: float) -> float:
            return py0 - (math.log10(v) - math.log10(lo_y)) / (math.log10(hi_y) - math.log10(lo_y)) * h
    else:
        ticks = _nice_ticks(max(values) * 1.1)
        hi_y = ticks[-1]

        def y(v: float) -> float:
            return py0 - v / hi_y * h

    out = [f'<text x="{px0 + w / 2:.1f}" y="{top - 14:.1f}" text-anchor="middle" font-weight="bold">'
           f'{escape(title)}</text>',
           f'<rect x="{px0:.1f}" y="{top:.1f}" width="{w:.1f}" height="{h:.1f}" fill="none" stroke="#888"/>']
    for t in ticks:
        out.append(f'<line x1="{px0:.1f}" x2="{px0 + w:.1f}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{px0 - 6:.1f}" y="{y(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    for n in nodes:
        out.append(f'<line x1="{x(n):.1f}" x2="{x(n):.1f}" y1="{top:.1f}" y2="{py0:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{x(n):.1f}" y="{py0 + 16:.1f}" text-anchor="middle">{n}</text>')
    out.append(f'<text x="{px0 + w / 2:.1f}" y="{py0 + 34:.1f}" text-anchor="middle">nodes (30 pods each)</text>')
    out.append(f'<text transform="translate({x0 + 14:.1f},{top + h / 2:.1f}) rotate(-90)" text-anchor="middle">'
               f'{escape(y_label)}</text>')
    if slo:
        out.append(f'<line x1="{px0:.1f}" x2="{px0 + w:.1f}" y1="{y(slo * unit_scale):.1f}" '
                   f'y2="{y(slo * unit_scale):.1f}" stroke="#000" stroke-dasharray="2,3"/>')
        out.append(f'<text x="{px0 + w - 4:.1f}" y="{y(slo * unit_scale) - 4:.1f}" text-anchor="end">'
                   f'SLO {slo:g} s</text>')
    for (store, side), pts in sorted(series.items()):
        colour = COLOURS.get(store, "#555")
        dash = ' stroke-dasharray="6,4"' if side == "by hand" else ""
        path = " ".join(f"{x(n):.1f},{y(v * unit_scale):.1f}" for n, v in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}>'
                   f'<title>{escape(NAMES.get(store, store))}, {side}</title></polyline>')
        for n, v in pts:
            shape = (f'<circle cx="{x(n):.1f}" cy="{y(v * unit_scale):.1f}" r="3.5"' if side == "mke" else
                     f'<rect x="{x(n) - 3.5:.1f}" y="{y(v * unit_scale) - 3.5:.1f}" width="7" height="7"')
            out.append(f'{shape} fill="{colour}"><title>{escape(NAMES.get(store, store))}, {side}, {n} nodes: '
                       f'{v * unit_scale:g}</title></{"circle" if side == "mke" else "rect"}>')
    return out


def render(fig: Figures, caption: str = "") -> str:
    """The SVG of ``fig``: memory and the worst mutating p99 by nodes."""
    nodes = sorted({n for _, n, _ in fig})
    rss, worst = _series(fig, RSS), _series(fig, WORST)
    if not rss and not worst:
        raise PlotError("no step table with memory or latency figures")
    width, height = 880, 400
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="#fff"/>']
    if rss:
        out += _panel(0, "control plane + mke, RSS", rss, nodes, log_y=False, unit_scale=1.0, y_label="MiB",
                      slo=None)
    if worst:
        out += _panel(440, "worst single-object mutating call, p99", worst, nodes, log_y=True, unit_scale=1000.0,
                      y_label="ms (log scale)", slo=1.0)
    stores = [s for s in STORES if any(k[0] == s for k in fig)] + sorted({k[0] for k in fig} - set(STORES))
    lx, ly = 60.0, 340.0
    for store in stores:
        c = COLOURS.get(store, "#555")
        out.append(f'<line x1="{lx:.0f}" x2="{lx + 24:.0f}" y1="{ly:.0f}" y2="{ly:.0f}" stroke="{c}" '
                   f'stroke-width="3"/><text x="{lx + 30:.0f}" y="{ly + 4:.0f}">{escape(NAMES.get(store, store))}'
                   f'</text>')
        lx += 120
    out.append(f'<circle cx="{lx + 10:.0f}" cy="{ly:.0f}" r="3.5" fill="#555"/>'
               f'<text x="{lx + 20:.0f}" y="{ly + 4:.0f}">mke (solid)</text>')
    out.append(f'<rect x="{lx + 116.5:.0f}" y="{ly - 3.5:.0f}" width="7" height="7" fill="#555"/>'
               f'<text x="{lx + 130:.0f}" y="{ly + 4:.0f}">by hand, same binaries (dashed)</text>')
    if caption:
        out.append(f'<text x="60" y="378" fill="#555">{escape(caption)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.scale_plot", description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", type=Path, required=True, help="the SVG to write")
    p.add_argument("--caption", default="", help="a line under the figure (the runs it shows)")
    p.add_argument("logs", nargs="+", type=Path, help="bench_scale's output, earliest first")
    args = p.parse_args(argv)
    try:
        figures = []
        for log in args.logs:
            try:
                text = log.read_text(errors="replace")
            except OSError as e:
                raise PlotError(f"{log}: cannot read it: {e.strerror}") from None
            f = parse_log(text)
            if not f:
                raise PlotError(f"{log}: no bench_scale step table in it (save `nox -s bench -- bench_scale`'s "
                                "output with tee)")
            figures.append(f)
        svg = render(merge(figures), args.caption)
        if not args.output.parent.is_dir():
            raise PlotError(f"{args.output}: its directory does not exist")
        write_file_atomic(args.output, svg.encode(), 0o644)
    except PlotError as e:
        print(f"scale_plot: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
