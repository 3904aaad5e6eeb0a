"""Calico: calico-node on every node (VXLAN, Kubernetes datastore, Calico
IPAM over network.podCIDR) and calico-kube-controllers.

The CRDs are declared with open schemas (``x-kubernetes-preserve-unknown-fields``):
Calico validates its own resources, and mke only needs the types to exist.
"""

from __future__ import annotations

import json
from typing import Any

from mke.components.context import ControllerContext
from mke.config import ClusterConfig
from mke.manifests.k8s import (
    ALL_TOLERATIONS,
    CRITICAL_TOLERATIONS,
    NS,
    cluster_role,
    cluster_role_binding,
    config_map,
    meta,
    rule,
    service_account,
    subject,
)
from mke.network.base import NetworkProvider

GROUP = "crd.projectcalico.org"
# kind -> namespaced
CRDS = {
    "BGPConfiguration": False, "BGPFilter": False, "BGPPeer": False, "BlockAffinity": False,
    "CalicoNodeStatus": False, "ClusterInformation": False, "FelixConfiguration": False,
    "GlobalNetworkPolicy": False, "GlobalNetworkSet": False, "HostEndpoint": False, "IPAMBlock": False,
    "IPAMConfig": False, "IPAMHandle": False, "IPPool": False, "IPReservation": False,
    "KubeControllersConfiguration": False, "NetworkPolicy": True, "NetworkSet": True,
    "StagedGlobalNetworkPolicy": False, "StagedKubernetesNetworkPolicy": True, "StagedNetworkPolicy": True,
    "Tier": False,
}
NODE_LABELS = {"k8s-app": "calico-node"}
KC_LABELS = {"k8s-app": "calico-kube-controllers"}


def _plural(kind: str) -> str:
    low = kind.lower()
    return low + ("es" if low.endswith(("s", "x")) else "ies" if low.endswith("y") else "s")


def crd(kind: str, namespaced: bool) -> dict[str, Any]:
    plural = _plural(kind)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower()},
            "scope": "Namespaced" if namespaced else "Cluster",
            "versions": [{"name": "v1", "served": True, "storage": True,
                          "schema": {"openAPIV3Schema": {"type": "object",
                                                         "x-kubernetes-preserve-unknown-fields": True}}}],
        },
    }


def cni_config() -> str:
    return json.dumps({
        "name": "k8s-pod-network",
        "cniVersion": "0.3.1",
        "plugins": [
            {"type": "calico", "log_level": "info", "datastore_type": "kubernetes",
             "nodename": "__KUBERNETES_NODE_NAME__", "mtu": "__CNI_MTU__",
             "ipam": {"type": "calico-ipam"}, "policy": {"type": "k8s"},
             "kubernetes": {"kubeconfig": "__KUBECONFIG_FILEPATH__"}},
            {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}},
        ],
    }, indent=2).replace('"__CNI_MTU__"', "__CNI_MTU__")


