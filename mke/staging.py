"""Stage embedded binaries from the payload into the bin dir, by digest, only when needed.

Layout of a bin dir (default /var/lib/mke/bin, inside the 0700 data dir /var/lib/mke)::

    .store/<sha256>/<name>   the binary, 0755, written once and never modified
    <name> -> .store/<sha256>/<name>   what components run (and what is put on PATH)
    .store/.tmp-*/           scratch space of a staging in progress (removed after)
    .lock                    flock held while staging or cleaning up

Binaries are staged by decoding their payload frames into temp files (one thread per
frame), checking them (mke/payload_format.py), one ``syncfs`` for all of their bytes,
renames into ``.store/<sha256>/``, symlink swaps (temp symlink + rename), and one more
``syncfs`` for those names: all or nothing, two journal commits in all. A killed staging leaves only a ``.tmp-*`` directory, which the next
staging removes; never a partial binary at a final path. When the symlink already
points at a store file of the right size the binary is present and the payload is not
read at all: the store is written only by a verified rename, so a name there is a
promise about its content. Store entries of other versions are removed once no running
process executes them.

In a none-mode build (no payload), binaries are looked up on PATH instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from mke.errors import PayloadError, StagingError
from mke.node.datadir import DEFAULT_DATA_DIR, flocked
from mke.node.process import running_executables
from mke.payload_format import Binary, Payload

DEFAULT_BIN_DIR = DEFAULT_DATA_DIR / "bin"
STORE = ".store"
LOCK = ".lock"
TMP_PREFIX = ".tmp-"
HOST_ROLES = ("controller", "worker")  # roles whose binaries run on the host (not "image")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Staged:
    name: str
    path: Path  # what to execute
    action: str  # "staged" (written now) | "present" (already there) | "path" (found on PATH)


def _say(msg: str) -> None:
    print(f"mke: {msg}", file=sys.stderr)


class BinDir:
    """One bin dir: where each binary's store file and symlink live."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.store = self.path / STORE

    def link(self, name: str) -> Path:
        return self.path / name

    def store_file(self, b: Binary) -> Path:
        return self.store / str(b.sha256) / b.name

    def link_target(self, b: Binary) -> str:
        return f"{STORE}/{b.sha256}/{b.name}"

    def is_present(self, b: Binary) -> bool:
        """True when ``<name>`` (and each of its ``links``) points at the store file of ``b``'s
        digest with the right size and mode."""
        try:
            if any(os.readlink(self.link(n)) != self.link_target(b) for n in (b.name, *b.links)):
                return False
            st = os.stat(self.store_file(b))
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size == b.size and stat.S_IMODE(st.st_mode) == 0o755

    def has_store_file(self, b: Binary) -> bool:
        try:
            st = os.stat(self.store_file(b))
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size == b.size

    def ensure(self) -> None:
        """Create the bin dir (0755) and, when missing, its parents (0700: the data dir)."""
        try:
            missing = []
            p = self.path
            while not p.exists():
                missing.append(p)
                p = p.parent
            for d in reversed(missing):
                mode = 0o755 if d == self.path else 0o700
                try:
                    os.mkdir(d, mode)
                except FileExistsError:  # another mke created it meanwhile
                    if not d.is_dir():
                        raise
                    continue
                os.chmod(d, mode)  # umask-proof
            self.store.mkdir(mode=0o755, exist_ok=True)
        except OSError as e:
            raise StagingError(f"bin dir {self.path}: cannot create it: {e.strerror or e}; "
                               "pass --bin-dir to use another directory") from e
        if not os.access(self.path, os.W_OK):
            raise StagingError(f"bin dir {self.path} is not writable; run as root or pass --bin-dir")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with flocked(self.path / LOCK):
            yield

    def set_link(self, b: Binary) -> None:
        """Point ``<name>`` and its other names (a multi-call binary's ``links``) at the store file."""
        for name in (b.name, *b.links):
            tmp = self.path / f"{TMP_PREFIX}{name}-{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(self.link_target(b), tmp)
            try:
                os.replace(tmp, self.link(name))
            except OSError as e:
                os.unlink(tmp)
                raise StagingError(f"{self.link(name)}: cannot replace it: {e.strerror or e}; "
                                   "remove it or pass another --bin-dir") from e

    def remove_temp(self) -> None:
        """Leftovers of killed stagings (call with the lock held)."""
        for d in (self.store, self.path):
            for p in d.glob(f"{TMP_PREFIX}*"):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()


