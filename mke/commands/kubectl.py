"""``mke kubectl ...``: the embedded kubectl with the admin kubeconfig of this host."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None, help="state directory (default /var/lib/mke)")
    p.add_argument("--bin-dir", type=Path, default=None, help="where kubectl is (default: staged, or PATH)")
    p.add_argument("kubectl_args", nargs=argparse.REMAINDER, help="arguments for kubectl")


def run(args: argparse.Namespace) -> int:
    from mke.components.context import BinaryResolver
    from mke.controller import DEFAULT_DATA_DIR
    from mke.procenv import clean_env

    data_dir = (args.data_dir or DEFAULT_DATA_DIR).absolute()
    resolver = BinaryResolver(args.bin_dir or data_dir / "bin", user_bin_dir=args.bin_dir is not None)
    kubectl = resolver.path("kubectl")
    env = clean_env()
    if "KUBECONFIG" not in env:
        env["KUBECONFIG"] = str(data_dir / "pki" / "admin.conf")
    rest = list(args.kubectl_args)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    os.execve(str(kubectl), [str(kubectl), *rest], env)
    return 0  # not reached
