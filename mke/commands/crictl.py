"""``mke crictl ...``: the embedded crictl against this worker's containerd (its CRI plugin).

``--runtime-endpoint unix://<data-dir>/run/containerd/containerd.sock`` and the same
``--image-endpoint`` come first, unless the command line gives a runtime endpoint
(``--runtime-endpoint``/``-r``) or the environment does (``CONTAINER_RUNTIME_ENDPOINT``); an
image endpoint the user gives (``-i``, ``IMAGE_SERVICE_ENDPOINT``) is left alone. Flags beat
crictl's config file, so a host's ``/etc/crictl.yaml`` written for another runtime changes
nothing, and mke writes no crictl.yaml of its own: the endpoints are the only settings mke
knows, and they come with every call. crictl's global flags stand before its command only;
mke's own flags come first, so crictl's need a ``--`` before them: ``mke crictl -- -D ps``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from mke.commands import add_data_dir, flag_given

# crictl's global flags that take a value (the others are switches): where its command starts
VALUE_FLAGS = frozenset({"--config", "-c", "--runtime-endpoint", "-r", "--image-endpoint", "-i", "--timeout", "-t",
                         "--tracing-endpoint", "--tracing-sampling-rate-per-million", "--profile-cpu", "--profile-mem"})
HINT = "give crictl --runtime-endpoint unix://SOCKET or $CONTAINER_RUNTIME_ENDPOINT"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_dir(p)
    p.add_argument("--bin-dir", type=Path, default=None, help="where crictl is (default: staged, or PATH)")
    p.add_argument("crictl_args", nargs=argparse.REMAINDER,
                   help="arguments for crictl (after --, when they start with -)")


def crictl_argv(rest: list[str], env: dict[str, str], socket: Callable[[], Path]) -> list[str]:
    """crictl's arguments: the worker's socket (``socket()``, asked only when needed) as its runtime and
    image endpoints, unless the user chose a runtime endpoint."""
    if flag_given(rest, "--runtime-endpoint", "-r", VALUE_FLAGS) or "CONTAINER_RUNTIME_ENDPOINT" in env:
        return list(rest)
    endpoint = f"unix://{socket()}"
    out = ["--runtime-endpoint", endpoint]
    if not flag_given(rest, "--image-endpoint", "-i", VALUE_FLAGS) and "IMAGE_SERVICE_ENDPOINT" not in env:
        out += ["--image-endpoint", endpoint]
    return [*out, *rest]


def run(args: argparse.Namespace) -> int:
    from mke.commands import run_worker_tool

    return run_worker_tool("crictl", args, args.crictl_args, HINT, crictl_argv)
