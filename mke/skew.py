"""Kubernetes' version-skew rules, checked before a node starts a new version
(https://kubernetes.io/releases/version-skew-policy/; docs/upgrade.md):

- a kubelet must not be newer than kube-apiserver, and at most 3 minor versions older;
- kube-apiserver instances of one cluster are at most 1 minor version apart, so a
  controller moves one minor version at a time (no skipping) and never back a minor
  version (the storage versions it wrote may not be readable by the older one).

Each check returns the one-line reason a start is refused, or None. Versions are read
from the payload's manifest (what this mke file carries) or, with ``--bin-dir``, from the
binary itself; the cluster's from ``GET /version`` (public: ``system:public-info-viewer``).
"""

from __future__ import annotations

import json
import re
import ssl
from pathlib import Path

from mke.node.files import write_file_atomic

KUBELET_MAX_BEHIND = 3
VERSION_RE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")
# The Kubernetes version this data dir's control plane last ran, written once it was ready.
RECORD = "kubernetes-version"


def parse(version: str) -> tuple[int, int, int] | None:
    m = VERSION_RE.search(version or "")
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def kubelet_problem(kubelet: str, apiserver: str) -> str | None:
    k, a = parse(kubelet), parse(apiserver)
    if k is None or a is None:
        return None
    if k[:2] > a[:2]:
        return (f"this mke's kubelet v{'.'.join(map(str, k))} is newer than the cluster's kube-apiserver "
                f"v{'.'.join(map(str, a))}: upgrade the controllers first, then the workers (docs/upgrade.md)")
    if a[0] == k[0] and a[1] - k[1] > KUBELET_MAX_BEHIND:
        return (f"this mke's kubelet v{'.'.join(map(str, k))} is more than {KUBELET_MAX_BEHIND} minor versions "
                f"older than the cluster's kube-apiserver v{'.'.join(map(str, a))}: use an mke file of at least "
                f"v{a[0]}.{a[1] - KUBELET_MAX_BEHIND} on this node (docs/upgrade.md)")
    return None


def controller_problem(new: str, previous: str, *, what: str) -> str | None:
    """``new``: this mke's kube-apiserver; ``previous``: what ``what`` runs (this data dir's
    last version, or the cluster's kube-apiserver a joining controller talks to)."""
    n, p = parse(new), parse(previous)
    if n is None or p is None or n[0] != p[0]:
        return None
    if n[1] > p[1] + 1:
        return (f"this mke's Kubernetes v{'.'.join(map(str, n))} is more than one minor version newer than "
                f"{what} (v{'.'.join(map(str, p))}): upgrade one minor version at a time, with an mke file of "
                f"v{p[0]}.{p[1] + 1} first (docs/upgrade.md)")
    if n[1] < p[1] - 1 or (n[1] < p[1] and what.startswith("this data dir")):
        return (f"this mke's Kubernetes v{'.'.join(map(str, n))} is older than {what} "
                f"(v{'.'.join(map(str, p))}): Kubernetes does not go back a minor version; use an mke file of "
                f"v{p[0]}.{p[1]} or newer (docs/upgrade.md)")
    return None


def apiserver_version(api_url: str, ca_pem: str, *, timeout: float = 10.0) -> str:
    """The cluster's ``gitVersion`` (``GET /version``); OSError/ValueError when it cannot be read."""
    import http.client
    import urllib.parse

    u = urllib.parse.urlsplit(api_url)
    ctx = ssl.create_default_context(cadata=ca_pem)
    conn = http.client.HTTPSConnection(u.hostname or "", u.port or 443, context=ctx, timeout=timeout)
    try:
        conn.request("GET", "/version", headers={"Accept": "application/json", "User-Agent": "mke"})
        resp = conn.getresponse()
        body = resp.read(65536)
        if resp.status != 200:
            raise ValueError(f"GET {api_url}/version: HTTP {resp.status}")
        version = json.loads(body).get("gitVersion", "")
        if not parse(version):
            raise ValueError(f"GET {api_url}/version: no version in the answer")
        return version
    finally:
        conn.close()


def recorded(data_dir: Path) -> str | None:
    try:
        text = (data_dir / RECORD).read_text().strip()
    except OSError:
        return None
    return text if parse(text) else None


def record(data_dir: Path, version: str) -> None:
    if parse(version) and recorded(data_dir) != version:
        write_file_atomic(data_dir / RECORD, f"{version}\n".encode(), 0o600)


def payload_versions() -> dict[str, str]:
    """{binary: version} as the running payload's manifest records them; {} without a payload
    (run from the repository) or when it cannot be read."""
    try:
        from mke.payload_format import running_payload

        payload = running_payload()
    except Exception:  # noqa: BLE001 - versions are informational; the binaries can be asked
        return {}
    return {b.name: b.version for b in payload.manifest.binaries if b.version} if payload is not None else {}


def binary_version(path: Path, *, timeout: float) -> str | None:
    """The first ``[v]X.Y.Z`` that ``path --version`` prints, None when it cannot tell."""
    import subprocess

    from mke.procenv import clean_env

    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=timeout,
                             env=clean_env()).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = VERSION_RE.search(out)
    return m.group(0) if m else None


def embedded_version(binary: str, bin_dir: Path | None = None) -> str | None:
    """The version of ``binary`` this mke carries (payload manifest), else ``bin_dir/binary --version``."""
    version = payload_versions().get(binary)
    if version is None and bin_dir is not None:
        version = binary_version(bin_dir / binary, timeout=10)
    return version


def _cluster_version(api_url: str, ca_pem: str, say) -> str | None:
    """The cluster's kube-apiserver version; None (said, when ``say``) when it cannot be asked."""
    try:
        return apiserver_version(api_url, ca_pem)
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
        if say:
            say(f"cannot read the cluster's Kubernetes version ({' '.join(str(e).split())[:160]}); "
                f"version skew not checked")
        return None


def check_kubelet(api_url: str, ca_pem: str, bin_dir: Path | None, say) -> None:
    """Refuse (VersionSkewError) a kubelet newer than the cluster, or too old; a cluster that
    cannot be asked is said and not checked (a worker must start while its controllers are down)."""
    from mke.errors import VersionSkewError

    kubelet = embedded_version("kubelet", bin_dir)
    if kubelet is None or not ca_pem:
        return
    cluster = _cluster_version(api_url, ca_pem, say)
    if cluster is None:
        return
    problem = kubelet_problem(kubelet, cluster)
    if problem:
        raise VersionSkewError(problem)


def check_controller(data_dir: Path, bin_dir: Path | None, *, api_url: str = "", ca_pem: str = "", say=None) -> str | None:
    """Refuse (VersionSkewError) a control plane that skips a minor version or goes back one,
    against what this data dir ran and, for a joining controller (``api_url``), against the
    cluster's kube-apiserver. Returns this mke's version (recorded once it is ready)."""
    from mke.errors import VersionSkewError

    new = embedded_version("kube-apiserver", bin_dir)
    if new is None:
        return None
    previous = recorded(data_dir)
    if previous:
        problem = controller_problem(new, previous, what=f"this data dir's control plane ({data_dir / RECORD})")
        if problem:
            raise VersionSkewError(problem)
    cluster = _cluster_version(api_url, ca_pem, say) if api_url else None
    if cluster is not None:
        problem = controller_problem(new, cluster, what=f"the cluster's kube-apiserver at {api_url}")
        if problem:
            raise VersionSkewError(problem)
    return new
