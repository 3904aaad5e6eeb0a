"""Cluster manifests, applied (server-side apply) once the API serves, and kept applied."""

from __future__ import annotations

import time

from mke.components.base import LoopComponent
from mke.components.context import ControllerContext


class ClusterManifests(LoopComponent):
    name = "manifests"
    ready_timeout = 120.0
    interval = 30.0  # re-apply: an object someone deleted or changed comes back
    retry_interval = 2.0

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.ctx: ControllerContext = ctx
        self.applied_count = 0
        self.last_applied: float | None = None
        self.standby = False

    def documents(self, controllers: list[str] | None = None) -> list[dict]:
        from mke.manifests import render_all

        return render_all(self.ctx, controllers=controllers)

    def controllers(self, client: object) -> list[str] | None:
        """The addresses of the running kube-apiservers (the ``default/kubernetes`` EndpointSlice,
        which each keeps current): one konnectivity-agent DaemonSet per controller. None when
        it cannot be read: then this controller's own address, and nothing is pruned."""
        from mke.errors import KubeAPIError

        try:
            eps = client.get("discovery.k8s.io/v1", "EndpointSlice", "kubernetes", "default")  # type: ignore[attr-defined]
        except KubeAPIError:
            return None
        addresses = sorted({a for e in (eps or {}).get("endpoints") or []
                            if (e.get("conditions") or {}).get("ready", True) for a in e.get("addresses") or []})
        if not addresses:
            return None
        if self.ctx.api_address not in addresses:  # this controller serves: it is one, whatever the slice says
            addresses.append(self.ctx.api_address)
        return addresses

    def prune(self, client: object, docs: list[dict]) -> list[str]:
        """Delete mke's konnectivity-agent DaemonSets that were not rendered (their controller
        left, or the single DaemonSet of mke before issue 14.5). Returns their names."""
        from mke.manifests import LABELS
        from mke.manifests.konnectivity_agent import LABELS as AGENT

        keep = {d["metadata"]["name"] for d in docs if d.get("kind") == "DaemonSet"}
        selector = ",".join(f"{k}={v}" for k, v in {**AGENT, **LABELS}.items())
        gone = []
        for ds in client.list("apps/v1", "DaemonSet", "kube-system", label_selector=selector):  # type: ignore[attr-defined]
            name = ds["metadata"]["name"]
            if name not in keep and client.delete("apps/v1", "DaemonSet", name, "kube-system"):  # type: ignore[attr-defined]
                gone.append(name)
        return gone

    lease_name = "mke-manifests"
    lease_seconds = 90

    def holds_lease(self, client: object) -> bool:
        """One controller applies at a time (each renders its own address where no
        api.externalAddress is set): the holder of the kube-system/mke-manifests Lease."""
        import datetime as dt

        from mke.errors import KubeAPIError

        now = dt.datetime.now(dt.UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        me = self.ctx.node_name
        lease = client.get("coordination.k8s.io/v1", "Lease", self.lease_name, "kube-system")  # type: ignore[attr-defined]
        spec = (lease or {}).get("spec", {})
        holder = spec.get("holderIdentity")
        renewed = spec.get("renewTime")
        if lease and holder and holder != me and renewed:
            age = now - dt.datetime.fromisoformat(renewed.replace("Z", "+00:00"))
            if age.total_seconds() < spec.get("leaseDurationSeconds", self.lease_seconds):
                return False
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.lease_name, "namespace": "kube-system"},
                "spec": {"holderIdentity": me, "leaseDurationSeconds": self.lease_seconds, "renewTime": stamp}}
        try:
            if lease is None:
                client.create(body)  # type: ignore[attr-defined]
            else:
                body["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
                res = client.resource("coordination.k8s.io/v1", "Lease")  # type: ignore[attr-defined]
                client.call("PUT", res.path("kube-system", self.lease_name), body)  # type: ignore[attr-defined]
        except KubeAPIError:
            return False  # someone else won the race
        return True

    def apply_once(self) -> int:
        from mke.kubeapi import KubeClient

        client = KubeClient.from_kubeconfig(self.ctx.pki.internal_kubeconfig)
        if not self.holds_lease(client):
            self.standby = True
            return self.applied_count
        self.standby = False
        n = 0
        controllers = self.controllers(client) if self.ctx.config.konnectivity.enabled else None
        docs = self.documents(controllers)
        # CRDs first, then namespaces, then the rest (each in file order).
        order = {"CustomResourceDefinition": 0, "Namespace": 1}
        for doc in sorted(docs, key=lambda d: order.get(d.get("kind", ""), 2)):
            client.apply(doc)
            n += 1
        if controllers is not None:  # the controllers are known: the DaemonSets of the others go
            for name in self.prune(client, docs):
                self.ctx.sink.line(self.name, f"deleted DaemonSet kube-system/{name}: its controller is gone")
        return n

    def sync(self) -> None:
        self.applied_count = self.apply_once()
        self.last_applied = time.time()

    def state(self) -> dict[str, object]:
        phase = ("standby" if self.standby else "applied") if self.ready() else "pending"
        return {**super().state(), "state": phase, "objects": self.applied_count}
