"""``mke cluster apply|status|kubeconfig|reset|...``: a whole cluster's lifecycle over SSH, from a
cluster file (mke/cluster/, docs/cluster.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mke.errors import NotImplementedYet

VERBS = {
    "apply": "install, start and join every host of the cluster file (nothing changes when it is done already)",
    "status": "a table of the hosts: role, service, mke version, state, node readiness",
    "kubeconfig": "print the admin kubeconfig, from a controller whose API is ready",
    "reset": "uninstall mke from every host and remove its data (asks first unless --force)",
    "upgrade": "rolling upgrade to this mke file (not done yet)",
    "backup": "back up the cluster (not done yet: waits for mke backup)",
    "restore": "restore a backup (not done yet: waits for mke restore)",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=type(p))
    for verb, help_text in VERBS.items():
        v = verbs.add_parser(verb, help=help_text, description=help_text)
        v.add_argument("--config", "-c", type=Path, default=Path("cluster.yaml"), metavar="FILE",
                       help="the cluster file (default ./cluster.yaml; docs/cluster.md)")
        v.add_argument("--accept-new-host-keys", action="store_true",
                       help="trust a host that is not in known_hosts yet and add its key there (a key that differs "
                            "from the one recorded is always refused)")
        if verb == "kubeconfig":
            v.add_argument("--server", help="API URL to put in the kubeconfig (default: the controller's)")
        if verb == "reset":
            v.add_argument("--force", action="store_true", help="do not ask")
    probe = verbs.add_parser("probe")  # run on a host by mke cluster itself; not listed in --help
    verbs._choices_actions = [a for a in verbs._choices_actions if a.dest != "probe"]
    probe.add_argument("--data-dir", type=Path, required=True)
    probe.add_argument("--file", type=Path, action="append", default=[])


def run(args: argparse.Namespace) -> int:
    import asyncio

    if args.verb == "probe":
        from mke.cluster.probe import run as probe

        return probe(args.data_dir, args.file)
    if args.verb in ("backup", "restore"):
        raise NotImplementedYet(f"mke cluster {args.verb} is not done yet: it will run `mke {args.verb}` on a "
                                "controller once that command exists (docs/cluster.md)")
    if args.verb == "upgrade":
        raise NotImplementedYet("mke cluster upgrade is not done yet (docs/cluster.md says what it will do); "
                                "meanwhile `mke cluster apply` uploads a new file without restarting running nodes")
    from mke.cluster.spec import load_cluster

    spec = load_cluster(args.config)
    accept = args.accept_new_host_keys
    if args.verb == "apply":
        from mke.cluster.apply import Apply

        return asyncio.run(Apply(spec, accept_new=accept).run())
    if args.verb == "status":
        from mke.cluster.ops import Status

        return asyncio.run(Status(spec, accept_new=accept).run())
    if args.verb == "kubeconfig":
        from mke.cluster.ops import Kubeconfig

        return asyncio.run(Kubeconfig(spec, accept_new=accept).run(args.server))
    from mke.cluster.ops import Reset, confirm

    confirm(spec, args.force)
    return asyncio.run(Reset(spec, accept_new=accept).run())
