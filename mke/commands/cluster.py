"""``mke cluster apply|status|kubeconfig|reset|...``: a whole cluster's lifecycle over SSH, from a
cluster file (mke/cluster/, docs/cluster.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mke.errors import UsageError

VERBS = {
    "apply": "install, start and join every host of the cluster file (nothing changes when it is done already)",
    "status": "a table of the hosts: role, service, mke version, state, node readiness",
    "kubeconfig": "print the admin kubeconfig, from a controller whose API is ready",
    "reset": "uninstall mke from every host and remove its data (asks first unless --force)",
    "upgrade": "rolling upgrade to an mke file: controllers one at a time, then workers in batches, each drained",
    "backup": "run mke backup on a controller and fetch the archive here (checked, 0600)",
    "restore": "build the cluster of a backup archive again on the hosts (reset or new): mke restore, then apply",
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
        if verb == "upgrade":
            v.add_argument("--mke", type=Path, metavar="FILE",
                           help="the mke file to upgrade to (default: mke.file of the cluster file, else this mke)")
            v.add_argument("--batch", type=_positive_int, metavar="N",
                           help="workers upgraded at once (default: 10%% of the workers, at least 1)")
            v.add_argument("--drain-timeout", type=_positive_int, default=300, metavar="SECONDS",
                           help="how long a node's pods may take to be evicted (PodDisruptionBudgets; default 300)")
        if verb == "restore":
            v.add_argument("file", type=Path, metavar="FILE", help="an archive of mke cluster backup (or mke backup)")
        if verb == "backup":
            v.add_argument("--out", "-o", type=Path, metavar="FILE",
                           help="where the archive goes here (default: ./mke-backup-<node>-<time>.tar.zst)")
    probe = verbs.add_parser("probe")  # run on a host by mke cluster itself; not listed in --help
    verbs._choices_actions = [a for a in verbs._choices_actions if a.dest != "probe"]
    probe.add_argument("--data-dir", type=Path, required=True)
    probe.add_argument("--file", type=Path, action="append", default=[])


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: give a whole number of at least 1")
    return n


def run(args: argparse.Namespace) -> int:
    import asyncio

    if args.verb == "probe":
        from mke.cluster.probe import run as probe

        return probe(args.data_dir, args.file)
    if args.verb == "restore" and not args.file.is_file():
        raise UsageError(f"{args.file}: {'not a file' if args.file.exists() else 'no such file'} (the archive to restore)")
    from mke.cluster.spec import load_cluster

    spec = load_cluster(args.config)
    accept = args.accept_new_host_keys
    if args.verb == "apply":
        from mke.cluster.apply import Apply

        return asyncio.run(Apply(spec, accept_new=accept).run())
    if args.verb == "upgrade":
        from mke.cluster.upgrade import Upgrade

        if args.mke is not None and not args.mke.is_file():
            raise UsageError(f"--mke: {args.mke}: {'not a file' if args.mke.exists() else 'no such file'}")
        return asyncio.run(Upgrade(spec, accept_new=accept, mke_file=args.mke, batch=args.batch,
                                   drain_timeout=float(args.drain_timeout)).run())
    if args.verb == "backup":
        from mke.cluster.backup import Backup

        return asyncio.run(Backup(spec, accept_new=accept).run(args.out))
    if args.verb == "restore":
        from mke.cluster.restore import Restore

        return asyncio.run(Restore(spec, accept_new=accept).run_restore(args.file))
    if args.verb == "status":
        from mke.cluster.ops import Status

        return asyncio.run(Status(spec, accept_new=accept).run())
    if args.verb == "kubeconfig":
        from mke.cluster.ops import Kubeconfig

        return asyncio.run(Kubeconfig(spec, accept_new=accept).run(args.server))
    from mke.cluster.ops import Reset, confirm

    confirm(spec, args.force)
    return asyncio.run(Reset(spec, accept_new=accept).run())
