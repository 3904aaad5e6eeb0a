"""``mke install controller|worker``: write a systemd unit that runs this mke."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from mke.commands import add_data_dir

UNIT_DIR = Path("/etc/systemd/system")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("role", choices=["controller", "worker"])
    p.add_argument("token", nargs="?", help="worker: the join token (or use --token-file); controller: to join")
    p.add_argument("--token-file", type=Path, help="file holding the join token")
    p.add_argument("--config", "-c", type=Path, help="controller: mke.yaml")
    add_data_dir(p)
    p.add_argument("--enable-worker", action="store_true", help="controller: also run a worker")
    p.add_argument("--registries", type=Path, metavar="FILE",
                   help="worker: registry mirrors and TLS (a controller has them in mke.yaml)")
    p.add_argument("--unit-dir", type=Path, default=UNIT_DIR, help="where to write the unit (default %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing unit")


def mke_executable() -> str:
    """The command that runs this mke: the dist/mke file it started from (mke/start.py), or
    ``python -m mke`` when run from source."""
    from mke import start

    if start.executable:
        return os.path.realpath(start.executable)
    return f"{os.path.realpath(sys.executable)} -m mke"


def unit_text(args: argparse.Namespace) -> str:
    cmd = [mke_executable()]
    if args.role == "controller":
        cmd.append("server")
        if args.config:
            cmd += ["--config", str(args.config.absolute())]
        if args.enable_worker:
            cmd.append("--enable-worker")
    else:
        cmd.append("worker")
        if args.registries:
            cmd += ["--registries", str(args.registries.absolute())]
    if args.data_dir:
        cmd += ["--data-dir", str(args.data_dir.absolute())]
    if args.token_file:
        cmd += ["--token-file", str(args.token_file.absolute())]
    exec_start = " ".join(c if " -m " in c else shlex.quote(c) for c in cmd)
    return (
        "[Unit]\n"
        f"Description=mke {args.role}\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={exec_start}\n"
        "Restart=always\n"
        "RestartSec=5\n"
        "KillMode=process\n"
        "Delegate=yes\n"
        "LimitNOFILE=1048576\n"
        "LimitNPROC=infinity\n"
        "LimitCORE=infinity\n"
        "TasksMax=infinity\n"
        "TimeoutStartSec=0\n"
        "TimeoutStopSec=60\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def run(args: argparse.Namespace) -> int:
    import datetime as dt

    from mke.errors import UsageError
    from mke.node.datadir import data_dir_from
    from mke.node.files import write_file_atomic
    from mke.tokens import decode_token, token_argument

    # every input is checked before anything is written: the service would otherwise fail at its first start
    if args.registries is not None and args.role != "worker":
        raise UsageError("--registries is for mke install worker; a controller reads the registries "
                         "section of its mke.yaml (--config)")
    data_dir = data_dir_from(args.data_dir)
    token = token_argument(args.token, args.token_file)
    if token:
        # malformed or for the other role: refused now; its expiry is for the service to judge
        # (a node that joined before ignores it)
        decode_token(token, role=args.role, now=dt.datetime.min.replace(tzinfo=dt.UTC))
    if args.registries is not None:
        from mke.config import load_registries

        load_registries(args.registries)
    if args.config is not None:
        from mke.config import load_config

        load_config(args.config)
    if args.role == "worker" and not token:
        raise UsageError("mke install worker needs a join token (argument or --token-file)")
    path = args.unit_dir / f"mke-{args.role}.service"
    if path.exists() and not args.force:
        raise UsageError(f"{path} exists; pass --force to replace it")
    if args.token:
        # Never put a secret on a command line in a unit file: store it 0600 next to the data.
        args.token_file = data_dir / f"{args.role}-token"
        write_file_atomic(args.token_file, token.encode() + b"\n", 0o600)
    write_file_atomic(path, unit_text(args).encode(), 0o600)  # CIS 4.1.1: the kubelet service file 0600
    print(f"wrote {path}; start it with: systemctl daemon-reload && systemctl enable --now mke-{args.role}")
    return 0
