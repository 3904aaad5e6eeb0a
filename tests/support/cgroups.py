"""A memory cgroup for a test or a benchmark: a small machine made out of this one."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class CgroupUnavailable(Exception):
    """No memory cgroup can be made here (not root, no memory controller)."""


@contextmanager
def memory_cgroup(limit: int) -> Iterator[Path]:
    """A new memory cgroup limited to ``limit`` bytes (v1's ``memory.limit_in_bytes`` or v2's
    ``memory.max``): its cgroup.procs. Removed on the way out, once the processes put in it are gone."""
    v1, v2 = Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup")
    if os.geteuid() != 0:
        raise CgroupUnavailable("needs root")
    if (v1 / "cgroup.procs").exists():
        base, name = v1, "memory.limit_in_bytes"
    elif (v2 / "cgroup.subtree_control").exists() and "memory" in (v2 / "cgroup.subtree_control").read_text().split():
        base, name = v2, "memory.max"
    else:
        raise CgroupUnavailable("no memory cgroup controller here (cgroup v1's memory, or v2 with memory enabled)")
    group = base / f"mke-test-{os.getpid()}-{time.monotonic_ns()}"
    group.mkdir()
    try:
        (group / name).write_text(str(limit))
        yield group / "cgroup.procs"
    finally:
        for _ in range(50):  # the kernel frees a cgroup shortly after its last process
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
        else:
            print(f"warning: {group} is left: a process is still in it", flush=True)
