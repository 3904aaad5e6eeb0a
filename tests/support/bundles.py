"""Real bundles (dist/mke, dist/mke-fips) for the integration tests, made by the toolchain.

``fetch_bundle(root)``: ``build.cli build --mode=fetch --bundle`` over tests/recipes/bundle
(two small recipes whose upstream-shaped artifacts, real static binaries, are served by a
real local HTTP mirror). ``fips_bundle(root)``: build/bundle's FIPS path on a manifest
without embedded Go binaries (those are proven by test_fips_build.py).

Both use the shared build cache (``MKE_CACHE_DIR`` or ~/.cache/mke): the Python runtime,
the static entry (docker mode: it needs a Docker engine, and root the first time the Go
builder image is made) and every compressed frame are cached actions, so a second run takes
seconds. A build that fails raises with its output: tests fail, they never skip silently.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from build.lockfile import Lockfile
from build.recipes import load_recipes
from tests.support.artifacts import publish_all
from tests.support.mirror import MirrorServer

REPO = Path(__file__).resolve().parents[2]
RECIPES_DIR = REPO / "tests" / "recipes" / "bundle"
SDE = "1700000000"


def build_cli(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "build.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO), "SOURCE_DATE_EPOCH": SDE},
                          check=False)


def fetch_bundle(root: Path, *, cache_dir: Path | None = None) -> Path:
    """dist/ of a fetch-mode bundle of tests/recipes/bundle; returns the dist dir."""
    lock = Lockfile.empty(root / "recipes.lock")
    recipes = list(load_recipes(RECIPES_DIR).values())
    for name, urls in publish_all(recipes, root / "upstream", cache=root / "cbins").items():
        for url, digest in urls.items():
            lock = lock.with_artifact(name, "linux/amd64", url, digest)
    lock.save()
    extra = [f"--cache-dir={cache_dir}"] if cache_dir else []
    with MirrorServer(root / "upstream") as mirror:
        r = build_cli("build", "--mode=fetch", "--bundle", "--arch=amd64", f"--recipes-dir={RECIPES_DIR}",
                      f"--lock={lock.path}", f"--mirror={mirror.url}", f"--dist={root / 'dist'}", *extra)
    if r.returncode != 0:
        raise RuntimeError(f"building dist/mke failed (exit {r.returncode}):\n{r.stderr[-4000:]}")
    return root / "dist"


def fips_bundle(root: Path, *, fips_go: str | None = None):
    """dist/mke-fips whose payload embeds no binary (the runtime's FIPS crypto is what is tested).

    ``fips_go``: the Go FIPS mode its dist manifest records (None: none recorded, i.e. the
    toolchain's default, native)."""
    from build import bundle
    from build.cache import Cache, default_cache_dir

    manifest = root / "linux-amd64" / "manifest.json"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"schema": 1, "platform": "linux/amd64", "mode": "none", "fips": True, "binaries": [
        {"name": "kubectl", "component": "kubernetes", "version": "1.36.5", "license": "Apache-2.0", "homepage": "",
         "roles": ["controller", "worker"], "mode": "none", "fips": True, "source": None, "sha256": None,
         "size": None}]} | ({"fips_go": fips_go} if fips_go else {})))
    dist = root / "dist"
    dist.mkdir(exist_ok=True)
    return bundle.write_bundle(cache=Cache(default_cache_dir()), manifest_path=manifest, dist=dist, jobs=2,
                               source_date_epoch=int(SDE))


def default_bundle() -> Path:
    """The default ``dist/mke`` (every recipe, docker mode), into ``.test-dist/`` of the repository.

    The same binaries as ``nox -s build``, from the shared cache; its frames compressed at
    zstd level 3 (seconds instead of minutes on a fresh machine: a test needs the behaviour,
    not the size). Built once per machine state: a second call is a no-op.
    """
    import fcntl

    out = REPO / ".test-dist"
    out.mkdir(exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test processes build once
        print("\n[tests] default dist/mke in docker mode (a no-op when cached)", file=sys.stderr)
        r = subprocess.run([sys.executable, "-m", "build.cli", "build", "--mode=docker", "--bundle",
                            "--compression-level=3", f"--dist={out}"], cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=sys.stderr, stderr=sys.stderr,
                           timeout=7200, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"building the default dist/mke failed (exit {r.returncode}); see the log above")
    return out / "mke"
