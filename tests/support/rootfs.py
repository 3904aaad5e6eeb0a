"""Root filesystems to run the real dist/mke in, the way other hosts would see it.

``RootSpec`` describes a root: a directory that becomes ``/``, the mounts to make in it
(proc, /dev, a tmpfs, bind mounts of host directories, an overlay over a cached Debian
tree) and whether the root itself is read-only. ``popen``/``run`` start a process there:
the child (before exec) unshares its mount namespace, makes the mounts, chroots and
optionally drops to another user. Every mount exists only in that namespace and goes away
with its last process: nothing to unmount, nothing left behind. Needs root.

``debian_root(suite)`` is a minbase root made by debootstrap, cached under the build cache
(``<cache>/test-roots/``) between runs; tests put an overlay over it, so it stays pristine.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
DEBIAN_MIRROR = "http://deb.debian.org/debian"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Mount:
    target: str  # inside the root, absolute ("/proc")
    source: str | None = None
    fstype: str | None = None
    flags: int = 0
    data: str | None = None
    readonly: bool = False  # for binds: remount read-only after binding


@dataclasses.dataclass(frozen=True, kw_only=True)
class RootSpec:
    path: Path  # the directory that becomes / (or the overlay's mount point)
    mounts: tuple[Mount, ...] = ()
    readonly: bool = False  # the root itself read-only (its submounts keep their own flags)
    overlay_lower: Path | None = None  # mount an overlay (lower read-only, upper/work under ``path``.parent)

    @property
    def upper(self) -> Path:
        return self.path.parent / f"{self.path.name}.upper"


def proc() -> Mount:
    return Mount(target="/proc", source="proc", fstype="proc", flags=MS_NOSUID | MS_NODEV | MS_NOEXEC)


def dev() -> Mount:
    return Mount(target="/dev", source="/dev", flags=MS_BIND | MS_REC)


def bind(host: Path, target: str, *, readonly: bool = False) -> Mount:
    return Mount(target=target, source=str(host), flags=MS_BIND, readonly=readonly)


def tmpfs(target: str, *, noexec: bool = False) -> Mount:
    return Mount(target=target, source="tmpfs", fstype="tmpfs", flags=MS_NOSUID | MS_NODEV | (MS_NOEXEC if noexec else 0),
                 data="mode=1777")


def prepare(spec: RootSpec) -> None:
    """Create the mount points (in the upper dir of an overlay root)."""
    base = spec.upper if spec.overlay_lower else spec.path
    base.mkdir(parents=True, exist_ok=True)
    spec.path.mkdir(parents=True, exist_ok=True)
    if spec.overlay_lower:
        (spec.path.parent / f"{spec.path.name}.work").mkdir(exist_ok=True)
    for m in spec.mounts:
        target = base / m.target.lstrip("/")
        if m.source and m.flags & MS_BIND and Path(m.source).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        else:
            target.mkdir(parents=True, exist_ok=True)


def _enter(spec: RootSpec, uid: int | None, gid: int | None) -> None:
    """In the child, before exec: a mount namespace of its own, the mounts, chroot, the user."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]

    def mount(source: str | None, target: Path | str, fstype: str | None, flags: int, data: str | None) -> None:
        def enc(s: str | None) -> bytes | None:
            return s.encode() if s is not None else None

        if libc.mount(enc(source), enc(str(target)), enc(fstype), flags, enc(data)) != 0:
            e = ctypes.get_errno()
            os.write(2, f"rootfs: mount {source} on {target} ({fstype}): {os.strerror(e)}\n".encode())
            raise OSError(e, os.strerror(e))

    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    root = spec.path
    if spec.overlay_lower:
        work = spec.path.parent / f"{spec.path.name}.work"
        mount("overlay", root, "overlay", 0, f"lowerdir={spec.overlay_lower},upperdir={spec.upper},workdir={work}")
    else:
        mount(str(root), root, None, MS_BIND, None)  # a mount of its own, so that it can be made read-only
    for m in spec.mounts:
        target = root / m.target.lstrip("/")
        mount(m.source, target, m.fstype, m.flags, m.data)
        if m.readonly:
            mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY, None)
    if spec.readonly:
        mount(None, root, None, MS_BIND | MS_REMOUNT | MS_RDONLY, None)
    os.chroot(root)
    os.chdir("/")
    if gid is not None:
        os.setgroups([])
        os.setgid(gid)
    if uid is not None:
        os.setuid(uid)


def popen(spec: RootSpec, argv: list[str], *, env: dict[str, str], uid: int | None = None, gid: int | None = None,
          **kwargs) -> subprocess.Popen:
    if os.geteuid() != 0:
        raise PermissionError("running in another root needs root (chroot, mounts)")
    prepare(spec)
    return subprocess.Popen(argv, env=env, preexec_fn=lambda: _enter(spec, uid, gid), **kwargs)


def run(spec: RootSpec, argv: list[str], *, env: dict[str, str], uid: int | None = None, gid: int | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = popen(spec, argv, env=env, uid=uid, gid=gid, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{argv} timed out after {timeout}s in {spec.path}: {err[-2000:]}") from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def processes_in(path: Path) -> list[int]:
    """Pids of processes whose root directory is ``path`` (what is left of a test's processes)."""
    want = os.path.realpath(path)
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(p / "root") == want:
                    out.append(int(p.name))
    return out


def cache_root() -> Path:
    return Path(os.environ.get("MKE_CACHE_DIR") or Path.home() / ".cache" / "mke")


def debian_root(suite: str = "bullseye", variant: str = "minbase") -> Path:
    """A Debian root made by debootstrap, cached between runs (built once, under a lock)."""
    base = cache_root() / "test-roots"
    dest = base / f"debian-{suite}-{variant}"
    if (dest / ".mke-complete").is_file():
        return dest
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed (scripts/bootstrap.sh installs it)")
    base.mkdir(parents=True, exist_ok=True)
    with open(base / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dest / ".mke-complete").is_file():
            return dest
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=base))
        try:
            debcache = cache_root() / "debootstrap"
            debcache.mkdir(parents=True, exist_ok=True)
            print(f"\n[tests] debootstrap --variant={variant} {suite} (once; cached in {dest})", file=sys.stderr)
            proc = subprocess.run(["debootstrap", f"--variant={variant}", f"--cache-dir={debcache}", suite, str(tmp),
                                   DEBIAN_MIRROR], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"debootstrap {suite} failed: {(proc.stdout + proc.stderr)[-1500:]}")
            (tmp / ".mke-complete").write_text(suite + "\n")
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return dest


def glibc_version(root: Path) -> str:
    """The glibc a root carries, from its libc.so.6 (``GNU C Library ... version 2.31``)."""
    for lib in sorted(root.glob("lib/*/libc.so.6")) + sorted(root.glob("usr/lib/*/libc.so.6")):
        data = lib.read_bytes()
        i = data.find(b"GNU C Library")
        if i >= 0:
            line = data[i:data.find(b"\n", i)].decode(errors="replace")
            return line.rsplit("version ", 1)[-1].rstrip(".")
    raise FileNotFoundError(errno.ENOENT, f"no libc.so.6 in {root}")
