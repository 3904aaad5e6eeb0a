"""Pure helpers of the scale benchmark (tests/bench/bench_scale.py): the apiserver's own
latency histogram from Prometheus text, quantiles, the SLO classes of a request, and
plain-text tables. No I/O here: tests/unit/bench tests it."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

METRIC = "apiserver_request_duration_seconds"
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# upstream's API call latency SLO (sig-scalability slos/api_call_latency.md), in seconds
SLO_MUTATING = 1.0  # single-object mutating calls, p99
SLO_GET = 1.0  # single-object reads, p99
SLO_LIST_NAMESPACE = 5.0  # namespace-scoped lists, p99
SLO_LIST_CLUSTER = 30.0  # cluster-scoped lists, p99

_LINE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

# (frozenset of labels without le) -> {le: cumulative count}
Histograms = dict[frozenset[tuple[str, str]], dict[float, float]]


def parse_histograms(text: str, name: str = METRIC) -> Histograms:
    """Every ``<name>_bucket`` series of a Prometheus text exposition."""
    out: Histograms = {}
    want = name + "_bucket"
    for line in text.splitlines():
        if not line.startswith(want):
            continue
        m = _LINE.match(line)
        if m is None or m.group("name") != want:
            continue
        labels = dict(_LABEL.findall(m.group("labels") or ""))
        le = labels.pop("le", None)
        if le is None:
            continue
        out.setdefault(frozenset(labels.items()), {})[math.inf if le == "+Inf" else float(le)] = float(m.group("value"))
    return out


def subtract(after: Histograms, before: Histograms) -> Histograms:
    """What happened between two scrapes (series new in ``after`` count from zero)."""
    out: Histograms = {}
    for key, buckets in after.items():
        prev = before.get(key, {})
        out[key] = {le: v - prev.get(le, 0.0) for le, v in buckets.items()}
    return out


def request_class(labels: dict[str, str]) -> str | None:
    """The SLO class of a series: mutating, get, list-namespace, list-cluster; None for the rest
    (watches, connects, non-resource URLs)."""
    verb, scope = labels.get("verb", ""), labels.get("scope", "")
    if not labels.get("resource"):
        return None
    if verb in MUTATING and scope == "resource":
        return "mutating"
    if verb == "GET" and scope == "resource":
        return "get"
    if verb == "LIST":
        return "list-cluster" if scope == "cluster" else "list-namespace"
    return None


def merge(hists: Iterable[dict[float, float]]) -> dict[float, float]:
    out: dict[float, float] = {}
    for h in hists:
        for le, v in h.items():
            out[le] = out.get(le, 0.0) + v
    return out


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus's histogram_quantile over cumulative buckets: linear inside the bucket;
    the highest finite bound when the rank falls in +Inf; None without observations."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for b in bounds:
        count = buckets[b]
        if count >= rank:
            if math.isinf(b):
                return lower_bound
            if count == lower_count:
                return b
            return lower_bound + (b - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = b, count
    return bounds[-2] if len(bounds) > 1 else None


def class_quantiles(hists: Histograms, q: float) -> dict[str, tuple[float | None, int]]:
    """Per SLO class: (the q-quantile over all its series, observations)."""
    by_class: dict[str, list[dict[float, float]]] = {}
    for key, buckets in hists.items():
        cls = request_class(dict(key))
        if cls is not None:
            by_class.setdefault(cls, []).append(buckets)
    out = {}
    for cls, series in by_class.items():
        merged = merge(series)
        out[cls] = (histogram_quantile(q, merged), int(merged.get(math.inf, 0)))
    return out


def worst_pair(hists: Histograms, cls: str, q: float = 0.99, min_count: int = 1) -> tuple[str, float] | None:
    """The (resource, verb) pair of class ``cls`` with the highest q-quantile (the SLO is per pair)."""
    pairs: dict[str, list[dict[float, float]]] = {}
    for key, buckets in hists.items():
        labels = dict(key)
        if request_class(labels) != cls:
            continue
        res = labels["resource"] + ("/" + labels["subresource"] if labels.get("subresource") else "")
        pairs.setdefault(f"{labels['verb']} {res}", []).append(buckets)
    worst = None
    for name, series in pairs.items():
        merged = merge(series)
        if merged.get(math.inf, 0) < min_count:
            continue
        v = histogram_quantile(q, merged)
        if v is not None and (worst is None or v > worst[1]):
            worst = (name, v)
    return worst


def percentile(samples: Sequence[float], q: float) -> float | None:
    """The nearest-rank q-quantile of client-side samples; None when there are none."""
    if not samples:
        return None
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def ratio(value: float | None, baseline: float | None) -> str:
    if value is None or baseline is None:
        return "-"
    if baseline == 0:
        return "-" if value == 0 else "inf"
    return f"{value / baseline:.2f}x"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r: Sequence[str]) -> str:
        cells = zip(r, widths, strict=True)
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(cells))

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])
