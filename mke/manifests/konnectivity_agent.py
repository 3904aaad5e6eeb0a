"""konnectivity-agent on every node, one per controller: each node's agents reach every
konnectivity-server (issue 14.5).

Each kube-apiserver reaches the nodes only through its own controller's konnectivity-server
(a unix socket), so that server needs an agent connection from every node. Upstream's way
is a load balancer in front of the servers, ``--server-count`` and agents that reconnect
until they have reached that many distinct servers (k0s#600 and #5503 are what happens when
the count or the balancing is wrong). mke needs no load balancer: one DaemonSet per
controller, named after the controller's address, whose agents dial that controller
directly. The controllers are the addresses of the ``default/kubernetes`` EndpointSlice,
which every kube-apiserver keeps current (a stopped one leaves it within its 15 s lease);
``mke.components.addons`` reads it before each apply and deletes the DaemonSets of
controllers that are gone. Each server then sees exactly one agent per node:
``--server-count=1`` is right for every server.
"""

from __future__ import annotations

from typing import Any

from mke.components.context import ControllerContext
from mke.manifests.k8s import ALL_TOLERATIONS, NS, meta, service_account

LABELS = {"k8s-app": "konnectivity-agent"}
SERVER_LABEL = "mke.io/konnectivity-server"  # which controller a DaemonSet's agents dial


def server_slug(server: str) -> str:
    """``10-0-0-1`` for the controller at 10.0.0.1 (``fd00--1`` for fd00::1): its DaemonSet's
    name suffix and SERVER_LABEL value."""
    return server.lower().replace(".", "-").replace(":", "-")


def daemonset_name(server: str) -> str:
    return f"konnectivity-agent-{server_slug(server)}"


def objects(ctx: ControllerContext, servers: list[str] | None = None) -> list[dict[str, Any]]:
    """The agents' ServiceAccount and one DaemonSet per controller address in ``servers``
    (default: this controller's own address)."""
    return [service_account("konnectivity-agent"),
            *(daemonset(ctx, s) for s in sorted(set(servers or [ctx.api_address])))]


def daemonset(ctx: ControllerContext, server: str) -> dict[str, Any]:
    cfg = ctx.config
    labels = {**LABELS, SERVER_LABEL: server_slug(server)}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": meta(daemonset_name(server), NS, **labels),
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
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
