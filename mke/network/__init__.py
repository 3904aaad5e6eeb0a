"""Network providers: one module each (defining ``PROVIDER``), and this registry.

Adding a provider is one module under ``mke/network/`` and one line in ``REGISTRY``
(docs/architecture.md, "Seams").
"""

from __future__ import annotations

from mke.network.base import NetworkProvider
from mke.registry import Registry

REGISTRY: Registry[NetworkProvider] = Registry({
    "kuberouter": "mke.network.kuberouter",
    "bridge": "mke.network.bridge",
    "calico": "mke.network.calico",
    "custom": "mke.network.custom",
}, attr="PROVIDER", default="kuberouter")
NAMES = REGISTRY.names
DEFAULT = REGISTRY.default
get = REGISTRY.get
every = REGISTRY.every

__all__ = ["DEFAULT", "NAMES", "REGISTRY", "NetworkProvider", "every", "get"]
