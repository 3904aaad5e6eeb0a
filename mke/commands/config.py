"""``mke config create|validate``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("create", help="print the full default configuration")
    sub.add_parser("reference", help="print the reference of every key (docs/configuration.md)")
    v = sub.add_parser("validate", help="check a configuration file; every error, one line each naming its field")
    v.add_argument("--config", "-c", type=Path, required=False, help="the file to check (or give it as argument)")
    v.add_argument("file", nargs="?", type=Path, help="the file to check")


def run(args: argparse.Namespace) -> int:
    from mke.config import default_config, dump_config, load_config
    from mke.errors import UsageError

    if args.action == "create":
        sys.stdout.write(dump_config(default_config()))
        return 0
    if args.action == "reference":
        from mke.config_reference import reference

        sys.stdout.write(reference())
        return 0
    path = args.file or args.config
    if path is None:
        raise UsageError("mke config validate: give the file to check (mke config validate mke.yaml)")
    load_config(path)
    print(f"{path}: valid")
    return 0
