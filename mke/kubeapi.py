"""A small client for the Kubernetes API (and etcd's JSON gateway), on the standard library.

The runtime ships inside dist/mke, so it stays lean: ``http.client`` + ``ssl`` with
mutual TLS from a kubeconfig or from cert/key files. ``KubeClient`` knows just what
mke needs: get/list/create/delete, server-side apply (``application/apply-patch+yaml``
with ``fieldManager=mke``), and REST mapping of kinds by API discovery (cached).

Key material is never copied to a file: a kubeconfig's embedded client certificate and
key are handed to OpenSSL through an anonymous memory file (``memfd_create``, closed as
soon as OpenSSL has read it), and the resulting ``ssl.SSLContext`` is kept for the
process. A kubeconfig is parsed, and its TLS material loaded, once per process and again
only when the kubeconfig or a file it names changes (a renewed certificate), so the
loops that build a client every pass cost a few ``stat`` calls.

Every failure is a ``KubeAPIError`` with a one-line message.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import os
import ssl
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mke.errors import KubeAPIError

FIELD_MANAGER = "mke"


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """An HTTPS server plus the credentials to talk to it (files, or PEM bytes held in memory)."""

    server: str  # https://host:port
    ca_file: Path | None = None
    ca_data: bytes | None = field(default=None, repr=False)
    cert_file: Path | None = None
    key_file: Path | None = None
    cert_data: bytes | None = field(default=None, repr=False)
    key_data: bytes | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)
    source: str = ""  # where the credentials came from (a kubeconfig path), for messages

    def files(self) -> tuple[Path, ...]:
        """The files this endpoint's TLS material is read from."""
        return tuple(p for p in (self.ca_file, self.cert_file, self.key_file) if p is not None)

    def ssl_context(self) -> ssl.SSLContext:
        """The client context for this endpoint, loaded once per process (see ``TLS_CONTEXTS``)."""
        return TLS_CONTEXTS.get(self)


