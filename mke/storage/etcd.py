"""etcd, the default storage: one member per controller, mutual TLS for clients and peers.

A controller that joins gets the member list from the controller it joins through
(``admit_controller`` there adds it as a *learner*, which does not count for quorum
until it has caught up, and promotes it to a voting member in the background), and
starts its member with ``--initial-cluster-state=existing``. A restart finds the member
in its data dir and needs no one.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from mke.components.base import SupervisedComponent, https_ok
from mke.errors import MkeError
from mke.node.hostinfo import url_host
from mke.node.tls import ETCD_MIN_VERSION, go_cipher_suites
from mke.storage.base import StorageBackend

if TYPE_CHECKING:
    from mke.components.context import ControllerContext
    from mke.config import ClusterConfig

JOIN_KEY = "etcd_initial_cluster"  # in the join answer: name=https://ip:2380,...


class Etcd(SupervisedComponent):
    name = "etcd"
    binary = "etcd"
    ready_timeout = 60.0
    # its serving and peer pairs are read on every handshake (client/pkg/transport listener.go:
    # GetCertificate, GetClientCertificate); the trusted CA files at start
    reloads = frozenset({"cert-file", "key-file", "peer-cert-file", "peer-key-file"})

    @property
    def data_dir(self):
        return self.ctx.data_dir / "etcd"

    @property
    def client_url(self) -> str:
        return f"https://127.0.0.1:{self.ctx.config.storage.etcd.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://{url_host(self.ctx.etcd_peer_address)}:{self.ctx.config.storage.etcd.peer_port}"

    @property
    def joining(self) -> str | None:
        """The initial cluster to join (a new member of an existing cluster), or None."""
        join = self.ctx.join or {}
        if join.get(JOIN_KEY) and not (self.data_dir / "member").exists():
            return str(join[JOIN_KEY])
        return None

    def init(self) -> None:
        super().init()
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.data_dir, 0o700)

    def args(self) -> list[str]:
        pki = self.ctx.pki
        join = self.joining
        initial = join or f"{self.ctx.node_name}={self.peer_url}"
        return [
            f"--name={self.ctx.node_name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={initial}",
            f"--initial-cluster-state={'existing' if join else 'new'}",
            f"--cert-file={pki.crt('etcd/server')}",
            f"--key-file={pki.key('etcd/server')}",
            f"--trusted-ca-file={pki.crt('etcd/ca')}",
            "--client-cert-auth=true",
            f"--peer-cert-file={pki.crt('etcd/peer')}",
            f"--peer-key-file={pki.key('etcd/peer')}",
            f"--peer-trusted-ca-file={pki.crt('etcd/ca')}",
            "--peer-client-cert-auth=true",
            f"--tls-min-version={ETCD_MIN_VERSION}",
            f"--cipher-suites={go_cipher_suites()}",
            "--log-level=warn",
        ]

    def ready(self) -> bool:
        pki = self.ctx.pki
        ok, body = https_ok(f"{self.client_url}/health", ca=pki.crt("etcd/ca"), cert=pki.crt("etcd/client"),
                            key=pki.key("etcd/client"))
        if not ok:
            return False
        try:
            return json.loads(body).get("health") == "true"
        except ValueError:
            return False


class EtcdBackend(StorageBackend):
    name = "etcd"
    summary = "etcd, one member per controller (the default)"
    has_members = True
    promote_timeout = 600.0
    stale_learner_after = 60.0

    def __init__(self) -> None:
        self._first_seen: dict[str, float] = {}  # unstarted learner id -> when this process first saw it
        self._seen_lock = threading.Lock()

    def component_names(self) -> tuple[str, ...]:
        return (Etcd.name,)

    def check(self, cfg: ClusterConfig) -> None:
        from mke.errors import ConfigError

        if cfg.storage.kine.data_source:
            raise ConfigError("storage.kine.dataSource: is set but storage.type is etcd; set storage.type: kine")

    def ports(self, cfg: ClusterConfig) -> dict[str, int]:
        return {"storage.etcd.clientPort": cfg.storage.etcd.client_port,
                "storage.etcd.peerPort": cfg.storage.etcd.peer_port}

    def component(self, ctx: ControllerContext) -> Etcd:
        return Etcd(ctx)

    def apiserver_endpoint(self, component: SupervisedComponent) -> tuple[str, bool]:
        assert isinstance(component, Etcd)
        return component.client_url, True

    def admit_controller(self, ctx: ControllerContext, name: str, peer_address: str) -> dict[str, Any]:
        from mke.etcdapi import EtcdClient

        cfg = ctx.config
        etcd = EtcdClient(f"https://127.0.0.1:{cfg.storage.etcd.client_port}", ctx.pki_dir)
        peer_url = f"https://{url_host(peer_address)}:{cfg.storage.etcd.peer_port}"
        current = etcd.members()
        existing = next((m for m in current if peer_url in m.peer_urls), None)
        if existing is None:
            self._clear_stale_learners(ctx, etcd, current)
            new, members = etcd.add_learner(peer_url)
            threading.Thread(target=self._promote, args=(ctx, etcd, new.id, name), daemon=True).start()
        else:
            members = etcd.members()
        initial = [f"{m.name or name}={m.peer_urls[0]}" for m in members if m.peer_urls]
        return {JOIN_KEY: ",".join(initial)}

    def _clear_stale_learners(self, ctx: ControllerContext, etcd: Any, members: list[Any]) -> None:
        """etcd takes one learner at a time: a learner that was added but never started (its
        controller's join failed after admission) blocks every later join. Such a learner is
        removed once it has stayed unstarted for ``stale_learner_after`` seconds (a join in
        progress starts its etcd within seconds); until then the joiner is told to retry."""
        from mke.errors import BusyError

        now = time.monotonic()
        unstarted = [m for m in members if m.learner and not m.name and not m.client_urls]
        with self._seen_lock:
            for gone in set(self._first_seen) - {m.id for m in unstarted}:
                del self._first_seen[gone]
            ages = {m.id: now - self._first_seen.setdefault(m.id, now) for m in unstarted}
        waiting = []
        for m in unstarted:
            if ages[m.id] < self.stale_learner_after:
                waiting.append(m)
                continue
            etcd.remove(m.id)
            ctx.sink.line("etcd", f"removed learner {m.peer_urls[0] if m.peer_urls else m.id}: added "
                                  f"{ages[m.id]:.0f}s ago or more by a join that never started its etcd", level="warn")
        if waiting:
            left = max(1.0, self.stale_learner_after - min(ages[m.id] for m in waiting))
            raise BusyError(f"etcd has a learner ({waiting[0].peer_urls[0] if waiting[0].peer_urls else '?'}) "
                            f"from a join that has not started yet; retry in {left:.0f}s", retry_after=left)

    def _promote(self, ctx: ControllerContext, etcd: Any, member_id: str, name: str) -> None:
        deadline = time.monotonic() + self.promote_timeout
        while time.monotonic() < deadline:
            try:
                etcd.promote(member_id)
                ctx.sink.line("etcd", f"member {name} promoted to voting member")
                return
            except MkeError:
                time.sleep(2)
        try:  # never started: its join failed; remove it, or every later join would be refused
            m = next((m for m in etcd.members() if m.id == member_id), None)
            if m is not None and m.learner and not m.name:
                etcd.remove(member_id)
                ctx.sink.line("etcd", f"removed learner {name}: it never started within {self.promote_timeout:.0f}s",
                              level="warn")
                return
        except MkeError:
            pass
        ctx.sink.line("etcd", f"learner {name} did not catch up within {self.promote_timeout:.0f}s", level="warn")


BACKEND = EtcdBackend()
