"""The data dir every role keeps its state in: its layout, its lock and its status file.

One mke runs per data dir: ``DataDirLock`` is an exclusive flock on
``<data-dir>/run/mke.lock`` that holds the owner's pid; ``holder_pid`` tells another
command (``status``, ``reset``, ``etcd``) whether, and which, mke runs there. The
running mke keeps ``<data-dir>/run/status.json`` current for ``mke status``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mke.errors import BusyError
from mke.node.files import private_dir, write_file_atomic

DEFAULT_DATA_DIR = Path("/var/lib/mke")
RUN_DIR = "run"
LOCK_NAME = "mke.lock"
STATUS_NAME = "status.json"
LOGS_DIR = "logs"  # <component>.log of everything that runs on this data dir (mke.logsink)
EMBEDDED_WORKER_DIR = "node"  # where `mke server --enable-worker` keeps its worker's state


# Directories of the host itself: never a data dir (mke reset would remove it) nor a pod logs dir.
SYSTEM_DIRS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/media", "/mnt", "/opt", "/proc",
    "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/bin", "/usr/lib", "/usr/local", "/usr/sbin",
    "/usr/share", "/var", "/var/cache", "/var/lib", "/var/log", "/var/run", "/var/tmp", "/var/spool",
})
# What an mke data dir holds (any one of them): only such a directory is mke reset's to remove.
MARKERS = (f"{RUN_DIR}/{LOCK_NAME}", "runtime", "bin/.store", "pki", "worker", EMBEDDED_WORKER_DIR)


def refuse_system_dir(path: Path, flag: str) -> Path:
    """``path`` unless it is one of the host's own directories (UsageError naming ``flag``)."""
    from mke.errors import UsageError

    real = os.path.realpath(path)
    if real in SYSTEM_DIRS or str(path) in SYSTEM_DIRS:
        raise UsageError(f"{flag} {path}: a directory of the host itself; mke needs one of its own "
                         f"(default {DEFAULT_DATA_DIR if flag == '--data-dir' else '/var/log/pods'})")
    return path


def worker_data_dirs(data_dir: Path) -> tuple[Path, Path]:
    """Where a worker keeps its state for ``--data-dir``: ``mke worker``'s, then ``mke server --enable-worker``'s."""
    return Path(data_dir), Path(data_dir) / EMBEDDED_WORKER_DIR


def is_mke_data_dir(path: Path) -> bool:
    return any((Path(path) / m).exists() for m in MARKERS)


def data_dir_from(arg: Path | str | None) -> Path:
    """The data dir a command uses: ``--data-dir`` if given, else the default; always absolute.
    A directory of the host itself (``/``, ``/etc``, ``/var/lib``, ...) is refused."""
    return refuse_system_dir(Path(arg or DEFAULT_DATA_DIR).absolute(), "--data-dir")


def run_dir(data_dir: Path) -> Path:
    return Path(data_dir) / RUN_DIR


@contextlib.contextmanager
def flocked(path: Path, *, mode: int = 0o600) -> Iterator[int]:
    """Hold an exclusive flock on ``path`` (created when missing) for the ``with`` block; yields the fd."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


class DataDirLock:
    """An exclusive flock on ``<data-dir>/run/mke.lock`` held while mke runs on that data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = run_dir(self.data_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BusyError(f"another mke (pid {holder_pid(self.data_dir) or '?'}) runs with data dir "
                            f"{self.data_dir}; stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def holder_pid(data_dir: Path) -> int | None:
    """The pid of the mke holding ``data_dir``'s lock, None when no mke runs there (-1: unknown pid)."""
    try:
        fd = os.open(run_dir(data_dir) / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    # PermissionError goes up: a user who may not look cannot be told "not running" (issue 19)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return int(os.pread(fd, 32, 0).split()[0])
            except (ValueError, IndexError):
                return -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class StatusFile:
    """``<data-dir>/run/status.json``: what the running mke reports about itself."""

    def __init__(self, data_dir: Path) -> None:
        self.path = run_dir(data_dir) / STATUS_NAME

    def write(self, doc: dict[str, Any]) -> None:
        try:
            write_file_atomic(self.path, json.dumps(doc, indent=1).encode(), 0o600)
        except OSError:
            pass  # informational; never fail a running node over it

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def read_status(data_dir: Path) -> dict[str, Any] | None:
    """The running mke's status document, or None when no mke runs with ``data_dir``."""
    pid = holder_pid(data_dir)
    if pid is None:
        return None
    try:
        return json.loads(StatusFile(data_dir).path.read_text())
    except (OSError, ValueError):
        return {"pid": pid, "phase": "starting", "components": []}
