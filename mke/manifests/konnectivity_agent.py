"""konnectivity-agent on every node, dialing konnectivity-server on the controller(s)."""

from __future__ import annotations

from typing import Any

from mke.components.context import ControllerContext
from mke.manifests.k8s import ALL_TOLERATIONS, NS, meta, service_account

LABELS = {"k8s-app": "konnectivity-agent"}


def objects(ctx: ControllerContext) -> list[dict[str, Any]]:
    cfg = ctx.config
    server = cfg.api.external_address or ctx.api_address
    daemonset = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": meta("konnectivity-agent", NS, **LABELS),
        "spec": {
            "selector": {"matchLabels": LABELS},
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {
                    "priorityClassName": "system-cluster-critical",
                    "serviceAccountName": "konnectivity-agent",
                    "tolerations": ALL_TOLERATIONS,
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [{
                        "name": "konnectivity-agent",
                        "image": cfg.images.ref("konnectivity_agent"),
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["/proxy-agent"],
                        "args": [
                            "--logtostderr=true",
                            "--ca-cert=/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
                            f"--proxy-server-host={server}",
                            f"--proxy-server-port={cfg.konnectivity.agent_port}",
                            "--admin-server-port=8133",
                            "--health-server-port=8134",
                            "--service-account-token-path=/var/run/secrets/tokens/konnectivity-agent-token",
                            "--agent-identifiers=ipv4=$(HOST_IP)",
                        ],
                        "env": [{"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}],
                        "livenessProbe": {"httpGet": {"port": 8134, "path": "/healthz"},
                                          "initialDelaySeconds": 15, "timeoutSeconds": 15},
                        "volumeMounts": [{"mountPath": "/var/run/secrets/tokens",
                                          "name": "konnectivity-agent-token"}],
                    }],
                    "volumes": [{"name": "konnectivity-agent-token", "projected": {"sources": [{
                        "serviceAccountToken": {"path": "konnectivity-agent-token",
                                                "audience": "system:konnectivity-server"}}]}}],
                },
            },
        },
    }
    return [service_account("konnectivity-agent"), daemonset]
