"""A registry of implementations behind a seam: a name -> the module that defines it.

Network providers (``mke.network``) and storage backends (``mke.storage``) are each
one module plus one line in their registry. Modules are imported only when their
implementation is asked for, so a registry costs nothing at start-up.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, modules: Mapping[str, str], *, attr: str, default: str) -> None:
        assert default in modules, f"default {default!r} is not registered"
        self.modules = dict(modules)
        self.attr = attr  # the module-level name the implementation is bound to
        self.default = default

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.modules)

    def get(self, name: str) -> T:
        """The implementation registered as ``name`` (config validation guarantees it exists)."""
        impl: T = getattr(importlib.import_module(self.modules[name]), self.attr)
        return impl

    def every(self) -> list[T]:
        return [self.get(n) for n in self.modules]
