"""``mke cluster`` in a FIPS runtime: asyncssh imports ``md5`` from hashlib, which a FIPS runtime's
hashlib lacks (dist/mke-fips's every ``mke cluster`` command died of that ImportError, found by
``nox -s e2e-fips``). Run in a fresh interpreter whose hashlib has its md5 removed, as the FIPS
runtime's is: with MKE_FIPS_RUNTIME set, importing mke.cluster lets asyncssh import, and MD5
still cannot be used; without it, nothing is patched (the import fails as it would)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[4]
PROGRAM = """
import hashlib
del hashlib.md5
import mke.cluster
import asyncssh
try:
    hashlib.md5(b"x")
except ValueError as e:
    print("md5 refused:", e)
"""


def run(fips: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MKE_FIPS_RUNTIME"}
    env["PYTHONPATH"] = str(REPO)
    if fips:
        env["MKE_FIPS_RUNTIME"] = "/nonexistent/fips"
    return subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, env=env, timeout=60)


def test_asyncssh_imports_in_a_fips_runtime_without_md5() -> None:
    p = run(fips=True)
    assert p.returncode == 0, p.stderr
    assert "md5 refused: MD5 is not available in mke's FIPS runtime" in p.stdout


def test_nothing_is_patched_outside_a_fips_runtime() -> None:
    p = run(fips=False)
    assert p.returncode != 0 and "cannot import name 'md5'" in p.stderr, p.stderr
