"""Cordon, drain and uncordon a node through the Kubernetes API, for ``mke cluster upgrade``.

As ``kubectl drain --ignore-daemonsets --delete-emptydir-data --force`` (what k0sctl runs):
the node is marked unschedulable, then every pod on it is *evicted* (``POST .../eviction``),
so that PodDisruptionBudgets are respected: the API answers 429 while a budget does not allow
the eviction, and it is tried again until the timeout. Skipped: pods of a DaemonSet (their
controller would start them again on the node; they keep running through the restart),
mirror pods (the kubelet's static pods: the API cannot delete them) and pods that have ended.
A pod without a controller is evicted too (it is gone for good, as with ``--force``).

The cordon is marked with an annotation, so that a later run knows it was ours and uncordons
(a node the operator had cordoned stays cordoned). Every call is synchronous (mke.kubeapi);
the caller runs them in a thread. A timeout says which pod is left and which budget holds it.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mke.errors import KubeAPIError
from mke.kubeapi import KubeClient

CORDONED_BY = "mke.cluster/cordoned-by-upgrade"
MIRROR = "kubernetes.io/config.mirror"
EVICT_RETRY_SECONDS = 2.0


def owner_kind(pod: dict[str, Any]) -> str | None:
    """The kind of the pod's controller (DaemonSet, ReplicaSet, ...), None for a bare pod."""
    for ref in pod.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("kind")
    return None


def skip_reason(pod: dict[str, Any]) -> str | None:
    """Why drain leaves ``pod`` alone, None when it is evicted."""
    if MIRROR in (pod.get("metadata", {}).get("annotations") or {}):
        return "mirror pod"
    if owner_kind(pod) == "DaemonSet":
        return "DaemonSet"
    if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
        return "ended"
    return None


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels, matchExpressions) against ``labels``. A PDB's
    empty selector ({}) matches every pod of its namespace (policy/v1); None matches none."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def blocking_budgets(pod: dict[str, Any], budgets: list[dict[str, Any]]) -> list[str]:
    """``namespace/name`` of the PodDisruptionBudgets (of the pod's namespace) that select ``pod``."""
    meta = pod.get("metadata", {})
    labels = meta.get("labels") or {}
    return [f"{b['metadata']['namespace']}/{b['metadata']['name']}" for b in budgets
            if b.get("metadata", {}).get("namespace") == meta.get("namespace")
            and selector_matches(b.get("spec", {}).get("selector"), labels)]


@dataclass
class Blocked:
    """Why the last eviction of a pod was refused."""

    pod: str  # namespace/name
    reason: str
    budgets: tuple[str, ...] = ()

    def line(self) -> str:
        if self.budgets:
            return (f"pod {self.pod}: PodDisruptionBudget {', '.join(self.budgets)} does not allow its eviction "
                    f"({self.reason})")
        return f"pod {self.pod}: {self.reason}"


