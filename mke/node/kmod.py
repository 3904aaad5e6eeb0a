"""Load kernel modules without ``modprobe``: a kernel-only host has no kmod.

``ensure(name)`` does what ``modprobe name`` does for mke's needs: nothing when the
module is loaded or built in (``/sys/module/<name>``, ``modules.builtin``); otherwise
it looks the module up in ``/lib/modules/<release>/modules.dep``, loads its
dependencies first and then the module with ``finit_module(2)``. Compressed modules
(``.ko.xz``, ``.ko.zst``, ``.ko.gz``) are handed to the kernel to decompress
(``MODULE_INIT_COMPRESSED_FILE``, Linux 6.6+ with CONFIG_MODULE_DECOMPRESS) or
decompressed here and loaded with ``init_module(2)``. Module parameters and
``modprobe.d`` options are not applied (mke needs none).

A kernel built without module support (CONFIG_MODULES unset, as on this project's test
VMs) has everything built in or not at all; ``ensure`` then says which.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Callable, Mapping
from pathlib import Path

from mke.errors import KernelModuleError

MODULE_INIT_COMPRESSED_FILE = 4
# syscall numbers: (finit_module, init_module)
_SYSCALLS = {"x86_64": (313, 175), "aarch64": (273, 105)}
_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")

# what ``state`` answers
LOADED, BUILTIN, LOADABLE, ABSENT = "loaded", "builtin", "loadable", "absent"
# module -> the kernel option that builds it in (a kernel without /lib/modules has no modules.builtin)
MODULE_OPTIONS = {"overlay": "OVERLAY_FS", "br_netfilter": "BRIDGE_NETFILTER", "ip_set": "IP_SET",
                  "xt_set": "NETFILTER_XT_SET", "ipip": "NET_IPIP", "ip_vs": "IP_VS", "vxlan": "VXLAN",
                  "nf_conntrack": "NF_CONNTRACK", "veth": "VETH", "bridge": "BRIDGE"}


def _norm(name: str) -> str:
    return name.replace("-", "_")


def _module_name(path: str) -> str:
    base = os.path.basename(path)
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if base.endswith(suffix):
            return _norm(base[: -len(suffix)])
    return _norm(base)


class ModuleTree:
    """``/lib/modules/<release>`` (or ``/usr/lib/modules``), ``/sys/module`` and ``/proc`` of this kernel."""

    def __init__(self, root: Path | None = None, sys_module: Path = Path("/sys/module"),
                 release: str | None = None, proc: Path = Path("/proc")) -> None:
        release = release or os.uname().release
        if root is None:
            root = next((p for p in (Path("/lib/modules") / release, Path("/usr/lib/modules") / release)
                         if p.is_dir()), Path("/lib/modules") / release)
        self.root = root
        self.sys_module = sys_module
        self.proc = proc
        self._deps: dict[str, tuple[str, list[str]]] | None = None

    def loaded(self, name: str) -> bool:
        return (self.sys_module / _norm(name)).is_dir()

    def builtin(self, name: str) -> bool:
        try:
            return any(_module_name(line.strip()) == _norm(name)
                       for line in (self.root / "modules.builtin").read_text().splitlines())
        except OSError:
            return False

    def deps(self) -> dict[str, tuple[str, list[str]]]:
        """module name -> (its file, the files of its dependencies in modules.dep's order)."""
        if self._deps is None:
            out: dict[str, tuple[str, list[str]]] = {}
            try:
                text = (self.root / "modules.dep").read_text()
            except OSError:
                text = ""
            for line in text.splitlines():
                path, sep, rest = line.partition(":")
                if sep:
                    out[_module_name(path)] = (path, rest.split())
            self._deps = out
        return self._deps

    def load_order(self, name: str) -> list[str]:
        """The module files to load for ``name``, dependencies first (as modprobe orders them)."""
        entry = self.deps().get(_norm(name))
        if entry is None:
            return []
        path, deps = entry
        return [*reversed(deps), path]


def present(name: str, tree: ModuleTree, *, kernel_options: Mapping[str, str] | None = None) -> str | None:
    """LOADED or BUILTIN when the kernel has ``name`` now, else None.

    Beyond ``/sys/module`` and ``modules.builtin`` (a kernel without module support has no
    modules.builtin, and a built-in module without parameters no /sys/module entry): overlay
    listed in ``/proc/filesystems``; ``/proc/sys/net/bridge``, which a built-in br_netfilter
    makes; ``CONFIG_<option>=y`` in the kernel configuration, when the caller has read it.
    """
    proc = tree.proc
    if tree.loaded(name) or (_norm(name) == "overlay" and _filesystem(proc, "overlay")):
        return LOADED
    if tree.builtin(name) or (kernel_options or {}).get(MODULE_OPTIONS.get(_norm(name), "")) == "y" \
            or (_norm(name) == "br_netfilter" and (proc / "sys" / "net" / "bridge").is_dir()):
        return BUILTIN
    return None


def state(name: str, tree: ModuleTree, *, kernel_options: Mapping[str, str] | None = None) -> str:
    """LOADED, BUILTIN, LOADABLE (in the module tree; ``ensure`` loads it) or ABSENT.

    The one answer for a node's start (``ensure``) and for ``mke sysinfo``.
    """
    return (present(name, tree, kernel_options=kernel_options)
            or (LOADABLE if tree.load_order(name) else ABSENT))


def _filesystem(proc: Path, name: str) -> bool:
    try:
        return any(line.split()[-1] == name for line in (proc / "filesystems").read_text().splitlines() if line.split())
    except OSError:
        return False


def _syscall_loader() -> Callable[[Path], None]:
    libc = ctypes.CDLL(None, use_errno=True)
    finit, init = _SYSCALLS.get(platform.machine(), (None, None))
    if finit is None or init is None:
        raise KernelModuleError(f"loading kernel modules is not supported on {platform.machine()}")

    def load(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            flags = 0 if path.suffix == ".ko" else MODULE_INIT_COMPRESSED_FILE
            if libc.syscall(finit, fd, b"", flags) == 0:
                return
            err = ctypes.get_errno()
            if err == errno.EEXIST:
                return
            if flags and err in (errno.EINVAL, errno.EOPNOTSUPP):  # the kernel cannot decompress: do it here
                data = decompress(path)
                if libc.syscall(init, data, ctypes.c_ulong(len(data)), b"") == 0:
                    return
                err = ctypes.get_errno()
                if err == errno.EEXIST:
                    return
            raise OSError(err, os.strerror(err))
        finally:
            os.close(fd)

    return load


def decompress(path: Path) -> bytes:
    """A compressed module's bytes (the codecs are imported only here: most hosts never need them)."""
    raw = path.read_bytes()
    if path.name.endswith(".xz"):
        import lzma

        return lzma.decompress(raw)
    if path.name.endswith(".gz"):
        import gzip

        return gzip.decompress(raw)
    if path.name.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    return raw


def ensure(name: str, *, tree: ModuleTree | None = None, loader: Callable[[Path], None] | None = None) -> str:
    """Make ``name`` available; returns "loaded" (was already), "builtin" or "inserted".

    Raises KernelModuleError naming the module and what to do.
    """
    tree = tree or ModuleTree()
    have = present(name, tree)
    if have:
        return have
    order = tree.load_order(name)
    if not order:
        where = tree.root if tree.root.is_dir() else f"{tree.root} (missing)"
        raise KernelModuleError(f"kernel module {name} is neither loaded, built in, nor in {where}; "
                                f"load it on the host or use a kernel that has it")
    load = loader or _syscall_loader()
    for rel in order:
        mod = _module_name(rel)
        if tree.loaded(mod):
            continue
        try:
            load(tree.root / rel)
        except OSError as e:
            hint = " (mke needs CAP_SYS_MODULE to load modules)" if e.errno == errno.EPERM else ""
            raise KernelModuleError(f"kernel module {mod} ({tree.root / rel}), needed for {name}: "
                                    f"{e.strerror}{hint}") from e
    return "inserted"
