"""What running one role on a node looks like, the same for a controller and a worker.

``run()``: ``prepare()`` (the role takes the data dir's lock in there, once it knows it
may write: a worker checks its token first), ``start()``, then every ``tick_every``
seconds ``tick()`` and a fresh ``run/status.json``, until ``stopping`` is set (SIGTERM);
then ``stop()`` undoes everything in reverse order, also after a failed start. The
status document has the same core fields for both roles (``status()``), plus what each
role adds (``status_extra()``).

The role whose ``run()`` is the process's main loop tells the service manager how it is
doing (mke/node/sdnotify.py; a no-op without ``$NOTIFY_SOCKET``): ``STATUS=`` lines while
it starts, ``READY=1`` once ``bring_up()`` returned (a controller: the control plane is
ready, and with ``--enable-worker`` this host's node is Ready too, since the controller
brings its worker up before returning; a worker: its node is Ready), ``WATCHDOG=1`` on
every tick when the unit asks for a watchdog, ``STOPPING=1`` when it stops, and a
``STATUS=failed: ...`` line when the start fails. A role brought up inside another (the
controller's embedded worker) says nothing: only the process's own role does.

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
from mke.node.sdnotify import Notifier

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
        self.notifier = Notifier()  # the service manager: run() takes it from the environment
        self._told = ""  # the last STATUS sent

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

    def ready_status(self) -> str:
        """The one line the service manager shows once this role is ready."""
        return f"{self.role} ready"

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
        if self.phase == "starting" and self.manager is not None:
            self.tell_status(self.progress())

    def progress(self) -> str:
        """``starting: 3 of 7 components ready; waiting for kube-apiserver``."""
        assert self.manager is not None
        names = [c.name for c in self.manager.components]
        ready = [n for n in names if n in self.manager.ready_at]
        waiting = [c.name for c in self.manager.started if c.name not in self.manager.ready_at]
        return (f"starting: {len(ready)} of {len(names)} components ready"
                + (f"; waiting for {', '.join(waiting)}" if waiting else ""))

    def tell_status(self, text: str) -> None:
        """One ``STATUS=`` line for the service manager, when it changed."""
        if self.notifier.enabled and text != self._told:
            self._told = text
            self.tell(f"STATUS={text}")

    def tell(self, *fields: str) -> None:
        if self.notifier.enabled and not self.notifier.send(*fields) and self.notifier.error:
            self.sink.line("mke", f"cannot notify the service manager: {self.notifier.error}", level="warn")
            self.notifier = Notifier()  # said once; mke runs on without it

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
        self.notifier = Notifier.from_environ()  # and out of the environment: no child inherits it
        self.tell_status(f"starting the {self.role}")
        failed = None
        try:
            self.bring_up()
            if on_ready:
                on_ready(self)
            self.tell("READY=1", f"STATUS={self.ready_status()}")
            self._told = self.ready_status()
            while not self.stopping.wait(self.notifier.watchdog_interval(self.tick_every)):
                if self.notifier.watchdog_usec is not None:
                    self.tell("WATCHDOG=1")
                self.write_status()
                self.tick()
        except Exception as e:  # an MkeError, or an OSError main() reports as HostError: said, then raised
            failed = f"failed: {e}"
            raise
        finally:
            self.tell("STOPPING=1", f"STATUS={failed or 'stopping'}")
            self.stop()
