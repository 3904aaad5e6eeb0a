"""What the cluster needs for kube-proxy, which runs on every worker as a process of mke
(mke/worker/kubeproxy.py): its permissions, given to the nodes' own credentials."""

from __future__ import annotations

from typing import Any

from mke.components.context import ControllerContext
from mke.manifests.k8s import cluster_role_binding, subject


def objects(ctx: ControllerContext) -> list[dict[str, Any]]:
    # system:node-proxier is Kubernetes' own role for kube-proxy (services, endpoint slices,
    # nodes, events); every node's kube-proxy authenticates as that node.
    return [cluster_role_binding("mke:node-proxier", "system:node-proxier", [subject("Group", "system:nodes")])]
