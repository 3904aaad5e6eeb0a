"""``mke reset``: remove what mke created on this host. Refuses while mke runs.

Controller: stops component processes left by an mke that was killed (pid files in
``run/``, only when they still run the same binary), unmounts anything under the data
dir, removes the data dir (pki, etcd, kine, bin, run, manifests state). Worker parts
(kubelet, containerd, pods' mounts, CNI and iptables state) are undone by
``mke.worker.cleanup.reset_worker`` when this host ran a worker. A service ``mke install``
wrote is left alone (``mke uninstall`` removes it).

``mke reset --check`` changes nothing: it lists what mke left on this host for that data
dir (mounts, processes, pod cgroups, links and routes of the network providers, iptables
chains of either flavour, ipsets, files), one line each, and fails when there is anything.
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
    p.add_argument("--check", action="store_true",
                   help="change nothing: list what mke left on this host (exit 0 when nothing)")
    p.add_argument("--cgroup-root", default=None, metavar="PATH",
                   help="--check: the worker's --cgroup-root (default: from its kubelet config, else /)")
    p.add_argument("--pod-logs-dir", default=None, metavar="DIR",
                   help="--check: the worker's --pod-logs-dir (default: from its kubelet config, else /var/log/pods)")


def check(data_dir: Path, *, cgroup_root: str | None, pod_logs: str | None) -> int:
    from mke.errors import MkeError
    from mke.node.datadir import worker_data_dirs
    from mke.worker.cleanup import embedded_tools, kubelet_settings, leftovers
    from mke.worker.context import WorkerPaths

    # The data dir's runtime/ is mke's own program (the entry stages it to run even this command).
    found = [f"dir {data_dir}"] if data_dir.exists() and any(p.name != "runtime" for p in data_dir.iterdir()) else []
    for d in worker_data_dirs(data_dir):  # mke worker | mke server --enable-worker
        cg, logs = kubelet_settings(d)
        with embedded_tools(WorkerPaths(d)):  # reset removed the staged iptables and ipset: use mke's own
            found += leftovers(d, cgroup_root=cgroup_root or cg, pod_logs=pod_logs or logs or "/var/log/pods")
    for line in dict.fromkeys(found):
        print(line)
    if found:
        raise MkeError(f"mke left {len(found)} things on this host for {data_dir} (listed above); run `mke reset`")
    return 0


def _say(msg: str) -> None:
    print(f"mke reset: {msg}", file=sys.stderr)


def mounted_under(path: Path) -> list[str]:
    try:
        from mke.worker.cleanup import mounts_under
    except ImportError:
        return []
    return mounts_under([path])


def stop_leftover_components(run_dir: Path) -> list[str]:
    """Stop processes named by pid files in ``run_dir`` that still run a component binary."""
    from mke.components import supervised_names
    from mke.node import process

    stopped = []
    for pid_file in sorted(run_dir.glob("*.pid")):
        pid = process.recorded_process(pid_file)  # that very process (pid, start time, boot), not a reused pid
        if pid is None:
            pid_file.unlink(missing_ok=True)
            continue
        exe = process.exe(pid) or ""
        if os.path.basename(exe) in (*supervised_names(), pid_file.stem):
            process.kill_process_group(pid, 15.0)
            stopped.append(f"{pid_file.stem} (pid {pid})")
        pid_file.unlink(missing_ok=True)
    return stopped


def run(args: argparse.Namespace) -> int:
    from mke.errors import BusyError, MkeError, UsageError
    from mke.node.datadir import MARKERS, data_dir_from, holder_pid, is_mke_data_dir, worker_data_dirs

    data_dir = data_dir_from(args.data_dir)
    if args.check:
        return check(data_dir, cgroup_root=args.cgroup_root, pod_logs=args.pod_logs_dir)
    pid = holder_pid(data_dir)
    if pid is not None:
        raise BusyError(f"mke (pid {pid}) is running with data dir {data_dir}; stop it first "
                        "(mke stop, or SIGTERM)")
    if not data_dir.exists():
        _say(f"{data_dir} does not exist; nothing to do")
        return 0
    if not is_mke_data_dir(data_dir):
        if not any(data_dir.iterdir()):
            _say(f"{data_dir} is empty; nothing to do")
            return 0
        raise UsageError(f"--data-dir {data_dir} does not look like an mke data dir (it holds none of "
                         f"{', '.join(MARKERS)}); refusing to reset it")
    problems: list[str] = []
    stopped = stop_leftover_components(data_dir / "run")
    if stopped:
        _say(f"stopped {', '.join(stopped)}")
    try:
        from mke.worker.cleanup import WORKER_DIRS, reset_worker
    except ImportError:
        WORKER_DIRS, reset_worker = (), None  # type: ignore[assignment]
    for d in worker_data_dirs(data_dir):  # mke worker | mke server --enable-worker
        if reset_worker is not None and any((d / w).exists() for w in WORKER_DIRS):
            problems += reset_worker(d, _say)
    try:
        from mke.worker.cleanup import unmount_all

        problems += unmount_all([data_dir], _say)
    except ImportError:
        pass
    still = mounted_under(data_dir)
    if still:  # never delete through a mount point it could not unmount (another file system's files)
        problems.append(f"still mounted, so {data_dir} was not removed: {', '.join(still[:5])}")
    else:
        try:
            shutil.rmtree(data_dir)
            _say(f"removed {data_dir}")
        except OSError as e:
            problems.append(f"{e.filename}: {e.strerror}")
    if problems:
        raise MkeError(f"reset left things behind: {'; '.join(problems)}")
    return 0
