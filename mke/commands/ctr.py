"""``mke ctr ...``: the embedded ctr against this worker's containerd, in kubelet's namespace.

``--address <data-dir>/run/containerd/containerd.sock --namespace k8s.io`` come first, unless
the command line gives its own (``--address``/``-a``, ``--namespace``/``-n``) or the environment
does (``CONTAINERD_ADDRESS``, ``CONTAINERD_NAMESPACE``). The short forms count only before ctr's
command, where its global flags stand (``ctr tasks kill -a`` means ``--all``); the long forms
anywhere (ctr's commands inherit its global flags). mke's own flags come first, so ctr's global
flags need a ``--`` before them: ``mke ctr -- -n default images ls``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from mke.commands import add_data_dir, flag_given

NAMESPACE = "k8s.io"  # kubelet's images and containers (mke.worker.containerd.K8S_NAMESPACE)
# ctr's global flags that take a value (the others are switches): where its command starts
VALUE_FLAGS = frozenset({"--address", "-a", "--namespace", "-n", "--timeout", "--connect-timeout"})
HINT = "give ctr --address SOCKET or $CONTAINERD_ADDRESS"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_dir(p)
    p.add_argument("--bin-dir", type=Path, default=None, help="where ctr is (default: staged, or PATH)")
    p.add_argument("ctr_args", nargs=argparse.REMAINDER, help="arguments for ctr (after --, when they start with -)")


def ctr_argv(rest: list[str], env: dict[str, str], socket: Callable[[], Path]) -> list[str]:
    """ctr's arguments: the worker's socket (``socket()``, asked only when needed) and kubelet's
    namespace first, unless the user chose them."""
    out = []
    if not flag_given(rest, "--address", "-a", VALUE_FLAGS, long_anywhere=True) and "CONTAINERD_ADDRESS" not in env:
        out += ["--address", str(socket())]
    if not flag_given(rest, "--namespace", "-n", VALUE_FLAGS, long_anywhere=True) and "CONTAINERD_NAMESPACE" not in env:
        out += ["--namespace", NAMESPACE]
    return [*out, *rest]


def run(args: argparse.Namespace) -> int:
    from mke.commands import run_worker_tool

    return run_worker_tool("ctr", args, args.ctr_args, HINT, ctr_argv)
