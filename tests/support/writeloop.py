"""A write loop against the Kubernetes API and the recovery point it leaves after a crash, for the
continuous-backup tests (tests/integration/test_backup_wal.py: same host; tests/e2e/test_wal_backup.py:
restored on another host).

``WriteLoop`` creates ConfigMaps one after another over one keep-alive HTTPS connection (the admin
client certificate) and records when each 201 came; ``recovery_point`` compares what was
acknowledged before a kill with what a restore brought back.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import ssl
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path


class WriteLoop:
    """ConfigMaps ``<prefix>-000000``, ``-000001``, ... created back to back at ``host:port``; ``acked``
    holds (name, monotonic time of the 201) of every acknowledged one, ``latencies`` their seconds.
    ``pki`` holds ca.crt, admin.crt and admin.key. ``enter`` is entered by the loop's thread before it
    opens a socket (e.g. a network namespace: setns applies to the calling thread only)."""

    def __init__(self, host: str, port: int, pki: Path, prefix: str, *,
                 enter: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext) -> None:
        self.ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self.host = host
        self.port = port
        self.prefix = prefix
        self.enter = enter
        self.acked: list[tuple[str, float]] = []
        self.latencies: list[float] = []
        self.errors = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=10)

    def run(self) -> None:
        with self.enter():
            self.loop()

    def loop(self) -> None:
        conn = self.connect()
        i = 0
        while not self.stop.is_set():
            name = f"{self.prefix}-{i:06d}"
            body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                               "data": {"k": "v" * 200}}).encode()
            t0 = time.monotonic()
            try:
                conn.request("POST", "/api/v1/namespaces/default/configmaps", body=body,
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException):
                self.errors += 1
                if self.stop.is_set():
                    return
                conn.close()
                conn = self.connect()
                time.sleep(0.1)
                continue
            t1 = time.monotonic()
            if resp.status == 201:
                self.acked.append((name, t1))
                self.latencies.append(t1 - t0)
                i += 1
            else:
                self.errors += 1
        conn.close()

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


@dataclass(frozen=True)
class RecoveryPoint:
    """What a restore kept of the writes acknowledged before a kill (times in seconds before it)."""

    acknowledged: int
    restored: int  # the loop's objects in the restored state (may include one written but not yet acknowledged)
    lost: list[tuple[str, float]]  # acknowledged, not restored: (name, seconds before the kill)
    gaps: list[str]  # acknowledged before the newest restored one, yet missing
    newest_restored: str | None  # the newest acknowledged write that was restored

    @property
    def oldest_lost_s(self) -> float:
        return max((age for _n, age in self.lost), default=0.0)

    @property
    def newest_lost_s(self) -> float:
        return min((age for _n, age in self.lost), default=0.0)

    def line(self) -> str:
        return (f"acknowledged {self.acknowledged}, restored {self.restored}, lost {len(self.lost)}, oldest lost "
                f"{self.oldest_lost_s:.2f} s before the kill")


def recovery_point(acked: list[tuple[str, float]], present: Collection[str], killed_at: float) -> RecoveryPoint:
    """``acked``: the loop's (name, time of the 201) in order; ``present``: the names restored."""
    before = [(n, t) for n, t in acked if t <= killed_at]
    names = [n for n, _ in before]
    newest = max((i for i, n in enumerate(names) if n in present), default=-1)
    return RecoveryPoint(
        acknowledged=len(before), restored=len(present),
        lost=[(n, killed_at - t) for n, t in before if n not in present],
        gaps=[n for n in names[:newest + 1] if n not in present],
        newest_restored=names[newest] if newest >= 0 else None)
