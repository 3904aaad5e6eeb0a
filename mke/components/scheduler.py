"""kube-scheduler."""

from __future__ import annotations

from mke.components.base import SupervisedComponent, https_ok
from mke.node.tls import K8S_MIN_VERSION, go_cipher_suites

SECURE_PORT = 10259


class KubeScheduler(SupervisedComponent):
    name = "kube-scheduler"
    binary = "kube-scheduler"
    ready_timeout = 120.0

    def args(self) -> list[str]:
        kubeconfig = self.ctx.pki.kubeconfig("scheduler")
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={SECURE_PORT}",
            "--leader-elect=true",
            "--profiling=false",
            f"--tls-min-version={K8S_MIN_VERSION}",
            f"--tls-cipher-suites={go_cipher_suites()}",
        ]

    def ready(self) -> bool:
        ok, _ = https_ok(f"https://127.0.0.1:{SECURE_PORT}/healthz", verify=False)
        return ok