class _StagingFile:
    """A temp file that receives one binary's bytes (payload sinks call ``write``)."""

    def __init__(self, directory: Path, b: Binary):
        self.binary = b
        self.path = directory / b.name
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o700)

    def write(self, data: memoryview) -> None:
        while data:
            n = os.write(self.fd, data)
            data = data[n:]

    def finish(self) -> None:
        os.fchmod(self.fd, 0o755)
        size = os.fstat(self.fd).st_size
        os.close(self.fd)
        self.fd = -1
        if size != self.binary.size:
            raise StagingError(f"{self.path}: wrote {size} bytes, expected {self.binary.size}; is the disk full?")

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _syncfs(path: Path) -> None:
    """Flush the filesystem holding ``path``: one journal commit for everything staged,
    instead of one per fsync'd file and directory (each costs a disk cache flush)."""
    import ctypes

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own libc
        if libc.syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), f"syncfs {path}")
    except AttributeError:  # no syncfs in this libc
        os.sync()
    finally:
        os.close(fd)


def stage(
    payload: Payload | None,
    names: Iterable[str],
    bin_dir: Path | str = DEFAULT_BIN_DIR,
    *,
    jobs: int | None = None,
    durable: bool = True,
    cleanup: bool = True,
    say: Callable[[str], None] = _say,
) -> list[Staged]:
    """Make each binary in ``names`` runnable from ``bin_dir``; returns where each one is.

    Binaries already present are not touched and the payload is not read. Others are
    decoded (one thread per payload frame, up to ``jobs``), verified, and published
    atomically under the bin dir's lock. Without a payload (none mode) each binary is
    looked up on PATH, and a message says so.
    """
    names = list(dict.fromkeys(names))
    if payload is None or not any(b.embedded for b in payload.manifest.binaries):
        return [_from_path(n, payload, say) for n in names]
    bd = BinDir(bin_dir)
    binaries = [payload.manifest.binary(n) for n in names]
    not_embedded = [b.name for b in binaries if not b.embedded]
    if not_embedded:
        raise StagingError(f"{', '.join(not_embedded)}: not embedded in {payload.label}")
    result = {b.name: Staged(name=b.name, path=bd.link(b.name), action="present") for b in binaries}
    if all(bd.is_present(b) for b in binaries) and not (cleanup and _has_stale(bd, payload)):
        return [result[n] for n in names]  # fast path: no lock, no payload read
    bd.ensure()
    with bd.locked():
        bd.remove_temp()
        todo = []
        for b in binaries:
            if bd.is_present(b):
                continue
            if bd.has_store_file(b):
                bd.set_link(b)  # stored earlier, link lost or changed: no decode needed
                continue
            todo.append(b)
        if todo:
            _decode_and_publish(payload, bd, todo, jobs=jobs, durable=durable)
            for b in todo:
                result[b.name] = Staged(name=b.name, path=bd.link(b.name), action="staged")
        if cleanup:
            for p in remove_old_versions(bd, keep={b.sha256 for b in payload.manifest.binaries if b.sha256}):
                say(f"removed {p} (an older version no longer in use)")
    return [result[n] for n in names]


