"""kine: the etcd API on top of SQLite, MySQL/MariaDB or PostgreSQL.

kine listens on a unix socket inside the run dir, so no TCP port is opened and only
root (the apiserver) can reach it. The database is chosen by ``storage.kine.dataSource``
(empty: SQLite in the data dir). SQLite lives on one host, so a controller with it
cannot be joined by another; MySQL and PostgreSQL are shared by every controller.

The dataSource may hold the database's password, so kine gets it in its environment
(``KINE_ENDPOINT``, read by kine's ``--endpoint``), never on its command line:
``/proc/<pid>/cmdline`` is readable by every user of the host, ``/proc/<pid>/environ``
only by the process's owner (root).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from mke.components.base import SupervisedComponent, unix_socket_answers
from mke.storage.base import StorageBackend

if TYPE_CHECKING:
    from mke.components.context import ControllerContext
    from mke.config import ClusterConfig

# dataSource scheme -> (database, shared by several controllers)
DIALECTS = {
    "sqlite": ("SQLite", False),
    "mysql": ("MySQL/MariaDB", True),
    "postgres": ("PostgreSQL", True),
    "postgresql": ("PostgreSQL", True),
}


ENDPOINT_ENV = "KINE_ENDPOINT"  # kine's own variable for --endpoint (urfave/cli EnvVars)


def scheme(data_source: str) -> str:
    """The dataSource's scheme; "" (the default) is SQLite in the data dir."""
    return data_source.split("://", 1)[0] if "://" in data_source else ("sqlite" if not data_source else "")


class Kine(SupervisedComponent):
    name = "kine"
    binary = "kine"
    ready_timeout = 60.0

    @property
    def socket_path(self):
        return self.ctx.run_dir / "kine.sock"

    @property
    def etcd_servers(self) -> str:
        """What kube-apiserver's --etcd-servers points at."""
        return f"unix://{self.socket_path}"

    @property
    def data_source(self) -> str:
        dsn = self.ctx.config.storage.kine.data_source
        if dsn:
            return dsn
        # busy_timeout + immediate transactions: without them concurrent writers of the
        # apiserver can stall (seen as /readyz stuck on autoregister-completion).
        return (f"sqlite://{self.ctx.data_dir / 'kine' / 'state.db'}"
                "?_journal=WAL&cache=shared&_busy_timeout=30000&_txlock=immediate")

    def init(self) -> None:
        super().init()
        d = self.ctx.data_dir / "kine"
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(d, 0o700)
        self.ctx.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def start(self) -> None:
        self.socket_path.unlink(missing_ok=True)
        super().start()

    def env(self) -> dict[str, str]:
        return {ENDPOINT_ENV: self.data_source}

    def args(self) -> list[str]:
        return [
            f"--listen-address=unix://{self.socket_path}",
            "--metrics-bind-address=0",
        ]

    def ready(self) -> bool:
        return unix_socket_answers(self.socket_path)


class KineBackend(StorageBackend):
    name = "kine"
    summary = "kine: the etcd API over SQLite (default), MySQL/MariaDB or PostgreSQL"

    def component_names(self) -> tuple[str, ...]:
        return (Kine.name,)

    def check(self, cfg: ClusterConfig) -> None:
        from mke.errors import ConfigError

        dsn = cfg.storage.kine.data_source
        if scheme(dsn) not in DIALECTS:
            raise ConfigError(
                f"storage.kine.dataSource: {dsn.split('@')[-1]!r} has no supported scheme; use "
                "sqlite:///path/state.db, mysql://user:pass@tcp(host:3306)/db or postgres://user:pass@host:5432/db")

    def component(self, ctx: ControllerContext) -> Kine:
        return Kine(ctx)

    def apiserver_endpoint(self, component: SupervisedComponent) -> tuple[str, bool]:
        assert isinstance(component, Kine)
        return component.etcd_servers, False

    def admit_controller(self, ctx: ControllerContext, name: str, peer_address: str) -> dict[str, Any]:
        from mke.errors import UsageError

        database, shared = DIALECTS[scheme(ctx.config.storage.kine.data_source)]
        if not shared:
            raise UsageError(f"this control plane keeps its state in {database} on one host "
                             "(storage.kine.dataSource); another controller cannot join it: use etcd, "
                             "MySQL/MariaDB or PostgreSQL for several controllers")
        return {}


BACKEND = KineBackend()
