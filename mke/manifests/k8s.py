"""Small constructors for the objects the manifests use (plain dicts, no client library)."""

from __future__ import annotations

from typing import Any

NS = "kube-system"


def meta(name: str, namespace: str | None = NS, **labels: str) -> dict[str, Any]:
    m: dict[str, Any] = {"name": name}
    if namespace:
        m["namespace"] = namespace
    if labels:
        m["labels"] = dict(labels)
    return m


def service_account(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(name)}


def cluster_role(name: str, rules: list[dict[str, Any]], **labels: str) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": meta(name, None, **labels), "rules": rules}


def rule(groups: list[str], resources: list[str], verbs: list[str], **extra: Any) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs, **extra}


def subject(kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {"kind": kind, "name": name}
    if kind == "ServiceAccount":
        s["namespace"] = namespace or NS
    else:
        s["apiGroup"] = "rbac.authorization.k8s.io"
    return s


def cluster_role_binding(name: str, role: str, subjects: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": meta(name, None),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": subjects}


def role_binding(name: str, namespace: str, role_kind: str, role: str, subjects: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta(name, namespace),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": subjects}


def config_map(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(name), "data": data}


def service(name: str, selector: dict[str, str], ports: list[dict[str, Any]], cluster_ip: str | None = None,
            **labels: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": selector, "ports": ports}
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(name, NS, **labels), "spec": spec}


CRITICAL_TOLERATIONS = [
    {"key": "CriticalAddonsOnly", "operator": "Exists"},
    {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
]
ALL_TOLERATIONS = [{"operator": "Exists"}]
