"""What a network provider is to mke: one class, one module, one registry line.

A provider tells each part of mke what it needs, so that no other module compares
provider names:

- the controller: ``manifests(ctx)`` (DaemonSets, RBAC, CRDs it applies and keeps
  applied) and ``check(cfg)`` (one-line errors for ``mke config validate`` and start);
- ``mke airgap list-images``: ``images(cfg)``;
- every worker: ``cni_plugins`` and ``worker_binaries()`` (the embedded binaries it
  stages), where containerd finds CNI configs and plugins (``cni_conf_dir``,
  ``cni_bin_dirs``), and ``worker_components(ctx)`` (processes or loops mke runs on the
  node, started after kubelet);
- ``mke reset``: ``cleanup(paths, say)`` removes the host state the provider created
  (links, routes, its own rules) and ``leftovers(paths)`` lists what is still there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mke.components.base import Component
    from mke.components.context import ControllerContext
    from mke.config import ClusterConfig
    from mke.worker.context import WorkerContext, WorkerPaths

# Where CNI providers that run as DaemonSets install their configs and plugins.
HOST_CNI_CONF_DIR = Path("/etc/cni/net.d")
HOST_CNI_BIN_DIR = Path("/opt/cni/bin")


class NetworkProvider:
    name: str = ""
    summary: str = ""
    # The embedded CNI plugins a worker stages (containerd runs ``loopback`` for every pod).
    cni_plugins: tuple[str, ...] = ("loopback",)
    # True: a DaemonSet of the provider writes /etc/cni/net.d and /opt/cni/bin itself.
    # False: mke (or the provider's agent) writes the CNI config into the data dir.
    host_cni_dirs: bool = True
    # Kernel modules the provider needs on every node (mke loads them before it starts).
    kernel_modules: tuple[str, ...] = ()
    # Files (relative to /) the provider's agent needs on a host that lacks them: made only
    # where missing, recorded, and removed by ``mke reset`` (mke/worker/host.py).
    host_files: tuple[tuple[str, str], ...] = ()

    def check(self, cfg: ClusterConfig) -> None:
        """Raise ConfigError (one line, naming the field) when ``cfg`` cannot work with this provider."""

    def manifests(self, ctx: ControllerContext) -> list[dict[str, Any]]:
        return []

    def images(self, cfg: ClusterConfig) -> list[str]:
        return []

    def cni_conf_dir(self, paths: WorkerPaths) -> Path:
        return HOST_CNI_CONF_DIR if self.host_cni_dirs else paths.cni_conf_dir

    def cni_bin_dirs(self, ctx: WorkerContext) -> list[str]:
        staged = list(dict.fromkeys(str(ctx.binaries.path(p).parent) for p in self.cni_plugins))
        return [str(HOST_CNI_BIN_DIR), *staged] if self.host_cni_dirs else staged

    def worker_binaries(self) -> tuple[str, ...]:
        """Embedded binaries besides the CNI plugins that ``worker_components`` run."""
        return ()

    def worker_components(self, ctx: WorkerContext) -> list[Component]:
        return []

    def cleanup(self, paths: WorkerPaths, say: Callable[[str], None]) -> list[str]:
        """Remove this provider's host state; returns the problems (empty: clean)."""
        return []

    def cleanup_after_iptables(self, paths: WorkerPaths, say: Callable[[str], None]) -> list[str]:
        """What only goes once no iptables rule refers to it any more (ipsets); after reset
        removed every mke/KUBE/CNI chain."""
        return []

    def leftovers(self, paths: WorkerPaths) -> list[str]:
        return []
