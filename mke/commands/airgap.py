"""``mke airgap list-images``: the images a cluster with this config runs, one per line.

Mirror them into a private registry (and set ``images.registry``), or put the air-gap
bundle ``mke-airgap-images-<os>-<arch>.tar`` (``nox -s build -- --airgap``) into each
worker's ``<data-dir>/images/``, which ``mke worker`` imports before kubelet starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="airgap_command", required=True, metavar="SUBCOMMAND")
    ls = sub.add_parser("list-images", help="print the images the cluster needs")
    ls.add_argument("--config", "-c", type=Path, help="mke.yaml (default: built-in defaults)")
    ls.add_argument("--all", action="store_true", help="include the images of every network provider")


def images(cfg, *, include_all: bool = False) -> list[str]:
    refs = [cfg.images.ref("pause"), cfg.images.ref("kube_proxy"), cfg.images.ref("coredns"),
            cfg.images.ref("metrics_server")]
    if cfg.konnectivity.enabled:
        refs.append(cfg.images.ref("konnectivity_agent"))
    from mke import network

    for provider in network.every() if include_all else [network.get(cfg.network.provider)]:
        refs += provider.images(cfg)
    return list(dict.fromkeys(refs))


def run(args: argparse.Namespace) -> int:
    from mke.config import load_config

    cfg = load_config(args.config)
    for ref in images(cfg, include_all=args.all):
        print(ref)
    return 0
