"""What running one role on a node looks like, the same for a controller and a worker.

``run()``: ``prepare()`` (the role takes the data dir's lock in there, once it knows it
may write: a worker checks its token first), ``start()``, then every ``tick_every``
seconds ``tick()`` and a fresh ``run/status.json``, until ``stopping`` is set (SIGTERM);
then ``stop()`` undoes everything in reverse order, also after a failed start. The
status document has the same core fields for both roles (``status()``), plus what each
role adds (``status_extra()``).

Everything a role says goes to its ``sink`` (mke/logsink.py); the role that locks the data
dir first has it also write ``<data-dir>/logs/`` (``mke server --enable-worker``'s worker
shares the server's sink, and so its files).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mke import __version__
from mke.logsink import LogSink
from mke.node.datadir import LOGS_DIR, DataDirLock, StatusFile
from mke.node.files import private_dir

if TYPE_CHECKING:
    from mke.components.manager import ComponentManager


class NodeRole:
    role = "node"
    tick_every = 5.0

    def __init__(self, data_dir: Path, sink: LogSink | None = None) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.sink = sink or LogSink()
        self.opened_logs = False  # this role made the sink write <data-dir>/logs (and closes them)
        self.signals: list[str] = []  # the signals that stopped it (mke.commands.stop_on_signals)
        self.lock = DataDirLock(self.data_dir)
        self.status_file = StatusFile(self.data_dir)
        self.stopping = threading.Event()
        self.manager: ComponentManager | None = None
        self.phase = "starting"
        self.started_at = time.time()
        self.locked = False
        self.notes: list[str] = []  # said once this role owns the data dir (sysinfo's warnings)

    # -- what each role provides

    def prepare(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def tick(self) -> None:
        """Periodic work while running (the controller renews certificates here)."""

    def stop_extra(self) -> None:
        """What the role stops before its own components (the controller's embedded worker)."""

    def status_extra(self) -> dict[str, Any]:
        return {}

    # -- shared

    def lock_data_dir(self) -> None:
        """Create the data dir 0700 and take its lock (BusyError when another mke has it)."""
        private_dir(self.data_dir)
        self.lock.acquire()
        self.locked = True
        self.status_file.remove()  # left by an mke that was killed
        self.opened_logs = self.sink.open_files(self.data_dir / LOGS_DIR)
        for note in self.notes:  # not before: a start refused for bad input says one line, nothing else
            self.say(note, level="warn")

    def say(self, text: str, *, level: str = "info") -> None:
        """One line of mke's own about this node (tag ``mke``)."""
        self.sink.line("mke", text, level=level)

    def status(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "mke_version": __version__,
            "pid": os.getpid(),
            "phase": self.phase,
            "data_dir": str(self.data_dir),
            "started_at": self.started_at,
            **self.status_extra(),
            "components": self.manager.states() if self.manager else [],
        }

    def write_status(self) -> None:
        self.status_file.write(self.status())

    def stop(self) -> None:
        if self.signals and self.phase != "stopping":
            self.say(f"{self.signals[0]}: stopping")
        self.phase = "stopping"
        self.stopping.set()
        self.stop_extra()
        if self.manager is not None:
            self.manager.stop()
        if self.locked:  # nothing to undo before the lock (e.g. a refused token)
            self.status_file.remove()
            self.lock.release()
            self.locked = False
        if self.opened_logs:
            self.sink.close_files()
            self.opened_logs = False

    def bring_up(self) -> None:
        """prepare() and start(); the role is running when this returns."""
        self.prepare()
        self.start()
        self.phase = "running"
        self.write_status()

    def run(self, on_ready: Callable[[Any], None] | None = None) -> None:
        try:
            self.bring_up()
            if on_ready:
                on_ready(self)
            while not self.stopping.wait(self.tick_every):
                self.write_status()
                self.tick()
        finally:
            self.stop()
