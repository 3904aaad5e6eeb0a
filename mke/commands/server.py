"""``mke server``: run a controller (the Kubernetes control plane) on this host."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mke.commands import add_data_dir, add_log_arguments, log_sink_from, stop_on_signals
from mke.errors import NotImplementedYet

if TYPE_CHECKING:
    from mke.config import ClusterConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("token", nargs="?", help="a controller token to join an existing control plane")
    p.add_argument("--token-file", type=Path, help="read the controller token from this file")
    p.add_argument("--config", "-c", type=Path, help="mke.yaml (default: built-in defaults; see mke config create)")
    add_data_dir(p)
    p.add_argument("--bin-dir", type=Path, default=None,
                   help="directory holding the component binaries (default: staged into <data-dir>/bin, or PATH)")
    p.add_argument("--enable-worker", action="store_true", help="also run a (tainted) worker on this host")
    p.add_argument("--no-taints", action="store_true", help="with --enable-worker: do not taint this node")
    p.add_argument("--name", help="node name (default: the host name)")
    p.add_argument("--ignore-sysinfo", action="store_true",
                   help="start even when a host check fails (mke sysinfo lists them)")
    add_log_arguments(p)
    p.add_argument("--no-manifests", action="store_true", help=argparse.SUPPRESS)


def check_args(args: argparse.Namespace) -> tuple[ClusterConfig, str | None, Path]:
    """Everything the command line says, checked before anything is written (``mke install
    controller`` checks the same): the config with the flags' overrides, the token (not yet
    its cluster) and the data dir."""
    from mke.config import load_config, with_overrides
    from mke.node.datadir import data_dir_from

    cfg = load_config(args.config)
    if args.enable_worker:
        cfg = with_overrides(cfg, **{"control_plane.worker": True})
    if args.no_taints:
        cfg = with_overrides(cfg, **{"control_plane.taints": False})
    if cfg.control_plane.worker:
        try:
            import mke.worker.node  # noqa: F401
        except ImportError as e:
            raise NotImplementedYet("--enable-worker needs the worker runtime (mke worker), which this build "
                                    "lacks") from e
    from mke.tokens import token_argument

    token = token_argument(args.token, args.token_file)  # before anything is written
    if args.name:
        from mke.node.hostinfo import check_node_name

        args.name = check_node_name(args.name.lower())  # as mke worker's: refused now, not by kubelet or etcd
    return cfg, token, data_dir_from(args.data_dir)


def run(args: argparse.Namespace) -> int:
    from mke.controller import Controller

    cfg, token, data_dir = check_args(args)
    join = None
    from mke.commands.sysinfo import preflight
    from mke.network import get as network_get

    roles = ("controller", "worker") if cfg.control_plane.worker else ("controller",)
    notes = preflight(cfg, roles, data_dir, ignore=args.ignore_sysinfo,
                      modules=network_get(cfg.network.provider).kernel_modules if cfg.control_plane.worker else ())
    if token:
        from mke.cli import warn
        from mke.join import join_control_plane

        cfg, join = join_control_plane(token, cfg, data_dir=data_dir, name=args.name, bin_dir=args.bin_dir, say=warn)
    ctl = Controller(cfg, data_dir=data_dir, bin_dir=args.bin_dir, name=args.name, join=join,
                     manifests=not args.no_manifests, sink=log_sink_from(args))
    ctl.notes += notes
    t0 = time.monotonic()

    stop_on_signals(ctl.stopping, ctl.signals)

    def ready(c: Controller) -> None:
        c.say(f"control plane ready in {time.monotonic() - t0:.1f}s; "
              f"API https://{c.ctx.api_address}:{cfg.api.port}, kubeconfig {c.ctx.pki.kubeconfig('admin')}")

    ctl.run(on_ready=ready)
    return 0
