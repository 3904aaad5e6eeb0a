"""``mke certificate status|rotate``: this node's certificates, and new keys and certificates
for the control plane while it runs.

``status`` lists every certificate in the data dir (the pki dir of a controller, the
kubelet's on a worker) with its subject, issuer and expiry; exit 7 (ComponentError) when
one has expired, like ``mke status``.

``rotate`` (a controller, as root) gives each leaf certificate of the services named
(``--service``, default all; ``SERVICES``) a new key and certificate with the same subject,
SANs and usages (``ClusterPKI.rotate``), under the pki dir's writers' lock, and rewrites
``admin.conf``. CAs are not rotated (docs/security.md, "Rotating a CA"). The running server
notices within a tick (mke.controller ``apply_certificate_changes``) and restarts only what
reads a changed file only at start: no component for a leaf rotation (kube-apiserver, etcd,
the controller-manager, the scheduler, konnectivity-server with mke's patch and mke's own
API reload theirs). The command then waits until
the server reports that it acted on the new files and checks over TLS that every serving
endpoint presents its new certificate (kube-apiserver watches its files; when a change
event is missed it looks again within a minute), and prints what happened to each.
Without a running server, the files are rotated and the components read them at start.

Kubelets rotate their own client and serving certificates (``rotateCertificates``, serving
CSRs mke approves), so ``rotate`` on a worker has nothing to do and says so.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mke.commands import add_data_dir

if TYPE_CHECKING:
    from cryptography import x509

    from mke.pki import ClusterPKI

# service -> its leaf certificates (pki stems)
SERVICES: dict[str, tuple[str, ...]] = {
    "kube-apiserver": ("apiserver", "apiserver-kubelet-client", "front-proxy-client", "apiserver-etcd-client"),
    "etcd": ("etcd/server", "etcd/peer"),
    "kube-controller-manager": ("controller-manager",),
    "kube-scheduler": ("scheduler",),
    "konnectivity-server": ("konnectivity", "konnectivity-client"),
    "mke-api": ("mke-api",),
    "admin": ("admin", "super-admin", "etcd/client"),  # admin.conf, and mke's own API and etcd clients
}
APPLY_TIMEOUT = 60.0  # the server acts within a tick (5 s) plus restarts
SERVE_TIMEOUT = 90.0  # kube-apiserver re-reads its files at least once a minute


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    st = sub.add_parser("status", help="every certificate of this node with its expiry")
    add_data_dir(st)
    st.add_argument("--json", action="store_true", help="machine-readable output")
    ro = sub.add_parser("rotate", help="new keys and certificates for the control plane, without restarts")
    add_data_dir(ro)
    ro.add_argument("--service", action="append", choices=sorted(SERVICES), metavar="NAME",
                    help=f"rotate only this service's certificates (repeatable): {', '.join(SERVICES)}")
    ro.add_argument("--no-wait", action="store_true",
                    help="do not wait for the running server to serve the new certificates")
    ro.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from mke.node.datadir import data_dir_from

    data_dir = data_dir_from(args.data_dir)
    if args.action == "status":
        return status(data_dir, as_json=args.json)
    return rotate(data_dir, services=args.service or list(SERVICES), wait=not args.no_wait, as_json=args.json)


# -- status


def describe(data_dir: Path) -> list[dict[str, object]]:
    """Every certificate of the node (mke status' list) with subject and issuer."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from mke.commands.status import certificates

    out = []
    for c in certificates(data_dir):
        row = dict(c)
        try:
            cert = x509.load_pem_x509_certificate((data_dir / str(c["file"])).read_bytes())
        except (OSError, ValueError):
            continue

        def cn(name: x509.Name) -> str:
            attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
            return str(attrs[0].value) if attrs else name.rfc4514_string()

        row.update(subject=cn(cert.subject), issuer=cn(cert.issuer), serial=f"{cert.serial_number:x}",
                   not_before=cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"))
        out.append(row)
    return out


def status(data_dir: Path, *, as_json: bool) -> int:
    from mke.errors import ComponentError, UsageError

    rows = describe(data_dir)
    if not rows:
        raise UsageError(f"{data_dir}: no certificates here; give the --data-dir of an mke controller or worker")
    if as_json:
        print(json.dumps({"certificates": rows}, indent=1))
    else:
        width = max(len(str(r["file"])) for r in rows)
        print(f"{'FILE':<{width}}  {'SUBJECT':<32}  {'ISSUER':<30}  {'EXPIRES':<20}  DAYS LEFT")
        for r in rows:
            print(f"{r['file']!s:<{width}}  {r['subject']!s:<32}  {r['issuer']!s:<30}  {r['not_after']!s:<20}  "
                  f"{r['days_left']}")
    expired = [str(r["file"]) for r in rows if float(r["days_left"]) <= 0]  # type: ignore[arg-type]
    if expired:
        raise ComponentError(f"expired: {', '.join(expired)}; a controller renews its certificates at start "
                             "(mke server) or with mke certificate rotate")
    return 0


# -- rotate


def rotate(data_dir: Path, *, services: list[str], wait: bool, as_json: bool) -> int:
    from mke.errors import ComponentError, UsageError
    from mke.node.datadir import read_status
    from mke.pki import KUBECONFIGS, ClusterPKI

    pki = ClusterPKI(data_dir / "pki")
    if not pki.key("ca").exists():
        if (data_dir / "worker").is_dir():
            raise UsageError(f"{data_dir}: a worker; kubelet rotates its own client and serving certificates "
                             "(nothing to do here): run mke certificate rotate on a controller")
        raise UsageError(f"{pki.key('ca')}: missing; run this on an mke controller (as root, with its --data-dir)")
    names = [n for s in services for n in SERVICES[s] if pki.crt(n).exists()]
    before = pki.fingerprint()
    running = read_status(data_dir)
    say = (lambda m: None) if as_json else (lambda m: print(f"mke: {m}", flush=True))
    with pki.lock():
        new = pki.rotate(names)
        local = _local_server(pki)
        for kc, stem in KUBECONFIGS.items():
            if stem in new and local:
                pki.write_kubeconfig(kc, local, stem)
        after = pki.fingerprint()
    since = time.time()
    say(f"rotated {len(new)} certificates: {', '.join(new)}")
    report: dict[str, object] = {"rotated": {n: _cert_row(c) for n, c in new.items()}, "restarted": [],
                                 "serving": {}}
    if running is None or running.get("role") != "controller":
        say("no mke server runs on this data dir: its components read the new certificates when it starts")
        _emit(report, as_json)
        return 0
    if not wait:
        say("not waiting: the running server restarts what cannot reload within a few seconds")
        _emit(report, as_json)
        return 0
    applied = _wait_applied(data_dir, after, before, since)
    if applied is None:
        raise ComponentError(f"the running mke (pid {running.get('pid')}) did not act on the new certificates within "
                             f"{APPLY_TIMEOUT:.0f}s; see its log (lines tagged [pki])")
    report["restarted"] = applied.get("restarted", [])
    say("restarted: " + (", ".join(report["restarted"]) or "nothing (every component reloaded its certificates)"))  # type: ignore[arg-type]
    endpoints = _serving_endpoints(pki, data_dir, running)
    serving = {}
    deadline = time.monotonic() + SERVE_TIMEOUT
    for name, (host, port) in endpoints.items():
        if name not in new:
            continue
        want = new[name]
        got = _wait_serving(name, host, port, pki, want, deadline)
        serving[name] = {"endpoint": f"{host}:{port}", "new": got}
        say(f"{name} on {host}:{port}: " + ("serves the new certificate" if got else "still serves the old one"))
    report["serving"] = serving
    _emit(report, as_json)
    stale = [n for n, v in serving.items() if not v["new"]]
    if stale:
        raise ComponentError(f"after {SERVE_TIMEOUT:.0f}s still serving the old certificate: {', '.join(stale)}")
    return 0


def _cert_row(cert: x509.Certificate) -> dict[str, str]:
    return {"serial": f"{cert.serial_number:x}", "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")}


def _emit(report: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=1))


