"""``mke kubeconfig admin``: print the admin kubeconfig (for the advertised or external address)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("user", choices=["admin"], help="which kubeconfig")
    p.add_argument("--data-dir", type=Path, default=None, help="state directory (default /var/lib/mke)")
    p.add_argument("--config", "-c", type=Path, help="mke.yaml (for api.externalAddress/port)")
    p.add_argument("--server", help="API URL to put in the kubeconfig (default: external, then advertised address)")


def run(args: argparse.Namespace) -> int:
    from mke.commands.status import read_status
    from mke.config import load_config
    from mke.controller import DEFAULT_DATA_DIR, choose_api_address, host_addresses
    from mke.errors import PKIError
    from mke.pki import ClusterPKI, url_host

    data_dir = (args.data_dir or DEFAULT_DATA_DIR).absolute()
    pki = ClusterPKI(data_dir / "pki")
    if not pki.crt("admin").exists():
        raise PKIError(f"{pki.crt('admin')}: missing; run `mke server` on this host first")
    cfg = load_config(args.config)
    server = args.server
    if not server:
        status = read_status(data_dir) or {}
        host = cfg.api.external_address or status.get("api_address") or choose_api_address(cfg, host_addresses())
        server = f"https://{url_host(host)}:{status.get('api_port', cfg.api.port)}"
    sys.stdout.write(pki.kubeconfig_text(server, "admin", user="admin"))
    return 0
