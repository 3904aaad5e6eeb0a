"""The component lifecycle shared by everything ``mke server`` runs.

``init()`` stages binaries and writes configs (fallible, no side effects on the
cluster); ``start()`` leaves the component running; ``ready()`` is one cheap health
check, polled by the manager; ``stop()`` is safe in any state, any number of times.
"""

from __future__ import annotations

import http.client
import ssl
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from mke.errors import ComponentError
from mke.supervisor import ProcessSpec, Supervisor

if TYPE_CHECKING:
    from mke.components.context import NodeContext


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


class SupervisedComponent(Component):
    """A component that is one binary run by a ``Supervisor``."""

    binary: str = ""
    stop_timeout: float = 10.0
    give_up_after_restarts = 3  # while waiting for the first readiness

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.supervisor: Supervisor | None = None
        self.binary_path: Path | None = None

    def init(self) -> None:
        self.binary_path = self.ctx.binaries.path(self.binary)

    def args(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {}

    def process_spec(self) -> ProcessSpec:
        assert self.binary_path is not None, f"{self.name}: init() was not called"
        flags = dict(self.flags_from_args(self.args()))
        flags.update(self.ctx.config.args_for(self.name))
        return ProcessSpec(
            name=self.name,
            args=(str(self.binary_path), *(f"--{k}={v}" if v is not None else f"--{k}" for k, v in flags.items())),
            env=self.env(),
            cwd=self.ctx.data_dir,
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

    def start(self) -> None:
        self.supervisor = Supervisor(self.process_spec(), run_dir=self.ctx.run_dir, sink=self.ctx.sink)
        self.supervisor.start()

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()

    def stop_stale(self) -> None:
        """Stop a copy of this component left running by an mke that was killed."""
        if self.binary_path is not None:
            Supervisor(self.process_spec(), run_dir=self.ctx.run_dir, sink=self.ctx.sink).stop_stale()

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
            "version": getattr(self, "version", None),
        }


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


__all__ = ["Component", "ComponentError", "SupervisedComponent", "https_ok"]
