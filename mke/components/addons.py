"""Cluster manifests, applied (server-side apply) once the API serves, and kept applied."""

from __future__ import annotations

import threading
import time

from mke.components.base import Component
from mke.components.context import NodeContext
from mke.errors import MkeError


class ClusterManifests(Component):
    name = "manifests"
    ready_timeout = 120.0
    reapply_every = 30.0

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._applied = threading.Event()
        self.last_error: str | None = None
        self.applied_count = 0
        self.last_applied: float | None = None
        self.standby = False

    def documents(self) -> list[dict]:
        from mke.manifests import render_all

        return render_all(self.ctx)

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

        client = KubeClient.from_kubeconfig(self.ctx.pki.kubeconfig("admin"))
        if not self.holds_lease(client):
            self.standby = True
            return self.applied_count
        self.standby = False
        n = 0
        docs = self.documents()
        # CRDs first, then namespaces, then the rest (each in file order).
        order = {"CustomResourceDefinition": 0, "Namespace": 1}
        for doc in sorted(docs, key=lambda d: order.get(d.get("kind", ""), 2)):
            client.apply(doc)
            n += 1
        return n

    def _loop(self) -> None:
        delay = 0.0
        while not self._stop.wait(delay):
            try:
                self.applied_count = self.apply_once()
                self.last_applied = time.time()
                self.last_error = None
                self._applied.set()
                delay = self.reapply_every
            except MkeError as e:
                if self.last_error != str(e):
                    self.ctx.sink.line(self.name, f"apply failed (will retry): {e}")
                self.last_error = str(e)
                delay = 2.0

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="manifests", daemon=True)
        self._thread.start()

    def ready(self) -> bool:
        return self._applied.is_set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None

    def state(self) -> dict[str, object]:
        return {"name": self.name, "state": ("standby" if self.standby else "applied") if self._applied.is_set() else "pending",
                "objects": self.applied_count, "last_error": self.last_error}