def _decode_and_publish(payload: Payload, bd: BinDir, todo: list[Binary], *, jobs: int | None, durable: bool) -> None:
    """Decode every needed frame into a temp dir (one thread per frame, up to ``jobs``),
    then, only if every binary checked out, publish them all: all or nothing."""
    import concurrent.futures  # here, not at the top: the no-op path stays cheap
    import tempfile

    by_frame: dict[int, list[Binary]] = {}
    for b in todo:
        by_frame.setdefault(int(b.frame), []).append(b)  # type: ignore[arg-type]
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=bd.store))
    try:
        def one_frame(index: int, members: list[Binary]) -> None:
            files = {b.name: _StagingFile(tmp / str(index), b) for b in members}
            try:
                payload.decode_frame(index, files)
                for f in files.values():
                    f.finish()
            finally:
                for f in files.values():
                    f.abort()

        for index in by_frame:
            (tmp / str(index)).mkdir()
        workers = max(1, min(len(by_frame), jobs or os.cpu_count() or 1))
        # Biggest frames first, so that parallel workers finish together.
        order = sorted(by_frame.items(), key=lambda kv: -payload.manifest.frames[kv[0]].decoded_size)
        if workers == 1:
            for index, members in order:
                one_frame(index, members)
        else:
            with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(one_frame, i, m) for i, m in order]
                errors = [f.exception() for f in futures if f.exception() is not None]
            if errors:
                raise errors[0]
        if durable:
            _syncfs(tmp)  # every binary's bytes on disk before any name points at them
        for index, members in by_frame.items():
            for b in members:
                dest = bd.store_file(b)
                dest.parent.mkdir(mode=0o755, exist_ok=True)
                os.replace(tmp / str(index) / b.name, dest)
        for b in todo:
            bd.set_link(b)
        if durable:
            _syncfs(bd.path)  # the renames and links
    except OSError as e:
        raise StagingError(f"bin dir {bd.path}: staging failed: {e.strerror or e}"
                           f"{' (disk full?)' if getattr(e, 'errno', None) == 28 else ''}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _from_path(name: str, payload: Payload | None, say: Callable[[str], None]) -> Staged:
    found = shutil.which(name)
    what = f"{payload.label} embeds no binaries (a none-mode build)" if payload else "this mke embeds no binaries"
    if not found:
        version = ""
        if payload is not None:
            with contextlib.suppress(PayloadError):
                version = f" {payload.manifest.binary(name).version}"
        raise StagingError(f"{name} is not on PATH and {what}; install {name}{version} on PATH "
                           "or use an mke built with --mode=fetch or --mode=docker")
    say(f"{what}; using {found} from PATH for {name}")
    return Staged(name=name, path=Path(found), action="path")


# --------------------------------------------------------------------------- old versions


def _has_stale(bd: BinDir, payload: Payload) -> bool:
    keep = {b.sha256 for b in payload.manifest.binaries if b.sha256}
    try:
        return any(e.name not in keep for e in os.scandir(bd.store))
    except OSError:
        return False


def remove_old_versions(bd: BinDir, *, keep: set[str]) -> list[Path]:
    """Remove store entries whose digest is not in ``keep`` and that no process executes,
    plus symlinks left pointing at nothing. Call with the bin dir's lock held."""
    removed: list[Path] = []
    try:
        entries = [e for e in os.scandir(bd.store) if e.name not in keep and not e.name.startswith(TMP_PREFIX)]
    except FileNotFoundError:
        return removed
    if entries:
        running = running_executables()
        store = os.path.realpath(bd.store)
        for e in entries:
            prefix = os.path.join(store, e.name) + os.sep
            if any(r.startswith(prefix) for r in running):
                continue
            shutil.rmtree(e.path, ignore_errors=True) if e.is_dir(follow_symlinks=False) else os.unlink(e.path)
            removed.append(Path(e.path))
    if removed:
        for link in bd.path.iterdir():
            if link.is_symlink() and os.readlink(link).startswith(STORE + "/") and not link.exists():
                link.unlink()
    return removed


def stage_roles(payload: Payload | None, roles: Iterable[str], bin_dir: Path | str = DEFAULT_BIN_DIR,
                **kwargs: object) -> list[Staged]:
    """Stage what the given roles run (e.g. ``["controller"]``)."""
    if payload is None:
        return []
    names = [b.name for b in payload.manifest.for_roles(roles)]
    return stage(payload, names, bin_dir, **kwargs)  # type: ignore[arg-type]