def _local_server(pki: ClusterPKI) -> str | None:
    """The server admin.conf names (rewritten with the new admin certificate), or None."""
    from mke.errors import MkeError
    from mke.kubeapi import endpoint_from_kubeconfig

    try:
        return endpoint_from_kubeconfig(pki.kubeconfig("admin")).server
    except (MkeError, OSError):
        return None


def _wait_applied(data_dir: Path, after: str, before: str, since: float) -> dict[str, object] | None:
    """The running server's record of acting on the rotated files: the fingerprint they
    have, or (when something else changed the pki dir right after) a later one."""
    from mke.node.datadir import read_status

    deadline = time.monotonic() + APPLY_TIMEOUT
    while time.monotonic() < deadline:
        state = (read_status(data_dir) or {}).get("pki") or {}
        fp = state.get("fingerprint")
        if fp == after or (fp not in (None, before) and float(state.get("applied_at") or 0) >= since):
            return state
        time.sleep(0.5)
    return None


def _serving_endpoints(pki: ClusterPKI, data_dir: Path, running: dict[str, object]) -> dict[str, tuple[str, int]]:
    """Serving certificate -> where this controller serves it."""
    from mke.config import load_config, node_config
    from mke.pki import cert_sans, load_cert

    try:
        cfg = node_config(data_dir, None)
    except Exception:  # noqa: BLE001 - a config that no longer loads: the defaults' ports
        cfg = load_config(None)
    out = {"apiserver": ("127.0.0.1", cfg.api.port), "mke-api": ("127.0.0.1", cfg.api.mke_api_port),
           "konnectivity": ("127.0.0.1", cfg.konnectivity.agent_port)}
    if running.get("storage", cfg.storage.type) == "etcd":
        out["etcd/server"] = ("127.0.0.1", cfg.storage.etcd.client_port)
        # where etcd listens for peers: its peer address (the advertised address unless set);
        # not any address of the certificate, which names every address of the host (docker0 too)
        host = cfg.storage.etcd.peer_address or str(running.get("api_address") or "")
        if not host:
            peer = load_cert(pki.crt("etcd/peer"))
            ips = sorted(s[3:] for s in cert_sans(peer) if s.startswith("IP:")) if peer else []
            host = next((ip for ip in ips if ip not in ("127.0.0.1", "::1")), "")
        if host:
            out["etcd/peer"] = (host, cfg.storage.etcd.peer_port)
    return out


def served_certificate(host: str, port: int, *, client: tuple[Path, Path] | None = None,
                       timeout: float = 5.0) -> bytes | None:
    """The DER certificate the TLS server at host:port presents (not verified: compared by the caller)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if client is not None:
        ctx.load_cert_chain(str(client[0]), str(client[1]))
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=None) as tls:
            return tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None


def _wait_serving(name: str, host: str, port: int, pki: ClusterPKI, cert: x509.Certificate, deadline: float) -> bool:
    from cryptography.hazmat.primitives import serialization

    want = cert.public_bytes(serialization.Encoding.DER)
    # etcd asks every client for a certificate
    client = (pki.crt("etcd/client"), pki.key("etcd/client")) if name.startswith("etcd/") else None
    while True:
        if served_certificate(host, port, client=client) == want:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


