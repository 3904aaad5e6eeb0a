"""Where a worker keeps everything: paths under its data dir (stdlib only, cheap to import).

``mke ctr`` and ``mke crictl`` need the containerd socket without loading the worker's
runtime; ``mke.worker.context`` re-exports ``WorkerPaths`` for everything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WorkerPaths:
    """Everything a worker writes lives under the data dir (except pod logs, see ``pod_logs``)."""

    data_dir: Path

    @property
    def worker_dir(self) -> Path:  # configs, credentials, settings (0700)
        return self.data_dir / "worker"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def ca(self) -> Path:
        return self.worker_dir / "ca.crt"

    @property
    def settings(self) -> Path:
        return self.worker_dir / "settings.json"

    @property
    def bootstrap_kubeconfig(self) -> Path:
        return self.worker_dir / "bootstrap-kubelet.conf"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.worker_dir / "kubelet.conf"

    @property
    def kubelet_config(self) -> Path:
        return self.worker_dir / "kubelet-config.yaml"

    @property
    def kubelet_cert_dir(self) -> Path:
        return self.worker_dir / "pki"

    @property
    def kubelet_root(self) -> Path:
        return self.data_dir / "kubelet"

    @property
    def containerd_config(self) -> Path:
        return self.worker_dir / "containerd.toml"

    @property
    def containerd_root(self) -> Path:
        return self.data_dir / "containerd"

    @property
    def registry_hosts_dir(self) -> Path:  # containerd's hosts.toml per registry (mke/worker/registries.py)
        return self.containerd_root / "certs.d"

    @property
    def registry_hosts_record(self) -> Path:  # the entries of registry_hosts_dir mke wrote
        return self.worker_dir / "registry-hosts.json"

    @property
    def containerd_state(self) -> Path:
        return self.run_dir / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd_state / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.data_dir / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.data_dir / "cni" / "networks"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def imported_state(self) -> Path:
        return self.worker_dir / "images-imported.json"

    @property
    def host_files_record(self) -> Path:  # files mke created on a host that lacked them (reset removes them)
        return self.worker_dir / "host-files.json"

    @property
    def status(self) -> Path:
        return self.run_dir / "worker-status.json"



def running_worker(data_dir: Path) -> WorkerPaths | None:
    """The worker whose containerd socket exists under ``data_dir`` (``mke worker``'s, or ``mke server
    --enable-worker``'s in ``<data-dir>/node``); None when there is none. A data dir this user may not
    read raises PermissionError."""
    from mke.node.datadir import worker_data_dirs

    for d in worker_data_dirs(data_dir):
        paths = WorkerPaths(d)
        if paths.containerd_socket.is_socket():
            return paths
    return None
