"""``Worker``: one worker node, from a token (or an earlier join) to a Ready node.

``prepare()`` decides how this node authenticates before writing anything:
- ``worker/kubelet.conf`` exists with an unexpired client certificate: the node joined
  earlier; a token, if given, is ignored (it must not name another cluster's CA);
- otherwise the token is checked against the cluster (``join.check_token``); a bad token
  fails here with one line and nothing on disk.
Then: the data dir (0700) and its lock, the CA and bootstrap kubeconfig, the worker
settings, kernel prerequisites (reported), the cgroup root, and the binaries.

``run()`` starts ``containerd → image import → kubelet → bridge network → node Ready``
with the shared ComponentManager (each ready before the next; a failed start stops what
started), keeps ``run/status.json`` current for ``mke status``, and stops in reverse
order on SIGTERM. Containers keep running across a restart of mke (their shims are not
in containerd's process group), as with k3s and k0s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mke.components.base import Component
from mke.components.manager import ComponentManager
from mke.errors import TokenError
from mke.logsink import LogSink
from mke.network import get as network_provider
from mke.node.binaries import BinaryResolver
from mke.node.datadir import DEFAULT_DATA_DIR
from mke.node.files import write_file_atomic
from mke.node.hostinfo import node_address
from mke.node.role import NodeRole
from mke.worker import host, hosttools
from mke.worker.context import HOST_TOOLS, OPERATOR_TOOLS, WORKER_BINARIES, WorkerContext, WorkerOptions, WorkerPaths
from mke.worker.join import WorkerSettings, bootstrap_kubeconfig, check_token, fetch_settings, kubeconfig_server


def worker_stages(ctx: WorkerContext, *, swap: bool, resolv_conf: str) -> list[list[Component]]:
    from mke.worker.containerd import Containerd, ImageImport
    from mke.worker.kubelet import Kubelet, NodeReady
    from mke.worker.kubeproxy import KubeProxy

    stages: list[list[Component]] = [[Containerd(ctx)], [ImageImport(ctx)],
                                     [Kubelet(ctx, swap=swap, resolv_conf=resolv_conf)],
                                     [KubeProxy(ctx), *ctx.network.worker_components(ctx)],
                                     [NodeReady(ctx)]]
    return stages


def ensure_cgroup_root(cgroups: host.CgroupInfo, name: str, root: Path = host.CGROUP_ROOT) -> list[Path]:
    """Create kubelet's --cgroup-root in every hierarchy (cgroupfs driver); returns what was made."""
    rel = name.strip("/")
    if not rel or cgroups.driver != "cgroupfs":
        return []
    made = []
    if cgroups.version == 2:
        dirs = [root / rel]
    else:
        dirs = [m / rel for m in sorted(root.iterdir()) if m.is_dir() and (m / "cgroup.procs").exists()]
    for d in dirs:
        if not d.exists():
            d.mkdir(parents=True)
            made.append(d)
    return made


