"""``mke version [--json]``: mke's version, build mode, fips, and each embedded component.

A FIPS payload also says how its Go binaries were built (``fips_go``: native | boring,
``Manifest.go_fips``), which decides the GODEBUG the processes mke starts get.

Reads only the payload manifest (a few small reads); never decodes a binary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from mke import __version__
from mke.payload_format import Manifest, running_payload


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON document instead of a table")


def runtime(fips_payload: bool) -> dict[str, Any]:
    """The runtime's own crypto. mke.fips is imported only in a FIPS mke:
    a FIPS payload, or MKE_FIPS_RUNTIME set (mke/start.py sets it in a FIPS runtime)."""
    if not fips_payload and not os.environ.get("MKE_FIPS_RUNTIME"):
        return {"fips": False}
    from mke.fips.runtime_env import runtime_summary

    return runtime_summary()


#: How each Go FIPS mode's binaries are run (mke.fips.runtime_env.child_env; docs/fips.md).
GO_FIPS_TEXT = {
    "native": "native (Go Cryptographic Module, GOFIPS140; its programs run with GODEBUG fips140=on)",
    "boring": "boring (BoringCrypto, GOEXPERIMENT=boringcrypto; its programs run without any GODEBUG fips140)",
}


def describe(manifest: Manifest | None) -> dict[str, Any]:
    if manifest is None:
        return {"version": __version__, "mode": "none", "fips": False, "fips_go": None, "platform": None,
                "embedded": False, "components": [], "runtime": runtime(False)}
    return {
        "version": manifest.mke_version,
        "mode": manifest.mode,
        "fips": manifest.fips,
        "fips_go": manifest.go_fips,
        "platform": manifest.platform,
        "embedded": any(b.embedded for b in manifest.binaries),
        "components": manifest.components(),
        "runtime": runtime(manifest.fips),
    }


def run(args: argparse.Namespace) -> int:
    payload = running_payload()
    doc = describe(payload.manifest if payload else None)
    if args.json:
        json.dump(doc, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
        return 0
    fips = "yes" if doc["fips"] else "no"
    where = doc["platform"] or "source"
    print(f"mke {doc['version']} ({where}, mode {doc['mode']}, fips {fips})")
    if doc["fips_go"]:
        print(f"go crypto: {GO_FIPS_TEXT.get(doc['fips_go'], doc['fips_go'])}")
    rt = doc["runtime"]
    if rt["fips"]:
        print(f"runtime crypto: OpenSSL FIPS provider {rt.get('openssl_fips_provider') or '?'} "
              + (f"(validated version: {rt.get('certificate')})" if rt.get("validated") else
                 "(not a validated version)"))
        if rt.get("statement"):
            print(f"  {rt['statement']}")
    elif doc["fips"]:
        print("runtime crypto: NOT through a FIPS provider (this runtime carries none)")
    if not doc["components"]:
        print("no component manifest: binaries are looked up on PATH")
        return 0
    if not doc["embedded"]:
        print("no binaries embedded (none mode): each is looked up on PATH")
    rows = [("COMPONENT", "VERSION", "BINARY", "SHA256")]
    for c in doc["components"]:
        for b in c["binaries"]:
            rows.append((c["component"], c["version"], b["name"], (b["sha256"] or "-")[:16]))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3])
    for c in doc["components"]:
        for note in c.get("patches", ()):
            print(f"{c['component']} is patched by mke: {note}")
    return 0
