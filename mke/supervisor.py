"""Run one binary as a supervised child process.

Each child runs in its own session (so its own process group), with a clean
environment (``mke.procenv.clean_env``), stdout+stderr read line by line and handed to
the shared ``LogSink`` (mke/logsink.py: time, level, ``[component]`` tag; stderr and
``<data-dir>/logs/<component>.log``), and a pid file ``<run_dir>/<name>.pid``. When it exits
without being asked to, it is started again after a backoff that doubles from
``backoff_initial`` up to ``backoff_max`` and resets once a run lasted ``stable_after``
seconds. ``stop()`` sends SIGTERM to the process group, waits ``stop_timeout``, then
SIGKILLs it; it is safe in any state and any number of times.

A pid file left by an mke that was killed (kill -9) names a process that may still run
and hold the ports and data dir; ``start()`` stops it first, but only when
/proc/<pid>/exe (or a #! script's argv) is the same binary, so a recycled pid is
never signalled.
"""

from __future__ import annotations

import collections
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mke.errors import ComponentError
from mke.logsink import LogSink
from mke.node import process


@dataclass(frozen=True, kw_only=True)
class ProcessSpec:
    name: str
    args: tuple[str, ...]  # args[0] is the binary's path
    env: Mapping[str, str] = field(default_factory=dict)  # added to the clean environment
    cwd: Path | None = None
    user: tuple[int, int] | None = None  # (uid, gid) it runs as, with no supplementary groups; None: mke's own
    stop_timeout: float = 10.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    stable_after: float = 30.0


class Supervisor:
    """One supervised process; thread-safe start/stop."""

    def __init__(self, spec: ProcessSpec, *, run_dir: Path, sink: LogSink | None = None,
                 env_factory: Callable[..., dict[str, str]] | None = None, tail_lines: int = 40) -> None:
        self.spec = spec
        self.run_dir = Path(run_dir)
        self.sink = sink or LogSink()
        self._env_factory = env_factory
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._monitor: threading.Thread | None = None
        self.restarts = 0
        self.last_exit: int | None = None
        self.started_at: float | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)

    # -- paths and state

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.spec.name}.pid"

    @property
    def pid(self) -> int | None:
        p = self._proc
        return p.pid if p is not None and p.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def state(self) -> str:
        if self._monitor is None:
            return "stopped"
        if self._stopping.is_set():
            return "stopping"
        return "running" if self.running else "restarting"

    def last_log(self, n: int = 3) -> str:
        return " | ".join(list(self.tail)[-n:])

    # -- lifecycle

    def start(self) -> None:
        with self._lock:
            if self._monitor is not None:
                return
            self._stopping.clear()
            self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.stop_stale()
            self._spawn()
            self._monitor = threading.Thread(target=self._watch, name=f"supervise-{self.spec.name}", daemon=True)
            self._monitor.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            proc, monitor = self._proc, self._monitor
            if proc is not None and proc.poll() is None:
                process.kill_process_group(proc.pid, self.spec.stop_timeout)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            self._monitor = None
        if monitor is not None and monitor is not threading.current_thread():
            monitor.join(timeout=10)
        self.pid_file.unlink(missing_ok=True)

    def stop_stale(self) -> int | None:
        """Stop a process from an earlier mke run named by our pid file; returns its pid."""
        pid = process.recorded_process(self.pid_file)  # that very process: pid, start time, boot
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return None
        if process.runs_binary(pid, self.spec.args[0]):
            self.sink.line(self.spec.name, f"stopping pid {pid} left by an earlier run", level="warn")
            process.kill_process_group(pid, self.spec.stop_timeout)
        self.pid_file.unlink(missing_ok=True)
        return pid

    # -- internals

    def _env(self) -> dict[str, str]:
        if self._env_factory is not None:
            return self._env_factory(extra=dict(self.spec.env))
        from mke.procenv import clean_env

        return clean_env(extra=dict(self.spec.env))

    def _spawn(self, *, restart: bool = False) -> None:
        try:
            proc = subprocess.Popen(
                list(self.spec.args),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd=self.spec.cwd,
                start_new_session=True,
                close_fds=True,
                **({"user": self.spec.user[0], "group": self.spec.user[1], "extra_groups": []}
                   if self.spec.user is not None else {}),
            )
        except OSError as e:
            raise ComponentError(f"{self.spec.name}: cannot start {self.spec.args[0]}: {e.strerror}") from e
        process.write_pid_file(self.pid_file, proc.pid)
        if restart:
            self.restarts += 1
        self.started_at = time.monotonic()
        self._proc = proc  # published last: whoever sees the new pid also sees its pid file and count
        threading.Thread(target=self._pump, args=(proc,), name=f"log-{self.spec.name}", daemon=True).start()

    def _pump(self, proc: subprocess.Popen[bytes]) -> None:
        """Copy the child's output, tagged, in large reads: a child must never wait on a full pipe."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        partial = b""
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                break
            *complete, partial = (partial + chunk).split(b"\n")
            if len(partial) > 1 << 16:  # a very long line without newline: flush it anyway
                complete.append(partial)
                partial = b""
            texts = [c.decode(errors="replace") for c in complete]
            self.tail.extend(texts)
            self.sink.output(self.spec.name, texts)
        if partial:
            text = partial.decode(errors="replace")
            self.tail.append(text)
            self.sink.output(self.spec.name, [text])
        proc.stdout.close()

    def _watch(self) -> None:
        delay = self.spec.backoff_initial
        while True:
            proc = self._proc
            assert proc is not None
            code = proc.wait()
            if self._stopping.is_set():
                return
            self.last_exit = code
            ran = time.monotonic() - (self.started_at or 0)
            if ran >= self.spec.stable_after:
                delay = self.spec.backoff_initial
            how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            self.sink.line(self.spec.name, f"{how} after {ran:.1f}s; restarting in {delay:.2f}s", level="warn")
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                try:
                    self._spawn(restart=True)
                except ComponentError as e:
                    self.sink.line(self.spec.name, str(e), level="error")
                    self._proc = _ExitedProcess(127)  # type: ignore[assignment]
            delay = min(delay * 2, self.spec.backoff_max)


class _ExitedProcess:
    """Stands in for a child that could not even be spawned, so the watch loop backs off."""

    def __init__(self, code: int) -> None:
        self.returncode = code
        self.pid = -1

    def wait(self, timeout: float | None = None) -> int:
        return self.returncode

    def poll(self) -> int:
        return self.returncode
