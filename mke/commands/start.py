"""``mke start [controller|worker]``: start the mke service ``mke install`` put here.

systemd: ``systemctl start mke-<role>``, which returns once mke said it is ready (the unit
is ``Type=notify``: a controller's control plane ready, a worker's node Ready); OpenRC:
``rc-service mke-<role> start``, which returns once mke runs. Without a role: the one
installed.
"""

from __future__ import annotations

import argparse

from mke.commands import add_service_role


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_service_role(p)


def run(args: argparse.Namespace) -> int:
    from mke.commands import installed_service

    init, role, name = installed_service(args)
    if init.waits_for_ready():
        print(f"starting {name}; waiting until it is ready (journalctl -u {name} -f shows its log)", flush=True)
    init.start(role)
    print(f"{name} started and ready" if init.waits_for_ready()
          else f"{name} started ({init.name} does not wait until it is ready: `mke status` tells)")
    return 0
