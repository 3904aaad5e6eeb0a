"""A small client for the Kubernetes API (and etcd's JSON gateway), on the standard library.

The runtime ships inside dist/mke, so it stays lean: ``http.client`` + ``ssl`` with
mutual TLS from a kubeconfig or from cert/key files. ``KubeClient`` knows just what
mke needs: get/list/create/delete, server-side apply (``application/apply-patch+yaml``
with ``fieldManager=mke``), and REST mapping of kinds by API discovery (cached).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mke.errors import KubeAPIError

FIELD_MANAGER = "mke"


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """An HTTPS server plus the credentials to talk to it."""

    server: str  # https://host:port
    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    bearer_token: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None:
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
        return ctx


class HTTPSClient:
    """Keeps one connection per thread; retries once on a dropped keep-alive connection."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = 10.0) -> None:
        self.endpoint = endpoint
        u = urllib.parse.urlsplit(endpoint.server)
        if u.scheme != "https" or not u.hostname:
            raise KubeAPIError(f"{endpoint.server}: expected an https:// URL")
        self.host, self.port = u.hostname, u.port or 443
        self.timeout = timeout
        try:
            self._ctx = endpoint.ssl_context()
        except (OSError, ssl.SSLError) as e:
            raise KubeAPIError(f"{getattr(e, 'filename', None) or endpoint.ca_file}: cannot load TLS material "
                               f"for {endpoint.server} ({getattr(e, 'strerror', None) or e}); has mke server run "
                               "on this host?") from e
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPSConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection(self.host, self.port, context=self._ctx, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        hdrs = {"Accept": "application/json", "User-Agent": "mke"}
        if self.endpoint.bearer_token:
            hdrs["Authorization"] = f"Bearer {self.endpoint.bearer_token}"
        hdrs.update(headers or {})
        for attempt in (0, 1):
            conn = self._conn()
            try:
                conn.request(method, path, body=body, headers=hdrs)
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
                    http.client.CannotSendRequest, http.client.ResponseNotReady):
                self.close()
                if attempt:
                    raise
            except (OSError, http.client.HTTPException):
                self.close()
                raise
        raise AssertionError("unreachable")


