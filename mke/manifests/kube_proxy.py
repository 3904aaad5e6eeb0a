"""kube-proxy (iptables mode) on every node, talking to the API by its advertised address
(Service routing is what kube-proxy sets up, so it cannot depend on it)."""

from __future__ import annotations

from typing import Any

from mke.components.context import ControllerContext
from mke.manifests.k8s import ALL_TOLERATIONS, NS, cluster_role_binding, config_map, meta, service_account, subject
from mke.node.hostinfo import url_host

LABELS = {"k8s-app": "kube-proxy"}


def objects(ctx: ControllerContext) -> list[dict[str, Any]]:
    cfg = ctx.config
    server = f"https://{url_host(cfg.api.external_address or ctx.api_address)}:{cfg.api.port}"
    kubeconfig = (
        "apiVersion: v1\nkind: Config\n"
        "clusters:\n- cluster:\n"
        "    certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt\n"
        f"    server: {server}\n  name: default\n"
        "contexts:\n- context:\n    cluster: default\n    namespace: default\n    user: default\n  name: default\n"
        "current-context: default\n"
        "users:\n- name: default\n  user:\n    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n"
    )
    proxy_config = (
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
        "clientConnection:\n  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf\n"
        f"clusterCIDR: {cfg.network.pod_cidr}\n"
        "mode: iptables\n"
        "metricsBindAddress: 0.0.0.0:10249\n"
        "conntrack:\n  maxPerCore: 0\n"
    )
    daemonset = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": meta("kube-proxy", NS, **LABELS),
        "spec": {
            "selector": {"matchLabels": LABELS},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {
                    "priorityClassName": "system-node-critical",
                    "serviceAccountName": "kube-proxy",
                    "hostNetwork": True,
                    "tolerations": ALL_TOLERATIONS,
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [{
                        "name": "kube-proxy",
                        "image": cfg.images.ref("kube_proxy"),
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf",
                                    "--hostname-override=$(NODE_NAME)"],
                        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                        "securityContext": {"privileged": True},
                        "volumeMounts": [
                            {"mountPath": "/var/lib/kube-proxy", "name": "kube-proxy"},
                            {"mountPath": "/run/xtables.lock", "name": "xtables-lock"},
                            {"mountPath": "/lib/modules", "name": "lib-modules", "readOnly": True},
                        ],
                    }],
                    "volumes": [
                        {"name": "kube-proxy", "configMap": {"name": "kube-proxy"}},
                        {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}},
                        {"name": "lib-modules", "hostPath": {"path": "/lib/modules"}},
                    ],
                },
            },
        },
    }
    return [
        service_account("kube-proxy"),
        cluster_role_binding("mke:node-proxier", "system:node-proxier", [subject("ServiceAccount", "kube-proxy")]),
        config_map("kube-proxy", {"config.conf": proxy_config, "kubeconfig.conf": kubeconfig}),
        daemonset,
    ]
