"""kine: the etcd API on top of SQLite, MySQL/MariaDB or PostgreSQL.

kine listens on a unix socket inside the run dir, so no TCP port is opened and only
root (the apiserver) can reach it.
"""

from __future__ import annotations

import os
import socket

from mke.components.base import SupervisedComponent


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

    def args(self) -> list[str]:
        return [
            f"--endpoint={self.data_source}",
            f"--listen-address=unix://{self.socket_path}",
            "--metrics-bind-address=0",
        ]

    def ready(self) -> bool:
        if not self.socket_path.exists():
            return False
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect(str(self.socket_path))
            return True
        except OSError:
            return False
        finally:
            s.close()
