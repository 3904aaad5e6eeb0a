"""fetch mode: cold build and no-op rebuild of every fetchable component vs bare start-up.

Publishes upstream-shaped artifacts (small static binaries) on a local HTTP mirror, builds
once (cold), then times the no-op rebuild against `python -m build.cli recipes`
(the same interpreter start-up and imports, no build work) measured in the same run.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from build.lockfile import Lockfile
from build.recipes import load_recipes
from tests.support.artifacts import publish_all
from tests.support.mirror import MirrorServer

REPO = Path(__file__).resolve().parents[2]


def run(report) -> None:
    recipes = [r for r in load_recipes(REPO / "recipes").values() if r.fetch.available]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lock = Lockfile.empty(tmp / "recipes.lock")
        for name, urls in publish_all(recipes, tmp / "upstream", cache=tmp / "cbins").items():
            for url, digest in urls.items():
                lock = lock.with_artifact(name, "linux/amd64", url, digest)
        lock.save()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with MirrorServer(tmp / "upstream") as mirror:
            argv = [sys.executable, "-m", "build.cli", "build", "--mode=fetch", f"--mirror={mirror.url}",
                    f"--cache-dir={tmp / 'cache'}", f"--dist={tmp / 'dist'}", f"--lock={lock.path}",
                    *[f"--component={r.name}" for r in recipes]]
            t0 = time.perf_counter()
            report.time_command(argv, runs=1, env=env)
            cold = time.perf_counter() - t0
            noop = report.time_command(argv, runs=7, env=env)
            base = report.time_command([sys.executable, "-m", "build.cli", "recipes"], runs=7, env=env)
        report.ratio(f"fetch cold build ({len(recipes)} components)", cold, "start-up baseline", base)
        report.ratio("fetch no-op build", noop, "start-up baseline", base)
        print(f"no-op work beyond start-up: {(noop - base) * 1000:.0f} ms (target < 1000 ms)")
