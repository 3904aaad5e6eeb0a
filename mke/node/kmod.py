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
from collections.abc import Callable
from pathlib import Path

from mke.errors import KernelModuleError

MODULE_INIT_COMPRESSED_FILE = 4
# syscall numbers: (finit_module, init_module)
_SYSCALLS = {"x86_64": (313, 175), "aarch64": (273, 105)}
_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def _norm(name: str) -> str:
    return name.replace("-", "_")


def _module_name(path: str) -> str:
    base = os.path.basename(path)
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if base.endswith(suffix):
            return _norm(base[: -len(suffix)])
    return _norm(base)


class ModuleTree:
    """``/lib/modules/<release>`` (or ``/usr/lib/modules``) and ``/sys/module`` of this kernel."""

    def __init__(self, root: Path | None = None, sys_module: Path = Path("/sys/module"),
                 release: str | None = None) -> None:
        release = release or os.uname().release
        if root is None:
            root = next((p for p in (Path("/lib/modules") / release, Path("/usr/lib/modules") / release)
                         if p.is_dir()), Path("/lib/modules") / release)
        self.root = root
        self.sys_module = sys_module
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
    if tree.loaded(name):
        return "loaded"
    if tree.builtin(name):
        return "builtin"
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
