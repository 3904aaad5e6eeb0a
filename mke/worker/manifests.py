"""Cluster objects a controller applies for its workers (``mke.manifests.render_all`` adds them).

- ConfigMap ``kube-system/mke-worker-config``: the settings every worker needs and a
  token does not carry (cluster DNS address and domain, pod and service CIDRs, network
  provider, sandbox image), readable by joining workers (bootstrap token group) and by
  nodes, through a Role limited to that one object;
- with the bridge provider: nodes may list and watch Node objects (the Node authorizer
  lets a node read only its own), so each worker can route to the others' pod CIDRs.
"""

from __future__ import annotations

from typing import Any

from mke.manifests.k8s import NS, cluster_role, cluster_role_binding, config_map, role_binding, rule, subject
from mke.worker.join import SETTINGS_CONFIGMAP, WORKER_GROUP, WorkerSettings


def objects(ctx: Any) -> list[dict[str, Any]]:
    """``ctx``: a NodeContext (its ``config`` is the cluster's ClusterConfig)."""
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
    if cfg.network.provider == "bridge":
        objs += [
            cluster_role("mke:node-routes", [rule([""], ["nodes"], ["get", "list", "watch"])]),
            cluster_role_binding("mke:node-routes", "mke:node-routes", [subject("Group", "system:nodes")]),
        ]
    return objs
