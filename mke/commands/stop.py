"""``mke stop [controller|worker]``: stop the mke service ``mke install`` put here
(``systemctl stop`` or ``rc-service ... stop``). mke stops its components in order; pods'
containers keep running until the node starts again. Without a role: the one installed.
"""

from __future__ import annotations

import argparse

from mke.commands import add_service_role


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_service_role(p)


def run(args: argparse.Namespace) -> int:
    from mke.commands import installed_service

    init, role, name = installed_service(args)
    init.stop(role)
    print(f"stopped {name}")
    return 0
