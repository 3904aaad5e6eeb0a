"""Progress and log lines tagged with the component they belong to.

Lines go to stderr as ``[component] message``; byte progress is printed at most
once per second per transfer (and always at the end), so logs stay readable in CI
and when several jobs run at once.
"""

from __future__ import annotations

import sys
import threading
import time

_lock = threading.Lock()
_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def log(component: str, message: str) -> None:
    if _quiet:
        return
    with _lock:
        print(f"[{component}] {message}", file=sys.stderr, flush=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


class TransferProgress:
    """Reports bytes of one transfer: ``[etcd] etcd-v3.6.16-linux-amd64.tar.gz 12.0/24.1 MiB 50% 8.2 MiB/s``."""

    def __init__(self, component: str, label: str, total: int | None, start: int = 0, interval: float = 1.0):
        self.component, self.label, self.total = component, label, total
        self.done = start
        self._start_bytes = start
        self._t0 = self._last = time.monotonic()
        self._interval = interval

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._emit(now)

    def finish(self) -> None:
        self._emit(time.monotonic(), final=True)

    def _emit(self, now: float, final: bool = False) -> None:
        rate = (self.done - self._start_bytes) / max(now - self._t0, 1e-6)
        if self.total:
            pct = f" {100 * self.done / self.total:.0f}%"
            size = f"{human_bytes(self.done)}/{human_bytes(self.total)}"
        else:
            pct, size = "", human_bytes(self.done)
        word = "done" if final else ""
        log(self.component, f"{self.label} {size}{pct} {human_bytes(rate)}/s {word}".rstrip())
