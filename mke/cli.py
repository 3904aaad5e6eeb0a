"""The ``mke`` command line.

Each command lives in its own module under ``mke/commands/`` and registers itself
with ``register(name, help)``; ``main`` imports them lazily so that ``mke version``
does not pay for ``cryptography`` or the supervisor. Only ``main`` catches
``MkeError`` (and ``OSError``, as ``HostError``): it prints one line and exits with the
error's code (the table is in mke/errors.py).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

from mke import __version__
from mke.errors import HostError, MkeError, UsageError

# command name -> (module under mke.commands, one-line help). Each module defines
# ``add_arguments(parser)`` and ``run(args) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "version": ("version", "print mke's version and its embedded components"),
    "extract": ("extract", "stage every embedded binary into the bin dir"),
    "server": ("server", "run a controller: the Kubernetes control plane"),
    "config": ("config", "print the default mke.yaml (create) or check one (validate)"),
    "token": ("token", "create, list or invalidate join tokens"),
    "status": ("status", "show the role, components and versions of the mke running here"),
    "kubeconfig": ("kubeconfig", "print a kubeconfig (admin)"),
    "kubectl": ("kubectl", "run the embedded kubectl against this cluster"),
    "ctr": ("ctr", "run the embedded ctr against this worker's containerd (namespace k8s.io)"),
    "crictl": ("crictl", "run the embedded crictl against this worker's containerd"),
    "reset": ("reset", "remove everything mke created on this host (mke must be stopped)"),
    "install": ("install", "install mke server|worker, with its flags, as a systemd or OpenRC service"),
    "start": ("start", "start the mke service installed here (waits until it is ready under systemd)"),
    "stop": ("stop", "stop the mke service installed here"),
    "uninstall": ("uninstall", "remove the mke service installed here (not the data dir: mke reset)"),
    "etcd": ("etcd", "etcd membership: member-list, leave"),
    "fips": ("fips", "check that every embedded binary and the runtime's crypto are FIPS (fips check)"),
    "worker": ("worker", "join this host to a cluster as a worker node (token from `mke token create`)"),
    "airgap": ("airgap", "air-gap helpers: list-images"),
    "sysinfo": ("sysinfo", "check what this host offers a controller and a worker (PASS/WARN/FAIL)"),
    "certificate": ("certificate", "certificate status, and rotate the control plane's without restarts"),
    "completion": ("completion", "print a shell completion script (bash, zsh or fish)"),
    "cluster": ("cluster", "a whole cluster over SSH from a cluster file: apply, status, kubeconfig, reset"),
    "backup": ("backup", "write a backup archive of this controller's cluster (or list them: backup list)"),
    "restore": ("restore", "restore a cluster from an mke backup archive onto this host"),
}


# Commands that change the host (namespaces, mounts, cgroups, /etc, services): refused up front
# for other users, with the sudo hint, instead of failing halfway on the first PermissionError.
NEEDS_ROOT = ("server", "worker", "reset", "install", "start", "stop", "uninstall", "certificate", "restore")
SERVICE_COMMANDS = ("install", "start", "stop", "uninstall")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def make_parser(only: str | None = None) -> argparse.ArgumentParser:
    p = _Parser(prog="mke", description="mke: single-binary Kubernetes distribution")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    p.add_argument("--version", action="version", version=f"mke {__version__}",
                   help="print mke's version and exit (`mke version` lists the embedded components)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        if only is not None and name != only:
            continue  # start-up: argparse costs per sub-parser; build only the one being run
        sp = sub.add_parser(name, help=help_text)
        if only is None or only == name:
            mod = importlib.import_module(f"mke.commands.{module}")
            mod.add_arguments(sp)
            sp.set_defaults(_run=mod.run)
    return p


def warn(msg: str) -> None:
    """One warning line on stderr (the command goes on)."""
    print(f"mke: warning: {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug anywhere before a "--" (after which arguments belong to another program)
    end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:end]
    argv = (["--debug"] if debug else []) + [a for i, a in enumerate(argv) if i >= end or a != "--debug"]
    # Import only the module of the command being run (fast start-up).
    only = next((a for a in argv if not a.startswith("-")), None)
    try:
        if argv[:1] == ["_pki"]:  # mke's own helper (mke.pkifiles), kept out of the commands and their help
            helper_main: Callable[[list[str]], int] = importlib.import_module("mke.pki").helper_main
            return helper_main(argv[1:])
        parser = make_parser(only if only in COMMANDS else None)
        args = parser.parse_args(argv)
        run: Callable[[argparse.Namespace], int] = args._run
        if args.command in NEEDS_ROOT and os.geteuid() != 0 and not getattr(args, "check", False):
            what = "services" if args.command in SERVICE_COMMANDS else "network, mounts and cgroups"
            raise HostError(f"mke {args.command} needs root (it sets up the host's {what}): "
                            f"run it as root (sudo mke {args.command} ...)")
        return run(args)
    except (MkeError, OSError) as e:
        if debug:
            raise
        err = e if isinstance(e, MkeError) else HostError.from_os_error(e)
        for line in str(err).splitlines() or [""]:  # a config with three errors says all three
            print(f"mke: error: {line}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130


__all__ = ["COMMANDS", "__version__", "main", "warn"]
