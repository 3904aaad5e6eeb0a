"""``mke kubeconfig admin``: print the admin kubeconfig (for the advertised or external address)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mke.commands import add_data_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("user", choices=["admin"], help="which kubeconfig")
    add_data_dir(p)
    p.add_argument("--config", "-c", type=Path, help="mke.yaml, when no server runs here (a running server's own configuration wins)")
    p.add_argument("--server", help="API URL to put in the kubeconfig (default: external, then advertised address)")


def run(args: argparse.Namespace) -> int:
    from mke.cli import warn
    from mke.config import node_config
    from mke.errors import PKIError
    from mke.node.datadir import data_dir_from, read_status
    from mke.node.hostinfo import api_url
    from mke.pki import ClusterPKI

    data_dir = data_dir_from(args.data_dir)
    pki = ClusterPKI(data_dir / "pki")
    if not pki.crt("admin").exists():
        raise PKIError(f"{pki.crt('admin')}: missing; run `mke server` on this host first")
    cfg = node_config(data_dir, args.config, warn=warn)
    server = args.server or api_url(cfg, read_status(data_dir))
    sys.stdout.write(pki.kubeconfig_text(server, "admin", user="admin"))
    return 0
