"""Storage backends of the control plane: one module each (defining ``BACKEND``), and this registry.

A backend is the datastore kube-apiserver talks etcd's API to: ``etcd`` (the default,
one member per controller) or ``kine`` (the etcd API over SQLite, MySQL/MariaDB or
PostgreSQL, chosen by ``storage.kine.dataSource``). Adding one is a module under
``mke/storage/`` and one line in ``REGISTRY`` (docs/architecture.md, "Seams").
"""

from __future__ import annotations

from mke.registry import Registry
from mke.storage.base import StorageBackend

REGISTRY: Registry[StorageBackend] = Registry({
    "etcd": "mke.storage.etcd",
    "kine": "mke.storage.kine",
}, attr="BACKEND", default="etcd")
NAMES = REGISTRY.names
DEFAULT = REGISTRY.default
get = REGISTRY.get
every = REGISTRY.every

__all__ = ["DEFAULT", "NAMES", "REGISTRY", "StorageBackend", "every", "get"]
