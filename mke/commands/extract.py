"""``mke extract [--bin-dir DIR] [NAME ...]``: stage embedded binaries without running anything.

Binaries already staged (same digest) are not rewritten and the payload is not read.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from mke import staging
from mke.payload_format import running_payload

BIN_DIR_ENV = "MKE_BIN_DIR"


def positive_int(text: str) -> int:
    """``--jobs``: 1 or more (0 would fail deep in the decoder, after the bin dir was made)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of jobs (1 or more)")
    return n


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="binaries to stage (default: all)")
    p.add_argument("--bin-dir", type=Path, default=None,
                   help=f"where to stage (default ${BIN_DIR_ENV} or {staging.DEFAULT_BIN_DIR}); "
                        "use a dir on an exec-allowed mount")
    p.add_argument("--role", action="append", choices=["controller", "worker"],
                   help="stage only what this role runs (repeatable)")
    p.add_argument("--jobs", type=positive_int, default=None, help="frames decoded in parallel (default: CPUs)")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")


def run(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    bin_dir = args.bin_dir or Path(os.environ.get(BIN_DIR_ENV) or staging.DEFAULT_BIN_DIR)
    payload = running_payload()
    if payload is None or not any(b.embedded for b in payload.manifest.binaries):
        what = "was built in none mode" if payload else "carries no payload"
        print(f"mke: this mke {what}: nothing to extract; binaries are looked up on PATH", file=sys.stderr)
        return 0
    names = list(args.names)
    if args.role:
        names += [b.name for b in payload.manifest.for_roles(args.role)]
    if not names:  # everything a host may run ("image" binaries only go into air-gap images)
        names = [b.name for b in payload.manifest.for_roles(staging.HOST_ROLES)]
    results = staging.stage(payload, names, bin_dir, jobs=args.jobs)
    if not args.quiet:
        written = sum(r.action == "staged" for r in results)
        present = sum(r.action == "present" for r in results)
        on_path = sum(r.action == "path" for r in results)
        parts = [f"{written} written", f"{present} already present"] + ([f"{on_path} from PATH"] if on_path else [])
        print(f"mke extract: {len(results)} binaries in {bin_dir} ({', '.join(parts)}) "
              f"in {time.monotonic() - t0:.2f}s", file=sys.stderr)
    return 0