class Worker(NodeRole):
    role = "worker"

    def __init__(self, *, data_dir: Path = DEFAULT_DATA_DIR, bin_dir: Path | None = None,
                 options: WorkerOptions, token: str | None = None, sink: LogSink | None = None,
                 backoff_initial: float = 0.5, say: Callable[[str], None] | None = None) -> None:
        super().__init__(data_dir, sink)
        self.paths = WorkerPaths(self.data_dir)
        self.bin_dir = bin_dir
        self.options = options
        self.token = token
        self.backoff_initial = backoff_initial
        self.listener = say  # instead of the sink, for mke's own lines (a test's)
        self.ctx: WorkerContext | None = None
        self.t0 = time.monotonic()
        self.checks: list[host.Check] = []
        self.prepare_seconds: float | None = None  # token check, prerequisites, staging

    def say(self, text: str, *, level: str = "info") -> None:
        if self.listener is not None:
            self.listener(text)
        else:
            super().say(text, level=level)

    # -- joining (no side effects until the token is known good)

    def authenticate(self) -> tuple[str, WorkerSettings | None, Any]:
        """(API URL, settings from the cluster or None, the checked token or None)."""
        from mke.worker.kubelet import client_cert_status

        p = self.paths
        joined, why = client_cert_status(p.kubelet_kubeconfig)
        if joined:
            if self.token:
                self._compare_token_ca()
                self.say(f"this node joined earlier ({why}); ignoring the token")
            api = kubeconfig_server(p.kubelet_kubeconfig)
            if not api:
                raise TokenError(f"{p.kubelet_kubeconfig}: no API server in it; run `mke reset` and join again")
            return api, fetch_settings(p.kubelet_kubeconfig), None
        if not self.token:
            if p.kubelet_kubeconfig.exists():
                raise TokenError(f"this node cannot rejoin by itself: {why}; pass a new worker token "
                                 "(mke token create --role=worker)")
            raise TokenError("no join token: pass one as an argument, with --token-file, or in MKE_TOKEN "
                             "(create it on a controller with `mke token create --role=worker`)")
        tok, settings = check_token(self.token, say=lambda m: self.say(m, level="warn"))  # it says only fallbacks
        return tok.api_url, settings, tok

    def _compare_token_ca(self) -> None:
        from mke.tokens import decode_token

        try:
            tok = decode_token(self.token or "", role="worker")
        except TokenError:
            return  # ignored anyway
        try:
            current = self.paths.ca.read_text()
        except OSError:
            return
        if current.strip() != tok.ca_pem.strip():
            raise TokenError(f"this node belongs to another cluster (its CA in {self.paths.ca} differs from the "
                             "token's); run `mke reset` before joining it to this cluster")

    # -- prepare

    def prepare(self) -> None:
        t0 = time.monotonic()
        api_url, settings, tok = self.authenticate()
        p = self.paths
        from mke import skew

        # a kubelet newer than the cluster's kube-apiserver (or > 3 minors older) is refused before any write
        skew.check_kubelet(api_url, tok.ca_pem if tok is not None else (p.ca.read_text() if p.ca.exists() else ""),
                           Path(self.bin_dir) if self.bin_dir else None, lambda m: self.say(m, level="warn"))
        self.lock_data_dir()
        p.worker_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if tok is not None:
            write_file_atomic(p.ca, tok.ca_pem.encode(), 0o644)
            write_file_atomic(p.bootstrap_kubeconfig, bootstrap_kubeconfig(tok, p.ca).encode(), 0o600)
        elif p.bootstrap_kubeconfig.exists():
            p.bootstrap_kubeconfig.unlink()  # joined: the token's secret need not stay on disk
        if settings is not None:
            settings.save(p.settings)
        else:
            settings = WorkerSettings.load(p.settings)
            if settings is None:
                settings = WorkerSettings.defaults()
                self.say("using mke's default worker settings (cluster DNS 10.96.0.10, domain cluster.local)")
        network = network_provider(settings.network_provider)
        created = host.ensure_system_files(p.host_files_record, extra=network.host_files)
        if created:
            self.say(f"this host had no {' and no '.join(created)}: created minimal ones (mke reset removes them)",
                     level="warn")
        cgroups = host.detect_cgroups()
        if cgroups.warning:
            self.say(cgroups.warning, level="warn")
        self.checks = host.Prerequisites(modules=(*host.MODULES, *network.kernel_modules)).ensure()
        for c in self.checks:
            if c.status != "ok":
                self.say(c.line(), level="warn" if c.status == "missing" else "info")
        made = ensure_cgroup_root(cgroups, self.options.cgroup_root)
        if made:
            self.say(f"created cgroup root {self.options.cgroup_root} ({len(made)} hierarchies)")
        options = self.options
        if not options.node_ip:
            import urllib.parse

            ip = node_address(urllib.parse.urlsplit(api_url).hostname or "")
            if ip:
                import dataclasses

                options = dataclasses.replace(options, node_ip=ip)
        user_bin_dir = self.bin_dir is not None
        binaries = BinaryResolver(Path(self.bin_dir) if self.bin_dir else p.data_dir / "bin", user_bin_dir=user_bin_dir,
                                  say=self.say)
        can_lower_oom = host.has_capability(host.CAP_SYS_RESOURCE)
        if not can_lower_oom:
            self.say("no CAP_SYS_RESOURCE (a container or sandbox?): containerd restricts pods' OOM scores "
                     "to its own (restrict_oom_score_adj)", level="warn")
        protect = host.kernel_defaults_match(self.checks)
        if not protect:
            self.say("kubelet runs without protectKernelDefaults: the kernel settings above that kubelet wants "
                     "could not be set (CIS 4.2.6; docs/security.md)", level="warn")
        self.ctx = WorkerContext(paths=p, options=options, settings=settings, cgroups=cgroups, binaries=binaries,
                                 api_url=api_url, can_lower_oom_score=can_lower_oom, sink=self.sink,
                                 backoff_initial=self.backoff_initial, protect_kernel_defaults=protect)
        binaries.prefetch([*WORKER_BINARIES, *self.ctx.network.cni_plugins, *self.ctx.network.worker_binaries(),
                           *binaries.embedded((*HOST_TOOLS, *OPERATOR_TOOLS))])
        # The generic iptables names go into mke's own bin dir only, never into a user's --bin-dir.
        flavour = None if binaries.user_bin_dir else hosttools.prepare_iptables(binaries.bin_dir)
        if flavour:
            self.say(f"embedded iptables ({flavour}) first on the components' PATH")
        self.prepare_seconds = time.monotonic() - t0
        self.say(f"worker {options.node_name} (ip {options.node_ip or '?'}) joining {api_url}; "
                 f"cgroup v{cgroups.version}/{cgroups.driver}; network {settings.network_provider} "
                 f"(settings from {settings.source})")

    # -- status

    def ready_status(self) -> str:
        return f"node {self.options.node_name} Ready"

    def status_extra(self) -> dict[str, Any]:
        import urllib.parse

        u = urllib.parse.urlsplit(self.ctx.api_url) if self.ctx else None
        return {
            "node_name": self.options.node_name,
            "api_address": u.hostname if u else None,
            "api_port": u.port if u else None,
            "storage": "-",
            "prerequisites": [c.line() for c in self.checks],
            "prepare_seconds": round(self.prepare_seconds, 3) if self.prepare_seconds is not None else None,
        }

    # -- run

    def start(self) -> None:
        assert self.ctx is not None
        swap = host.swap_enabled()
        if swap:
            self.say("swap is on; kubelet runs with failSwapOn=false and NoSwap for pods", level="warn")
        stages = worker_stages(self.ctx, swap=swap, resolv_conf=host.host_resolv_conf())
        self.manager = ComponentManager(stages, on_change=self.write_status, stopping=self.stopping, sink=self.sink)
        self.manager.start()
