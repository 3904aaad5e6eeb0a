"""What every worker component needs: paths under the data dir, options, settings, binaries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mke.config import RegistriesConfig
from mke.logsink import LogSink
from mke.node.binaries import BinaryResolver
from mke.worker.host import CgroupInfo
from mke.worker.join import WorkerSettings
from mke.worker.paths import WorkerPaths  # re-exported: where it always was for the worker's modules

if TYPE_CHECKING:
    from mke.network.base import NetworkProvider

# The binaries a worker runs on the host (pause, konnectivity-agent, CoreDNS and
# metrics-server run in pods); the network provider adds its CNI plugins and binaries
# (``NetworkProvider.cni_plugins``, ``worker_binaries``).
WORKER_BINARIES = ("containerd", "containerd-shim-runc-v2", "ctr", "runc", "kubelet", "kube-proxy")
# The host tools they execute (docs/host-userland.md), staged when the payload embeds them.
HOST_TOOLS = ("xtables-nft-multi", "xtables-legacy-multi", "ipset", "mount", "umount")
# What an operator runs against this worker (`mke crictl`; `mke ctr` runs the ctr above): staged with
# the worker's binaries when the payload embeds them, so that the first use starts at once; never required.
OPERATOR_TOOLS = ("crictl",)


@dataclass(frozen=True, kw_only=True)
class WorkerOptions:
    """Command-line choices of ``mke worker`` (and of ``mke server --enable-worker``)."""

    node_name: str
    node_ip: str | None = None
    labels: tuple[str, ...] = ()  # k=v
    taints: tuple[str, ...] = ()  # k=v:Effect
    cgroup_root: str = ""  # "" = kubelet's default (the root cgroup)
    pod_logs_dir: str = "/var/log/pods"
    extra_args: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # component -> flag -> value
    # mirrors and registry TLS (mke.yaml's registries, or mke worker --registries FILE)
    registries: RegistriesConfig = field(default_factory=RegistriesConfig)
    registries_source: str = "registries"  # the file they came from, for the generated files' comments

    def args_for(self, component: str) -> dict[str, str]:
        return dict(self.extra_args.get(component, {}))


@dataclass(kw_only=True)
class WorkerContext:
    """A worker's ``ComponentContext`` (mke.components.base), plus what only workers have."""

    paths: WorkerPaths
    options: WorkerOptions
    settings: WorkerSettings
    cgroups: CgroupInfo
    binaries: BinaryResolver
    api_url: str
    # False where mke runs without CAP_SYS_RESOURCE (a sandbox or container): containers then
    # cannot get an OOM score below containerd's own, so containerd is told to restrict them.
    can_lower_oom_score: bool = True
    # The kernel has every value kubelet wants (mke.worker.host.KUBELET_SYSCTLS, set by mke at
    # start): kubelet runs with protectKernelDefaults: true. False where mke could not set them
    # (a read-only /proc/sys): kubelet then would not start with it.
    protect_kernel_defaults: bool = True
    sink: LogSink = field(default_factory=LogSink)
    backoff_initial: float = 0.5

    def extra_args(self, component: str) -> dict[str, str]:
        return self.options.args_for(component)

    def extra_env(self, component: str) -> dict[str, str]:
        return {}  # mke.yaml's extraEnv is for the control plane's components

    node_credentials_timeout = 120.0

    def node_credentials_present(self) -> bool:
        """kubelet's kubeconfig and the client certificate it names both exist.

        With certificate rotation kubelet writes the kubeconfig (pointing at
        ``kubelet-client-current.pem``) before the CSR is signed, so the file alone
        is not enough: a client started in between fails to read its certificate.
        """
        import yaml

        try:
            cfg = yaml.safe_load(self.paths.kubelet_kubeconfig.read_text())
        except (OSError, yaml.YAMLError):
            return False
        try:
            users = cfg.get("users") or []
            paths = [u["user"][k] for u in users for k in ("client-certificate", "client-key") if k in u.get("user", {})]
        except (AttributeError, KeyError, TypeError):
            return False
        return all(Path(p).is_file() for p in paths)

    def wait_for_node_credentials(self, who: str) -> None:
        """Wait until kubelet's TLS bootstrap wrote the node's kubeconfig (kube-proxy, kube-router use it);
        a client certificate the cluster denied ends the wait at once with the cluster's reason."""
        import time

        from mke.errors import ComponentError, TokenError
        from mke.worker.join import denied_client_csr

        deadline = time.monotonic() + self.node_credentials_timeout
        next_ask = time.monotonic() + 2.0
        while not self.node_credentials_present():
            if time.monotonic() >= next_ask and self.paths.bootstrap_kubeconfig.exists():
                next_ask = time.monotonic() + 3.0
                why = denied_client_csr(self.paths.bootstrap_kubeconfig, self.options.node_name)
                if why:
                    raise TokenError(f"the cluster denied this node's client certificate: {why}")
            if time.monotonic() > deadline:
                raise ComponentError(f"{who}: {self.paths.kubelet_kubeconfig} did not appear within "
                                     f"{self.node_credentials_timeout:.0f}s (kubelet's TLS bootstrap)")
            time.sleep(0.2)

    def wait_for_node_registered(self, who: str, timeout: float = 180.0) -> None:
        """Wait until kubelet registered this node's Node object (kube-router gives up without it)."""
        import time

        from mke.errors import ComponentError, KubeAPIError
        from mke.kubeapi import KubeClient

        self.wait_for_node_credentials(who)
        client = KubeClient.from_kubeconfig(self.paths.kubelet_kubeconfig, timeout=5.0)
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                if client.get("v1", "Node", self.options.node_name) is not None:
                    return
                last = "not registered yet"
            except (KubeAPIError, OSError) as e:
                last = str(e)
            time.sleep(0.5)
        raise ComponentError(f"{who}: node {self.options.node_name} was not registered within {timeout:.0f}s ({last})")

    @property
    def network(self) -> NetworkProvider:
        from mke import network

        return network.get(self.settings.network_provider)

    @property
    def data_dir(self) -> Path:
        return self.paths.data_dir

    @property
    def run_dir(self) -> Path:
        return self.paths.run_dir

    @property
    def node_name(self) -> str:
        return self.options.node_name

    def bin_path_env(self, base_path: str | None = None) -> str:
        """PATH for children: the dirs of the staged binaries first (containerd finds its shim on PATH)."""
        import os

        dirs = [str(p.parent) for p in self.binaries.known().values()]
        rest = (base_path if base_path is not None else os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
        return ":".join(dict.fromkeys([*dirs, *rest.split(":")]))
