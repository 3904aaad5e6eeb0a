"""``mke token create|list|invalidate``: join tokens for workers and controllers."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from mke.commands import add_data_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = sub.add_parser("create", help="create a join token and print it")
    c.add_argument("--role", required=True, choices=["worker", "controller"])
    c.add_argument("--expiry", default="24h",
                   help="lifetime: 24h, 7d, 1h30m... (0: never expires, worker tokens only); default 24h")
    c.add_argument("--reusable", action="store_true",
                   help="a controller token that more than one controller may join with (default: single use)")
    c.add_argument("--description", default="")
    ls = sub.add_parser("list", help="list join tokens stored in the cluster")
    inv = sub.add_parser("invalidate", help="delete a token (by id, id.secret or the whole token string)")
    inv.add_argument("token", nargs="+")
    for sp in (c, ls, inv):
        add_data_dir(sp)
        sp.add_argument("--config", "-c", type=Path, help="mke.yaml, when no server runs here (a running server's own configuration wins)")


def _client_and_urls(args: argparse.Namespace):
    from mke.cli import warn
    from mke.config import node_config
    from mke.errors import PKIError
    from mke.kubeapi import KubeClient
    from mke.node.datadir import data_dir_from, read_status
    from mke.node.hostinfo import api_url, mke_api_url

    data_dir = data_dir_from(args.data_dir)
    # mke's own credential on a controller (root reads it; it works whatever RBAC says), else
    # admin.conf (a data dir from before super-admin.conf)
    kubeconfig = data_dir / "pki" / "super-admin.conf"
    if not kubeconfig.exists():
        kubeconfig = data_dir / "pki" / "admin.conf"
    if not kubeconfig.exists():
        raise PKIError(f"{kubeconfig}: missing; run `mke token` on a controller where `mke server` ran")
    cfg = node_config(data_dir, args.config, warn=warn)
    status = read_status(data_dir)
    return KubeClient.from_kubeconfig(kubeconfig), api_url(cfg, status), mke_api_url(cfg, status), data_dir


def run(args: argparse.Namespace) -> int:
    from mke.tokens import TokenStore, check_lifetime, parse_duration, token_id

    # the command line first: a bad --expiry or token is named before the cluster is asked
    ttl = parse_duration(args.expiry) if args.action == "create" else None
    if args.action == "create":
        check_lifetime(args.role, ttl)
    if args.action == "create" and args.reusable and args.role != "controller":
        from mke.errors import UsageError

        raise UsageError("--reusable: only for --role=controller (worker tokens are reusable until they expire)")
    ids = [token_id(t) for t in args.token] if args.action == "invalidate" else []
    client, api_url, mke_api_url, data_dir = _client_and_urls(args)
    store = TokenStore(client)
    if args.action == "create":
        ca_pem = (data_dir / "pki" / "ca.crt").read_text()
        tok = store.create(role=args.role, api_url=api_url, mke_api_url=mke_api_url, ca_pem=ca_pem, ttl=ttl,
                           description=args.description, single_use=args.role == "controller" and not args.reusable)
        print(tok.encode())
        return 0
    if args.action == "list":
        now = dt.datetime.now(dt.UTC)
        print(f"{'ID':<8} {'ROLE':<11} {'USES':<8} {'NODE':<16} {'EXPIRES':<32} DESCRIPTION")
        for t in store.list():
            exp = t.expires.strftime("%Y-%m-%dT%H:%M:%SZ") if t.expires else "never"
            if t.expires and t.expires <= now:
                exp += " (expired)"
            uses = "once" if t.single_use or t.role == "worker" else "many"
            node = t.node or ("-" if t.role == "worker" else "")
            print(f"{t.token_id:<8} {t.role:<11} {uses:<8} {node:<16} {exp:<32} {t.description}")
        return 0
    for tok in ids:
        print(f"invalidated {store.invalidate(tok)}")
    return 0
