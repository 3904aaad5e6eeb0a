"""konnectivity-server: agents on the nodes dial in; the apiserver reaches nodes through it
(kubectl logs/exec, webhooks, aggregated APIs) over a unix socket."""

from __future__ import annotations

import functools

from mke.components.base import SupervisedComponent, https_ok
from mke.node.tls import K8S_MIN_VERSION, go_cipher_suites

# recipes/konnectivity.toml's [[source.patch]], as the payload manifest names it
RELOAD_PATCH = "patches/konnectivity/0001-reload-serving-key-pair.patch"


class KonnectivityServer(SupervisedComponent):
    name = "konnectivity-server"
    binary = "konnectivity-server"
    ready_timeout = 60.0
    @functools.cached_property
    def reloads(self) -> frozenset[str]:  # type: ignore[override]
        """The agent-facing pair is read again when its files change with mke's patch to
        apiserver-network-proxy v0.36.0 (RELOAD_PATCH; upstream reads it once, in
        cmd/server/app/server.go getTLSConfig), which the payload manifest records for the
        embedded binary. A konnectivity-server from --bin-dir or PATH is taken as upstream's:
        a new certificate restarts it (agents reconnect). Its kubeconfig names its client
        pair as files, which client-go reloads (SupervisedComponent.kubeconfig_flags). Asked
        once per process: the payload does not change under a running mke."""
        if any(p.startswith(RELOAD_PATCH) for p in self.ctx.binaries.patches(self.binary)):
            return frozenset({"cluster-cert", "cluster-key"})
        return frozenset()

    @property
    def socket_path(self):
        return self.ctx.run_dir / "konnectivity-server.sock"

    def args(self) -> list[str]:
        k, pki = self.ctx.config.konnectivity, self.ctx.pki
        return [
            f"--uds-name={self.socket_path}",
            "--delete-existing-uds-file=true",
            "--server-port=0",
            "--mode=grpc",
            f"--agent-port={k.agent_port}",
            f"--admin-port={k.admin_port}",
            "--admin-bind-address=127.0.0.1",
            f"--health-port={k.health_port}",
            "--health-bind-address=127.0.0.1",
            f"--cluster-cert={pki.crt('konnectivity')}",
            f"--cluster-key={pki.key('konnectivity')}",
            f"--kubeconfig={pki.kubeconfig('konnectivity')}",
            "--agent-namespace=kube-system",
            "--agent-service-account=konnectivity-agent",
            "--authentication-audience=system:konnectivity-server",
            "--proxy-strategies=destHost,default",
            "--server-count=1",
            f"--tls-min-version={K8S_MIN_VERSION}",
            f"--cipher-suites={go_cipher_suites()}",
        ]

    def ready(self) -> bool:
        ok, _ = https_ok(f"http://127.0.0.1:{self.ctx.config.konnectivity.health_port}/healthz")
        return ok
