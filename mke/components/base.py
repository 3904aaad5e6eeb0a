"""The component lifecycle shared by everything ``mke server`` and ``mke worker`` run.

``init()`` stages binaries and writes configs (fallible, no side effects on the
cluster); ``start()`` leaves the component running; ``ready()`` is one cheap health
check, polled by the manager; ``stop()`` is safe in any state, any number of times.

Two kinds of component share that lifecycle:

- ``SupervisedComponent``: one binary run by a ``Supervisor``. This class *is* the
  declared ability the manager and the controller look for (``isinstance``): it can
  stop a copy left by a killed mke, it reports its binary and version, and it says
  which certificate files it reads only at start (``files_read``): the controller
  restarts it when one of those changes, and only then (a renewed or rotated certificate
  that the binary reloads by itself restarts nothing).
- ``LoopComponent``: a loop in mke's own process (apply manifests, approve CSRs, keep
  routes), one ``sync()`` per ``interval`` on a daemon thread.

Both take a ``ComponentContext``: what a controller (``ControllerContext``) and a worker
(``WorkerContext``) both provide.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import urllib.parse
from pathlib import Path
from typing import Protocol

from mke.errors import ComponentError
from mke.logsink import LogSink
from mke.node.binaries import BinaryResolver
from mke.supervisor import ProcessSpec, Supervisor


class ComponentContext(Protocol):
    """What components need from the node they run on, the same for both roles."""

    data_dir: Path
    binaries: BinaryResolver
    sink: LogSink
    backoff_initial: float

    @property
    def run_dir(self) -> Path: ...

    @property
    def node_name(self) -> str: ...

    def extra_args(self, component: str) -> dict[str, str]:
        """Flags the operator added for ``component`` (mke.yaml extraArgs, --kubelet-arg)."""
        ...

    def extra_env(self, component: str) -> dict[str, str]:
        """Environment the operator added for ``component`` (mke.yaml extraEnv)."""
        ...


class Component:
    name: str = "component"
    ready_timeout: float = 120.0

    def init(self) -> None:
        pass

    def start(self) -> None:
        pass

    def ready(self) -> bool:
        return True

    def stop(self) -> None:
        pass

    def state(self) -> dict[str, object]:
        return {"name": self.name}

    def failure(self) -> str | None:
        """Why the component cannot become ready (e.g. it keeps crashing), or None."""
        return None

    def last_log(self) -> str:
        """The last lines the component logged (for "not ready after ..." errors)."""
        return ""


class SupervisedComponent(Component):
    """A component that is one binary run by a ``Supervisor``."""

    binary: str = ""
    stop_timeout: float = 10.0
    give_up_after_restarts = 3  # while waiting for the first readiness
    # Flags naming files that the binary reloads while it runs (checked in its source: each
    # component's class says where). Every other file under ``watched_dir`` it names is read
    # only at start.
    reloads: frozenset[str] = frozenset()
    # Flags naming kubeconfigs: client-go reloads the client certificate and key a kubeconfig
    # names as files (not as data); the kubeconfig itself is read at start.
    kubeconfig_flags: frozenset[str] = frozenset({"kubeconfig", "authentication-kubeconfig",
                                                  "authorization-kubeconfig"})

    def __init__(self, ctx: ComponentContext) -> None:
        self.ctx = ctx
        self.supervisor: Supervisor | None = None
        self.binary_path: Path | None = None
        self.version: str | None = None  # set once known (payload manifest or --version)
        self.started_files: dict[str, str] | None = None  # files_state() when it last started
        self.run_as: tuple[int, int] | None = None  # (uid, gid) when not root, decided by init()

    def init(self) -> None:
        self.binary_path = self.ctx.binaries.path(self.binary)

    def args(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {}

    def args_reading_sources(self) -> list[str]:
        """``args()`` as if it read the files under ``watched_dir`` themselves: a component
        that is given copies of them (etcd as its own user) names the originals here."""
        return self.args()

    def process_spec(self) -> ProcessSpec:
        assert self.binary_path is not None, f"{self.name}: init() was not called"
        flags = dict(self.flags_from_args(self.args()))
        flags.update(self.ctx.extra_args(self.name))
        return ProcessSpec(
            name=self.name,
            args=(str(self.binary_path), *(f"--{k}={v}" if v is not None else f"--{k}" for k, v in flags.items())),
            env={**self.env(), **self.ctx.extra_env(self.name)},
            cwd=self.ctx.data_dir,
            user=self.run_as,
            stop_timeout=self.stop_timeout,
            backoff_initial=self.ctx.backoff_initial,
        )

    @staticmethod
    def flags_from_args(args: list[str]) -> list[tuple[str, str | None]]:
        out: list[tuple[str, str | None]] = []
        for a in args:
            k, eq, v = a.lstrip("-").partition("=")
            out.append((k, v if eq else None))
        return out

    # -- the files it reads

    @property
    def watched_dir(self) -> Path:
        """Where the files whose changes matter live: the pki dir."""
        return self.ctx.data_dir / "pki"

    def files_read(self) -> dict[Path, bool]:
        """Files under ``watched_dir`` its flags name (comma-separated lists too): path -> whether
        the binary reloads it (False when any flag reads it only at start)."""
        root = self.watched_dir
        out: dict[Path, bool] = {}
        flags = dict(self.flags_from_args(self.args_reading_sources()))
        flags.update(self.ctx.extra_args(self.name))
        for flag, value in flags.items():
            if not value:
                continue
            for part in value.split(","):
                path = Path(part)
                if not path.is_absolute() or not path.is_relative_to(root):
                    continue
                # read only at start by any one flag: read only at start
                out[path] = out.get(path, True) and flag in self.reloads
                if flag in self.kubeconfig_flags:
                    for named in kubeconfig_client_files(path):
                        out[named] = out.get(named, True)
        return out

    def files_state(self) -> dict[str, str]:
        """What a restart would have to re-read: each file it reads (by path) -> "reloaded", or
        the sha256 of the contents of a file it reads only at start ("" when it is missing)."""
        import hashlib

        out = {}
        for path, reloaded in sorted(self.files_read().items()):
            if reloaded:
                out[str(path)] = "reloaded"
                continue
            try:
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                out[str(path)] = ""
        return out

    def needs_restart(self) -> list[str]:
        """Why it must restart to see the pki dir as it is now: the files (relative to the pki dir)
        it reads only at start that changed, or "the files its flags name" when it would now read
        other files (a CA bundle came or went); empty when nothing needs doing."""
        if self.started_files is None:
            return []
        now = self.files_state()
        if now == self.started_files:
            return []
        if set(now) != set(self.started_files) or any((now[p] == "reloaded") != (self.started_files[p] == "reloaded")
                                                      for p in now):
            return ["the files its flags name"]
        return [str(Path(p).relative_to(self.watched_dir)) for p in now if now[p] != self.started_files[p]]

    def start(self) -> None:
        spec = self.process_spec()
        self.started_files = self.files_state()
        self.supervisor = Supervisor(spec, run_dir=self.ctx.run_dir, sink=self.ctx.sink)
        self.supervisor.start()

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()

    def stop_stale(self) -> None:
        """Stop a copy of this component left running by an mke that was killed."""
        if self.binary_path is not None:
            Supervisor(self.process_spec(), run_dir=self.ctx.run_dir, sink=self.ctx.sink).stop_stale()

    def last_log(self) -> str:
        return self.supervisor.last_log() if self.supervisor is not None else ""

    def failure(self) -> str | None:
        sup = self.supervisor
        if sup is not None and sup.restarts >= self.give_up_after_restarts:
            return f"{self.name} exited {sup.restarts + 1} times (last: {sup.last_log()})"
        return None

    def state(self) -> dict[str, object]:
        sup = self.supervisor
        return {
            "name": self.name,
            "binary": str(self.binary_path) if self.binary_path else None,
            "state": sup.state() if sup else "stopped",
            "pid": sup.pid if sup else None,
            "restarts": sup.restarts if sup else 0,
            "version": self.version,
        }


class LoopComponent(Component):
    """A loop in mke's own process: ``sync()`` once per ``interval`` on a daemon thread.

    A pass that raises is reported (one line, only when the message changes) and retried
    after ``retry_interval``; so is any pass while the component is not ready yet. By
    default the component is ready once a pass went through without raising.
    """

    interval: float = 10.0
    retry_interval: float = 2.0
    first_delay: float = 0.0

    def __init__(self, ctx: ComponentContext) -> None:
        self.ctx = ctx
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._synced = threading.Event()
        self.problems: dict[str, str] = {}

    def sync(self) -> None:
        raise NotImplementedError

    def report(self, what: str, problem: str | None) -> None:
        """Record (and log once) a problem of one part of the pass; None clears it."""
        if problem is None:
            self.problems.pop(what, None)
            return
        if self.problems.get(what) != problem:
            self.ctx.sink.line(self.name, f"{what}: {problem}", level="warn")
        self.problems[what] = problem

    def _loop(self) -> None:
        delay = self.first_delay
        while not self._stop.wait(delay):
            try:
                self.sync()
                self.report("sync", None)
                self._synced.set()
            except Exception as e:  # noqa: BLE001 - the loop must survive anything and say what happened
                self.report("sync", f"{type(e).__name__}: {e}" if not str(e) else str(e))
            delay = self.interval if self.ready() and "sync" not in self.problems else self.retry_interval

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def ready(self) -> bool:
        return self._synced.is_set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None

    def state(self) -> dict[str, object]:
        return {"name": self.name, "state": "running" if self._thread else "stopped",
                "last_error": self.problems.get("sync"), "problems": dict(self.problems)}


def kubeconfig_client_files(path: Path) -> list[Path]:
    """The client certificate and key files a kubeconfig names (``client-certificate``,
    ``client-key``), absolute; none when it carries them as data or cannot be read."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return []
    out = []
    for user in (doc or {}).get("users") or []:
        creds = (user or {}).get("user") or {}
        for key in ("client-certificate", "client-key"):
            value = creds.get(key)
            if isinstance(value, str) and value:
                p = Path(value)
                out.append(p if p.is_absolute() else path.parent / p)
    return out


def unix_socket_answers(path: Path) -> bool:
    """True when something accepts connections on the unix socket ``path``."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def https_ok(url: str, *, ca: Path | None = None, cert: Path | None = None, key: Path | None = None,
             verify: bool = True, timeout: float = 2.0) -> tuple[bool, str]:
    """GET ``url``; (True, body) on HTTP 200. Unverified TLS is only for loopback health ports."""
    if url.startswith("https://"):
        if verify:
            ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if cert is not None:
            ctx.load_cert_chain(str(cert), str(key) if key else None)
    else:
        ctx = None
    u = urllib.parse.urlsplit(url)
    conn: http.client.HTTPConnection
    if ctx is not None:
        conn = http.client.HTTPSConnection(u.hostname or "", u.port, context=ctx, timeout=timeout)
    else:
        conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=timeout)
    try:
        conn.request("GET", u.path or "/")
        resp = conn.getresponse()
        return resp.status == 200, resp.read().decode(errors="replace")
    except (OSError, http.client.HTTPException, ValueError) as e:
        return False, str(e)
    finally:
        conn.close()


__all__ = ["Component", "ComponentContext", "ComponentError", "LoopComponent", "SupervisedComponent", "https_ok", "unix_socket_answers"]
