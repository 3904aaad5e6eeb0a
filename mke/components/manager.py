"""Start components in order, each ready before the next; stop them in reverse.

Components are given as stages: the components of one stage start together and are
waited for together (kube-controller-manager and kube-scheduler only need the API).
``start()`` initialises every component first (fallible, no side effects on the
cluster), then starts stage by stage; when a component fails to start or to become
ready in time, everything started so far is stopped in reverse order and the error
names the component. ``stop()`` stops in reverse order and is safe to call again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from mke.components.base import Component, SupervisedComponent
from mke.errors import ComponentError, MkeError
from mke.logsink import LogSink


class ComponentManager:
    def __init__(self, stages: Sequence[Sequence[Component]], *, poll_interval: float = 0.05,
                 on_change: Callable[[], None] | None = None,
                 stopping: threading.Event | None = None, sink: LogSink | None = None) -> None:
        self.stages = [list(s) for s in stages]
        self.poll_interval = poll_interval
        self.started: list[Component] = []
        self.ready_at: dict[str, float] = {}
        self.on_change = on_change or (lambda: None)
        self.stopping = stopping or threading.Event()
        self.sink = sink or LogSink()  # the node's: a stop that fails is said there
        self._lock = threading.Lock()

    @property
    def components(self) -> list[Component]:
        return [c for stage in self.stages for c in stage]

    def init(self) -> None:
        for c in self.components:
            try:
                c.init()
            except ComponentError:
                raise
            except MkeError:
                raise
            except OSError as e:
                raise ComponentError(f"{c.name}: init failed: {e}") from e

    def stop_stale(self) -> None:
        """Stop copies of our components left running by an mke that was killed (newest first)."""
        for c in reversed(self.components):
            if isinstance(c, SupervisedComponent):
                c.stop_stale()

    def start(self, *, init: bool = True) -> None:
        if init:
            self.init()
        t0 = time.monotonic()
        try:
            for stage in self.stages:
                for c in stage:
                    if self.stopping.is_set():
                        raise ComponentError("interrupted while starting")
                    with self._lock:
                        self.started.append(c)
                    try:
                        c.start()
                    except MkeError:
                        raise
                    except OSError as e:
                        raise ComponentError(f"{c.name}: cannot start: {e}") from e
                    self.on_change()
                self._wait_ready(stage)
                for c in stage:
                    self.ready_at[c.name] = time.monotonic() - t0
                self.on_change()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, stage: list[Component]) -> None:
        pending = list(stage)
        t0 = time.monotonic()
        while pending:
            for c in list(pending):
                if c.ready():
                    pending.remove(c)
                    continue
                why = c.failure()
                if why:
                    raise ComponentError(f"{c.name} did not become ready: {why}")
                if time.monotonic() - t0 > c.ready_timeout:
                    extra = c.last_log()
                    raise ComponentError(f"{c.name} not ready after {c.ready_timeout:.0f}s"
                                         + (f" (last log: {extra})" if extra else ""))
            if pending:
                if self.stopping.wait(self.poll_interval):
                    raise ComponentError(f"interrupted while waiting for {', '.join(c.name for c in pending)}")

    def restart(self, names: set[str] | None = None) -> list[str]:
        """Restart started components (all, or those named), stopping in reverse order and
        starting in order, each ready before the next (e.g. after certificates were renewed)."""
        with self._lock:
            todo = [c for c in self.started if names is None or c.name in names]
        for c in reversed(todo):
            c.stop()
        for c in todo:
            c.start()
            self._wait_ready([c])
        self.on_change()
        return [c.name for c in todo]

    def stop(self) -> None:
        with self._lock:
            started, self.started = self.started, []
        for c in reversed(started):
            try:
                c.stop()
            except Exception as e:  # noqa: BLE001 - stop must go on with the others
                self.sink.line(c.name, f"stop failed: {type(e).__name__}: {e}", level="error")
        self.on_change()

    def states(self) -> list[dict[str, object]]:
        out = []
        for c in self.components:
            st = dict(c.state())
            st.setdefault("state", "running" if c in self.started else "stopped")
            if c.name in self.ready_at:
                st["ready_after_s"] = round(self.ready_at[c.name], 3)
            out.append(st)
        return out
