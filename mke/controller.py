"""One controller node: PKI, storage, the control-plane components and the cluster manifests.

``Controller.run()`` is what ``mke server`` does: take the data dir's lock (one mke per
data dir), ensure the PKI, build the component stages
``etcd|kine → kube-apiserver → konnectivity-server → controller-manager + scheduler →
cluster manifests``, start them, keep ``run/status.json`` current for ``mke status``,
and stop everything in reverse order when asked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mke import storage
from mke.components.apiserver import KubeAPIServer
from mke.components.base import Component, SupervisedComponent
from mke.components.context import ControllerContext
from mke.components.controller_manager import KubeControllerManager
from mke.components.konnectivity import KonnectivityServer
from mke.components.manager import ComponentManager
from mke.components.scheduler import KubeScheduler
from mke.config import ClusterConfig, running_config_path, write_running_config
from mke.errors import KubeAPIError, MkeError
from mke.logsink import LogSink
from mke.node.binaries import BinaryResolver
from mke.node.datadir import DEFAULT_DATA_DIR, EMBEDDED_WORKER_DIR
from mke.node.hostinfo import advertised_address, api_url, host_addresses, node_name
from mke.node.role import NodeRole
from mke.pkifiles import PKIRequest

# ---------------------------------------------------------------- the controller


class Controller(NodeRole):
    role = "controller"

    def __init__(self, config: ClusterConfig, *, data_dir: Path = DEFAULT_DATA_DIR, bin_dir: Path | None = None,
                 sink: LogSink | None = None, name: str | None = None, backoff_initial: float = 0.5,
                 join: Mapping[str, Any] | None = None, manifests: bool = True) -> None:
        super().__init__(data_dir, sink)
        self.config = config
        addrs = host_addresses()
        user_bin_dir = bin_dir is not None
        self.ctx = ControllerContext(
            config=config,
            data_dir=self.data_dir,
            node_name=name or node_name(),
            api_address=advertised_address(config, addrs),
            host_addresses=addrs,
            binaries=BinaryResolver(Path(bin_dir) if bin_dir else self.data_dir / "bin", user_bin_dir=user_bin_dir,
                                    say=self.say),
            sink=self.sink,
            backoff_initial=backoff_initial,
            join=join,
        )
        self.with_manifests = manifests
        self.worker: Any = None
        self.versions: dict[str, str] = {}
        self.bin_dir = Path(bin_dir) if bin_dir else None
        self.next_pki_check = time.monotonic() + self.pki_check_every
        # what this server acted on: the pki dir's fingerprint, when, and what it restarted
        self.pki_state: dict[str, Any] = {}
        self.kubelet_client_digest: str | None = None  # apiserver-kubelet-client.crt as kube-apiserver started with it
        self.kubernetes_version: str | None = None  # this mke's kube-apiserver version (mke.skew)

    # -- build

    def pki_request(self) -> PKIRequest:
        c = self.config
        return PKIRequest(
            node_name=self.ctx.node_name,
            api_address=self.ctx.api_address,
            api_port=c.api.port,
            external_address=c.api.external_address,
            extra_sans=c.api.sans,
            host_addresses=self.ctx.host_addresses,
            kubernetes_service_ip=c.network.kubernetes_service_ip,
            cluster_domain=c.network.cluster_domain,
            etcd_peer_address=self.ctx.etcd_peer_address,
            create_shared=self.ctx.join is None,
        )

    def stages(self) -> list[list[Component]]:
        ctx = self.ctx
        backend = storage.get(self.config.storage.type)
        store = backend.component(ctx)
        etcd_servers, etcd_tls = backend.apiserver_endpoint(store)
        api = KubeAPIServer(ctx, etcd_servers=etcd_servers, etcd_tls=etcd_tls)
        stages: list[list[Component]] = [[store], [api]]
        if self.config.konnectivity.enabled:
            stages.append([KonnectivityServer(ctx)])
        stages.append([KubeControllerManager(ctx), KubeScheduler(ctx)])
        if self.with_manifests:
            from mke.components.addons import ClusterManifests
            from mke.components.csr_approver import KubeletServingCSRApprover

            stages.append([ClusterManifests(ctx), KubeletServingCSRApprover(ctx)])
        from mke.components.mke_api import MkeAPI

        stages.append([MkeAPI(ctx)])
        return stages

    def binary_names(self) -> list[str]:
        return [c.binary for s in self.stages() for c in s if isinstance(c, SupervisedComponent)]

    # -- status

    def status_extra(self) -> dict[str, Any]:
        return {
            "node_name": self.ctx.node_name,
            "api_address": self.ctx.api_address,
            "api_port": self.config.api.port,
            "storage": self.config.storage.type,
            "pki": self.pki_state,
        }

    def ready_status(self) -> str:
        text = f"control plane ready; API https://{self.ctx.api_address}:{self.config.api.port}"
        return text + (f"; node {self.ctx.node_name} Ready" if self.worker is not None else "")

    # -- run

    def prepare(self) -> None:
        """Lock the data dir, ensure the PKI and find the binaries."""
        self.lock_data_dir()
        from mke.backup import finish_interrupted_restore

        finish_interrupted_restore(self.data_dir, self.say)  # a restore killed while it committed
        from mke import skew

        # the PKI helper (mke.pkifiles) runs while this process checks versions and finds binaries
        pending = self.ctx.pki.start_ensure(self.pki_request())
        try:
            # refused before anything starts: a minor version skipped or gone back (docs/upgrade.md)
            self.kubernetes_version = skew.check_controller(self.data_dir, self.bin_dir)
            write_running_config(self.data_dir, self.config)  # what `mke token`/`kubeconfig` act on
            self.ctx.binaries.prefetch(self.binary_names())
        except BaseException:
            pending.abandon()
            raise
        rep = pending.result()
        if rep.migrated:
            self.ctx.sink.line("pki", "this data dir had one CA for everything: it stays the server CA (tokens, "
                               "kubeconfigs and workers keep working); new client and kubelet-serving CAs were made")
        if rep.legacy:
            self.ctx.sink.line("pki", f"{self.ctx.pki.legacy_ca} (the CA from before CA separation) is still "
                               "trusted for client and kubelet serving certificates; remove it on every controller "
                               "once every node renewed them (docs/security.md, Certificate authorities)", level="warn")
        if self.ctx.small_host:
            from mke.storage.etcd import Etcd

            gogc = [f"kube-apiserver GOGC {KubeAPIServer.GOGC_SMALL_HOST}"]
            if self.config.storage.type == Etcd.name:  # kine keeps upstream's
                gogc.append(f"etcd GOGC {Etcd.GOGC_SMALL_HOST}")
            self.ctx.sink.line("mke", f"{(self.ctx.memory or 0) / (1 << 30):.1f} GiB of memory for this controller "
                               f"(the host's or its cgroup's limit): {' and '.join(gogc)}, garbage collected more "
                               "often to stay small; mke.yaml's extraEnv sets other values")

    def start(self) -> None:
        self.manager = ComponentManager(self.stages(), on_change=self.write_status, stopping=self.stopping,
                                        sink=self.sink)
        self.manager.init()
        self.manager.stop_stale()
        self.manager.start(init=False)
        self.pki_state = {"fingerprint": self.ctx.pki.fingerprint(), "applied_at": time.time(), "restarted": []}
        self.kubelet_client_digest = self.kubelet_client_fingerprint()  # what kube-apiserver started with
        self.ensure_admin_binding()
        if self.kubernetes_version:
            from mke import skew

            skew.record(self.data_dir, self.kubernetes_version)  # ready: what the next start compares with
        if self.config.control_plane.worker:
            self.start_worker()
        from mke.backup import ScheduledBackups

        ScheduledBackups(data_dir=self.data_dir, config=self.config, node_name=self.ctx.node_name, sink=self.sink,
                         stopping=self.stopping).start()  # backup.interval in mke.yaml
        from mke.wal_backup import ContinuousBackup

        ContinuousBackup(data_dir=self.data_dir, config=self.config, node_name=self.ctx.node_name, sink=self.sink,
                         stopping=self.stopping).start()  # backup.continuous in mke.yaml
        threading.Thread(target=self.detect_versions, name="versions", daemon=True).start()

    # -- certificates of a long-running controller

    pki_check_every = 12 * 3600.0

    def tick(self) -> None:
        if time.monotonic() >= self.next_pki_check:
            self.next_pki_check = time.monotonic() + self.pki_check_every
            self.renew_certificates()
        self.apply_certificate_changes()
        self.ensure_admin_binding()

    def renew_certificates(self) -> list[str]:
        """Renew what expires within 30 days; ``apply_certificate_changes`` does the rest."""
        try:
            rep = self.ctx.pki.ensure(self.pki_request())
        except MkeError as e:
            self.ctx.sink.line("pki", f"renewal check failed: {e}", level="error")
            return []
        changed = rep.renewed + rep.created
        if changed:
            self.ctx.sink.line("pki", f"renewed {', '.join(changed)}")
            self.apply_certificate_changes()
        return changed

    def apply_certificate_changes(self) -> list[str]:
        """Act on changed files in the pki dir (a renewal, ``mke certificate rotate``, a file
        replaced by hand): restart only the components that read a changed file only at start;
        the others reload it themselves. Records what it acted on (``status.json`` "pki")."""
        if self.manager is None:
            return []
        pki = self.ctx.pki
        try:
            with pki.lock(wait=False) as mine:
                if not mine:
                    return []  # a rotation is being written: the next tick
                fingerprint = pki.fingerprint()
                if fingerprint == self.pki_state.get("fingerprint"):
                    return []
                stale = {c.name: c.needs_restart() for c in self.manager.started if isinstance(c, SupervisedComponent)}
        except (MkeError, OSError) as e:
            self.ctx.sink.line("pki", f"cannot check the certificates: {e}", level="warn")
            return []
        stale = {name: files for name, files in stale.items() if files}
        restarted: list[str] = []
        if stale:
            for name, why in stale.items():
                self.ctx.sink.line("pki", f"{name} reads {', '.join(why)} only at start; restarting it")
            try:
                restarted = self.manager.restart(set(stale))
            except MkeError as e:
                self.ctx.sink.line("pki", f"restart after a certificate change failed: {e}", level="error")
                return []  # not recorded: tried again on the next tick
        else:
            self.ctx.sink.line("pki", "certificates changed; every running component reloads them itself")
        self.renew_kubelet_connections()
        self.pki_state = {"fingerprint": fingerprint, "applied_at": time.time(), "restarted": restarted}
        self.write_status()
        return restarted

    def ensure_admin_binding(self) -> bool:
        """Create the ClusterRoleBinding that makes admin.conf cluster-admin, once: when this
        controller created the cluster or re-issued an admin certificate that was in
        system:masters (``pki.admin_binding_pending``). An existing binding is left as it is, and
        a deleted one is not made again: deleting it revokes every admin.conf (docs/security.md).
        False while it is still to be done (tried again on the next tick)."""
        from mke.kubeapi import KubeClient
        from mke.manifests.k8s import cluster_role_binding, subject
        from mke.pkifiles import ADMIN_GROUP

        pending = self.ctx.pki.admin_binding_pending
        if not pending.exists():
            return True
        binding = cluster_role_binding(ADMIN_GROUP, "cluster-admin", [subject("Group", ADMIN_GROUP)])
        binding["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "mke"}
        client = KubeClient.from_kubeconfig(self.ctx.pki.internal_kubeconfig, timeout=10.0)
        try:
            if client.get("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", ADMIN_GROUP) is None:
                try:
                    client.create(binding)
                except KubeAPIError:
                    if client.get("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", ADMIN_GROUP) is None:
                        raise
                self.ctx.sink.line("pki", f"admin.conf is cluster-admin through ClusterRoleBinding {ADMIN_GROUP} "
                                          f"(group {ADMIN_GROUP}; not system:masters)")
        except MkeError as e:
            self.ctx.sink.line("pki", f"cannot create ClusterRoleBinding {ADMIN_GROUP} yet: {e}", level="warn")
            return False
        finally:
            client.close()
        pending.unlink(missing_ok=True)
        return True

    def kubelet_client_fingerprint(self) -> str | None:
        """sha256 of kube-apiserver's kubelet client certificate file, None when it cannot be read."""
        import hashlib

        try:
            return hashlib.sha256(self.ctx.pki.crt("apiserver-kubelet-client").read_bytes()).hexdigest()
        except OSError:
            return None

    def renew_kubelet_connections(self, timeout: float = 20.0) -> None:
        """After kube-apiserver's kubelet client certificate changed: make its first new kubelet
        connection ourselves, so that no user's exec/logs/port-forward is that connection.

        kube-apiserver reads the pair again at its next TLS handshake with a kubelet, and
        client-go then closes every connection that transport made, the one being handshaken
        too (k8s.io/client-go transport/cert_rotation.go, ``loadClientCert``: ``CloseAll``):
        that request fails with "error dialing backend: EOF". An upgrade request through the
        node proxy always dials (``KubeClient.upgrade_probe``); it is repeated until a dial
        succeeds. Nothing to do without a Ready node; failures are logged, never raised."""
        import urllib.parse

        from mke.kubeapi import KubeClient

        digest = self.kubelet_client_fingerprint()
        if digest is None:
            return
        previous, self.kubelet_client_digest = self.kubelet_client_digest, digest
        if previous in (None, digest) or self.manager is None:
            return
        client = KubeClient.from_kubeconfig(self.ctx.pki.internal_kubeconfig, timeout=10.0)
        tries, deadline = 0, time.monotonic() + timeout
        try:
            nodes = [n["metadata"]["name"] for n in client.list("v1", "Node")
                     if any(c.get("type") == "Ready" and c.get("status") == "True"
                            for c in (n.get("status") or {}).get("conditions") or [])]
            if not nodes:
                return
            path = f"/api/v1/nodes/{urllib.parse.quote(nodes[0])}/proxy/healthz"
            while True:
                tries += 1
                status, body = client.upgrade_probe(path)
                if not (status >= 500 and b"error dialing backend" in body):
                    self.ctx.sink.line("pki", f"kube-apiserver reconnected to the kubelets with its new client "
                                              f"certificate ({tries} {'try' if tries == 1 else 'tries'} through node "
                                              f"{nodes[0]})")
                    return
                if time.monotonic() > deadline:
                    self.ctx.sink.line("pki", f"kube-apiserver still cannot reach node {nodes[0]}'s kubelet after "
                                              f"{tries} tries: {body[:200].decode(errors='replace')}", level="warn")
                    return
                time.sleep(0.2)
        except MkeError as e:
            self.ctx.sink.line("pki", f"cannot renew kube-apiserver's kubelet connections: {e}", level="warn")
        finally:
            client.close()

    # -- versions for `mke status` (the payload's manifest, or asked from each binary)

    def detect_versions(self) -> None:
        from mke import skew

        found = skew.payload_versions()
        for name, path in self.ctx.binaries.known().items():
            if name not in found:
                version = skew.binary_version(path, timeout=5)
                if version:
                    found[name] = version.lstrip("v")
        self.versions = found
        for c in self.manager.components if self.manager else []:
            if isinstance(c, SupervisedComponent) and c.binary in found:
                c.version = found[c.binary]
        self.write_status()

    # -- --enable-worker: this host is also a (tainted) node

    @property
    def worker_data_dir(self) -> Path:
        return self.data_dir / EMBEDDED_WORKER_DIR

    def start_worker(self) -> None:
        """Run mke's worker role next to the control plane, joined with a token made here. It is
        Ready when this returns: the service manager hears READY=1 only then (mke.node.role)."""
        self.tell_status(f"control plane ready; starting the worker of node {self.ctx.node_name}")
        from mke.worker.context import WorkerOptions, WorkerPaths
        from mke.worker.node import Worker

        token = None
        if not WorkerPaths(self.worker_data_dir).kubelet_kubeconfig.exists():
            import datetime as dt

            from mke.kubeapi import KubeClient
            from mke.tokens import TokenStore

            client = KubeClient.from_kubeconfig(self.ctx.pki.internal_kubeconfig)
            token = TokenStore(client).create(
                role="worker", api_url=api_url(self.config, self.status()),
                ca_pem=self.ctx.pki.crt("ca").read_text(), ttl=dt.timedelta(hours=1),
                description="mke server --enable-worker").encode()
        taints = ("node-role.kubernetes.io/control-plane:NoSchedule",) if self.config.control_plane.taints else ()
        self.worker = Worker(data_dir=self.worker_data_dir, bin_dir=self.bin_dir,
                             options=WorkerOptions(node_name=self.ctx.node_name, taints=taints,
                                                   registries=self.config.registries,
                                                   registries_source="mke.yaml registries"), token=token,
                             sink=self.ctx.sink, backoff_initial=self.ctx.backoff_initial)
        self.worker.stopping = self.stopping
        self.worker.bring_up()

    def stop_extra(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        if self.locked:  # never another server's (a start refused with BusyError stops too)
            running_config_path(self.data_dir).unlink(missing_ok=True)
