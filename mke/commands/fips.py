"""``mke fips check [--json] [--bin-dir DIR]``: prove this mke is FIPS, binary by binary.

For every binary embedded in this executable: its Go build info (GOFIPS140, DefaultGODEBUG
fips140=on), the Go Cryptographic Module's functions in its pclntab (or BoringCrypto's),
and static linking (mke/fips/), held to the rules of the Go FIPS mode the payload records
(``fips_go``: native | boring; a FIPS payload from before the field is native). A binary
already staged in the bin dir with the manifest's digest is read there; any other is
decoded from the payload into a temp dir.
Then the runtime's own crypto: the OpenSSL that hashlib and cryptography use, its FIPS
provider, and what is refused (MD5, RSA-1024 keys).

Prints the table; exits 0 when everything passes, else 12 (FipsError) naming the first
failure. ``--json`` prints the whole report instead.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from mke.errors import FipsError, UsageError
from mke.fips.binary import inspect_binary
from mke.fips.policy import BinaryReport, Policy, evaluate, runtime_policy
from mke.fips.runtime_env import runtime_summary
from mke.fips.runtime_state import runtime_problems, runtime_state
from mke.fips.table import format_table
from mke.payload_format import Payload, running_payload

BIN_DIR_ENV = "MKE_BIN_DIR"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="fips_command", metavar="ACTION")
    sub.required = True
    c = sub.add_parser("check", help="verify every embedded binary and the runtime's OpenSSL FIPS provider")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.add_argument("--bin-dir", type=Path, default=None,
                   help=f"where staged binaries are read from when present (default ${BIN_DIR_ENV} or /var/lib/mke/bin)")
    c.add_argument("--binaries-only", action="store_true", help="skip the runtime's crypto checks")
    c.add_argument("--runtime-only", action="store_true", help="skip the embedded binaries")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_payload(payload: Payload, bin_dir: Path, policy: Policy) -> tuple[list[BinaryReport], dict[str, str]]:
    """One report per embedded binary; also where each was read from."""
    from mke.staging import BinDir

    bd = BinDir(bin_dir)
    embedded = [b for b in payload.manifest.binaries if b.embedded]
    reports: list[BinaryReport] = []
    source: dict[str, str] = {}
    todo = []
    for b in embedded:
        if bd.is_present(b) and _sha256(bd.store_file(b)) == b.sha256:
            reports.append(evaluate(inspect_binary(bd.store_file(b), b.name), policy))
            source[b.name] = str(bd.store_file(b))
        else:
            todo.append(b.name)
    if todo:
        with tempfile.TemporaryDirectory(prefix="mke-fips-check-") as tmp:
            for index, members in sorted(payload.frames_for(todo).items()):
                paths = {b.name: Path(tmp) / b.name for b in members}
                with contextlib.ExitStack() as stack:
                    payload.decode_frame(index, {n: stack.enter_context(open(p, "wb")) for n, p in paths.items()})
                for name, p in sorted(paths.items()):
                    reports.append(evaluate(inspect_binary(p, name), policy))
                    source[name] = "payload"
                    p.unlink()
    return sorted(reports, key=lambda r: r.name), source


def build_report(args: argparse.Namespace) -> dict[str, Any]:
    doc: dict[str, Any] = {"problems": []}
    if not args.runtime_only:
        payload = running_payload()
        if payload is None:
            doc["binaries"] = []
            doc["payload"] = None
            doc["problems"].append("this mke carries no payload: its binaries come from PATH and are not checked "
                                   "(run `python -m build.fips_check` on them)")
        else:
            bin_dir = args.bin_dir or Path(os.environ.get(BIN_DIR_ENV) or "/var/lib/mke/bin")
            go_fips = payload.manifest.go_fips
            reports, source = check_payload(payload, bin_dir, runtime_policy(go_fips))
            doc["payload"] = {"path": payload.label, "mode": payload.manifest.mode, "fips": payload.manifest.fips,
                              "fips_go": go_fips}
            doc["binaries"] = [{**r.to_document(), "read_from": source.get(r.name)} for r in reports]
            doc["_reports"] = reports
            if not payload.manifest.fips:
                doc["problems"].append("this mke is not a FIPS build (its manifest says fips: false)")
            doc["problems"] += [f"{r.name}: {p}" for r in reports for p in r.problems]
    if not args.binaries_only:
        state = runtime_state()
        doc["runtime"] = state
        doc["runtime_summary"] = runtime_summary()
        doc["problems"] += [f"runtime: {p}" for p in runtime_problems(state)]
    doc["ok"] = not doc["problems"]
    return doc


def _print_runtime(state: dict[str, Any]) -> None:
    o = state.get("hashlib_openssl", {})
    c = state.get("cryptography", {})
    prov = o.get("fips_provider") or {}
    summary = runtime_summary()
    print()
    print("RUNTIME")
    print(f"  hashlib OpenSSL        {o.get('version', o.get('error'))}")
    print(f"  FIPS provider          {'active' if o.get('fips') else 'NOT loaded'}"
          + (f" ({prov.get('name')} {prov.get('version')})" if prov else ""))
    if prov:
        cert = state.get("provider_certificate")
        print(f"  provider version       {prov.get('version')}: "
              + (f"validated ({cert})" if cert else "NOT a validated version"))
    files = state.get("provider_files", {})
    if files.get("fips_so_sha256"):
        same = files["fips_so_sha256"] == (files.get("provenance") or {}).get("fips_so_sha256")
        print(f"  provider file          fips.so sha256 {files['fips_so_sha256'][:16]}..., "
              + ("as built (provenance.json)" if same else "NOT the file provenance.json records"))
    if summary.get("statement"):
        print(f"  provider build         {summary['statement']}")
    for caveat in summary.get("not_claimed") or []:
        print(f"    not claimed:         {caveat}")
    print(f"  default fips=yes       {'yes' if o.get('default_properties_fips') else 'no'};"
          f" default provider loaded: {'yes' if o.get('default') else 'no'}")
    print(f"  built-in hash modules  {', '.join(state.get('builtin_hash_modules') or []) or 'none (excluded)'}")
    print(f"  hashlib.md5()          {state.get('hashlib_md5')}")
    print(f"  EVP RSA-1024 keygen    {state.get('evp_rsa1024')}")
    if c.get("error"):
        print(f"  cryptography           {c['error']}")
    else:
        print(f"  cryptography           {c.get('openssl')}, FIPS {'enabled' if c.get('fips_enabled') else 'NOT enabled'}")
        print(f"    MD5                  {c.get('md5', '').splitlines()[0] if c.get('md5') else ''}")
        print(f"    RSA-1024 sign        {c.get('rsa1024_sign')}")
    inv = state.get("crypto_inventory")
    if inv and inv.get("skipped"):
        print()
        print(f"CRYPTOGRAPHY IN THE RUNTIME: not read, {inv['skipped']}")
    elif inv:
        print()
        print(f"CRYPTOGRAPHY IN THE RUNTIME ({inv['root']}: {inv['elf_files']} ELF files read)")
        for f in inv["crypto_files"]:
            links = f"links {', '.join(f['crypto_needed'])}; " if f["crypto_needed"] else ""
            marks = f"carries the code of {', '.join(f['marks'])}; " if f["marks"] else ""
            if f.get("openssl_version_text") and "openssl" in f["marks"]:
                marks = marks[:-2] + f" ({f['openssl_version_text']}); "
            print(f"  {f['path']}")
            print(f"      {links}{marks}{f['role']}")
        if not inv["problems"]:
            print("  no other file links or embeds a crypto library")


def run(args: argparse.Namespace) -> int:
    if args.binaries_only and args.runtime_only:
        raise UsageError("mke fips check: --binaries-only and --runtime-only exclude each other")
    doc = build_report(args)
    reports = doc.pop("_reports", [])
    if args.json:
        json.dump(doc, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
    else:
        if "binaries" in doc:
            where = doc["payload"]["path"] if doc.get("payload") else "(no payload)"
            print(f"EMBEDDED BINARIES of {where}")
            if doc.get("payload") and doc["payload"]["fips_go"]:
                print(f"Go FIPS mode: {doc['payload']['fips_go']} (--fips-go; checked by its rules)")
            if reports:
                print(format_table(reports))
        if "runtime" in doc:
            _print_runtime(doc["runtime"])
        print()
        print("FIPS: " + ("every check passed" if doc["ok"] else f"{len(doc['problems'])} problem(s)"))
        for p in doc["problems"]:
            if not any(p == f"{r.name}: {q}" for r in reports for q in r.problems):
                print(f"  {p}")
    sys.stdout.flush()
    if not doc["ok"]:
        raise FipsError(f"FIPS check failed: {doc['problems'][0]}"
                        + (f" (and {len(doc['problems']) - 1} more problems)" if len(doc["problems"]) > 1 else ""))
    return 0
