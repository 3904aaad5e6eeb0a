"""``mke kubectl ...``: the embedded kubectl with the admin kubeconfig of this host."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mke.commands import add_data_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_dir(p)
    p.add_argument("--bin-dir", type=Path, default=None, help="where kubectl is (default: staged, or PATH)")
    p.add_argument("kubectl_args", nargs=argparse.REMAINDER, help="arguments for kubectl")


def run(args: argparse.Namespace) -> int:
    from mke.node.binaries import BinaryResolver
    from mke.node.datadir import data_dir_from
    from mke.procenv import clean_env

    data_dir = data_dir_from(args.data_dir)
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
