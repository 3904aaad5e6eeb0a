"""Python packages staged on first import instead of being unpacked on every start.

A one-file PyInstaller program unpacks every shared object it carries into a temp
dir each time it starts. ``cryptography`` alone is ~12 MB of them, which would make
``mke version`` ~1.5x slower than a hello-world; only PKI and tokens need it. So the
bundler leaves the packages in ``LAZY_PACKAGES`` out of PyInstaller's archive and puts
them (as a tar with compiled bytecode) into the payload. ``install()`` (called by the
entry script, costs nothing) adds an import hook: the first ``import cryptography``
stages the tar by digest into the lib dir, under a lock, verified, atomically, and
every later run just adds that directory to ``sys.path``.

Lib dir: ``$MKE_LIB_DIR``, else /var/lib/mke/lib for root, else ~/.cache/mke/lib.
Running from source (not frozen), nothing happens: the packages come from site-packages.
"""

from __future__ import annotations

# Only cheap imports at the top: the entry script imports this module on every start.
import os
import sys

if False:  # for type checkers only: importing these costs start-up time
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from pathlib import Path

    from mke.payload_format import Library, Payload

# Top-level import names the bundler moves out of PyInstaller's archive.
LAZY_PACKAGES = ("cryptography", "_cffi_backend", "cffi")
LIB_DIR_ENV = "MKE_LIB_DIR"
TMP_PREFIX = ".tmp-"


def default_lib_dir() -> Path:
    from pathlib import Path

    env = os.environ.get(LIB_DIR_ENV)
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/mke/lib")
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mke" / "lib"


def stage_library(payload: Payload, lib: Library, lib_dir: Path) -> Path:
    """``lib_dir/<sha256>``, holding the library's packages; staged now if missing."""
    import fcntl
    import shutil
    import tarfile
    import tempfile
    from pathlib import Path

    from mke.errors import StagingError

    dest = lib_dir / lib.sha256
    if (dest / ".complete").exists():
        return dest
    try:
        lib_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(lib_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise StagingError(f"lib dir {lib_dir}: {e.strerror or e}; set {LIB_DIR_ENV} to a writable, "
                           "exec-allowed directory") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if (dest / ".complete").exists():
            return dest
        for p in lib_dir.glob(f"{TMP_PREFIX}*"):
            shutil.rmtree(p, ignore_errors=True)
        if dest.exists():  # incomplete leftover of a killed staging (no .complete marker)
            shutil.rmtree(dest)
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=lib_dir))
        try:
            tar_path = tmp / "lib.tar"
            with open(tar_path, "wb") as f:
                payload.decode_frame(lib.frame, {lib.name: f})  # verifies size and sha256
            tree = tmp / "tree"
            tree.mkdir()
            with tarfile.open(tar_path) as tar:
                tar.extractall(tree, filter="data")
            (tree / ".complete").write_text(lib.sha256 + "\n")
            os.replace(tree, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as e:
        raise StagingError(f"lib dir {lib_dir}: cannot stage {lib.name}: {e.strerror or e}") from e
    finally:
        os.close(fd)
    return dest


class LazyFinder:
    """A sys.meta_path finder for the top-level ``packages``: stages their library on first use."""

    def __init__(self, packages: Sequence[str]):
        self.packages = frozenset(packages)
        self.path: str | None = None

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if path is not None or fullname not in self.packages:
            return None
        if self.path is None:
            self.path = self._stage(fullname)
            if self.path is None:
                return None
            sys.path.append(self.path)
        from importlib.machinery import PathFinder

        return PathFinder.find_spec(fullname, [self.path])

    def _stage(self, fullname: str) -> str | None:
        from mke.errors import PayloadError
        from mke.payload_format import running_payload

        payload = running_payload()
        lib = payload.manifest.library_for(fullname) if payload else None
        if lib is None:
            return None
        want = f"{sys.version_info.major}.{sys.version_info.minor}"
        if lib.python != want:
            raise PayloadError(f"{payload.label}: library {lib.name} is for Python {lib.python}, this mke runs {want}; "
                               "the executable is damaged, download it again")
        return str(stage_library(payload, lib, default_lib_dir()))


def install() -> None:
    """Add the import hook when running frozen (idempotent, no I/O)."""
    if not getattr(sys, "frozen", False):
        return
    if any(isinstance(f, LazyFinder) for f in sys.meta_path):
        return
    sys.meta_path.append(LazyFinder(LAZY_PACKAGES))


def is_lazy_path(name: str) -> bool:
    """True for a PyInstaller TOC name (``cryptography/x.so``, ``cryptography.x509``,
    ``_cffi_backend.cpython-311-....so``, ``cffi-1.0.dist-info/...``) of a lazy package."""
    first = name.replace("\\", "/").split("/", 1)[0]
    if first.split(".", 1)[0] in LAZY_PACKAGES:  # package, module, extension, <pkg>.libs
        return True
    return any(first.startswith(f"{p}-") and first.endswith(".dist-info") for p in LAZY_PACKAGES)
