"""``mke reset``: remove what mke created on this host. Refuses while mke runs.

Controller: stops component processes left by an mke that was killed (pid files in
``run/``, only when they still run the same binary), unmounts anything under the data
dir, removes the data dir (pki, etcd, kine, bin, run, manifests state). Worker parts
(kubelet, containerd, pods' mounts, CNI and iptables state) are undone by
``mke.worker.cleanup.reset_worker`` when this host ran a worker. A systemd unit written
by ``mke install`` is left alone (``systemctl disable --now mke-controller`` first).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from mke.commands import add_data_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_dir(p)


def _say(msg: str) -> None:
    print(f"mke reset: {msg}", file=sys.stderr)


def stop_leftover_components(run_dir: Path) -> list[str]:
    """Stop processes named by pid files in ``run_dir`` that still run a component binary."""
    from mke.components import supervised_names
    from mke.node import process

    stopped = []
    for pid_file in sorted(run_dir.glob("*.pid")):
        pid = process.read_pid_file(pid_file)
        if pid is None:
            continue
        exe = process.exe(pid) or ""
        if process.alive(pid) and os.path.basename(exe) in (*supervised_names(), pid_file.stem):
            process.kill_process_group(pid, 15.0)
            stopped.append(f"{pid_file.stem} (pid {pid})")
        pid_file.unlink(missing_ok=True)
    return stopped


def run(args: argparse.Namespace) -> int:
    from mke.errors import BusyError, MkeError
    from mke.node.datadir import data_dir_from, holder_pid

    data_dir = data_dir_from(args.data_dir)
    pid = holder_pid(data_dir)
    if pid is not None:
        raise BusyError(f"mke (pid {pid}) is running with data dir {data_dir}; stop it first "
                        "(systemctl stop mke-controller, or SIGTERM)")
    if not data_dir.exists():
        _say(f"{data_dir} does not exist; nothing to do")
        return 0
    problems: list[str] = []
    stopped = stop_leftover_components(data_dir / "run")
    if stopped:
        _say(f"stopped {', '.join(stopped)}")
    try:
        from mke.worker.cleanup import WORKER_DIRS, reset_worker
    except ImportError:
        WORKER_DIRS, reset_worker = (), None  # type: ignore[assignment]
    for d in (data_dir, data_dir / "node"):  # mke worker | mke server --enable-worker
        if reset_worker is not None and any((d / w).exists() for w in WORKER_DIRS):
            problems += reset_worker(d, _say)
    try:
        from mke.worker.cleanup import unmount_all

        problems += unmount_all([data_dir], _say)
    except ImportError:
        pass
    try:
        shutil.rmtree(data_dir)
        _say(f"removed {data_dir}")
    except OSError as e:
        problems.append(f"{e.filename}: {e.strerror}")
    if problems:
        raise MkeError(f"reset left things behind: {'; '.join(problems)}")
    return 0
