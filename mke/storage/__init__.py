"""Storage backends of the control plane: one module each, and this registry.

A backend is the datastore kube-apiserver talks etcd's API to: ``etcd`` (the default,
one member per controller) or ``kine`` (the etcd API over SQLite, MySQL/MariaDB or
PostgreSQL, chosen by ``storage.kine.dataSource``). Adding one is a module under
``mke/storage/`` defining ``BACKEND`` (a ``StorageBackend``) and one line in ``MODULES``.
"""

from __future__ import annotations

import importlib

from mke.storage.base import StorageBackend

MODULES: dict[str, str] = {
    "etcd": "mke.storage.etcd",
    "kine": "mke.storage.kine",
}
NAMES = tuple(MODULES)
DEFAULT = "etcd"


def get(name: str) -> StorageBackend:
    """The backend registered as ``name`` (config validation guarantees it exists)."""
    backend: StorageBackend = importlib.import_module(MODULES[name]).BACKEND
    return backend


def every() -> list[StorageBackend]:
    return [get(n) for n in NAMES]


__all__ = ["DEFAULT", "MODULES", "NAMES", "StorageBackend", "every", "get"]
