"""Kernel-only test hosts: a root file system that holds nothing but ``/mke``.

Each bare host is a network namespace (tests/e2e/netns.py) plus a mount namespace of its
own, kept alive by a bind mount of ``/proc/<pid>/ns/mnt`` onto a file, whose root
directory holds:

    /mke             dist/mke, bind-mounted read-only (nothing else of the build)
    /proc /sys /dev  procfs, a sysfs made inside the host's network namespace (so
                     /sys/class/net shows its own links), the machine's /dev
    /sys/fs/cgroup   the machine's cgroup hierarchies (what its init mounted: v2, or v1 here)
    /run /tmp        tmpfs
    /var             a plain directory (mke's data dir /var/lib/mke lives there)

No shell, no libc, no iptables, no iproute2, no kmod, no /etc (a worker writes only a
minimal /etc/passwd, group, hosts and resolv.conf, which kubelet and containerd need):
``check_bare`` proves it.

The root is made the namespace's root with ``pivot_root`` (the machine's file system is
unmounted from it), as on a real host: a plain ``chroot`` would not do, because runc
starts containers with ``pivot_root`` and ``runc exec`` later enters their mount
namespace at the namespace's root. Processes run as ``nsenter --net=... --mount=... --
/mke ...``; the harness reads the same files from outside through ``<root>/...``.
``destroy`` drops the namespace: every mount in it goes with the last process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Run once inside the new mount namespace: make ROOT its root and let go of the machine's.
PIVOT = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
os.chdir(sys.argv[1])
os.makedirs(".oldroot", exist_ok=True)
if libc.syscall(155, b".", b".oldroot") != 0:  # pivot_root(2) (x86_64)
    raise OSError(ctypes.get_errno(), "pivot_root")
os.chdir("/")
if libc.umount2(b"/.oldroot", 2) != 0:  # MNT_DETACH
    raise OSError(ctypes.get_errno(), "umount /.oldroot")
os.rmdir("/.oldroot")
"""

# What a root may hold besides the mount points: /mke and what mke itself writes (its data
# under /var; the few /etc files a worker creates where a host has none).
ALLOWED_TOP = {"mke", "proc", "sys", "dev", "run", "tmp", "var", "etc"}
# What mke writes into /etc where missing (mke/worker/host.py, the network provider's host_files)
ALLOWED_ETC = {"passwd", "group", "hosts", "resolv.conf", "iproute2"}
FORBIDDEN = ("bin/sh", "usr", "lib", "lib64", "sbin", "bin")


# What the test machine (not the bare hosts) needs to make and enter the hosts, and build the test image.
HOST_TOOLS = ("ip", "nsenter", "unshare", "chroot", "mount", "go")


def missing_host_tools() -> list[str]:
    return [t for t in HOST_TOOLS if not shutil.which(t)]


def run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")


@dataclass
class BareRoot:
    name: str
    base: Path  # <BASE>/roots
    netns: str
    mke: Path  # dist/mke on the machine
    # more read-only files at the root's top, e.g. {"mke-next": <another build>} for an upgrade test
    extra: dict[str, Path] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.base / self.name

    @property
    def nsdir(self) -> Path:
        return self.base / ".mntns"

    @property
    def nsfile(self) -> Path:
        return self.nsdir / self.name

    def outside(self, inner: Path | str) -> Path:
        """The machine's path of ``inner`` (a path as the host sees it inside its root)."""
        return self.root / str(inner).lstrip("/")

    def _in_ns(self, *argv: str) -> None:
        run(["nsenter", f"--net=/run/netns/{self.netns}", f"--mount={self.nsfile}", "--", *argv])

    def create(self) -> BareRoot:
        self.destroy()
        for d in ("proc", "sys", "dev", "run", "tmp", "var"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "mke").touch()
        for name in self.extra:
            (self.root / name).touch()
        self.nsdir.mkdir(parents=True, exist_ok=True)
        if not _is_mountpoint(self.nsdir):  # ns files must sit on a private mount
            run(["mount", "--bind", str(self.nsdir), str(self.nsdir)])
            run(["mount", "--make-private", str(self.nsdir)])
        self.nsfile.touch()
        run(["unshare", f"--mount={self.nsfile}", "--propagation", "private", "true"])
        r = str(self.root)
        self._in_ns("mount", "--bind", r, r)  # the root is a mount point, as on any host (kubelet looks for it)
        self._in_ns("mount", "--bind", "-o", "ro", str(self.mke), f"{r}/mke")
        self._in_ns("mount", "-o", "remount,bind,ro", f"{r}/mke")
        for name, path in self.extra.items():
            self._in_ns("mount", "--bind", "-o", "ro", str(path), f"{r}/{name}")
            self._in_ns("mount", "-o", "remount,bind,ro", f"{r}/{name}")
        self._in_ns("mount", "-t", "proc", "proc", f"{r}/proc")
        self._in_ns("mount", "-t", "sysfs", "sysfs", f"{r}/sys")
        self._in_ns("mount", "--rbind", "/sys/fs/cgroup", f"{r}/sys/fs/cgroup")  # the machine's hierarchies, v1 or v2
        self._in_ns("mount", "--rbind", "/dev", f"{r}/dev")
        self._in_ns("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", f"{r}/run")
        self._in_ns("mount", "-t", "tmpfs", "-o", "mode=1777", "tmpfs", f"{r}/tmp")
        self._in_ns(sys.executable, "-c", PIVOT, r)
        return self

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` (its paths as the host sees them) run inside the host: its namespaces, its root."""
        return ["nsenter", f"--net=/run/netns/{self.netns}", f"--mount={self.nsfile}", "--", *argv]

    def check_bare(self) -> list[str]:
        """What the root holds that a kernel-only host would not (empty: it is bare)."""
        bad = [f"/{p.name}" for p in self.root.iterdir() if p.name not in ALLOWED_TOP]
        if (self.root / "etc").is_dir():
            bad += [f"/etc/{p.name}" for p in (self.root / "etc").iterdir() if p.name not in ALLOWED_ETC]
        if (self.root / "etc" / "iproute2").is_dir():
            bad += [f"/etc/iproute2/{p.name}" for p in (self.root / "etc" / "iproute2").iterdir() if p.name != "rt_tables"]
        bad += [f"/{p}" for p in FORBIDDEN if (self.root / p).exists() or (self.root / p).is_symlink()]
        return bad

    def destroy(self) -> None:
        if self.nsfile.exists():
            subprocess.run(["umount", "-l", str(self.nsfile)], capture_output=True, timeout=60, check=False)
            self.nsfile.unlink(missing_ok=True)

    def remove(self) -> None:
        """Drop the namespace and the root (after every process in it has stopped)."""
        self.destroy()
        shutil.rmtree(self.root, ignore_errors=True)


def _is_mountpoint(path: Path) -> bool:
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return False
    return any(line.split()[4] == str(path) for line in text.splitlines())


def release_nsdir(base: Path) -> None:
    """Unmount the private bind mount that holds the namespace files (after every host is gone)."""
    nsdir = base / ".mntns"
    if _is_mountpoint(nsdir):
        subprocess.run(["umount", "-l", str(nsdir)], capture_output=True, timeout=60, check=False)
    if nsdir.exists() and not any(nsdir.iterdir()):
        os.rmdir(nsdir)
