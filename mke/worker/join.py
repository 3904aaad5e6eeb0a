"""Join: a worker token checked against the cluster before anything is written, and the
settings the cluster gives its workers.

``check_token`` decodes the token (malformed, expired and controller tokens fail here,
without touching the network), then asks the API at the token's address, over TLS
verified with the token's CA, who the bootstrap token is (a SelfSubjectReview):
- a TLS verification failure means the address serves another cluster;
- HTTP 401 means the cluster does not know the token (invalidated or expired);
- the identity must be in the worker bootstrap group.
Each failure is one ``TokenError`` line; nothing is written to disk, so a bad token
leaves nothing behind.

``WorkerSettings`` (cluster DNS address and domain, pod and service CIDRs, network
provider, sandbox image) come from the ConfigMap ``kube-system/mke-worker-config`` that
controllers apply (``mke.worker.manifests``); a worker caches the last copy in its data
dir and falls back to mke's defaults, with a warning, when neither is available.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from mke.errors import KubeAPIError, TokenError
from mke.tokens import GROUP_PREFIX, JoinToken, decode_token

WORKER_GROUP = f"{GROUP_PREFIX}worker"
SETTINGS_CONFIGMAP = "mke-worker-config"
SETTINGS_NAMESPACE = "kube-system"


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    cluster_dns: str
    cluster_domain: str
    pod_cidr: str
    service_cidr: str
    network_provider: str
    pause_image: str
    source: str = "defaults"  # where they came from: cluster | cache | defaults

    # ConfigMap data key -> field
    KEYS: ClassVar[dict[str, str]] = {
        "clusterDNS": "cluster_dns",
        "clusterDomain": "cluster_domain",
        "podCIDR": "pod_cidr",
        "serviceCIDR": "service_cidr",
        "networkProvider": "network_provider",
        "pauseImage": "pause_image",
    }

    @classmethod
    def from_config(cls, cfg: Any, source: str = "defaults") -> WorkerSettings:
        """From an mke ClusterConfig (what a controller publishes, and the fallback)."""
        return cls(
            cluster_dns=cfg.network.dns_service_ip,
            cluster_domain=cfg.network.cluster_domain,
            pod_cidr=cfg.network.pod_cidr,
            service_cidr=cfg.network.service_cidr,
            network_provider=cfg.network.provider,
            pause_image=cfg.images.ref("pause"),
            source=source,
        )

    @classmethod
    def defaults(cls) -> WorkerSettings:
        from mke.config import default_config

        return cls.from_config(default_config())

    def data(self) -> dict[str, str]:
        return {k: getattr(self, f) for k, f in self.KEYS.items()}

    @classmethod
    def from_data(cls, data: dict[str, str], source: str) -> WorkerSettings:
        base = cls.defaults()
        values = {f: data.get(k, getattr(base, f)) for k, f in cls.KEYS.items()}
        return cls(**values, source=source)

    def save(self, path: Path) -> None:
        from mke.node.files import write_file_atomic

        write_file_atomic(path, (json.dumps(self.data(), indent=1, sort_keys=True) + "\n").encode(), 0o600)

    @classmethod
    def load(cls, path: Path) -> WorkerSettings | None:
        try:
            return cls.from_data(json.loads(path.read_text()), "cache")
        except (OSError, ValueError, TypeError):
            return None


# --------------------------------------------------------------------------- talking to the API


class _TokenClient:
    """HTTPS with the token's CA (from memory, no file) and the bootstrap token as bearer."""

    def __init__(self, tok: JoinToken, timeout: float) -> None:
        import urllib.parse

        u = urllib.parse.urlsplit(tok.api_url)
        self.host, self.port = u.hostname or "", u.port or 443
        self.ctx = ssl.create_default_context(cadata=tok.ca_pem)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.token = tok.bootstrap_token
        self.timeout = timeout
        self.url = tok.api_url

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=self.timeout)
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json", "User-Agent": "mke-worker"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw.decode(errors="replace")


