"""Run every tests/bench/bench_*.py module (or those named on the command line).

Each module defines ``run(report: Report) -> None`` and calls ``report.ratio(...)``.
"""

from __future__ import annotations

import importlib
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, float, str, float, float]] = []

    @staticmethod
    def time_command(argv: Sequence[str], *, runs: int = 5, env: dict | None = None, cwd: Path | None = None,
                     setup: Callable[[], None] | None = None) -> float:
        """Median wall time of a whole process over ``runs`` runs."""
        times = []
        for _ in range(runs):
            if setup:
                setup()
            t0 = time.perf_counter()
            subprocess.run(list(argv), check=True, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def ratio(self, name: str, value: float, baseline_name: str, baseline: float, target: float | None = None) -> None:
        r = value / baseline if baseline else float("inf")
        self.rows.append((name, value, baseline_name, baseline, r))
        verdict = "" if target is None else (f"  (target <= {target}x: {'met' if r <= target else 'MISSED'})")
        print(f"{name}: {value * 1000:.1f} ms vs {baseline_name}: {baseline * 1000:.1f} ms -> {r:.2f}x{verdict}", flush=True)


def main(argv: list[str]) -> int:
    # A module with ``EXPLICIT = True`` (bench_scale: hours at its defaults) runs only when named.
    names = argv or sorted(p.stem for p in HERE.glob("bench_*.py")
                           if "EXPLICIT = True" not in p.read_text())
    report = Report()
    for name in names:
        mod = importlib.import_module(f"tests.bench.{name}")
        print(f"== {name}: {(mod.__doc__ or '').strip().splitlines()[0] if mod.__doc__ else ''}", flush=True)
        mod.run(report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
