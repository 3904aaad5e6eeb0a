"""The baseline dist/mke for the benchmarks: the PyInstaller one-file build it replaced.

Made in the same run, from the same binaries, by the toolchain as it was at
``BASELINE_COMMIT`` (the last commit whose dist/mke was the one-file build): its tree is
taken with ``git archive`` (no worktree is registered), its pinned requirements
(PyInstaller 6.22.3 among them) go into a venv of its own, and its bundler writes a
dist/mke for the given manifest with the shared build cache, where the frames are the
same cached actions as today's (so only PyInstaller runs, once). Everything lives under
``<cache>/bench/`` and is reused by later runs.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from build.fsutil import extract_all

REPO = Path(__file__).resolve().parents[2]
BASELINE_COMMIT = "92749111296631456e4ed1b8e87fd4c3f53bb3ac"
SDE = "1700000000"


def _cache() -> Path:
    return Path(os.environ.get("MKE_CACHE_DIR") or Path.home() / ".cache" / "mke")


def _run(argv: list[str], **kw) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ...: exit {proc.returncode}: {(proc.stderr or proc.stdout)[-2000:]}")


def baseline_tree() -> Path:
    """The toolchain at BASELINE_COMMIT, with a venv holding its build requirements."""
    root = _cache() / "bench" / f"onefile-{BASELINE_COMMIT[:12]}"
    src, venv = root / "src", root / "venv"
    if not (src / ".complete").exists():
        shutil.rmtree(src, ignore_errors=True)
        data = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", BASELINE_COMMIT],
                              capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            extract_all(tar, src)
        (src / ".complete").write_text(BASELINE_COMMIT + "\n")
    stamp = venv / ".mke-requirements"
    want = hashlib.sha256((src / "requirements" / "build.txt").read_bytes()).hexdigest()
    if not (stamp.exists() and stamp.read_text() == want):
        print(f"(baseline: a venv with {BASELINE_COMMIT[:12]}'s build requirements, PyInstaller among them)", flush=True)
        shutil.rmtree(venv, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(venv)])
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(src / "requirements" / "build.txt")])
        stamp.write_text(want)
    return root


def onefile_bundle(manifest: Path) -> Path:
    """dist/mke as BASELINE_COMMIT's bundler makes it for ``manifest`` (cached by the manifest's digest)."""
    root = baseline_tree()
    key = hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]
    dist = root / f"dist-{key}"
    if (dist / "mke").is_file():
        return dist / "mke"
    (dist / "linux-amd64").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(manifest, dist / "linux-amd64" / "manifest.json")
    code = ("import sys; from pathlib import Path; from build import bundle; from build.cache import Cache, "
            "default_cache_dir; d = Path(sys.argv[1]); bundle.write_bundle(cache=Cache(default_cache_dir()), "
            f"manifest_path=d / 'linux-amd64' / 'manifest.json', dist=d, source_date_epoch={SDE})")
    print(f"(baseline: {BASELINE_COMMIT[:12]}'s one-file bundle of the same binaries)", flush=True)
    _run([str(root / "venv" / "bin" / "python"), "-c", code, str(dist)], cwd=root / "src",
         env={**os.environ, "PYTHONPATH": str(root / "src")})
    return dist / "mke"