def endpoint_from_kubeconfig(path: Path) -> Endpoint:
    """An Endpoint for the current context of a kubeconfig with embedded or file credentials."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text())
        ctx_name = doc["current-context"]
        ctx = next(c["context"] for c in doc["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in doc["users"] if u["name"] == ctx["user"])
    except (OSError, KeyError, StopIteration, TypeError, yaml.YAMLError) as e:
        raise KubeAPIError(f"{path}: not a usable kubeconfig ({e})") from e
    tmpdir = Path(tempfile.mkdtemp(prefix="mke-kubeconfig-"))
    os.chmod(tmpdir, 0o700)

    def material(data_key: str, file_key: str, src: dict[str, Any], name: str) -> Path | None:
        if data_key in src:
            p = tmpdir / name
            p.write_bytes(base64.b64decode(src[data_key]))
            os.chmod(p, 0o600)
            return p
        if file_key in src:
            return Path(src[file_key])
        return None

    ca = material("certificate-authority-data", "certificate-authority", cluster, "ca.crt")
    if ca is None:
        raise KubeAPIError(f"{path}: the cluster has no certificate authority")
    return Endpoint(
        server=cluster["server"],
        ca_file=ca,
        cert_file=material("client-certificate-data", "client-certificate", user, "client.crt"),
        key_file=material("client-key-data", "client-key", user, "client.key"),
        bearer_token=user.get("token"),
    )


@dataclass(frozen=True)
class Resource:
    group_version: str  # "v1" or "apps/v1"
    plural: str
    namespaced: bool

    def path(self, namespace: str | None, name: str | None = None) -> str:
        base = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        p = f"{base}/namespaces/{namespace}/{self.plural}" if self.namespaced else f"{base}/{self.plural}"
        return f"{p}/{urllib.parse.quote(name)}" if name else p


class KubeClient:
    def __init__(self, endpoint: Endpoint, *, timeout: float = 10.0) -> None:
        self.http = HTTPSClient(endpoint, timeout=timeout)
        self._mapping: dict[tuple[str, str], Resource] = {}
        self._discovered: set[str] = set()

    @classmethod
    def from_kubeconfig(cls, path: Path, **kw: Any) -> KubeClient:
        return cls(endpoint_from_kubeconfig(path), **kw)

    @property
    def server(self) -> str:
        return self.http.endpoint.server

    # -- raw

    def call(self, method: str, path: str, obj: Any = None, *, content_type: str = "application/json",
             ok: Iterable[int] = (200, 201, 202), raw_body: bytes | None = None) -> Any:
        body = raw_body if raw_body is not None else (json.dumps(obj).encode() if obj is not None else None)
        headers = {"Content-Type": content_type} if body is not None else {}
        try:
            status, data = self.http.request(method, path, body, headers)
        except (OSError, http.client.HTTPException) as e:
            raise KubeAPIError(f"{self.server}{path}: {e}") from e
        if status not in tuple(ok):
            raise KubeAPIError(f"{method} {self.server}{path}: HTTP {status}: {_status_message(data)}", ) from None
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return data.decode(errors="replace")

    def get_status(self, method: str, path: str) -> tuple[int, bytes]:
        """(status, body) without raising on HTTP errors; for health checks."""
        return self.http.request(method, path)

    # -- discovery and typed helpers

    def resource(self, api_version: str, kind: str) -> Resource:
        key = (api_version, kind)
        if key not in self._mapping:
            self._discover(api_version, force=api_version in self._discovered)
        if key not in self._mapping:
            raise KubeAPIError(f"{self.server}: the API has no kind {kind} in {api_version}")
        return self._mapping[key]

    def _discover(self, api_version: str, *, force: bool = False) -> None:
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        status, data = self.http.request("GET", path)
        if status == 404:
            self._discovered.add(api_version)
            return
        if status != 200:
            raise KubeAPIError(f"GET {self.server}{path}: HTTP {status}: {_status_message(data)}")
        for r in json.loads(data).get("resources", []):
            if "/" in r["name"]:
                continue  # subresource
            self._mapping[(api_version, r["kind"])] = Resource(api_version, r["name"], r["namespaced"])
        self._discovered.add(api_version)

    def forget_discovery(self) -> None:
        self._mapping.clear()
        self._discovered.clear()

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        res = self.resource(api_version, kind)
        status, data = self.http.request("GET", res.path(namespace, name))
        if status == 404:
            return None
        if status != 200:
            raise KubeAPIError(f"GET {res.path(namespace, name)}: HTTP {status}: {_status_message(data)}")
        return json.loads(data)

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str = "", field_selector: str = "") -> list[dict[str, Any]]:
        res = self.resource(api_version, kind)
        q = {k: v for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if v}
        path = res.path(namespace) + (f"?{urllib.parse.urlencode(q)}" if q else "")
        return list(self.call("GET", path).get("items", []))

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        res = self.resource(obj["apiVersion"], obj["kind"])
        ns = obj.get("metadata", {}).get("namespace") if res.namespaced else None
        return self.call("POST", res.path(ns), obj)

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        res = self.resource(api_version, kind)
        status, data = self.http.request("DELETE", res.path(namespace, name))
        if status == 404:
            return False
        if status not in (200, 202):
            raise KubeAPIError(f"DELETE {res.path(namespace, name)}: HTTP {status}: {_status_message(data)}")
        return True

    def apply(self, obj: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        """Server-side apply of one object (fieldManager=mke)."""
        try:
            res = self.resource(obj["apiVersion"], obj["kind"])
        except KubeAPIError:
            # A kind from a CRD applied a moment ago: discovery may lag; look again.
            self._discovered.discard(obj["apiVersion"])
            res = self.resource(obj["apiVersion"], obj["kind"])
        meta = obj.get("metadata", {})
        ns = (meta.get("namespace") or "default") if res.namespaced else None
        q = urllib.parse.urlencode({"fieldManager": FIELD_MANAGER, "force": "true" if force else "false"})
        return self.call("PATCH", f"{res.path(ns, meta['name'])}?{q}", raw_body=json.dumps(obj).encode(),
                         content_type="application/apply-patch+yaml")

    def wait_ready(self, timeout: float, *, path: str = "/readyz", interval: float = 0.1) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            try:
                status, data = self.http.request("GET", path)
                if status == 200:
                    return
                last = f"HTTP {status}"
            except (OSError, http.client.HTTPException) as e:
                self.http.close()
                last = str(e)
            if time.monotonic() > deadline:
                raise KubeAPIError(f"{self.server}{path} not ready after {timeout:.0f}s ({last})")
            time.sleep(interval)


def _status_message(data: bytes) -> str:
    try:
        doc = json.loads(data)
        return str(doc.get("message") or doc)
    except ValueError:
        return data[:200].decode(errors="replace")
