"""The build's FIPS check: every binary in dist/ (or in a bundle's payload) proves it is FIPS.

The evidence is read from each binary by ``mke.fips`` (the same code ``mke fips check``
runs): Go build info (GOFIPS140, DefaultGODEBUG fips140=on, GOEXPERIMENT, CGO_ENABLED),
the function names in the pclntab (which survive ``-s -w``), and static linking. The
policy comes from fips/toolchain.toml (``--fips-go=native|boring``, exempt non-Go binaries).

A FIPS build (``--fips``) fails with a ``VerificationError`` naming every binary that
fails; a normal build gets the same table (all "no") without failing. The table is also
written next to the manifest as ``fips-report.json``.

    python -m build.fips_check dist/linux-amd64              # a dist dir (manifest.json)
    python -m build.fips_check dist/mke-fips --require       # the binaries inside a bundle
    python -m build.fips_check --fips-go boring path/to/bin ...
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from build.errors import BuildError, UsageError, VerificationError, report
from build.fsutil import write_atomic
from mke.fips.binary import inspect_binary
from mke.fips.policy import BinaryReport, Policy, check_files, evaluate
from mke.fips.table import format_table, reports_document

REPORT_NAME = "fips-report.json"


def default_policy(go_mode: str | None = None) -> Policy:
    from fips.settings import load

    return load().policy(go_mode)


def failure_message(reports: list[BinaryReport], where: str) -> str:
    bad = [r for r in reports if not r.ok]
    first = bad[0]
    more = f" (and {len(bad) - 1} more: {', '.join(r.name for r in bad[1:])})" if len(bad) > 1 else ""
    return (f"FIPS check failed for {where}: {first.name}: {first.problems[0]}{more}; "
            f"the table above lists every problem")


def check_dist(manifest_path: Path, *, policy: Policy) -> list[BinaryReport]:
    """Check every embedded binary listed in a dist manifest (dist/<os>-<arch>/manifest.json)."""
    try:
        doc = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:
        raise VerificationError(f"{manifest_path}: cannot read the build manifest: {e}") from e
    bindir = manifest_path.parent / "bin"
    files = {e["name"]: bindir / e["name"] for e in doc.get("binaries", []) if e.get("sha256")}
    missing = [n for n, p in files.items() if not p.is_file()]
    if missing:
        raise VerificationError(f"{manifest_path}: {', '.join(missing)} listed but not in {bindir}; rebuild")
    return check_files(files, policy)


def check_bundle(exe: Path, *, policy: Policy | None = None) -> tuple[list[BinaryReport], dict[str, Any]]:
    """Check the binaries embedded in a bundle's payload (decoded one frame at a time to a temp dir).

    ``policy`` None: the rules of the Go FIPS mode the payload records (``fips_go``; native
    for a FIPS payload from before the field, and for a non-FIPS one)."""
    from mke.payload_format import Payload

    payload = Payload.open(exe)
    if payload is None:
        raise VerificationError(f"{exe}: carries no payload (a none-mode build has no binaries to check)")
    if policy is None:
        policy = default_policy(payload.manifest.go_fips)
    reports: list[BinaryReport] = []
    embedded = [b for b in payload.manifest.binaries if b.embedded]
    with tempfile.TemporaryDirectory(prefix="mke-fips-check-") as tmp:
        for index, members in sorted(payload.frames_for([b.name for b in embedded]).items()):
            paths = {b.name: Path(tmp) / b.name for b in members}
            with contextlib.ExitStack() as stack:
                payload.decode_frame(index, {n: stack.enter_context(open(p, "wb")) for n, p in paths.items()})
            for name, p in sorted(paths.items()):
                reports.append(evaluate(inspect_binary(p, name), policy))
                p.unlink()
    meta = {"bundle": str(exe), "mode": payload.manifest.mode, "fips": payload.manifest.fips,
            "fips_go": payload.manifest.go_fips, "platform": payload.manifest.platform}
    return sorted(reports, key=lambda r: r.name), meta


def verify_dist(manifest_path: Path, *, fips: bool, go_mode: str | None = None,
                out=None) -> list[BinaryReport]:
    """The build step: print the table, write fips-report.json, fail a FIPS build on any problem."""
    policy = default_policy(go_mode)
    reports = check_dist(manifest_path, policy=policy)
    print(format_table(reports), file=out or sys.stderr)
    doc = reports_document(reports, fips_build=fips, go_mode=policy.go_mode, go_module=policy.go_module)
    write_atomic(manifest_path.parent / REPORT_NAME, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
    if fips and not doc["ok"]:
        raise VerificationError(failure_message(reports, str(manifest_path.parent)))
    return reports


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m build.fips_check", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", type=Path, help="a dist dir or manifest.json, a bundle (dist/mke), or binaries")
    p.add_argument("--fips-go", choices=["native", "boring"], default=None,
                   help="policy (default: what a bundle's payload records, else fips/toolchain.toml)")
    p.add_argument("--require", action="store_true", help="exit non-zero unless every binary passes")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    try:
        policy = default_policy(args.fips_go)
        reports: list[BinaryReport] = []
        meta: dict[str, Any] = {}
        loose: dict[str, Path] = {}
        for path in args.paths:
            if path.is_dir() or path.name == "manifest.json":
                manifest = path / "manifest.json" if path.is_dir() else path
                if not manifest.exists():
                    raise UsageError(f"{path}: no manifest.json (pass dist/<os>-<arch>)")
                reports += check_dist(manifest, policy=policy)
            elif _is_bundle(path):  # without --fips-go: the mode its payload records
                r, meta = check_bundle(path, policy=policy if args.fips_go else None)
                reports += r
            elif path.is_file():
                loose[path.name] = path
            else:
                raise UsageError(f"{path}: no such file or directory")
        reports += check_files(loose, policy)
        if args.json:
            go_mode = meta.get("fips_go") if meta.get("fips_go") and not args.fips_go else policy.go_mode
            print(json.dumps(reports_document(reports, **(meta | {"go_mode": go_mode})), indent=2, sort_keys=True))
        else:
            print(format_table(reports))
        ok = all(r.ok for r in reports)
        if args.require and not ok:
            raise VerificationError(failure_message(reports, ", ".join(str(p) for p in args.paths)))
        return 0
    except (BuildError, OSError) as e:
        return report(e)


def _is_bundle(path: Path) -> bool:
    from mke.payload_format import SECTION_NAME, find_elf_section

    if not path.is_file():
        return False
    with open(path, "rb") as f:
        try:
            return find_elf_section(f, SECTION_NAME, str(path)) is not None
        except Exception:  # noqa: BLE001 - unreadable: not a bundle
            return False


if __name__ == "__main__":
    sys.exit(main())
