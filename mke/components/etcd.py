"""etcd, the default storage: one member per controller, mutual TLS for clients and peers."""

from __future__ import annotations

import json
import os

from mke.components.base import SupervisedComponent, https_ok
from mke.node.hostinfo import url_host


class Etcd(SupervisedComponent):
    name = "etcd"
    binary = "etcd"
    ready_timeout = 60.0

    @property
    def data_dir(self):
        return self.ctx.data_dir / "etcd"

    @property
    def client_url(self) -> str:
        return f"https://127.0.0.1:{self.ctx.config.storage.etcd.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://{url_host(self.ctx.etcd_peer_address)}:{self.ctx.config.storage.etcd.peer_port}"

    def init(self) -> None:
        super().init()
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.data_dir, 0o700)

    def args(self) -> list[str]:
        pki = self.ctx.pki
        join = self.ctx.etcd_join
        initial = join.initial_cluster if join else f"{self.ctx.node_name}={self.peer_url}"
        return [
            f"--name={self.ctx.node_name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={initial}",
            f"--initial-cluster-state={'existing' if join else 'new'}",
            f"--cert-file={pki.crt('etcd/server')}",
            f"--key-file={pki.key('etcd/server')}",
            f"--trusted-ca-file={pki.crt('etcd/ca')}",
            "--client-cert-auth=true",
            f"--peer-cert-file={pki.crt('etcd/peer')}",
            f"--peer-key-file={pki.key('etcd/peer')}",
            f"--peer-trusted-ca-file={pki.crt('etcd/ca')}",
            "--peer-client-cert-auth=true",
            "--log-level=warn",
        ]

    def ready(self) -> bool:
        pki = self.ctx.pki
        ok, body = https_ok(f"{self.client_url}/health", ca=pki.crt("etcd/ca"), cert=pki.crt("etcd/client"),
                            key=pki.key("etcd/client"))
        if not ok:
            return False
        try:
            return json.loads(body).get("health") == "true"
        except ValueError:
            return False
