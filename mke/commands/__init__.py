"""One module per ``mke`` subcommand; see mke.cli.COMMANDS."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mke.logsink import LogSink
    from mke.service.base import InitSystem
    from mke.worker.paths import WorkerPaths


def stop_on_signals(stopping: threading.Event, received: list[str]) -> None:
    """SIGTERM and SIGINT set ``stopping`` (the long-running commands then stop in order) and add
    the signal's name to ``received`` (NodeRole.signals: the role says it when it stops). The handler
    writes nothing: it may run while the main thread holds the log sink's lock."""

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def add_data_dir(p: argparse.ArgumentParser) -> None:
    """The ``--data-dir`` option every command that works on a node's state takes."""
    p.add_argument("--data-dir", type=Path, default=None, help="state directory (default /var/lib/mke)")


def add_service_role(p: argparse.ArgumentParser) -> None:
    """The optional role of ``mke start``, ``stop`` and ``uninstall``."""
    p.add_argument("role", nargs="?", choices=["controller", "worker"],
                   help="which mke service (default: the one installed here)")


def installed_service(args: argparse.Namespace) -> tuple[InitSystem, str, str]:
    """``mke start|stop|uninstall``: (the service manager, the role installed or given, its service name)."""
    from mke.service import detect, installed_role, service_name

    init = detect()
    role = installed_role(init, args.role)
    return init, role, service_name(role)


# -- the log of a long-running node (mke/logsink.py): server and worker

_SIZE_UNITS = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30}
MIN_LOG_SIZE = 4096


def log_size(text: str) -> int:
    """``--log-max-size``: bytes, or with a binary unit (``512K``, ``10MiB``, ``1G``); 4 KiB at least."""
    import re

    m = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _SIZE_UNITS or int(m.group(1)) * _SIZE_UNITS[unit] < MIN_LOG_SIZE:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size of 4KiB or more (bytes, or K/KiB, M/MiB, G/GiB)")
    return int(m.group(1)) * _SIZE_UNITS[unit]


def log_files(text: str) -> int:
    """``--log-max-files``: how many rotated copies to keep, 1 to 1000."""
    if not text.strip().isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of files (1 to 1000)")
    return int(text)


def add_log_arguments(p: argparse.ArgumentParser) -> None:
    """``--log-level``, ``--log-max-size``, ``--log-max-files`` of ``mke server`` and ``mke worker``."""
    from mke.logsink import DEFAULT_LEVEL, DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, LEVELS

    p.add_argument("--log-level", choices=LEVELS, default=DEFAULT_LEVEL,
                   help=f"the lowest level written to stderr (default {DEFAULT_LEVEL}); <data-dir>/logs/ gets every level")
    p.add_argument("--log-max-size", type=log_size, default=DEFAULT_MAX_BYTES, metavar="SIZE",
                   help=f"rotate <data-dir>/logs/<component>.log at this size (default {DEFAULT_MAX_BYTES >> 20}MiB)")
    p.add_argument("--log-max-files", type=log_files, default=DEFAULT_MAX_FILES, metavar="N",
                   help=f"rotated copies kept per component, <component>.log.1 to .N (default {DEFAULT_MAX_FILES})")


def log_sink_from(args: argparse.Namespace) -> LogSink:
    """The sink of a node started with ``add_log_arguments``' flags (it opens its files once it owns the data dir)."""
    from mke.logsink import LogSink, Rotation

    return LogSink(level=args.log_level, rotation=Rotation(max_bytes=args.log_max_size, max_files=args.log_max_files))


# -- the passthrough commands (kubectl, ctr, crictl): another program, exec'd with this node's settings


def passthrough_args(rest: list[str]) -> list[str]:
    """The other program's arguments: argparse's REMAINDER without the ``--`` that may start it."""
    return rest[1:] if rest[:1] == ["--"] else list(rest)


def flag_given(args: list[str], long: str, short: str | None, value_flags: frozenset[str], *,
               long_anywhere: bool = False) -> bool:
    """Whether ``args`` (another program's) set ``long``/``short``, as ``-f X``, ``-f=X`` or ``--flag=X``.

    Global flags stand before the program's command: the scan stops at the first word that is
    not a flag or a flag's value (``value_flags`` names the flags that take one), or at ``--``.
    ``long_anywhere``: the long form also counts after the command (a CLI whose commands inherit
    its global flags), the short one never (a command may give it another meaning).
    """
    names = {long, short} - {None}
    before = True
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            return False
        name = a.split("=", 1)[0]
        if before and name in names or not before and long_anywhere and name == long:
            return True
        if before:
            if not a.startswith("-") or a == "-":
                before = False
            elif name in value_flags and "=" not in a:
                i += 1  # its value
        i += 1
    return False


def running_worker_or_fail(data_dir: Path, hint: str) -> WorkerPaths:
    """The WorkerPaths of the worker whose containerd runs for ``data_dir``; UsageError naming the socket
    (and ``hint``: how to point the tool elsewhere) when there is none."""
    from mke.errors import UsageError
    from mke.node.datadir import worker_data_dirs
    from mke.worker.paths import WorkerPaths, running_worker

    sock = WorkerPaths(data_dir).containerd_socket
    try:
        found = running_worker(data_dir)
    except PermissionError:
        raise UsageError(f"cannot look for the containerd socket at {sock}: permission denied; run this as root, "
                         f"or {hint}") from None
    if found is None:
        embedded = WorkerPaths(worker_data_dirs(data_dir)[1]).containerd_socket
        raise UsageError(f"no containerd socket at {sock} (nor {embedded}): run this on a worker (as root, with its "
                         f"--data-dir), or {hint}")
    return found


def run_worker_tool(name: str, args: argparse.Namespace, rest: list[str], hint: str,
                    build_argv: Callable[[list[str], dict[str, str], Callable[[], Path]], list[str]]) -> int:
    """``mke ctr`` / ``mke crictl``: exec the embedded ``name`` with ``build_argv(rest, env, socket)``,
    where ``socket()`` (asked only when the user did not choose one) is the running worker's
    containerd socket, and the tool is staged into that worker's bin dir (or ``--bin-dir``)."""
    from mke.node.datadir import data_dir_from
    from mke.procenv import clean_env

    data_dir = data_dir_from(args.data_dir)
    env = clean_env()
    worker: list[WorkerPaths] = []

    def socket() -> Path:
        worker.append(running_worker_or_fail(data_dir, hint))
        return worker[0].containerd_socket

    argv = build_argv(passthrough_args(rest), env, socket)
    bin_dir = args.bin_dir or (worker[0].data_dir if worker else data_dir) / "bin"
    return exec_tool(name, argv, env, bin_dir, user_bin_dir=args.bin_dir is not None)


def exec_tool(name: str, argv: list[str], env: dict[str, str], bin_dir: Path, *, user_bin_dir: bool) -> int:
    """Replace mke with the embedded ``name`` (staged into ``bin_dir`` on first use) or the user's."""
    from mke.node.binaries import BinaryResolver

    path = BinaryResolver(bin_dir, user_bin_dir=user_bin_dir).path(name)
    os.execve(str(path), [str(path), *argv], env)
    return 0  # not reached
