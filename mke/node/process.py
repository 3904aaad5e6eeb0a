"""Processes as /proc shows them, pid files, and stopping a process group.

A destructive action touches only what mke recorded as its own: a pid from one of
mke's pid files is signalled only while /proc/<pid>/exe (or a #! script's argv) is
the binary that pid file belongs to, so a recycled pid is never hit.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")


def exe(pid: int) -> str | None:
    """The executable ``pid`` runs (without the " (deleted)" suffix of a replaced file), or None."""
    try:
        return os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except OSError:
        return None


def cmdline(pid: int) -> list[str]:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def state(pid: int) -> str:
    """The one-letter state from /proc/<pid>/stat ("R", "S", "Z", ...), or "?" when gone."""
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    return state(pid) not in ("?", "Z")


def runs_binary(pid: int, binary: str) -> bool:
    """True when process ``pid`` executes ``binary`` (directly, or as a #! script's argument)."""
    want = os.path.realpath(binary)
    e = exe(pid)
    if e is not None and os.path.realpath(e) == want:
        return True
    return any(a and os.path.realpath(a) == want for a in cmdline(pid)[:2])


def sees_same(pid: int, path: Path | str) -> bool:
    """True when ``path`` names, in ``pid``'s root (mount namespace, chroot), the file it names in ours.

    Two hosts on one kernel (containers, test namespaces) can use the same path for their
    own data dir: a process is ours only when its view of the path is our file.
    """
    try:
        theirs = os.stat(f"/proc/{pid}/root/{str(path).lstrip('/')}")
        ours = os.stat(path)
    except OSError:
        return False
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def pids() -> list[int]:
    """Every pid in this pid namespace ([] without /proc)."""
    try:
        return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]
    except OSError:
        return []


def running_executables() -> set[str]:
    """The executables of every process (for "is an old binary still in use?")."""
    out = set()
    for pid in pids():
        e = exe(pid)
        if e:
            out.add(e)
    return out


def wait_gone(targets: Iterable[int], timeout: float = 10.0) -> set[int]:
    """Wait until every pid has exited; returns those still alive after ``timeout``."""
    left = set(targets)
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        left = {p for p in left if alive(p)}
        if left:
            time.sleep(0.05)
    return left


def kill(targets: Iterable[int], sig: int = signal.SIGKILL) -> None:
    for pid in targets:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def kill_process_group(pid: int, timeout: float) -> None:
    """SIGTERM the group led by ``pid``, wait up to ``timeout``, then SIGKILL it."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive(pid):
                return
            time.sleep(0.02)


def start_time(pid: int) -> str | None:
    """When ``pid`` started, in clock ticks since boot (/proc/<pid>/stat field 22), or None."""
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def boot_id() -> str:
    try:
        return (PROC / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
    except OSError:
        return ""


def read_pid_file(path: Path) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def recorded_process(path: Path) -> int | None:
    """The pid in pid file ``path`` if that very process still runs: same pid, same start time,
    same boot (pid files survive reboots, and pids are reused). A pid file of an older mke
    (the pid alone) gives the pid; its callers also check the executable."""
    try:
        fields = Path(path).read_text().split()
        pid = int(fields[0])
    except (OSError, ValueError, IndexError):
        return None
    if not alive(pid):
        return None
    if len(fields) >= 3 and (fields[1] != start_time(pid) or fields[2] != boot_id()):
        return None
    return pid


def write_pid_file(path: Path, pid: int) -> None:
    """``pid``, its start time and the boot id, so that a later run can tell it from a reused pid."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o600)
        f.write(f"{pid} {start_time(pid) or 0} {boot_id() or '-'}\n")
    os.replace(tmp, path)


def hide_in_cmdline(secret: str) -> bool:
    """Overwrite ``secret`` with ``*`` in this process's own command line, which every user of
    the host can read (``/proc/<pid>/cmdline``, ``ps``); True once it is no longer there.

    The kernel shows the argument area of the process's memory (``arg_start``..``arg_end`` in
    /proc/self/stat); it is rewritten through /proc/self/mem, as setproctitle does. Python
    keeps its own copy of the arguments, so ``sys.argv`` is unchanged. Until this runs (a
    fraction of a second after exec) the secret was visible: ``--token-file`` never shows it.
    """
    needle = secret.encode()
    if not needle:
        return True
    try:
        stat = (PROC / "self" / "stat").read_bytes()
        fields = stat[stat.rindex(b")") + 2:].split()
        start, end = int(fields[45]), int(fields[46])  # fields 48 and 49 of proc(5)
        with open(PROC / "self" / "mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            area = mem.read(end - start)
            if needle in area:
                mem.seek(start)
                mem.write(area.replace(needle, b"*" * len(needle)))
        return needle not in (PROC / "self" / "cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return False
