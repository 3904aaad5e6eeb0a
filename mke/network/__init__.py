"""Network providers: one module each, and this registry.

Adding a provider is one module under ``mke/network/`` defining ``PROVIDER`` (a
``NetworkProvider``) and one line in ``MODULES``. Modules are imported only when their
provider is used, so the registry costs nothing at start-up.
"""

from __future__ import annotations

import importlib

from mke.network.base import NetworkProvider

MODULES: dict[str, str] = {
    "calico": "mke.network.calico",
    "bridge": "mke.network.bridge",
    "custom": "mke.network.custom",
}
NAMES = tuple(MODULES)
DEFAULT = "calico"


def get(name: str) -> NetworkProvider:
    """The provider registered as ``name`` (config validation guarantees it exists)."""
    provider: NetworkProvider = importlib.import_module(MODULES[name]).PROVIDER
    return provider


def every() -> list[NetworkProvider]:
    return [get(n) for n in NAMES]


__all__ = ["DEFAULT", "MODULES", "NAMES", "NetworkProvider", "every", "get"]
