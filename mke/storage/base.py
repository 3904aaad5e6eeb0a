"""What a storage backend is to mke.

- ``mke.yaml``: ``check(cfg)`` validates the backend's own section (errors name the
  field) and ``ports(cfg)`` names the TCP ports it listens on (checked for clashes);
- ``mke server``: ``component(ctx)`` is the supervised process started first, and
  ``apiserver_endpoint(component)`` what kube-apiserver's ``--etcd-servers`` points at
  (and whether it needs etcd client certificates);
- joining controllers: ``admit_controller(ctx, name, peer)`` runs on the controller that
  serves mke's API and returns what the new controller needs (etcd: the member list
  after adding it as a learner); a backend that cannot have a second controller raises;
- ``mke etcd ...``: ``has_members`` says whether the backend has members to manage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mke.components.base import SupervisedComponent
    from mke.components.context import ControllerContext
    from mke.config import ClusterConfig


class StorageBackend:
    name: str = ""
    summary: str = ""
    has_members: bool = False

    def component_names(self) -> tuple[str, ...]:
        """The supervised components this backend runs (extraArgs keys, reset)."""
        return ()

    def check(self, cfg: ClusterConfig) -> None:
        """Raise ConfigError naming the field when ``cfg`` does not suit this backend."""

    def ports(self, cfg: ClusterConfig) -> dict[str, int]:
        return {}

    def component(self, ctx: ControllerContext) -> SupervisedComponent:
        raise NotImplementedError

    def apiserver_endpoint(self, component: SupervisedComponent) -> tuple[str, bool]:
        """(``--etcd-servers`` value, whether the apiserver authenticates with etcd client certs)."""
        raise NotImplementedError

    def admit_controller(self, ctx: ControllerContext, name: str, peer_address: str) -> dict[str, Any]:
        return {}
