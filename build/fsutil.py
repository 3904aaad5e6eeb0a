"""Atomic file writes and streaming digests (the two file operations the cache relies on), and
safe tar extraction on every Python 3.11 the toolchain runs on."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Write ``path`` through a temp file in the same directory, fsync, then rename.

    If the body raises (or the process dies), ``path`` is untouched and the temp
    file is removed (or, after SIGKILL, left as ``.tmp-*`` for ``cache gc``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    with atomic_writer(path, mode) as f:
        f.write(data)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------- tar extraction
# Python 3.11.4 added extraction filters (PEP 706). Debian 12's python3 is 3.11.2 without them, and
# the README's set-up must work with it: there, the "data" filter's checks are made here.

TarFilter = Callable[[tarfile.TarInfo, str], "tarfile.TarInfo | None"]


def _inside(dest: str, path: str) -> bool:
    dest = os.path.realpath(dest)
    return os.path.commonpath([dest, os.path.realpath(path)]) == dest


def data_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """``tarfile.data_filter`` where Python has it; else the same: leading slashes stripped, names
    and links that lead outside ``dest``, absolute symlinks, devices and fifos refused, and the same
    clean-up (no setuid/setgid/sticky, no group/other write, owner read/write on files; the
    extracting user owns everything)."""
    native = getattr(tarfile, "data_filter", None)
    if native is not None:
        return native(member, dest)
    name = member.name.lstrip("/" + os.sep)
    if not _inside(dest, os.path.join(dest, name)):
        raise tarfile.TarError(f"{name}: would be written outside {dest}")
    if member.ischr() or member.isblk() or member.isfifo():
        raise tarfile.TarError(f"{name}: a device or fifo in the archive")
    if member.issym():
        if os.path.isabs(member.linkname):
            raise tarfile.TarError(f"{name}: an absolute symlink to {member.linkname}")
        if not _inside(dest, os.path.join(dest, os.path.dirname(name), member.linkname)):
            raise tarfile.TarError(f"{name}: a symlink to {member.linkname}, outside {dest}")
    if member.islnk() and not _inside(dest, os.path.join(dest, member.linkname)):
        raise tarfile.TarError(f"{name}: a hard link to {member.linkname}, outside {dest}")
    m = copy.copy(member)
    m.name = name
    mode = m.mode & ~(stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH)
    if m.isreg() or m.islnk():
        mode |= stat.S_IRUSR | stat.S_IWUSR
        if not mode & stat.S_IXUSR:
            mode &= ~(stat.S_IXGRP | stat.S_IXOTH)
    m.mode = mode
    m.uid, m.gid, m.uname, m.gname = os.getuid(), os.getgid(), "", ""
    return m


def extract_all(tar: tarfile.TarFile, dest: Path | str, *, members: Iterable[tarfile.TarInfo] | None = None,
                filter: TarFilter = data_filter) -> None:
    """``tar.extractall(dest, members=..., filter=...)`` on every Python 3.11 (see ``data_filter``)."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, members=members, filter=filter)
        return
    checked = []
    for m in (members if members is not None else tar.getmembers()):
        kept = filter(m, str(dest))
        if kept is not None:
            checked.append(kept)
    tar.extractall(dest, members=checked)  # the filter's checks made above
