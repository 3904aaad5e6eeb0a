"""``mke cluster probe``: what one host reports to ``mke cluster`` (run there, over SSH, by the
shipped mke): the digest of a file (the mke file, its config), the node name, which mke
service is installed and by what, whether mke runs with the data dir and its status, and
whether the node has joined (its state is in the data dir), and the digest of the mke file the
running mke started from (it may differ from the file there now: ``mke cluster upgrade``).
Prints one JSON document.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any


def file_sha256(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    return h.hexdigest()


def running_file_sha256(pid: int | None, exe: Path, exe_sha256: str | None) -> str | None:
    """The sha256 of the mke file the mke with ``pid`` started from (the entry keeps it open, as
    ``MKE_EXE_FD``, for the life of the process: mke.start), None when that cannot be told.

    The open file is ``exe`` itself when both have the same inode (its digest is ``exe_sha256``);
    after ``exe`` was replaced (renamed over) it is the old file, read through ``/proc/PID/fd``.
    """
    if pid is None or pid <= 0:
        return None
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return None
    try:
        want = exe.stat()
    except OSError:
        want = None
    for fd in fds:
        try:
            target = str(fd.readlink()).removesuffix(" (deleted)")
            if target != str(exe):
                continue
            st = fd.stat()
        except OSError:
            continue
        if want is not None and (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
            return exe_sha256
        return file_sha256(fd)
    return None


def probe(data_dir: Path, files: list[Path]) -> dict[str, Any]:
    from mke import __version__
    from mke.errors import ServiceError
    from mke.node.datadir import holder_pid, read_status
    from mke.node.hostinfo import node_name
    from mke.service import detect
    from mke.worker.paths import WorkerPaths

    try:
        init = detect()
        services = {"manager": init.name, "installed": init.installed_roles()}
    except ServiceError:
        services = {"manager": None, "installed": []}
    status = read_status(data_dir)
    images = WorkerPaths(data_dir).images_dir
    pid = holder_pid(data_dir)
    digests = {str(f): file_sha256(f) for f in files}
    return {
        "version": __version__,
        "time": time.time(),  # this host's clock (mke cluster restore compares node heartbeats with it)
        "node_name": node_name(),
        "files": digests,
        "services": services,
        "running": pid is not None,
        # the first --file is the mke file: which one the running mke started from (mke cluster upgrade)
        "running_sha256": running_file_sha256(pid, files[0], digests[str(files[0])]) if files else None,
        "status": {k: status.get(k) for k in ("role", "phase", "node_name", "mke_version", "pid")} if status else None,
        "joined": {"controller": (data_dir / "pki" / "ca.crt").is_file(),
                   "worker": WorkerPaths(data_dir).kubelet_kubeconfig.is_file()},
        "images": sorted(p.name for p in images.iterdir()) if images.is_dir() else [],
    }


def run(data_dir: Path, files: list[Path]) -> int:
    print(json.dumps(probe(data_dir, files)))
    return 0