class NodeDrainer:
    """Cordon, drain and uncordon one node with ``client`` (a cluster-admin KubeClient)."""

    def __init__(self, client: KubeClient, node: str, *, say: Callable[[str], None] = lambda _: None) -> None:
        self.client = client
        self.node = node
        self.say = say

    def _node_path(self) -> str:
        return f"/api/v1/nodes/{urllib.parse.quote(self.node)}"

    def _patch_node(self, patch: dict[str, Any]) -> dict[str, Any]:
        return self.client.call("PATCH", self._node_path(), patch, content_type="application/merge-patch+json")

    def get_node(self) -> dict[str, Any] | None:
        return self.client.get("v1", "Node", self.node)

    def cordon(self) -> str:
        """Mark the node unschedulable (and ours): "cordoned", "ours already" (a run that stopped), or
        "not ours" (someone else had cordoned it: left as it is, and not uncordoned after)."""
        node = self.get_node()
        if node is None:
            raise KubeAPIError(f"node {self.node} is not registered")
        annotations = node.get("metadata", {}).get("annotations") or {}
        if node.get("spec", {}).get("unschedulable"):
            return "ours already" if CORDONED_BY in annotations else "not ours"
        self._patch_node({"metadata": {"annotations": {CORDONED_BY: "true"}}, "spec": {"unschedulable": True}})
        return "cordoned"

    def uncordon_if_ours(self) -> bool:
        """Schedulable again when the cordon was ours; True when it was."""
        node = self.get_node()
        if node is None or CORDONED_BY not in (node.get("metadata", {}).get("annotations") or {}):
            return False
        self._patch_node({"metadata": {"annotations": {CORDONED_BY: None}}, "spec": {"unschedulable": None}})
        return True

    def pods(self) -> list[dict[str, Any]]:
        """The pods on this node that drain evicts."""
        path = "/api/v1/pods?" + urllib.parse.urlencode({"fieldSelector": f"spec.nodeName={self.node}"})
        doc = self.client.call("GET", path)  # every namespace (KubeClient.list asks one)
        if not isinstance(doc, dict):
            raise KubeAPIError(f"GET {self.client.server}{path}: the answer is not a list object")
        return [p for p in doc.get("items") or [] if skip_reason(p) is None]

    def evict(self, pod: dict[str, Any]) -> Blocked | None:
        """Ask for ``pod``'s eviction; a Blocked when the API refused it (for now)."""
        meta = pod["metadata"]
        ns, name = meta["namespace"], meta["name"]
        body = {"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": name, "namespace": ns},
                "deleteOptions": {"preconditions": {"uid": meta.get("uid")}} if meta.get("uid") else {}}
        path = f"/api/v1/namespaces/{urllib.parse.quote(ns)}/pods/{urllib.parse.quote(name)}/eviction"
        try:
            status, data = self.client.http.request("POST", path, json.dumps(body).encode(),
                                                    {"Content-Type": "application/json"})
        except (OSError, http.client.HTTPException) as e:
            raise KubeAPIError(f"POST {self.client.server}{path}: {' '.join((str(e) or type(e).__name__).split())}") from e
        if status in (200, 201, 404, 409):  # evicted; gone already; another pod by that name now
            return None
        try:
            doc = json.loads(data)
        except ValueError:
            doc = {}
        message = " ".join(str(doc.get("message") or data[:200].decode(errors="replace")).split())
        causes = [c.get("message", "") for c in (doc.get("details") or {}).get("causes") or []]
        reason = "; ".join(c for c in causes if c) or message or f"HTTP {status}"
        if status == 429 or (status == 500 and "disruption budget" in message.lower()):
            return Blocked(f"{ns}/{name}", reason)
        raise KubeAPIError(f"POST {self.client.server}{path}: HTTP {status}: {message}")

    def drain(self, timeout: float) -> int:
        """Evict until no pod that drain moves is left on the node; the number evicted.
        KubeAPIError (one line naming the pod and the budget) when that takes longer than ``timeout``."""
        deadline = time.monotonic() + timeout
        asked: set[str] = set()
        blocked: dict[str, Blocked] = {}
        while True:
            pods = self.pods()
            if not pods:
                return len(asked)
            for p in pods:
                key = f"{p['metadata']['namespace']}/{p['metadata']['name']}"
                if p["metadata"].get("deletionTimestamp"):
                    continue  # evicted, terminating
                b = self.evict(p)
                if b is None:
                    blocked.pop(key, None)
                    if key not in asked:
                        asked.add(key)
                        self.say(f"evicted {key}")
                else:
                    blocked[key] = b
            if time.monotonic() > deadline:
                left = self.pods()
                if not left:
                    return len(asked)
                first = left[0]
                key = f"{first['metadata']['namespace']}/{first['metadata']['name']}"
                b = blocked.get(key)
                if b is not None:
                    budgets = self.client.list("policy/v1", "PodDisruptionBudget",
                                               namespace=first["metadata"]["namespace"])
                    b.budgets = tuple(blocking_budgets(first, budgets))
                    why = b.line()
                else:
                    why = f"pod {key} is still {'terminating' if first['metadata'].get('deletionTimestamp') else 'there'}"
                more = f" (and {len(left) - 1} more pods)" if len(left) > 1 else ""
                raise KubeAPIError(f"not drained after {timeout:.0f}s: {why}{more}")
            time.sleep(EVICT_RETRY_SECONDS)
