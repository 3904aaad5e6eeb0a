"""Where log lines go: mke's own and every component's output, to stderr and to per-component files.

A line is ``<time> <level> [<component>] <text>``::

    2026-11-28T04:30:00.123Z info [kube-apiserver] I1128 04:30:00.120001  4242 controller.go:615] ...
    2026-11-28T04:30:02.007Z warn [mke] swap is on; kubelet runs with failSwapOn=false

The time is when mke read the line, in UTC (RFC 3339, milliseconds). mke's own lines say
their level (``LogSink.line(..., level="warn")``); a component's output gets the level its
format shows (``detect_level``: klog, logrus/containerd, zap JSON), else ``info``.

- **stderr** gets the lines at or above the sink's level (``--log-level``; default info).
- **files**: once the node owns its data dir (``open_files``, from NodeRole.lock_data_dir),
  every line of every level also goes to ``<data-dir>/logs/<component>.log`` (dir 0700,
  files 0600), rotated by size: ``<component>.log`` → ``.log.1`` → … → ``.log.N``, the oldest
  dropped (``--log-max-size``, ``--log-max-files``). Lines said before that (the token check,
  staging) are kept in memory and written first, so a file tells the whole start.

The sink is shared by the threads that pump children's output and mke's own loops: one
lock covers the stderr write, the file write and a rotation, so a block of lines is never
interleaved with another or split by a rotation, and none is lost.

Rotation is hand-rolled (``RotatingLogFile``, ~40 lines) rather than logging's
RotatingFileHandler: that one creates files with the process umask (0644, until a chmod),
decides per record where a block must stay whole, and brings the ``logging`` machinery
(LogRecord, formatters, handler locks) to every start of mke for what is one ``os.write``.
"""

from __future__ import annotations

import collections
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

LEVELS = ("debug", "info", "warn", "error")
RANK = {name: i for i, name in enumerate(LEVELS)}
DEFAULT_LEVEL = "info"
DEFAULT_MAX_BYTES = 10 << 20
DEFAULT_MAX_FILES = 5
PENDING_LINES = 5000  # lines kept for the files until the data dir is ours (then written first)

# klog (Kubernetes, konnectivity, kube-router): "I1128 04:30:00.120001 ..." (Info, Warning, Error, Fatal)
_KLOG = re.compile(r"^([IWEF])\d{4} ")
# logrus text (containerd, kine, crictl): ... level=warning msg="..."
_LOGRUS = re.compile(r'(?:^|\s)level="?(trace|debug|info|warning|warn|error|fatal|panic)"?(?:\s|$)')
# zap/logrus JSON (etcd): {"level":"warn","ts":"...",...}
_JSON = re.compile(r'"level"\s*:\s*"(debug|info|warn|warning|error|dpanic|panic|fatal)"')
# a Go program dying: "panic: ..." or "fatal error: ..."
_GO_DEATH = re.compile(r"^(panic|fatal error): ")
_NAMES = {"I": "info", "W": "warn", "E": "error", "F": "error", "trace": "debug", "debug": "debug",
          "info": "info", "warning": "warn", "warn": "warn", "error": "error", "dpanic": "error",
          "panic": "error", "fatal": "error"}


def detect_level(text: str) -> str:
    """The level of one line of a component's output, from its format; ``info`` when it shows none."""
    m = _KLOG.match(text)
    if m:
        return _NAMES[m.group(1)]
    m = _JSON.search(text) if text.lstrip().startswith("{") else _LOGRUS.search(text)
    if m:
        return _NAMES[m.group(1)]
    return "error" if _GO_DEATH.match(text) else "info"


