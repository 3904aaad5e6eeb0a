"""Real binaries for the integration tests: built once in docker mode, then served from the cache.

``MKE_TEST_BIN_DIR`` points at a directory of binaries to use as they are. Otherwise,
as root with a Docker engine, the docker-mode build of the control-plane and worker
components runs into the default cache (a no-op when it already holds them) and writes
``.test-bins/linux-amd64/bin`` in the repository. A failed build fails the tests: CI runs
these tests for real, so a missing binary must never turn into a silent skip.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = ("kubernetes", "etcd", "etcdutl", "kine", "konnectivity", "containerd", "runc", "cni-plugins")
OUT = REPO / ".test-bins"


def docker_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@functools.cache
def real_bin_dir() -> tuple[Path | None, str]:
    """(directory, reason): the directory is None when the binaries cannot be had here."""
    env = os.environ.get("MKE_TEST_BIN_DIR")
    if env:
        return Path(env), f"MKE_TEST_BIN_DIR={env}"
    if os.geteuid() != 0:
        return None, "needs root to build the binaries in Docker (or set MKE_TEST_BIN_DIR)"
    if not docker_available():
        return None, "no Docker engine to build the binaries (run ./scripts/bootstrap.sh, or set MKE_TEST_BIN_DIR)"
    OUT.mkdir(exist_ok=True)
    with open(OUT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test processes build once
        argv = [sys.executable, "-m", "build.cli", "build", "--mode=docker", f"--dist={OUT}",
                *[f"--component={c}" for c in COMPONENTS]]
        print(f"\n[tests] docker-mode build of {', '.join(COMPONENTS)} (a no-op when cached)", file=sys.stderr)
        proc = subprocess.run(argv, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                              stdout=sys.stderr, stderr=sys.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"docker-mode build of the test binaries failed (exit {proc.returncode}); see the log above")
    return OUT / "linux-amd64" / "bin", "docker-mode build"


@contextlib.contextmanager
def traversable_tmp(prefix: str) -> Iterator[Path]:
    """A temporary directory every user may pass through (0755 under /var/tmp), removed after:
    etcd runs as its own user (CIS 1.1.12), which could not reach a data dir below pytest's
    tmp dirs (0700 root); mke would run etcd as root there, saying so."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def reachable_bin_dir(bins: Path, dest: Path) -> Path:
    """``bins`` where every user may reach them (a clone below /root would not be): hard links
    where the file system allows, copies otherwise."""
    dest.mkdir(mode=0o755)
    for f in bins.iterdir():
        if f.is_file():
            try:
                os.link(f, dest / f.name)
            except OSError:
                shutil.copy2(f, dest / f.name)
    return dest
