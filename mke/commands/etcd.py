"""``mke etcd member-list|leave``: the etcd members of the control plane."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mke.commands import add_data_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = sub.add_parser("member-list", help="list the etcd members")
    ls.add_argument("--json", action="store_true")
    lv = sub.add_parser("leave", help="remove this controller's etcd member (or --peer-url) from the cluster")
    lv.add_argument("--peer-url", help="the member to remove (default: this controller's)")
    for sp in (ls, lv):
        add_data_dir(sp)
        sp.add_argument("--config", "-c", type=Path, help="mke.yaml, when no server runs here (a running server's own configuration wins)")


def run(args: argparse.Namespace) -> int:
    from mke import storage
    from mke.cli import warn
    from mke.config import node_config
    from mke.errors import KubeAPIError, UsageError
    from mke.etcdapi import EtcdClient
    from mke.node.datadir import data_dir_from, read_status
    from mke.node.hostinfo import url_host

    data_dir = data_dir_from(args.data_dir)
    cfg = node_config(data_dir, args.config, warn=warn)
    if not storage.get(cfg.storage.type).has_members:
        raise UsageError(f"storage.type is {cfg.storage.type}: there is no etcd cluster to manage")
    client = EtcdClient(f"https://127.0.0.1:{cfg.storage.etcd.client_port}", data_dir / "pki")
    members = client.members()
    if args.action == "member-list":
        if args.json:
            print(json.dumps([m.__dict__ for m in members], indent=1, default=list))
        else:
            for m in members:
                print(f"{m.name or '(unstarted)'}\t{','.join(m.peer_urls)}\t{m.id}{' learner' if m.learner else ''}")
        return 0
    peer = args.peer_url
    if not peer:
        st = read_status(data_dir) or {}
        addr = cfg.storage.etcd.peer_address or st.get("api_address")
        if not addr:
            raise UsageError("cannot tell this controller's peer URL; pass --peer-url")
        peer = f"https://{url_host(addr)}:{cfg.storage.etcd.peer_port}"
    target = next((m for m in members if peer in m.peer_urls), None)
    if target is None:
        raise KubeAPIError(f"no etcd member has peer URL {peer} (see mke etcd member-list)")
    if len(members) == 1:
        raise UsageError("this is the only etcd member; removing it would destroy the cluster")
    client.remove(target.id)
    print(f"removed etcd member {target.name} ({peer}); stop mke on that host and run mke reset there")
    return 0
