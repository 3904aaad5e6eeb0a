"""``mke kubectl ...``: the embedded kubectl with the admin kubeconfig of this host."""

from __future__ import annotations

import argparse
from pathlib import Path

from mke.commands import add_data_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_dir(p)
    p.add_argument("--bin-dir", type=Path, default=None, help="where kubectl is (default: staged, or PATH)")
    p.add_argument("kubectl_args", nargs=argparse.REMAINDER, help="arguments for kubectl")


def run(args: argparse.Namespace) -> int:
    from mke.commands import exec_tool, passthrough_args
    from mke.errors import UsageError
    from mke.node.datadir import data_dir_from
    from mke.procenv import clean_env

    data_dir = data_dir_from(args.data_dir)
    rest = passthrough_args(args.kubectl_args)
    env = clean_env()
    admin = data_dir / "pki" / "admin.conf"
    given = "KUBECONFIG" in env or any(a == "--kubeconfig" or a.startswith("--kubeconfig=") for a in rest)
    if not given:
        if not admin.is_file():
            # kubectl would otherwise talk to localhost:8080, and fail with a misleading message
            raise UsageError(f"no admin kubeconfig at {admin}: run this on a controller (as root, with its "
                             f"--data-dir), or give kubectl --kubeconfig FILE or $KUBECONFIG")
        env["KUBECONFIG"] = str(admin)
    return exec_tool("kubectl", rest, env, args.bin_dir or data_dir / "bin", user_bin_dir=args.bin_dir is not None)
