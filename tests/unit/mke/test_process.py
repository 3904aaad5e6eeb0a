"""mke/node/process.py: which processes are ours."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from mke.node import process


def test_sees_same_for_our_own_process(tmp_path):
    assert process.sees_same(os.getpid(), tmp_path)
    assert not process.sees_same(os.getpid(), tmp_path / "missing")
    assert not process.sees_same(2**22 + 7, tmp_path)  # no such pid


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare(1)")
def test_sees_same_is_false_for_the_same_path_in_another_mount_namespace(tmp_path):
    """Another host on this kernel with the same data-dir path (its own mount over it) is not us."""
    p = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                          f"mount -t tmpfs mke-test {tmp_path} && touch {tmp_path}/ready && exec sleep 30"])
    try:
        inside = f"/proc/{p.pid}/root{tmp_path}/ready"  # the mount is visible only in its namespace
        deadline = time.monotonic() + 10
        while not os.path.exists(inside) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.path.exists(inside) and not (tmp_path / "ready").exists()
        assert not process.sees_same(p.pid, tmp_path)
    finally:
        p.kill()
        p.wait()
