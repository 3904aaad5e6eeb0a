"""The cluster manifests mke applies (server-side apply) and keeps applied.

Each module returns plain objects built from the config: images come from
``config.images`` (pinned, overridable, with an optional registry mirror), addresses
and CIDRs from ``config.network`` and the advertised API address. Nothing is read
from the network, so an air-gapped cluster works when the images are present.
"""

from __future__ import annotations

from typing import Any

from mke.components.context import ControllerContext

LABELS = {"app.kubernetes.io/managed-by": "mke"}


def render_all(ctx: ControllerContext, controllers: list[str] | None = None) -> list[dict[str, Any]]:
    """``controllers``: the running controllers' addresses (one konnectivity-agent DaemonSet
    each); default this controller's own."""
    from mke import network
    from mke.manifests import bootstrap_rbac, coredns, konnectivity_agent, kube_proxy, metrics_server

    objs: list[dict[str, Any]] = []
    objs += bootstrap_rbac.objects(ctx)
    objs += coredns.objects(ctx)
    objs += metrics_server.objects(ctx)
    if ctx.config.konnectivity.enabled:
        objs += konnectivity_agent.objects(ctx, controllers)
    objs += kube_proxy.objects(ctx)
    from mke.worker import manifests as worker_manifests  # workers' settings ConfigMap + RBAC (issue 4)

    objs += worker_manifests.objects(ctx)
    objs += network.get(ctx.config.network.provider).manifests(ctx)
    for o in objs:
        o.setdefault("metadata", {}).setdefault("labels", {}).update(LABELS)
    return objs


def names(objs: list[dict[str, Any]]) -> list[str]:
    return [f"{o['kind']}/{o['metadata'].get('namespace', '')}/{o['metadata']['name']}".replace("//", "/") for o in objs]
