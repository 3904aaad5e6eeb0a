"""The components ``mke server`` runs, one small class each (see DESIGN.md)."""

from __future__ import annotations


def supervised_names() -> tuple[str, ...]:
    """Every binary component ``mke server`` may run, from the classes: the storage
    backends' first, then the control plane's (extraArgs keys, ``mke reset``)."""
    from mke import storage
    from mke.components.apiserver import KubeAPIServer
    from mke.components.controller_manager import KubeControllerManager
    from mke.components.konnectivity import KonnectivityServer
    from mke.components.scheduler import KubeScheduler

    backends = tuple(n for b in storage.every() for n in b.component_names())
    return (*backends, *(c.name for c in (KubeAPIServer, KonnectivityServer, KubeControllerManager, KubeScheduler)))
