"""Cluster objects a controller applies for its workers (``mke.manifests.render_all`` adds them).

- ConfigMap ``kube-system/mke-worker-config``: the settings every worker needs and a
  token does not carry (cluster DNS address and domain, pod and service CIDRs, network
  provider, sandbox image), readable by joining workers (bootstrap token group) and by
  nodes, through a Role limited to that one object.
"""

from __future__ import annotations

from typing import Any

from mke.manifests.k8s import NS, config_map, role_binding, rule, subject
from mke.worker.join import SETTINGS_CONFIGMAP, WORKER_GROUP, WorkerSettings


def objects(ctx: Any) -> list[dict[str, Any]]:
    """``ctx``: a ControllerContext (its ``config`` is the cluster's ClusterConfig)."""
    cfg = ctx.config
    settings = WorkerSettings.from_config(cfg, source="cluster")
    readers = [subject("Group", WORKER_GROUP), subject("Group", "system:nodes")]
    objs: list[dict[str, Any]] = [
        config_map(SETTINGS_CONFIGMAP, settings.data()),
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "mke:worker-config-reader", "namespace": NS},
         "rules": [rule([""], ["configmaps"], ["get"], resourceNames=[SETTINGS_CONFIGMAP])]},
        role_binding("mke:worker-config-reader", NS, "Role", "mke:worker-config-reader", readers),
    ]
    return objs
