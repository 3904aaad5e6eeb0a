"""``mke cluster probe``'s digest of the file a running mke started from (mke/cluster/probe.py),
with a real process that holds the file open as dist/mke's entry does (MKE_EXE_FD)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

from mke.cluster.probe import running_file_sha256


def test_the_running_file_is_told_apart_from_a_replacement(tmp_path):
    exe = tmp_path / "mke"
    exe.write_bytes(b"old build\n" * 1000)
    old = hashlib.sha256(exe.read_bytes()).hexdigest()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1], 'rb'); "
                               "print('open', flush=True); time.sleep(60)", str(exe)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"open"
        # the same inode: the digest of the file there is the running one's (not hashed again)
        assert running_file_sha256(holder.pid, exe, "given") == "given"
        # replaced as mke cluster uploads (a new file renamed over): the old one is read through /proc
        new = tmp_path / "mke.tmp"
        new.write_bytes(b"new build\n")
        os.rename(new, exe)
        assert running_file_sha256(holder.pid, exe, hashlib.sha256(b"new build\n").hexdigest()) == old
        assert running_file_sha256(holder.pid, tmp_path / "other", None) is None  # it does not hold that one
    finally:
        holder.kill()
        holder.wait()
    assert running_file_sha256(holder.pid, exe, "x") is None  # gone
    assert running_file_sha256(None, exe, "x") is None and running_file_sha256(-1, exe, "x") is None
