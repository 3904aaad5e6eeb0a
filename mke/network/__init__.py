"""Network providers: one module each (defining ``PROVIDER``), and this registry.

Adding a provider is one module under ``mke/network/`` and one line in ``REGISTRY``
(docs/architecture.md, "Seams").
"""

from __future__ import annotations

from mke.network.base import NetworkProvider
from mke.registry import Registry

REGISTRY: Registry[NetworkProvider] = Registry({
    "calico": "mke.network.calico",
    "bridge": "mke.network.bridge",
    "custom": "mke.network.custom",
    "kuberouter": "mke.network.kuberouter",
}, attr="PROVIDER", default="calico")
NAMES = REGISTRY.names
DEFAULT = REGISTRY.default
get = REGISTRY.get
every = REGISTRY.every

__all__ = ["DEFAULT", "NAMES", "REGISTRY", "NetworkProvider", "every", "get"]