def objects(ctx: ControllerContext) -> list[dict[str, Any]]:
    cfg = ctx.config
    api_host = cfg.api.external_address or ctx.api_address
    api_env = [{"name": "KUBERNETES_SERVICE_HOST", "value": api_host},
               {"name": "KUBERNETES_SERVICE_PORT", "value": str(cfg.api.port)}]
    all_verbs = ["get", "list", "watch", "create", "update", "delete", "patch"]
    node_role = cluster_role("calico-node", [
        rule([""], ["pods", "nodes", "namespaces", "services", "endpoints", "configmaps", "serviceaccounts"],
             ["get", "list", "watch"]),
        rule([""], ["nodes/status", "pods/status"], ["patch", "update"]),
        rule([""], ["serviceaccounts/token"], ["create"], resourceNames=["calico-cni-plugin"]),
        rule(["discovery.k8s.io"], ["endpointslices"], ["get", "list", "watch"]),
        rule(["networking.k8s.io"], ["networkpolicies"], ["get", "list", "watch"]),
        rule(["policy.networking.k8s.io"], ["adminnetworkpolicies", "baselineadminnetworkpolicies"],
             ["get", "list", "watch"]),
        rule([GROUP], ["*"], all_verbs),
    ])
    cni_role = cluster_role("calico-cni-plugin", [
        rule([""], ["pods", "nodes", "namespaces"], ["get"]),
        rule([""], ["pods/status"], ["patch"]),
        rule([GROUP], ["blockaffinities", "ipamblocks", "ipamhandles", "clusterinformations", "ippools",
                       "ipreservations", "ipamconfigs"], all_verbs),
    ])
    kc_role = cluster_role("calico-kube-controllers", [
        rule([""], ["nodes", "pods", "namespaces", "serviceaccounts", "services", "endpoints"],
             ["get", "list", "watch"]),
        rule(["discovery.k8s.io"], ["endpointslices"], ["get", "list", "watch"]),
        rule(["networking.k8s.io"], ["networkpolicies"], ["get", "list", "watch"]),
        rule([GROUP], ["*"], all_verbs),
    ])
    node_ds = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": meta("calico-node", NS, **NODE_LABELS),
        "spec": {
            "selector": {"matchLabels": NODE_LABELS},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": NODE_LABELS},
                "spec": {
                    "hostNetwork": True,
                    "priorityClassName": "system-node-critical",
                    "serviceAccountName": "calico-node",
                    "tolerations": ALL_TOLERATIONS,
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "terminationGracePeriodSeconds": 0,
                    "initContainers": [{
                        "name": "install-cni",
                        "image": cfg.images.ref("calico_cni"),
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["/opt/cni/bin/install"],
                        "env": [
                            *api_env,
                            {"name": "CNI_CONF_NAME", "value": "10-calico.conflist"},
                            {"name": "CNI_NETWORK_CONFIG",
                             "valueFrom": {"configMapKeyRef": {"name": "calico-config", "key": "cni_network_config"}}},
                            {"name": "KUBERNETES_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                            {"name": "CNI_MTU",
                             "valueFrom": {"configMapKeyRef": {"name": "calico-config", "key": "veth_mtu"}}},
                            {"name": "SLEEP", "value": "false"},
                        ],
                        "securityContext": {"privileged": True},
                        "volumeMounts": [{"mountPath": "/host/opt/cni/bin", "name": "cni-bin-dir"},
                                         {"mountPath": "/host/etc/cni/net.d", "name": "cni-net-dir"}],
                    }],
                    "containers": [{
                        "name": "calico-node",
                        "image": cfg.images.ref("calico_node"),
                        "imagePullPolicy": "IfNotPresent",
                        "env": [
                            *api_env,
                            {"name": "DATASTORE_TYPE", "value": "kubernetes"},
                            {"name": "WAIT_FOR_DATASTORE", "value": "true"},
                            {"name": "NODENAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                            {"name": "CALICO_NETWORKING_BACKEND", "value": "vxlan"},
                            {"name": "CLUSTER_TYPE", "value": "k8s"},
                            {"name": "IP", "value": "autodetect"},
                            {"name": "CALICO_IPV4POOL_CIDR", "value": cfg.network.pod_cidr},
                            {"name": "CALICO_IPV4POOL_VXLAN", "value": "Always"},
                            {"name": "CALICO_IPV4POOL_IPIP", "value": "Never"},
                            {"name": "FELIX_VXLANMTU",
                             "valueFrom": {"configMapKeyRef": {"name": "calico-config", "key": "veth_mtu"}}},
                            {"name": "CALICO_DISABLE_FILE_LOGGING", "value": "true"},
                            {"name": "FELIX_DEFAULTENDPOINTTOHOSTACTION", "value": "ACCEPT"},
                            {"name": "FELIX_IPV6SUPPORT", "value": "false"},
                            {"name": "FELIX_HEALTHENABLED", "value": "true"},
                        ],
                        "securityContext": {"privileged": True},
                        "resources": {"requests": {"cpu": "250m"}},
                        "livenessProbe": {"exec": {"command": ["/bin/calico-node", "-felix-live"]},
                                          "periodSeconds": 10, "initialDelaySeconds": 10, "failureThreshold": 6,
                                          "timeoutSeconds": 10},
                        "readinessProbe": {"exec": {"command": ["/bin/calico-node", "-felix-ready"]},
                                           "periodSeconds": 10, "timeoutSeconds": 10},
                        "volumeMounts": [
                            {"mountPath": "/host/etc/cni/net.d", "name": "cni-net-dir"},
                            {"mountPath": "/lib/modules", "name": "lib-modules", "readOnly": True},
                            {"mountPath": "/run/xtables.lock", "name": "xtables-lock"},
                            {"mountPath": "/var/run/calico", "name": "var-run-calico"},
                            {"mountPath": "/var/lib/calico", "name": "var-lib-calico"},
                            {"mountPath": "/var/run/nodeagent", "name": "policysync"},
                            {"mountPath": "/var/log/calico/cni", "name": "cni-log-dir", "readOnly": True},
                        ],
                    }],
                    "volumes": [
                        {"name": "lib-modules", "hostPath": {"path": "/lib/modules"}},
                        {"name": "var-run-calico", "hostPath": {"path": "/var/run/calico", "type": "DirectoryOrCreate"}},
                        {"name": "var-lib-calico", "hostPath": {"path": "/var/lib/calico", "type": "DirectoryOrCreate"}},
                        {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}},
                        {"name": "cni-bin-dir", "hostPath": {"path": "/opt/cni/bin", "type": "DirectoryOrCreate"}},
                        {"name": "cni-net-dir", "hostPath": {"path": "/etc/cni/net.d"}},
                        {"name": "cni-log-dir", "hostPath": {"path": "/var/log/calico/cni"}},
                        {"name": "policysync", "hostPath": {"path": "/var/run/nodeagent", "type": "DirectoryOrCreate"}},
                    ],
                },
            },
        },
    }
    kc_deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta("calico-kube-controllers", NS, **KC_LABELS),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": KC_LABELS},
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": KC_LABELS},
                "spec": {
                    "priorityClassName": "system-cluster-critical",
                    "serviceAccountName": "calico-kube-controllers",
                    "tolerations": CRITICAL_TOLERATIONS,
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [{
                        "name": "calico-kube-controllers",
                        "image": cfg.images.ref("calico_kube_controllers"),
                        "imagePullPolicy": "IfNotPresent",
                        "env": [*api_env, {"name": "ENABLED_CONTROLLERS", "value": "node,loadbalancer"},
                                {"name": "DATASTORE_TYPE", "value": "kubernetes"}],
                        "livenessProbe": {"exec": {"command": ["/usr/bin/check-status", "-l"]},
                                          "periodSeconds": 10, "initialDelaySeconds": 10, "failureThreshold": 6},
                        "readinessProbe": {"exec": {"command": ["/usr/bin/check-status", "-r"]},
                                           "periodSeconds": 10},
                        "securityContext": {"runAsNonRoot": True},
                    }],
                },
            },
        },
    }
    return [
        *(crd(k, ns) for k, ns in CRDS.items()),
        config_map("calico-config", {"veth_mtu": "0", "cni_network_config": cni_config()}),
        service_account("calico-node"),
        service_account("calico-cni-plugin"),
        service_account("calico-kube-controllers"),
        node_role, cni_role, kc_role,
        cluster_role_binding("calico-node", "calico-node", [subject("ServiceAccount", "calico-node")]),
        cluster_role_binding("calico-cni-plugin", "calico-cni-plugin", [subject("ServiceAccount", "calico-cni-plugin")]),
        cluster_role_binding("calico-kube-controllers", "calico-kube-controllers",
                             [subject("ServiceAccount", "calico-kube-controllers")]),
        node_ds,
        kc_deploy,
    ]


class Calico(NetworkProvider):
    name = "calico"
    summary = "Calico (VXLAN, NetworkPolicy); images from a registry mirror (images.registry)"

    def check(self, cfg: ClusterConfig) -> None:
        # Calico's images cannot be built from any source mke can reach (docs/airgap.md):
        # without a registry its pods never start, so refuse instead of a cluster that never runs a pod.
        if not cfg.images.registry:
            from mke.errors import ConfigError

            raise ConfigError("network.provider: calico needs its images (quay.io/calico/...) from a registry or "
                              "mirror, which mke cannot build from source; set images.registry, or use the default "
                              "kuberouter")

    def manifests(self, ctx: ControllerContext) -> list[dict[str, Any]]:
        return objects(ctx)

    def images(self, cfg: ClusterConfig) -> list[str]:
        return [cfg.images.ref("calico_cni"), cfg.images.ref("calico_node"), cfg.images.ref("calico_kube_controllers")]


PROVIDER = Calico()
