"""The session-end check: a test run that leaves a process, a mount, a network namespace or
an iptables rule behind fails, and says what it left.

- processes: pytest becomes a child subreaper (``PR_SET_CHILD_SUBREAPER``) at start, so
  anything a test starts and loses track of (a daemon, a respawned component, an
  orphaned grandchild) ends up as pytest's own child; at the end every such child that
  is still alive is reported (and then killed, so one bad run does not poison the next);
- mounts: ``/proc/self/mountinfo`` at the end against the start;
- network namespaces: ``/run/netns`` at the end against the start;
- iptables: the rules and chains of the host's iptables (both flavours, v4 and v6) at
  the end against the start, when an iptables-save is installed.

``MKE_E2E_KEEP=1`` (keep an e2e cluster running on purpose) turns the check off.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

PR_SET_CHILD_SUBREAPER = 36
_BEFORE: dict[str, set[str]] = {}


def _children() -> dict[int, str]:
    """Live (non-zombie) children of this process: pid -> command line."""
    me = str(os.getpid())
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError, ValueError):
            continue
        if ppid != me:
            continue
        if state == "Z":
            try:
                os.waitpid(int(entry.name), os.WNOHANG)  # reap what died
            except ChildProcessError:
                pass
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = "?"
        out[int(entry.name)] = cmd
    return out


def _mounts() -> set[str]:
    try:
        return {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}
    except OSError:
        return set()


def _netns() -> set[str]:
    try:
        return {p.name for p in Path("/run/netns").iterdir()}
    except OSError:
        return set()


def _iptables() -> set[str]:
    out: set[str] = set()
    for tool in ("iptables-save", "ip6tables-save", "iptables-legacy-save", "ip6tables-legacy-save"):
        exe = shutil.which(tool)
        if not exe:
            continue
        try:
            text = subprocess.run([exe], capture_output=True, text=True, timeout=30, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        table = ""
        for line in text.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(("-A ", ":")):
                out.add(f"{tool} {table} {line.split(' [')[0]}")
    return out


def _snapshot() -> dict[str, set[str]]:
    return {"mount": _mounts(), "netns": _netns(), "iptables": _iptables()}


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("MKE_E2E_KEEP"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except OSError:
        pass
    _BEFORE.update(_snapshot())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("MKE_E2E_KEEP") or not _BEFORE:
        return
    left: list[str] = []
    procs = _children()
    left += [f"process {pid}: {cmd[:160]}" for pid, cmd in sorted(procs.items())]
    after = _snapshot()
    for kind in ("mount", "netns", "iptables"):
        left += [f"{kind} {x}" for x in sorted(after[kind] - _BEFORE[kind])]
    if not left:
        return
    for pid in procs:  # do not let one bad run poison the next
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    print("\nmke tests: the run left these behind (each is a bug in a test or in mke):", file=sys.stderr)
    for line in left[:50]:
        print(f"  {line}", file=sys.stderr)
    if len(left) > 50:
        print(f"  ... and {len(left) - 50} more", file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
