"""CoreDNS: cluster DNS at the 10th address of the service CIDR (kube-dns Service)."""

from __future__ import annotations

from typing import Any

from mke.components.context import ControllerContext
from mke.manifests.k8s import (
    CRITICAL_TOLERATIONS,
    NS,
    cluster_role,
    cluster_role_binding,
    config_map,
    meta,
    rule,
    service,
    service_account,
    subject,
)

LABELS = {"k8s-app": "kube-dns"}


def corefile(domain: str) -> str:
    return (
        ".:53 {\n"
        "    errors\n"
        "    health {\n        lameduck 5s\n    }\n"
        "    ready\n"
        f"    kubernetes {domain} in-addr.arpa ip6.arpa {{\n"
        "        pods insecure\n        fallthrough in-addr.arpa ip6.arpa\n        ttl 30\n    }\n"
        "    prometheus :9153\n"
        "    forward . /etc/resolv.conf {\n        max_concurrent 1000\n    }\n"
        "    cache 30\n    loop\n    reload\n    loadbalance\n"
        "}\n"
    )


def objects(ctx: ControllerContext) -> list[dict[str, Any]]:
    cfg = ctx.config
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta("coredns", NS, **LABELS),
        "spec": {
            "replicas": 2,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "selector": {"matchLabels": LABELS},
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {
                    "priorityClassName": "system-cluster-critical",
                    "serviceAccountName": "coredns",
                    "tolerations": CRITICAL_TOLERATIONS,
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                        "weight": 100,
                        "podAffinityTerm": {"labelSelector": {"matchLabels": LABELS},
                                            "topologyKey": "kubernetes.io/hostname"}}]}},
                    "containers": [{
                        "name": "coredns",
                        "image": cfg.images.ref("coredns"),
                        "imagePullPolicy": "IfNotPresent",
                        "args": ["-conf", "/etc/coredns/Corefile"],
                        "resources": {"limits": {"memory": "170Mi"}, "requests": {"cpu": "100m", "memory": "70Mi"}},
                        "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": True}],
                        "ports": [
                            {"containerPort": 53, "name": "dns", "protocol": "UDP"},
                            {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"},
                            {"containerPort": 9153, "name": "metrics", "protocol": "TCP"},
                        ],
                        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}},
                        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080, "scheme": "HTTP"},
                                          "initialDelaySeconds": 60, "timeoutSeconds": 5, "failureThreshold": 5},
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181, "scheme": "HTTP"}},
                    }],
                    "dnsPolicy": "Default",
                    "volumes": [{"name": "config-volume", "configMap": {
                        "name": "coredns", "items": [{"key": "Corefile", "path": "Corefile"}]}}],
                },
            },
        },
    }
    return [
        service_account("coredns"),
        cluster_role("system:coredns", [
            rule([""], ["endpoints", "services", "pods", "namespaces"], ["list", "watch"]),
            rule(["discovery.k8s.io"], ["endpointslices"], ["list", "watch"]),
        ]),
        cluster_role_binding("system:coredns", "system:coredns", [subject("ServiceAccount", "coredns")]),
        config_map("coredns", {"Corefile": corefile(cfg.network.cluster_domain)}),
        deployment,
        service("kube-dns", LABELS, [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
        ], cluster_ip=cfg.network.dns_service_ip, **LABELS, **{"kubernetes.io/name": "CoreDNS"}),
    ]