def check_token(text: str, *, now: Any = None, timeout: float = 5.0, attempts: int = 3,
                say: Callable[[str], None] | None = None) -> tuple[JoinToken, WorkerSettings | None]:
    """Decode ``text`` as a worker token and check it with the cluster; returns the token and,
    when the cluster publishes them, the worker settings. Raises TokenError (one line)."""
    tok = decode_token(text, role="worker", now=now)
    client = _TokenClient(tok, timeout)
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    last = ""
    for attempt in range(attempts):
        try:
            status, doc = client.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", review)
            break
        except ssl.SSLCertVerificationError as e:
            raise TokenError(f"the API at {tok.api_url} is not served with a certificate of the token's CA "
                             f"({e.verify_message}): the token is for another cluster") from None
        except (OSError, http.client.HTTPException) as e:
            last = f"{type(e).__name__}: {e}"
            if attempt + 1 < attempts:
                time.sleep(1.0 * (attempt + 1))
    else:
        raise TokenError(f"cannot reach the API at {tok.api_url} named by the token ({last}); "
                         "check that the controller runs and this host can reach it")
    if status == 401:
        raise TokenError(f"the cluster at {tok.api_url} does not accept token {tok.token_id}: it was invalidated "
                         "or has expired; create a new one with `mke token create --role=worker`")
    if status not in (200, 201):
        raise TokenError(f"the API at {tok.api_url} answered HTTP {status} to the token check: {_message(doc)}")
    groups = ((doc or {}).get("status", {}).get("userInfo", {}).get("groups") or [])
    if WORKER_GROUP not in groups:
        raise TokenError(f"token {tok.token_id} is not a worker token in this cluster (groups: {', '.join(groups)})")
    settings = None
    path = f"/api/v1/namespaces/{SETTINGS_NAMESPACE}/configmaps/{SETTINGS_CONFIGMAP}"
    try:
        status, doc = client.request("GET", path)
        if status == 200:
            settings = WorkerSettings.from_data(doc.get("data") or {}, "cluster")
        elif say:
            say(f"the cluster publishes no worker settings ({SETTINGS_NAMESPACE}/{SETTINGS_CONFIGMAP}: HTTP {status}); "
                "using mke's defaults")
    except (OSError, http.client.HTTPException) as e:
        if say:
            say(f"cannot read the worker settings ({e}); using mke's defaults")
    return tok, settings


def fetch_settings(kubeconfig: Path) -> WorkerSettings | None:
    """The worker settings read with the kubelet's own credentials (a worker that joined earlier)."""
    from mke.kubeapi import KubeClient

    try:
        client = KubeClient.from_kubeconfig(kubeconfig, timeout=5.0)
        cm = client.get("v1", "ConfigMap", SETTINGS_CONFIGMAP, SETTINGS_NAMESPACE)
    except (KubeAPIError, OSError, http.client.HTTPException):
        return None
    return WorkerSettings.from_data(cm.get("data") or {}, "cluster") if cm else None


def _message(doc: Any) -> str:
    if isinstance(doc, dict):
        return str(doc.get("message") or doc)
    return str(doc)[:200]


def write_ca(tok: JoinToken, path: Path) -> None:
    from mke.node.files import write_file_atomic

    write_file_atomic(path, tok.ca_pem.encode(), 0o644)


def bootstrap_kubeconfig(tok: JoinToken, ca_file: Path) -> str:
    """A kubeconfig that authenticates with the bootstrap token (kubelet's TLS bootstrap)."""
    import yaml

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "mke", "cluster": {"server": tok.api_url, "certificate-authority": str(ca_file)}}],
        "users": [{"name": "kubelet-bootstrap", "user": {"token": tok.bootstrap_token}}],
        "contexts": [{"name": "mke", "context": {"cluster": "mke", "user": "kubelet-bootstrap"}}],
        "current-context": "mke",
    }
    return yaml.safe_dump(doc, sort_keys=False)


def kubeconfig_server(path: Path) -> str | None:
    """The API server URL of a kubeconfig's current context."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
        ctx_name = doc["current-context"]
        ctx = next(c["context"] for c in doc["contexts"] if c["name"] == ctx_name)
        return next(c["cluster"]["server"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
    except (OSError, KeyError, StopIteration, TypeError, yaml.YAMLError):
        return None


def denied_client_csr(bootstrap_kubeconfig: Path, node_name: str, *, timeout: float = 5.0) -> str | None:
    """Why the cluster denied this node's client certificate, when it did (mke's csr-approver:
    a worker token used for another node, a node registered already), else None.

    Asked with the bootstrap token itself (``system:node-bootstrapper`` may list CSRs): the
    Denied CSRs that token made for ``node_name``. None as well when the question cannot be asked.
    """
    from mke.errors import MkeError
    from mke.kubeapi import KubeClient
    from mke.pkifiles import csr_facts  # in a helper: cryptography stays out of mke worker

    try:
        client = KubeClient.from_kubeconfig(bootstrap_kubeconfig, timeout=timeout)
    except MkeError:
        return None
    token_id = (client.http.endpoint.bearer_token or "").partition(".")[0]
    try:
        body = client.call("GET", "/apis/certificates.k8s.io/v1/certificatesigningrequests")
    except MkeError:
        return None
    finally:
        client.close()
    if not token_id or not isinstance(body, dict):
        return None
    denied: list[tuple[str, dict[str, Any]]] = []  # (request, its last Denied condition)
    for csr in body.get("items") or []:
        spec = csr.get("spec") or {}
        if spec.get("username") != f"system:bootstrap:{token_id}" or not isinstance(spec.get("request"), str):
            continue
        conditions = [c for c in (csr.get("status") or {}).get("conditions") or [] if c.get("type") == "Denied"]
        if conditions:
            denied.append((spec["request"], conditions[-1]))
    if not denied:
        return None
    try:
        facts = csr_facts([request for request, _ in denied])
    except MkeError:
        return None
    for (_, why), fact in zip(denied, facts, strict=True):
        if isinstance(fact, dict) and fact["cn"] == [f"system:node:{node_name}"]:
            return str(why.get("message") or why.get("reason") or "denied")
    return None
