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
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mke.components.base import SupervisedComponent, https_ok
from mke.errors import ComponentError, HostError, MkeError
from mke.node import sysuser
from mke.node.files import chown_tree, grant_traverse, write_file_atomic
from mke.node.hostinfo import url_host
from mke.node.tls import ETCD_MIN_VERSION, go_cipher_suites
from mke.storage.base import StorageBackend

if TYPE_CHECKING:
    from mke.components.context import ControllerContext
    from mke.config import ClusterConfig

JOIN_KEY = "etcd_initial_cluster"  # in the join answer: name=https://ip:2380,...
# etcd as its own user (storage.etcd.user, CIS 1.1.12) reads copies of its certificates and
# keys in <data-dir>/etcd-tls (0700, its own): the pki dir and its files stay root's and 0600
# (CIS 1.1.19-1.1.21). The copies follow the originals whenever the pki changes.
TLS_DIR = "etcd-tls"
TLS_FILES = (("etcd/ca", "crt"), ("etcd/server", "crt"), ("etcd/server", "key"), ("etcd/peer", "crt"),
             ("etcd/peer", "key"))  # (pki stem, kind): the copy of etcd/server.key is etcd-tls/server.key


class Etcd(SupervisedComponent):
    name = "etcd"
    binary = "etcd"
    ready_timeout = 60.0
    # its serving and peer pairs are read on every handshake (client/pkg/transport listener.go:
    # GetCertificate, GetClientCertificate); the trusted CA files at start
    reloads = frozenset({"cert-file", "key-file", "peer-cert-file", "peer-key-file"})

    # upstream's GOGC (100), but 50 on a controller with 4 GiB or less (ctx.small_host; with
    # kube-apiserver's 25 there: docs/performance.md, "Empty cluster"). extraEnv changes it.
    GOGC_SMALL_HOST = "50"

    def env(self) -> dict[str, str]:
        return {"GOGC": self.GOGC_SMALL_HOST} if self.ctx.small_host else {}

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

    @property
    def tls_dir(self) -> Path:
        return self.ctx.data_dir / TLS_DIR

    def tls_copy(self, stem: str, kind: str) -> Path:
        """etcd's copy of the pki file ``<stem>.<kind>``."""
        return self.tls_dir / f"{stem.removeprefix('etcd/')}.{kind}"

    def init(self) -> None:
        super().init()
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.data_dir, 0o700)
        self.run_as = self._account()
        try:
            if self.run_as is None:
                self._give_back_to_root()
                return
            uid, gid = self.run_as
            grant_traverse(self.ctx.data_dir, gid)  # 0710 root:etcd: it passes through, cannot list
            self.tls_dir.mkdir(mode=0o700, exist_ok=True)
            os.chmod(self.tls_dir, 0o700)
            os.chown(self.tls_dir, uid, gid)
            self.sync_tls()
            # a restore, an upgrade from a root etcd, or a join wrote them as root
            changed = chown_tree(self.data_dir, uid, gid)
        except OSError as e:
            raise ComponentError(f"etcd: cannot give {e.filename or self.data_dir} to the user "
                                 f"{self.ctx.config.storage.etcd.user}: {e.strerror}") from e
        if changed:
            self.ctx.sink.line("etcd", f"gave {changed} entries of {self.data_dir} to the user "
                                       f"{self.ctx.config.storage.etcd.user}")

    def _account(self) -> tuple[int, int] | None:
        """(uid, gid) etcd runs as, or None for root (asked for, or no account files to add the user to)."""
        name = self.ctx.config.storage.etcd.user
        if name == "root":
            return None
        try:
            acct = sysuser.lookup(name)
            if acct is None and not self._account_files_are_mkes():
                acct = sysuser.ensure_system_user(name)
        except HostError as e:
            raise ComponentError(f"etcd: storage.etcd.user {name}: {e}") from e
        if acct is None:
            self.ctx.sink.line("etcd", f"runs as root: this host has no /etc/passwd and /etc/group of its own to "
                                       f"add the system user {name} to (a bare root filesystem), or /etc is "
                                       f"read-only (CIS 1.1.12 fails); add "
                                       f"the user, or set storage.etcd.user: root to run it as root on purpose",
                               level="warn")
            return None
        if acct.created:
            self.ctx.sink.line("etcd", f"added the system user {name} (uid {acct.uid}, gid {acct.gid}) to run etcd as")
        if acct.uid == 0:
            return None
        data = Path(os.path.realpath(self.ctx.data_dir))
        assert self.binary_path is not None
        blocked = (sysuser.first_blocking_dir(data / "etcd", acct.uid, acct.gid, granted=data)
                   or sysuser.first_blocking_dir(self.binary_path, acct.uid, acct.gid, granted=data))
        if blocked is None and not Path(os.path.realpath(self.binary_path)).is_relative_to(data):
            if not sysuser.can_search(os.stat(self.binary_path), acct.uid, acct.gid):
                blocked = Path(self.binary_path)
        if blocked is not None:
            self.ctx.sink.line("etcd", f"runs as root: the user {name} cannot reach {blocked} (mode "
                                       f"{os.stat(blocked).st_mode & 0o7777:04o}) on the way to its data dir or "
                                       f"binary (CIS 1.1.12 fails); choose a --data-dir every user may pass "
                                       f"through (e.g. /var/lib/mke), or set storage.etcd.user: root",
                               level="warn")
            return None
        return (acct.uid, acct.gid)

    @staticmethod
    def _account_files_are_mkes() -> bool:
        """/etc/passwd is the one a worker wrote on a bare host (mke.worker.host.SYSTEM_FILES):
        adding to it would keep ``mke reset`` from removing it (it removes only what is unchanged)."""
        from mke.worker.host import SYSTEM_FILES

        try:
            return (sysuser.ETC / "passwd").read_text() == SYSTEM_FILES["etc/passwd"]
        except OSError:
            return False

    def _give_back_to_root(self) -> None:
        """etcd runs as root (again): its data dir is root's, its copies of the keys go."""
        if self.data_dir.stat().st_uid != 0:
            chown_tree(self.data_dir, 0, 0)
        shutil.rmtree(self.tls_dir, ignore_errors=True)
        if os.stat(self.ctx.data_dir).st_gid != 0:  # no group passes through any more
            os.chown(self.ctx.data_dir, -1, 0)
            os.chmod(self.ctx.data_dir, 0o700)

    def sync_tls(self) -> list[str]:
        """Bring etcd's copies of its certificates and keys in line with the pki dir; returns
        the names it rewrote. Each copy is etcd's before it takes its place."""
        assert self.run_as is not None
        pki = self.ctx.pki
        written = []
        for stem, kind in TLS_FILES:
            src = pki.crt(stem) if kind == "crt" else pki.key(stem)
            data = Path(src).read_bytes()
            dst = self.tls_copy(stem, kind)
            try:
                st = dst.stat()
                same = (st.st_uid, st.st_gid) == self.run_as and dst.read_bytes() == data
            except OSError:
                same = False
            if not same:
                write_file_atomic(dst, data, 0o600 if kind == "key" else 0o644, owner=self.run_as)
                written.append(dst.name)
        return written

    def needs_restart(self) -> list[str]:
        if self.run_as is not None:  # the pki changed: the copies first, so that a reload finds them
            try:
                if written := self.sync_tls():
                    self.ctx.sink.line("etcd", f"copied the renewed {', '.join(written)} to {self.tls_dir}")
            except OSError as e:
                self.ctx.sink.line("etcd", f"cannot copy its certificates to {self.tls_dir}: {e}", level="warn")
        return super().needs_restart()

    def args_reading_sources(self) -> list[str]:
        return self._args(copies=False)

    def args(self) -> list[str]:
        return self._args(copies=self.run_as is not None)

    def _args(self, *, copies: bool) -> list[str]:
        pki = self.ctx.pki
        if copies:
            def crt(stem: str) -> Path:
                return self.tls_copy(stem, "crt")

            def key(stem: str) -> Path:
                return self.tls_copy(stem, "key")
        else:
            crt, key = pki.crt, pki.key
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
            f"--cert-file={crt('etcd/server')}",
            f"--key-file={key('etcd/server')}",
            f"--trusted-ca-file={crt('etcd/ca')}",
            "--client-cert-auth=true",
            f"--peer-cert-file={crt('etcd/peer')}",
            f"--peer-key-file={key('etcd/peer')}",
            f"--peer-trusted-ca-file={crt('etcd/ca')}",
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