def timestamp(t: float) -> str:
    """RFC 3339 in UTC with milliseconds: ``2026-11-28T04:30:00.123Z``."""
    ms = int(t * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def check_level(level: str) -> str:
    if level not in RANK:
        raise ValueError(f"log level {level!r}: expected one of {', '.join(LEVELS)}")
    return level


def file_name(tag: str) -> str:
    """``<tag>.log``, with anything but letters, digits, ``.``, ``_`` and ``-`` replaced (never a path)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", tag).lstrip(".") or "_"
    return f"{safe}.log"


@dataclass(frozen=True, kw_only=True)
class Rotation:
    """How the per-component files rotate: at ``max_bytes``, keeping ``max_files`` rotated copies."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_files: int = DEFAULT_MAX_FILES

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_files < 1:
            raise ValueError(f"log rotation: max_bytes {self.max_bytes} and max_files {self.max_files} must be >= 1")


class RotatingLogFile:
    """One component's file, appended to; before a line would take it past ``max_bytes``, it becomes
    ``.1`` (``.1`` becomes ``.2``, …, ``.N`` is dropped) and a new one starts. Not thread-safe: the
    sink's lock covers it. A line longer than ``max_bytes`` gets a file of its own."""

    def __init__(self, path: Path, rotation: Rotation) -> None:
        self.path = Path(path)
        self.rotation = rotation
        self._fd = -1
        self.size = 0
        self._open()

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.fchmod(self._fd, 0o600)  # also a file an earlier mke (or a user) left with a looser mode
        self.size = os.fstat(self._fd).st_size

    def rotated(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        keep = self.rotation.max_files
        self.rotated(keep).unlink(missing_ok=True)
        for n in range(keep - 1, 0, -1):
            if self.rotated(n).exists():
                os.replace(self.rotated(n), self.rotated(n + 1))
        if self.path.exists():  # not when someone removed it: then the new file just starts
            os.replace(self.path, self.rotated(1))
        self._open()

    def write(self, lines: Iterable[bytes]) -> None:
        """Append whole lines (each ending in a newline), rotating between two lines when one would not fit."""
        chunk: list[bytes] = []
        size = self.size
        for line in lines:
            if size and size + len(line) > self.rotation.max_bytes:
                self._write(b"".join(chunk))
                chunk = []
                self.rotate()
                size = 0
            chunk.append(line)
            size += len(line)
        self._write(b"".join(chunk))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            self.size += n
            view = view[n:]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class LogSink:
    """Where tagged lines go (module docstring): stderr at or above ``level``; with ``rotation``, once
    ``open_files`` was called, every line also to ``<dir>/<tag>.log``. Thread-safe and line-atomic."""

    def __init__(self, stream: TextIO | None = None, *, level: str = DEFAULT_LEVEL, rotation: Rotation | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._stream = stream
        self.level = check_level(level)
        self.rotation = rotation
        self._clock = clock
        self._lock = threading.Lock()
        self._files: dict[str, RotatingLogFile] = {}
        self._failed: set[str] = set()  # files whose last write failed (said once)
        self.logs_dir: Path | None = None
        # (tag, line) said before open_files, for the files; only when there will be files
        self._pending: collections.deque[tuple[str, bytes]] | None = (
            collections.deque(maxlen=PENDING_LINES) if rotation is not None else None)

    # -- what the rest of mke calls

    def line(self, tag: str, text: str, *, level: str = "info") -> None:
        self.lines(tag, [text], level=level)

    def lines(self, tag: str, texts: list[str], *, level: str = "info") -> None:
        """Several lines of one component at one level, written at once (one write, one flush)."""
        self._emit(tag, [(level, t) for t in texts])

    def output(self, tag: str, texts: list[str]) -> None:
        """A child's output: each line's level as its format shows (``detect_level``)."""
        self._emit(tag, [(detect_level(t), t) for t in texts])

    def open_files(self, logs_dir: Path) -> bool:
        """Also write every line to ``logs_dir/<tag>.log`` from now on (and what was said before).
        False, and nothing done, without a rotation or when the files are open already (the embedded
        worker of ``mke server --enable-worker`` shares the server's)."""
        from mke.node.files import private_dir

        with self._lock:
            if self.rotation is None or self.logs_dir is not None:
                return False
            private_dir(logs_dir)
            self.logs_dir = Path(logs_dir)
            pending, self._pending = list(self._pending or ()), None
            by_tag: dict[str, list[bytes]] = {}
            for tag, data in pending:
                by_tag.setdefault(tag, []).append(data)
            for tag, data in by_tag.items():
                self._write_file(tag, data)
            return True

    def close_files(self) -> None:
        """Stop writing files (stderr goes on); open_files may start them again."""
        with self._lock:
            for f in self._files.values():
                f.close()
            self._files.clear()
            self.logs_dir = None
            self._pending = collections.deque(maxlen=PENDING_LINES) if self.rotation is not None else None

    # -- internals

    def _emit(self, tag: str, leveled: list[tuple[str, str]]) -> None:
        if not leveled:
            return
        stamp = timestamp(self._clock())
        shown = RANK[self.level]
        formatted = [(RANK[lv], f"{stamp} {lv} [{tag}] {t}\n") for lv, t in leveled]
        block = "".join(s for rank, s in formatted if rank >= shown)
        with self._lock:
            if block:
                self._to_stream(block)
            if self.logs_dir is not None:
                self._write_file(tag, [s.encode(errors="replace") for _, s in formatted])
            elif self._pending is not None:
                self._pending.extend((tag, s.encode(errors="replace")) for _, s in formatted)

    def _to_stream(self, block: str) -> None:
        stream = self._stream or sys.stderr
        try:
            stream.write(block)
            stream.flush()
        except (OSError, ValueError):
            pass

    def _write_file(self, tag: str, data: list[bytes]) -> None:
        """Under the lock: append to the tag's file; a failure (disk full) is said once on stderr, the
        lines dropped from the file, and the next write tries again."""
        assert self.logs_dir is not None and self.rotation is not None
        name = file_name(tag)
        try:
            f = self._files.get(name)
            if f is None:
                f = self._files[name] = RotatingLogFile(self.logs_dir / name, self.rotation)
            f.write(data)
        except OSError as e:
            broken = self._files.pop(name, None)
            if broken is not None:
                broken.close()  # the next write opens it again
            if name not in self._failed:
                self._failed.add(name)
                stamp = timestamp(self._clock())
                self._to_stream(f"{stamp} error [mke] cannot write {self.logs_dir / name}: {e.strerror or e}; "
                                f"[{tag}] lines are not kept in a file until a write succeeds\n")
            return
        self._failed.discard(name)
