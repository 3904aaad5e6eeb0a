"""``mke status``: role, components and their state, versions (from run/status.json)."""

from __future__ import annotations

import argparse
import json
import time

from mke.commands import add_data_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_dir(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from mke import __version__
    from mke.errors import BusyError
    from mke.node.datadir import data_dir_from, read_status
    from mke.node.process import alive

    data_dir = data_dir_from(args.data_dir)
    doc = read_status(data_dir)
    if doc is None:
        raise BusyError(f"mke is not running with data dir {data_dir}")
    for c in doc.get("components", []):
        pid = c.get("pid")
        if pid and not alive(pid):
            c["state"] = "gone"
    if args.json:
        print(json.dumps(doc, indent=1))
        return 0
    up = time.time() - doc.get("started_at", time.time())
    print(f"role:       {doc.get('role', '?')}")
    print(f"mke:        {doc.get('mke_version', __version__)} (pid {doc.get('pid')}, {doc.get('phase')}, up {up:.0f}s)")
    print(f"node:       {doc.get('node_name', '?')}")
    print(f"api:        https://{doc.get('api_address')}:{doc.get('api_port')}")
    print(f"storage:    {doc.get('storage', '?')}")
    print("components:")
    for c in doc.get("components", []):
        extra = []
        if c.get("pid"):
            extra.append(f"pid {c['pid']}")
        if c.get("restarts"):
            extra.append(f"{c['restarts']} restarts")
        if c.get("version"):
            extra.append(c["version"])
        if c.get("objects"):
            extra.append(f"{c['objects']} objects")
        if c.get("last_error"):
            extra.append(f"error: {c['last_error']}")
        print(f"  {c['name']:<25} {c.get('state', '?'):<10} {', '.join(extra)}")
    return 0
