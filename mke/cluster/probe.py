"""``mke cluster probe``: what one host reports to ``mke cluster`` (run there, over SSH, by the
shipped mke): the digest of a file (the mke file, its config), the node name, which mke
service is installed and by what, whether mke runs with the data dir and its status, and
whether the node has joined (its state is in the data dir). Prints one JSON document.
"""

from __future__ import annotations

import hashlib
import json
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
    return {
        "version": __version__,
        "node_name": node_name(),
        "files": {str(f): file_sha256(f) for f in files},
        "services": services,
        "running": holder_pid(data_dir) is not None,
        "status": {k: status.get(k) for k in ("role", "phase", "node_name", "mke_version", "pid")} if status else None,
        "joined": {"controller": (data_dir / "pki" / "ca.crt").is_file(),
                   "worker": WorkerPaths(data_dir).kubelet_kubeconfig.is_file()},
        "images": sorted(p.name for p in images.iterdir()) if images.is_dir() else [],
    }


def run(data_dir: Path, files: list[Path]) -> int:
    print(json.dumps(probe(data_dir, files)))
    return 0
