"""mke as a service of the host's service manager: one module per kind (defining
``INIT_SYSTEM``, an ``InitSystem`` subclass) and this registry, asked in order.

``mke install``, ``start``, ``stop`` and ``uninstall`` (mke/commands/) use ``detect()``: the
first whose ``runs_here`` is true, or a ServiceError saying what to do where neither runs.
Adding one (runit, s6) is one module and one line here. ``detached`` (no service manager: mke
in the background) is asked first but runs only where ``mke install --detached`` put a service;
``detached()`` is how install chooses it.
"""

from __future__ import annotations

from mke.errors import ServiceError, UsageError
from mke.registry import Registry
from mke.service.base import ROLES, ROOT_ENV, InitSystem, Record, ServiceSpec, host_root, read_record, service_name

REGISTRY: Registry[type[InitSystem]] = Registry({
    "detached": "mke.service.detached",  # first, but only where mke install --detached put a service
    "systemd": "mke.service.systemd",
    "openrc": "mke.service.openrc",
}, attr="INIT_SYSTEM", default="systemd")

NEITHER = ("this host runs neither systemd (no /run/systemd/system) nor OpenRC (no /run/openrc, no openrc-run on "
           "PATH): run `mke server` or `mke worker` under your own supervisor (it stays in the foreground, logs "
           "to stderr and stops on SIGTERM)")


def detect() -> InitSystem:
    """The service manager that runs this host (under ``$MKE_INIT_ROOT`` when set)."""
    root = host_root()
    for kind in REGISTRY.every():
        if kind.runs_here(root):
            return kind(root)
    raise ServiceError(NEITHER)


def detached() -> InitSystem:
    """No service manager: ``mke install --detached`` (mke/service/detached.py)."""
    return REGISTRY.get("detached")(host_root())


def installed_role(init: InitSystem, role: str | None) -> str:
    """``role`` when its service is installed; without one, the one role that is installed."""
    installed = init.installed_roles()
    if role is not None:
        if role not in installed:
            raise ServiceError(f"{service_name(role)} is not installed ({init.service_file(role)} does not exist); "
                               f"`mke install {role}` first")
        return role
    if not installed:
        files = " or ".join(str(init.service_file(r)) for r in ROLES)
        raise ServiceError(f"no mke service is installed here (no {files}); `mke install controller|worker` first")
    if len(installed) > 1:
        raise UsageError(f"both {' and '.join(service_name(r) for r in installed)} are installed: name one "
                         "(controller or worker)")
    return installed[0]


__all__ = ["NEITHER", "REGISTRY", "ROLES", "ROOT_ENV", "InitSystem", "Record", "ServiceSpec", "detached", "detect", "host_root",
           "installed_role", "read_record", "service_name"]
