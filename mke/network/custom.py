"""custom: mke installs no network; the operator applies a CNI (its DaemonSet writes
/etc/cni/net.d and /opt/cni/bin, as upstream CNIs do)."""

from __future__ import annotations

from mke.network.base import NetworkProvider


class Custom(NetworkProvider):
    name = "custom"
    summary = "no network from mke: apply your own CNI"


PROVIDER = Custom()
