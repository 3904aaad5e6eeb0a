"""``mke status``: role, components and their state, versions (from run/status.json), and health.

Health, for monitoring: every component running, the mke process running, the Kubernetes
API ready (a controller: ``/readyz`` with the admin certificate), no certificate of the
data dir expired. ``mke status`` exits 0 when healthy and 7 (ComponentError) when not,
naming each problem; certificates that expire within 30 days are listed as warnings.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mke.commands import add_data_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_dir(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")


EXPIRY_WARN_DAYS = 30
# what a component reports when it does its job (supervised: running; add-ons: applied, or standby on a
# controller that is not the leader; the node's readiness loop: ready; the bridge network: configured)
HEALTHY_STATES = ("running", "applied", "standby", "ready", "configured")


def certificates(data_dir: Path) -> list[dict[str, object]]:
    """Every certificate mke keeps in the data dir (the first one of each PEM file), with its expiry."""
    import datetime as dt

    from cryptography import x509

    now = dt.datetime.now(dt.UTC)
    out: list[dict[str, object]] = []
    files = sorted({*data_dir.glob("pki/**/*.crt"), *data_dir.glob("worker/pki/*.pem"), *data_dir.glob("worker/pki/*.crt")})
    for f in files:
        if f.is_symlink() and f.name.endswith("-current.pem"):
            continue  # kubelet's pointer to the newest of its rotated files, listed by their own names
        try:
            cert = x509.load_pem_x509_certificate(f.read_bytes())
        except (OSError, ValueError):
            continue  # a key, or not a certificate
        left = (cert.not_valid_after_utc - now).total_seconds() / 86400
        out.append({"file": str(f.relative_to(data_dir)), "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "days_left": round(left, 1)})
    return out


def health(doc: dict, data_dir: Path) -> dict[str, object]:
    """Problems (unhealthy) and warnings of the mke described by status document ``doc``."""
    from mke.components.base import https_ok

    problems: list[str] = []
    warnings: list[str] = []
    if doc.get("phase") != "running":
        problems.append(f"mke is {doc.get('phase', '?')}")
    for c in doc.get("components", []):
        if c.get("state") not in HEALTHY_STATES:
            problems.append(f"{c.get('name')} is {c.get('state', '?')}")
        elif c.get("last_error"):
            warnings.append(f"{c.get('name')}: {c['last_error']}")
    api_ready = None
    if doc.get("role") == "controller":
        pki = data_dir / "pki"
        api_ready, body = https_ok(f"https://127.0.0.1:{doc.get('api_port') or 6443}/readyz", ca=pki / "ca.crt",
                                   cert=pki / "admin.crt", key=pki / "admin.key")
        if not api_ready:
            problems.append(f"the Kubernetes API is not ready (/readyz: {' '.join(str(body).split())[:120] or 'no answer'})")
    certs = certificates(data_dir)
    for c in certs:
        days = float(c["days_left"])  # type: ignore[arg-type]
        if days <= 0:
            problems.append(f"certificate {c['file']} expired at {c['not_after']}")
        elif days < EXPIRY_WARN_DAYS:
            warnings.append(f"certificate {c['file']} expires in {days:.0f} days ({c['not_after']})")
    return {"healthy": not problems, "problems": problems, "warnings": warnings, "api_ready": api_ready,
            "certificates": certs}


def run(args: argparse.Namespace) -> int:
    from mke import __version__
    from mke.errors import BusyError, ComponentError
    from mke.node.datadir import data_dir_from, read_status
    from mke.node.process import alive

    data_dir = data_dir_from(args.data_dir)
    doc = read_status(data_dir)
    if doc is None:
        raise BusyError(f"mke is not running with data dir {data_dir}")
    for c in doc.get("components", []):
        pid = c.get("pid")
        if pid and not alive(pid):
            c["state"] = "gone"
    doc["health"] = health(doc, data_dir)
    code = 0 if doc["health"]["healthy"] else ComponentError.exit_code
    if args.json:
        print(json.dumps(doc, indent=1))
        return code
    up = time.time() - doc.get("started_at", time.time())
    print(f"role:       {doc.get('role', '?')}")
    print(f"mke:        {doc.get('mke_version', __version__)} (pid {doc.get('pid')}, {doc.get('phase')}, up {up:.0f}s)")
    print(f"node:       {doc.get('node_name', '?')}")
    print(f"api:        https://{doc.get('api_address')}:{doc.get('api_port')}")
    print(f"storage:    {doc.get('storage', '?')}")
    print("components:")
    for c in doc.get("components", []):
        extra = []
        if c.get("pid"):
            extra.append(f"pid {c['pid']}")
        if c.get("restarts"):
            extra.append(f"{c['restarts']} restarts")
        if c.get("version"):
            extra.append(c["version"])
        if c.get("objects"):
            extra.append(f"{c['objects']} objects")
        if c.get("last_error"):
            extra.append(f"error: {c['last_error']}")
        print(f"  {c['name']:<25} {c.get('state', '?'):<10} {', '.join(extra)}")
    h = doc["health"]
    soonest = min(h["certificates"], key=lambda c: c["days_left"], default=None)
    if soonest:
        print(f"certificates: {len(h['certificates'])}, the first to expire: {soonest['file']} in "
              f"{soonest['days_left']:.0f} days ({soonest['not_after']})")
    for w in h["warnings"]:
        print(f"warning:    {w}")
    for p in h["problems"]:
        print(f"problem:    {p}")
    print(f"health:     {'ok' if h['healthy'] else 'UNHEALTHY'}")
    return code