def _signature(paths: Iterable[Path]) -> tuple[tuple[int, int, int, int] | None, ...]:
    """What changes when a file is replaced or rewritten (renewal writes a new file and renames it)."""
    out: list[tuple[int, int, int, int] | None] = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def _load_chain_from_memory(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """``load_cert_chain`` from PEM bytes: through an anonymous memory file, never a file on disk."""
    fd = os.memfd_create("mke-tls", os.MFD_CLOEXEC)
    try:
        data = memoryview(cert_pem.rstrip(b"\n") + b"\n" + key_pem)
        while data:
            data = data[os.write(fd, data):]
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _load_context(ep: Endpoint) -> ssl.SSLContext:
    where = ep.source or ep.server
    current = where  # what is being loaded: named in the message
    try:
        if ep.ca_data is not None:
            ctx = ssl.create_default_context(cadata=ep.ca_data.decode("ascii"))
        elif ep.ca_file is not None:
            current = str(ep.ca_file)
            ctx = ssl.create_default_context(cafile=current)
        else:
            raise KubeAPIError(f"{where}: no certificate authority for {ep.server}")
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if ep.cert_data is not None or ep.key_data is not None:
            current = where if ep.cert_data is not None else str(ep.cert_file)
            cert = ep.cert_data if ep.cert_data is not None else Path(ep.cert_file or "").read_bytes()
            current = where if ep.key_data is not None else str(ep.key_file or ep.cert_file)
            key = ep.key_data if ep.key_data is not None else Path(ep.key_file or ep.cert_file or "").read_bytes()
            current = where
            _load_chain_from_memory(ctx, cert, key)
        elif ep.cert_file is not None:
            current = str(ep.cert_file) if ep.key_file is None else f"{ep.cert_file} or {ep.key_file}"
            ctx.load_cert_chain(str(ep.cert_file), str(ep.key_file) if ep.key_file else None)
    except (OSError, ssl.SSLError, ValueError) as e:
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise KubeAPIError(f"{current}: cannot load TLS material for {ep.server} ({' '.join(reason.split())}); "
                           "has mke server run on this host?") from e
    return ctx


class TLSContextCache:
    """One ``ssl.SSLContext`` per endpoint's credentials, reloaded only when a file it came from changes.

    An ``SSLContext`` is safe to share between threads. At most ``size`` are kept (the
    least recently used go first), so a credential that was replaced does not stay in
    memory for the life of the process.
    """

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self.loads = 0  # how many contexts were built (the tests count them)
        self._lock = threading.Lock()
        self._entries: OrderedDict[Endpoint, tuple[tuple[Any, ...], ssl.SSLContext]] = OrderedDict()

    def get(self, ep: Endpoint) -> ssl.SSLContext:
        sig = _signature(ep.files())
        with self._lock:
            hit = self._entries.get(ep)
            if hit is not None and hit[0] == sig:
                self._entries.move_to_end(ep)
                return hit[1]
            ctx = _load_context(ep)
            self.loads += 1
            self._entries[ep] = (sig, ctx)
            self._entries.move_to_end(ep)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
            return ctx

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


TLS_CONTEXTS = TLSContextCache()


class HTTPSClient:
    """Keeps one connection per thread; retries once on a dropped keep-alive connection."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = 10.0) -> None:
        self.endpoint = endpoint
        u = urllib.parse.urlsplit(endpoint.server)
        try:
            port = u.port
        except ValueError:
            port = -1
        if u.scheme != "https" or not u.hostname or port == -1:
            raise KubeAPIError(f"{endpoint.source or endpoint.server}: {endpoint.server!r} is not an "
                               "https://host[:port] URL")
        self.host, self.port = u.hostname, port or 443
        self.timeout = timeout
        self._ctx = endpoint.ssl_context()
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
        """(status, body); raises ``OSError``/``http.client.HTTPException`` when the server cannot be reached."""
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


class _KubeconfigCache:
    """Parsed kubeconfigs by path, parsed again only when the file changes."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[Path, tuple[Any, Endpoint]] = OrderedDict()

    def get(self, path: Path) -> Endpoint:
        path = Path(path).absolute()
        sig = _signature([path])
        with self._lock:
            hit = self._entries.get(path)
            if hit is not None and hit[0] == sig and sig[0] is not None:
                self._entries.move_to_end(path)
                return hit[1]
        ep = _parse_kubeconfig(path)
        with self._lock:
            self._entries[path] = (sig, ep)
            self._entries.move_to_end(path)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return ep


def _parse_kubeconfig(path: Path) -> Endpoint:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
        ctx_name = doc["current-context"]
        ctx = next(c["context"] for c in doc["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in doc["users"] if u["name"] == ctx["user"]) or {}
        server = cluster["server"]
        if not isinstance(server, str) or not isinstance(user, dict):
            raise TypeError("server or user is not a mapping/string")
    except OSError as e:
        raise KubeAPIError(f"{path}: cannot read the kubeconfig ({e.strerror}); has mke server run on this "
                           "host?") from e
    except (KeyError, StopIteration, TypeError, AttributeError, yaml.YAMLError) as e:
        reason = f"no {e}" if isinstance(e, KeyError) else ("no entry for the current context"
                                                           if isinstance(e, StopIteration) else str(e))
        raise KubeAPIError(f"{path}: not a usable kubeconfig ({' '.join(reason.split())})") from e

    def data(src: dict[str, Any], key: str) -> bytes | None:
        if key not in src:
            return None
        try:
            return base64.b64decode(src[key], validate=True)
        except (binascii.Error, TypeError, ValueError) as e:
            raise KubeAPIError(f"{path}: {key} is not valid base64") from e

    def file(src: dict[str, Any], key: str) -> Path | None:
        if key not in src:
            return None
        p = Path(str(src[key]))
        return p if p.is_absolute() else path.parent / p  # relative to the kubeconfig, as kubectl does

    ca_data, ca_file = data(cluster, "certificate-authority-data"), file(cluster, "certificate-authority")
    if ca_data is None and ca_file is None:
        raise KubeAPIError(f"{path}: the cluster has no certificate authority")
    return Endpoint(
        server=server, ca_file=None if ca_data is not None else ca_file, ca_data=ca_data,
        cert_data=data(user, "client-certificate-data"), key_data=data(user, "client-key-data"),
        cert_file=None if "client-certificate-data" in user else file(user, "client-certificate"),
        key_file=None if "client-key-data" in user else file(user, "client-key"),
        bearer_token=user.get("token"), source=str(path),
    )


KUBECONFIGS = _KubeconfigCache()


def endpoint_from_kubeconfig(path: Path) -> Endpoint:
    """An Endpoint for the current context of a kubeconfig with embedded or file credentials."""
    return KUBECONFIGS.get(path)


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

    def close(self) -> None:
        """Close this thread's connection (the TLS context stays cached)."""
        self.http.close()

    # -- raw

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        try:
            return self.http.request(method, path, body, headers)
        except ssl.SSLCertVerificationError as e:
            raise KubeAPIError(f"{method} {self.server}{path}: the server's certificate does not verify "
                               f"({e.verify_message})") from e
        except (OSError, http.client.HTTPException) as e:
            raise KubeAPIError(f"{method} {self.server}{path}: {_one_line(str(e) or type(e).__name__)}") from e

    def _json(self, method: str, path: str, data: bytes) -> Any:
        try:
            return json.loads(data)
        except ValueError as e:
            raise KubeAPIError(f"{method} {self.server}{path}: the answer is not JSON "
                               f"({_one_line(data[:80].decode(errors='replace'))!r})") from e

    def call(self, method: str, path: str, obj: Any = None, *, content_type: str = "application/json",
             ok: Iterable[int] = (200, 201, 202), raw_body: bytes | None = None) -> Any:
        body = raw_body if raw_body is not None else (json.dumps(obj).encode() if obj is not None else None)
        headers = {"Content-Type": content_type} if body is not None else {}
        status, data = self._request(method, path, body, headers)
        if status not in tuple(ok):
            raise KubeAPIError(f"{method} {self.server}{path}: HTTP {status}: {_status_message(data)}")
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return data.decode(errors="replace")

    def get_status(self, method: str, path: str) -> tuple[int, bytes]:
        """(status, body) without raising on HTTP errors; for health checks."""
        return self._request(method, path)

    def upgrade_probe(self, path: str) -> tuple[int, bytes]:
        """(status, body) of a GET that asks for a protocol upgrade: kube-apiserver's proxies
        (node proxy, exec, port-forward) dial a new backend connection for it, never a pooled
        one. The backend answers without upgrading; the connection is closed afterwards."""
        try:
            return self._request("GET", path, None, {"Connection": "Upgrade", "Upgrade": "websocket"})
        finally:
            self.close()

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
        status, data = self._request("GET", path)
        if status == 404:
            self._discovered.add(api_version)
            return
        if status != 200:
            raise KubeAPIError(f"GET {self.server}{path}: HTTP {status}: {_status_message(data)}")
        doc = self._json("GET", path, data)
        try:
            for r in doc.get("resources", []):
                if "/" in r["name"]:
                    continue  # subresource
                self._mapping[(api_version, r["kind"])] = Resource(api_version, r["name"], bool(r["namespaced"]))
        except (AttributeError, KeyError, TypeError) as e:
            raise KubeAPIError(f"GET {self.server}{path}: not an API resource list ({e!r})") from e
        self._discovered.add(api_version)

    def forget_discovery(self) -> None:
        self._mapping.clear()
        self._discovered.clear()

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        res = self.resource(api_version, kind)
        path = res.path(namespace, name)
        status, data = self._request("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise KubeAPIError(f"GET {self.server}{path}: HTTP {status}: {_status_message(data)}")
        return self._json("GET", path, data)

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str = "", field_selector: str = "") -> list[dict[str, Any]]:
        res = self.resource(api_version, kind)
        q = {k: v for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if v}
        path = res.path(namespace) + (f"?{urllib.parse.urlencode(q)}" if q else "")
        doc = self.call("GET", path)
        if not isinstance(doc, dict):
            raise KubeAPIError(f"GET {self.server}{path}: the answer is not a list object")
        return list(doc.get("items") or [])

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        res = self.resource(obj["apiVersion"], obj["kind"])
        ns = obj.get("metadata", {}).get("namespace") if res.namespaced else None
        return self.call("POST", res.path(ns), obj)

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
               uid: str | None = None) -> bool:
        """Delete an object; False when it is not there (or, with ``uid``, is another object by that
        name: the precondition makes the delete atomic, so of two callers only one gets True)."""
        res = self.resource(api_version, kind)
        path = res.path(namespace, name)
        body = json.dumps({"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}).encode() \
            if uid else None
        status, data = self._request("DELETE", path, body, {"Content-Type": "application/json"} if body else None)
        if status == 404 or (uid and status == 409):
            return False
        if status not in (200, 202):
            raise KubeAPIError(f"DELETE {self.server}{path}: HTTP {status}: {_status_message(data)}")
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

    def apply_unless_changed(self, obj: dict[str, Any]) -> bool:
        """Server-side apply with ``metadata.resourceVersion`` as its precondition: False when the
        object changed since that version (HTTP 409), so that a read-check-write is atomic."""
        res = self.resource(obj["apiVersion"], obj["kind"])
        meta = obj.get("metadata", {})
        ns = (meta.get("namespace") or "default") if res.namespaced else None
        q = urllib.parse.urlencode({"fieldManager": FIELD_MANAGER, "force": "true"})
        path = f"{res.path(ns, meta['name'])}?{q}"
        status, data = self._request("PATCH", path, json.dumps(obj).encode(),
                                     {"Content-Type": "application/apply-patch+yaml"})
        if status == 409:
            return False
        if status not in (200, 201):
            raise KubeAPIError(f"PATCH {self.server}{path}: HTTP {status}: {_status_message(data)}")
        return True

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
                last = _one_line(str(e) or type(e).__name__)
            if time.monotonic() > deadline:
                raise KubeAPIError(f"{self.server}{path} not ready after {timeout:.0f}s ({last})")
            time.sleep(interval)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _status_message(data: bytes) -> str:
    """The message of a Kubernetes ``Status`` answer (or the start of any other body), on one line."""
    try:
        doc = json.loads(data)
        text = str(doc.get("message") or doc) if isinstance(doc, dict) else str(doc)
    except ValueError:
        text = data[:200].decode(errors="replace")
    text = _one_line(text)
    return text if len(text) <= 400 else text[:400] + "..."
