"""``mke worker [TOKEN]``: join this host to a cluster as a worker node and run it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mke.commands import add_data_dir, add_log_arguments, log_sink_from, stop_on_signals

if TYPE_CHECKING:
    from mke.worker.context import WorkerOptions

TOKEN_ENV = "MKE_TOKEN"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("token", nargs="?", help=f"a worker join token (or --token-file, or ${TOKEN_ENV}); "
                                            "not needed once the node has joined")
    p.add_argument("--token-file", type=Path, help="read the join token from this file")
    add_data_dir(p)
    p.add_argument("--bin-dir", type=Path, default=None,
                   help="directory holding the component binaries (default: staged into <data-dir>/bin, or PATH)")
    p.add_argument("--name", help="node name (default: the host name)")
    p.add_argument("--node-ip", help="the node's InternalIP (default: the source address towards the API)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="node label (repeatable)")
    p.add_argument("--taint", action="append", default=[], metavar="KEY[=VALUE]:EFFECT",
                   help="register the node with this taint (repeatable)")
    p.add_argument("--cgroup-root", default="", help="parent cgroup for pods (default: the root cgroup)")
    p.add_argument("--pod-logs-dir", type=Path, default=Path("/var/log/pods"), help="where kubelet keeps container logs")
    p.add_argument("--registries", type=Path, metavar="FILE",
                   help="registry mirrors and TLS for containerd: a YAML file with mirrors: and configs: "
                        "(the registries section of mke.yaml; docs/airgap.md)")
    p.add_argument("--kubelet-arg", action="append", default=[], metavar="FLAG=VALUE",
                   help="extra kubelet flag (repeatable), e.g. --kubelet-arg=v=2")
    p.add_argument("--ignore-sysinfo", action="store_true",
                   help="start even when a host check fails (mke sysinfo --role worker lists them)")
    add_log_arguments(p)


def read_token(args: argparse.Namespace) -> str | None:
    from mke.tokens import token_argument

    return token_argument(args.token, args.token_file, TOKEN_ENV)


def parse_extra(values: list[str], what: str) -> dict[str, str]:
    from mke.errors import UsageError

    out = {}
    for v in values:
        k, eq, val = v.lstrip("-").partition("=")
        if not k:
            raise UsageError(f"{what} {v!r}: expected FLAG=VALUE")
        out[k] = val if eq else "true"
    return out


def check_args(args: argparse.Namespace) -> tuple[WorkerOptions, str | None, Path]:
    """Everything the command line says, checked before anything starts (``mke install worker``
    checks the same): the node's options, the token (not yet its cluster) and the data dir."""
    from mke.node.datadir import data_dir_from, refuse_system_dir
    from mke.node.hostinfo import check_node_name, host_addresses, node_name
    from mke.worker.context import WorkerOptions
    from mke.worker.kubelet import check_label, check_node_ip, parse_taint

    token = read_token(args)
    # every flag is checked before anything starts (kubelet would refuse these only after containerd ran)
    for t in args.taint:
        parse_taint(t)
    for label in args.label:
        check_label(label)
    registries = {}
    if args.registries is not None:
        from mke.config import load_registries

        path = args.registries.absolute()
        registries = {"registries": load_registries(path), "registries_source": str(path)}
    options = WorkerOptions(
        node_name=check_node_name((args.name or node_name()).lower()),
        node_ip=check_node_ip(args.node_ip, host_addresses()) if args.node_ip else None,
        labels=tuple(args.label),
        taints=tuple(args.taint),
        cgroup_root=args.cgroup_root,
        pod_logs_dir=str(refuse_system_dir(Path(args.pod_logs_dir).absolute(), "--pod-logs-dir")),
        extra_args={"kubelet": parse_extra(args.kubelet_arg, "--kubelet-arg")},
        **registries,
    )
    return options, token, data_dir_from(args.data_dir)


def run(args: argparse.Namespace) -> int:
    from mke.commands.sysinfo import preflight
    from mke.config import default_config
    from mke.worker.node import Worker

    options, token, data_dir = check_args(args)
    # the network provider's modules are known only after joining: the worker checks them then
    notes = preflight(default_config(), ("worker",), data_dir, ignore=args.ignore_sysinfo)
    worker = Worker(data_dir=data_dir, bin_dir=args.bin_dir, options=options, token=token, sink=log_sink_from(args))
    worker.notes += notes
    t0 = time.monotonic()

    stop_on_signals(worker.stopping, worker.signals)

    def ready(w: Worker) -> None:
        w.say(f"node {options.node_name} Ready {time.monotonic() - t0:.1f}s after start")

    worker.run(on_ready=ready)
    return 0
