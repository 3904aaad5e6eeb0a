"""What every component of a controller needs: config, paths, addresses, binaries, log sink."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mke.config import ClusterConfig
from mke.logsink import LogSink
from mke.node.binaries import BinaryResolver

if TYPE_CHECKING:
    from mke.pkifiles import PKIFiles


#: A controller with this much memory or less gets the small-machine garbage collection.
SMALL_HOST = 4 << 30


@dataclass(kw_only=True)
class ControllerContext:
    config: ClusterConfig
    data_dir: Path
    node_name: str
    api_address: str  # the advertised API address (an IP)
    host_addresses: tuple[str, ...] = ()
    binaries: BinaryResolver
    sink: LogSink = field(default_factory=LogSink)
    backoff_initial: float = 0.5
    # What the controller this one joined through answered (mke.join), for the storage
    # backend (etcd: the members); None for the first controller.
    join: Mapping[str, Any] | None = None
    # The memory this controller may use (bytes; the host's, or its cgroup's limit); None: read
    # it on first use (mke.node.sysinfo.usable_memory).
    memory: int | None = None

    def extra_args(self, component: str) -> dict[str, str]:
        """Flags mke.yaml's ``extraArgs`` adds to ``component``."""
        return self.config.args_for(component)

    def extra_env(self, component: str) -> dict[str, str]:
        """Environment mke.yaml's ``extraEnv`` adds to ``component``."""
        return self.config.env_for(component)

    @property
    def small_host(self) -> bool:
        """At most SMALL_HOST of memory: kube-apiserver and etcd collect garbage more often
        (docs/performance.md, "Empty cluster")."""
        if self.memory is None:
            from mke.node.sysinfo import usable_memory

            self.memory = usable_memory()
        return 0 < self.memory <= SMALL_HOST

    @property
    def pki(self) -> PKIFiles:
        """The pki dir; what needs ``cryptography`` runs in a helper process (mke.pkifiles)."""
        from mke.pkifiles import PKIFiles

        return PKIFiles(self.pki_dir)

    @property
    def pki_dir(self) -> Path:
        return self.data_dir / "pki"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def etcd_peer_address(self) -> str:
        return self.config.storage.etcd.peer_address or self.api_address

