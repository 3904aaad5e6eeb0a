"""Detached: no service manager; ``mke start`` runs ``mke server|worker`` in the background.

For hosts that run neither systemd nor OpenRC (containers, minimal images, the e2e test hosts
of ``mke cluster``): ``mke install ROLE --detached ...`` writes
``/var/lib/mke-detached/mke-<role>`` (the header every service file has, then the command as
one JSON line); ``mke start`` starts that command in a session of its own (``setsid``: it
outlives the shell or SSH session that started it), stdin from /dev/null, stdout and stderr
appended to ``/var/log/mke-<role>.log``, and returns once mke holds its data dir's lock (it
runs), not once it is ready (``mke status`` tells); ``mke stop`` sends SIGTERM to the mke
that holds the data dir's lock (mke's own record of itself) and waits until it let go
(SIGKILL after 120 s).

Nothing restarts it: not after a crash, not after a reboot. ``mke cluster apply`` starts it
again (that is how it brings a cluster whose hosts were all down back). Chosen only with
``--detached``; once installed, ``start``, ``stop`` and ``uninstall`` find it first.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from mke.errors import ServiceError
from mke.service.base import InitSystem, ServiceSpec, read_record

COMMAND_KEY = "command="
STOP_SECONDS = 120.0
START_SECONDS = 30.0


def log_file(role: str) -> Path:
    return Path("/var/log") / f"mke-{role}.log"


class Detached(InitSystem):
    name = "detached (no service manager)"
    tools = ()
    file_mode = 0o600

    @classmethod
    def runs_here(cls, root: Path) -> bool:
        """Only where ``mke install --detached`` put a service: it is never chosen by itself."""
        return any((root / "var/lib/mke-detached" / f"mke-{r}").exists() for r in ("controller", "worker"))

    def service_file(self, role: str) -> Path:
        return self.root / "var/lib/mke-detached" / f"mke-{role}"

    def render(self, spec: ServiceSpec) -> str:
        return spec.header() + COMMAND_KEY + json.dumps(list(spec.command)) + "\n"

    def service_file_dir(self) -> Path:
        return self.root / "var/lib/mke-detached"

    def _read(self, role: str) -> tuple[list[str], Path]:
        path = self.service_file(role)
        record = read_record(path, role)
        command = None
        try:
            for line in path.read_text().splitlines():
                if line.startswith(COMMAND_KEY):
                    command = json.loads(line[len(COMMAND_KEY):])
        except (OSError, ValueError) as e:
            raise ServiceError(f"{path}: cannot read the command: {e}") from e
        if record is None or record.data_dir is None or not isinstance(command, list) or not command:
            raise ServiceError(f"{path}: not a service file of mke install --detached; `mke install {role} "
                               "--detached --force` writes it again")
        return [str(w) for w in command], record.data_dir

    def enable(self, role: str) -> None:
        self.service_file_dir().chmod(0o700)

    def disable(self, role: str) -> None:
        """Nothing starts it at boot: nothing to undo."""

    def start(self, role: str) -> None:
        from mke.node.datadir import holder_pid
        from mke.procenv import clean_env

        command, data_dir = self._read(role)
        if holder_pid(data_dir) is not None:
            return  # running already, as systemctl start of a running service
        log = self.root / str(log_file(role)).lstrip("/")
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            os.chmod(log, 0o600)
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True, cwd="/", env=clean_env())
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if holder_pid(data_dir) == proc.pid:
                return
            if proc.poll() is not None:
                said = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
                raise ServiceError(f"mke-{role} exited at once (exit {proc.returncode})"
                                   + (f": {said[-1].strip()}" if said else "") + f"; {log} has its log")
            time.sleep(0.2)
        raise ServiceError(f"mke-{role} (pid {proc.pid}) did not take its data dir's lock in {START_SECONDS:.0f}s; "
                           f"{log} has its log")

    def stop(self, role: str) -> None:
        from mke.node.datadir import holder_pid

        _command, data_dir = self._read(role)
        pid = holder_pid(data_dir)
        if pid is None:
            return
        if pid < 0:
            raise ServiceError(f"an mke holds {data_dir}'s lock but its pid is unreadable; stop it yourself")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline:
            if holder_pid(data_dir) is None:
                return
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if holder_pid(data_dir) is None:
                return
            time.sleep(0.1)
        raise ServiceError(f"mke-{role} (pid {pid}) did not stop after SIGTERM and SIGKILL")


INIT_SYSTEM = Detached
