"""One module per ``mke`` subcommand; see mke.cli.COMMANDS."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path


def stop_on_signals(stopping: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stopping`` (the long-running commands then stop in order)."""

    def on_signal(signum: int, _frame: object) -> None:
        print(f"mke: {signal.Signals(signum).name}: stopping", file=sys.stderr, flush=True)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def add_data_dir(p: argparse.ArgumentParser) -> None:
    """The ``--data-dir`` option every command that works on a node's state takes."""
    p.add_argument("--data-dir", type=Path, default=None, help="state directory (default /var/lib/mke)")


def add_service_role(p: argparse.ArgumentParser) -> None:
    """The optional role of ``mke start``, ``stop`` and ``uninstall``."""
    p.add_argument("role", nargs="?", choices=["controller", "worker"],
                   help="which mke service (default: the one installed here)")
