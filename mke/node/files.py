"""Atomic file writes and private directories (keys 0600, data dirs 0700)."""

from __future__ import annotations

import os
from pathlib import Path


def write_file_atomic(path: Path, data: bytes, mode: int, durable: bool = False) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory, fsync, then rename.

    A reader sees the old content or the new, never a part; an interrupted write
    leaves no temp file behind. ``durable``: the directory is fsynced too, so that the rename
    itself survives a crash (backups: a file that was reported written must be there).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
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
    """Create ``path`` (and parents) and make it 0700, also when it existed with a looser mode."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path
