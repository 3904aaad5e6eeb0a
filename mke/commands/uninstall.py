"""``mke uninstall [controller|worker]``: undo ``mke install``, and only that.

Stops the service, disables it (``systemctl disable``, ``rc-update del``), removes its
service file and the token file mke install wrote for it (both named in the file's header,
mke/service/base.py). A service file mke install did not write is left alone. The data
dir stays, with the node's state: ``mke reset`` removes it. Without a role: the one
installed.
"""

from __future__ import annotations

import argparse

from mke.commands import add_service_role


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_service_role(p)


def run(args: argparse.Namespace) -> int:
    from mke.commands import installed_service
    from mke.errors import ServiceError
    from mke.node.datadir import DEFAULT_DATA_DIR
    from mke.service import read_record

    init, role, name = installed_service(args)
    path = init.service_file(role)
    record = read_record(path, role)
    if record is None:
        raise ServiceError(f"{path} was not written by mke install (its first lines do not say so); "
                           "remove it yourself")
    init.require_tools()
    init.stop(role)
    init.disable(role)
    path.unlink()
    init.forget(role)
    removed = [str(path)]
    if record.token_file is not None and record.token_file.is_file():
        record.token_file.unlink()
        removed.append(str(record.token_file))
    print(f"stopped and disabled {name}; removed {' and '.join(removed)}")
    data_dir = record.data_dir or DEFAULT_DATA_DIR
    flag = "" if data_dir == DEFAULT_DATA_DIR else f" --data-dir {data_dir}"
    print(f"the data dir {data_dir} stays (this node's state): `mke reset{flag}` removes it")
    return 0
