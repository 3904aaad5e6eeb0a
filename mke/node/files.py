"""Atomic file writes and private directories (keys 0600, data dirs 0700)."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def write_file_atomic(path: Path, data: bytes, mode: int, durable: bool = False,
                      owner: tuple[int, int] | None = None) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory, fsync, then rename.

    A reader sees the old content or the new, never a part; an interrupted write
    leaves no temp file behind. ``durable``: the directory is fsynced too, so that the rename
    itself survives a crash (backups: a file that was reported written must be there).
    ``owner``: (uid, gid) the file gets before it takes ``path``'s place, so that its reader
    (etcd, running as its own user) never sees it as root's.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if owner is not None:
                os.fchown(f.fileno(), *owner)
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """fsync a directory: the entries created, renamed or removed in it are on disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700, also when it existed with a looser mode.

    One exception is kept: group search (0710) given to a group other than root's, which is
    how a component running as its own user reaches its files (etcd: ``grant_traverse``)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = os.stat(path)
    os.chmod(path, 0o710 if st.st_gid != 0 and st.st_mode & 0o010 else 0o700)
    return path


def grant_traverse(path: Path, gid: int) -> None:
    """Let group ``gid`` pass through the directory ``path`` (0710, owner kept): its members
    can open what they know the name of below it and own, and cannot list it."""
    st = os.stat(path)
    if st.st_gid != gid:
        os.chown(path, -1, gid)
    if stat.S_IMODE(st.st_mode) != 0o710:
        os.chmod(path, 0o710)


def chown_tree(path: Path, uid: int, gid: int) -> int:
    """Give ``path`` and everything below it (not following symlinks, not crossing into
    another file system) to ``uid``:``gid``; returns how many entries changed owner."""
    path = Path(path)
    dev = path.lstat().st_dev
    changed = 0
    for dirpath, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if os.lstat(os.path.join(dirpath, d)).st_dev == dev]
        for entry in [dirpath, *(os.path.join(dirpath, f) for f in files)]:
            st = os.lstat(entry)
            if (st.st_uid, st.st_gid) != (uid, gid):
                os.lchown(entry, uid, gid)
                changed += 1
    return changed
