"""Loopback HTTPS stand-ins for kube-apiserver and etcd's gRPC-gateway JSON API.

The unit tests of mke's API clients (mke/kubeapi.py, mke/etcdapi.py) and of the join
API (mke/join.py, mke/components/mke_api.py) cannot run the real servers: those are the
embedded binaries, exercised by tests/integration/test_server*.py. These serve real
HTTPS with mutual TLS on 127.0.0.1, with certificates made by mke/pki.py's ClusterPKI,
and answer the few requests mke makes in the shapes the real servers use (Kubernetes
``Status`` objects for errors, API discovery lists, the gateway's string-encoded uint64
member IDs and ``{"error", "code", "message"}`` errors). They check what the real ones
check: the client certificate's CA, the bearer token, server-side apply's field manager.

Every request is recorded (method, path, query, headers, body, the client's certificate
subject) so a test can assert what the client sent.
"""

from __future__ import annotations

import base64
import copy
import http.server
import json
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    client_cn: str | None  # the client certificate's common name, None without one
    client_orgs: tuple[str, ...] = ()
    client_serial: str | None = None


class TLSServer:
    """A ThreadingHTTPServer on 127.0.0.1 with a free port, TLS added by ``serve``.

    The port is bound at construction, so certificates and kubeconfigs that name it can
    be made before the server starts answering.
    """

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.standin = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.seen: list[Seen] = []
        self._thread: threading.Thread | None = None

    def serve(self, *, cert: Path, key: Path, client_ca: Path | None, require_client_cert: bool = True) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        if client_ca is not None:
            ctx.load_verify_locations(cafile=str(client_ca))
            ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"standin-{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.httpd.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real servers

    def log_message(self, *args: Any) -> None:
        pass

    @property
    def standin(self) -> Any:
        return self.server.standin  # type: ignore[attr-defined]

    def _record(self) -> Seen:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        u = urllib.parse.urlsplit(self.path)
        cn, orgs, serial = None, (), None
        peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        if peer:
            subject = [rdn for rdns in peer.get("subject", ()) for rdn in rdns]
            cn = next((v for k, v in subject if k == "commonName"), None)
            orgs = tuple(v for k, v in subject if k == "organizationName")
            serial = peer.get("serialNumber")
        seen = Seen(self.command, u.path, urllib.parse.parse_qs(u.query), dict(self.headers.items()), body, cn, orgs,
                    serial)
        self.standin.seen.append(seen)
        return seen

    def send_json(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        self.send_raw(status, json.dumps(doc).encode(), "application/json", headers)

    def send_raw(self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self) -> None:
        seen = self._record()
        fault = self.standin.next_fault(seen)
        if fault is not None:
            status, data, content_type = fault
            if status == 0:  # drop the connection without an answer (a keep-alive the server closed)
                self.close_connection = True
                self.connection.close()
                return None
            return self.send_raw(status, data, content_type)
        self.standin.answer(self, seen)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch


class _StandIn(TLSServer):
    def __init__(self) -> None:
        super().__init__(_Handler)
        self._faults: list[tuple[Callable[[Seen], bool], int, bytes, str]] = []
        self.lock = threading.Lock()

    def fail(self, status: int, body: bytes | dict[str, Any], *, when: Callable[[Seen], bool] = lambda s: True,
             times: int = 1, content_type: str | None = None) -> None:
        """Answer the next ``times`` requests that match ``when`` with this status and body (0: close
        the connection without answering)."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        ctype = content_type or ("application/json" if isinstance(body, dict) else "text/plain")
        for _ in range(times):
            self._faults.append((when, status, data, ctype))

    def next_fault(self, seen: Seen) -> tuple[int, bytes, str] | None:
        with self.lock:
            for i, (when, status, data, ctype) in enumerate(self._faults):
                if when(seen):
                    del self._faults[i]
                    return status, data, ctype
        return None

    def answer(self, h: _Handler, seen: Seen) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------- kube-apiserver


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    """A Kubernetes ``Status`` object, as the apiserver answers errors."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


# group/version -> [(kind, plural, namespaced)]; a "plural/sub" entry is a subresource
RESOURCES: dict[str, list[tuple[str, str, bool]]] = {
    "v1": [("Secret", "secrets", True), ("ConfigMap", "configmaps", True), ("Namespace", "namespaces", False),
           ("Node", "nodes", False), ("Node", "nodes/status", False)],
    "apps/v1": [("Deployment", "deployments", True), ("Deployment", "deployments/status", True)],
}


class KubeAPIStandIn(_StandIn):
    """kube-apiserver's REST API for the kinds in ``RESOURCES``: discovery, get, list (label and
    field selectors on equality), create, server-side apply, delete, and ``/readyz``.

    Authentication as the real server: a client certificate of ``client_ca`` or a bearer
    token in ``tokens``; anything else is 401.
    """

    def __init__(self) -> None:
        super().__init__()
        self.objects: dict[str, dict[str, Any]] = {}  # object path -> object
        self.resources = copy.deepcopy(RESOURCES)  # a test adds a group or kind (a CRD) here
        self.tokens: set[str] = set()
        self._rv = 0

    # -- the store

    @staticmethod
    def _route(path: str) -> tuple[str, str, str | None, str | None] | None:
        """(group/version, plural, namespace, name) of a resource path, or None."""
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            gv, rest = "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            gv, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            return None
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            ns, rest = rest[1], rest[2:]
        if not rest or len(rest) > 2:
            return None
        return gv, rest[0], ns, (urllib.parse.unquote(rest[1]) if len(rest) == 2 else None)

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store ``obj`` as the apiserver would (stringData folded into base64 data)."""
        obj = copy.deepcopy(obj)
        gv, kind = obj["apiVersion"], obj["kind"]
        plural, namespaced = next((p, n) for k, p, n in self.resources[gv] if k == kind and "/" not in p)
        meta = obj.setdefault("metadata", {})
        if namespaced:
            meta.setdefault("namespace", "default")
        if kind == "Secret" and "stringData" in obj:
            data = obj.setdefault("data", {})
            for k, v in obj.pop("stringData").items():
                data[k] = base64.b64encode(v.encode()).decode()
        with self.lock:
            self._rv += 1
            meta["resourceVersion"] = str(self._rv)
            meta.setdefault("uid", f"uid-{self._rv}")
            self.objects[self.object_path(gv, plural, meta.get("namespace") if namespaced else None,
                                          meta["name"])] = obj
        return obj

    @staticmethod
    def object_path(gv: str, plural: str, ns: str | None, name: str) -> str:
        base = "/api/v1" if gv == "v1" else f"/apis/{gv}"
        return f"{base}/namespaces/{ns}/{plural}/{name}" if ns else f"{base}/{plural}/{name}"

    # -- answering

    def _authenticated(self, h: _Handler, seen: Seen) -> bool:
        if seen.client_cn is not None:
            return True
        auth = seen.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.tokens

    def answer(self, h: _Handler, seen: Seen) -> None:
        if not self._authenticated(h, seen):
            return h.send_json(401, status(401, "Unauthorized", "Unauthorized"))
        if seen.path in ("/readyz", "/healthz", "/livez"):
            return h.send_raw(200, b"ok", "text/plain")
        if seen.path == "/api/v1" or (seen.path.startswith("/apis/") and seen.path.count("/") == 3):
            gv = "v1" if seen.path == "/api/v1" else seen.path[len("/apis/"):]
            if gv not in self.resources:
                return h.send_json(404, status(404, "NotFound", "the server could not find the requested resource"))
            return h.send_json(200, {"kind": "APIResourceList", "groupVersion": gv, "resources": [
                {"name": p, "kind": k, "namespaced": n, "verbs": ["get", "list", "create", "patch", "delete"]}
                for k, p, n in self.resources[gv]]})
        route = self._route(seen.path)
        if route is None or route[0] not in self.resources or \
                route[1] not in [p for _, p, _ in self.resources[route[0]]]:
            return h.send_json(404, status(404, "NotFound", "the server could not find the requested resource"))
        gv, plural, ns, name = route
        kind = next(k for k, p, _ in self.resources[gv] if p == plural)
        if name is None:
            return self._collection(h, seen, gv, kind, plural, ns)
        path = self.object_path(gv, plural, ns, name)
        with self.lock:
            current = copy.deepcopy(self.objects.get(path))
        if seen.method == "GET":
            if current is None:
                return h.send_json(404, status(404, "NotFound", f'{plural} "{name}" not found'))
            return h.send_json(200, current)
        if seen.method == "DELETE":
            want_uid = ((json.loads(seen.body) if seen.body else {}).get("preconditions") or {}).get("uid")
            with self.lock:
                here = self.objects.get(path)
                if here is not None and want_uid and here["metadata"].get("uid") != want_uid:
                    return h.send_json(409, status(409, "Conflict", "Precondition failed: UID in precondition: "
                                                   f"{want_uid}, UID in object meta: {here['metadata'].get('uid')}"))
                gone = self.objects.pop(path, None)
            if gone is None:
                return h.send_json(404, status(404, "NotFound", f'{plural} "{name}" not found'))
            return h.send_json(200, status(200, "", "") | {"status": "Success"})
        if seen.method == "PATCH":
            if seen.headers.get("Content-Type") != "application/apply-patch+yaml":
                return h.send_json(415, status(415, "UnsupportedMediaType", "unsupported patch type"))
            if not seen.query.get("fieldManager"):
                return h.send_json(422, status(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: "
                                                "fieldManager: Required value: is required for apply patch"))
            obj = json.loads(seen.body)
            want_rv = (obj.get("metadata") or {}).get("resourceVersion")
            if current is not None and want_rv and current["metadata"].get("resourceVersion") != want_rv:
                return h.send_json(409, status(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": '
                                                "the object has been modified; please apply your changes to the "
                                                "latest version and try again"))
            if current is not None:
                merged = current | {k: v for k, v in obj.items() if k != "metadata"}
                merged["metadata"] = current["metadata"] | obj.get("metadata", {})
                obj = merged
            return h.send_json(200 if current is not None else 201, self.put(obj))
        return h.send_json(405, status(405, "MethodNotAllowed", "the server does not allow this method"))

    def _collection(self, h: _Handler, seen: Seen, gv: str, kind: str, plural: str, ns: str | None) -> None:
        if seen.method == "POST":
            try:
                obj = json.loads(seen.body)
                name = obj["metadata"]["name"]
            except (ValueError, KeyError, TypeError):
                return h.send_json(400, status(400, "BadRequest", "the object has no metadata.name"))
            if ns is not None:
                obj["metadata"]["namespace"] = ns
            if self.object_path(gv, plural, ns, name) in self.objects:
                return h.send_json(409, status(409, "AlreadyExists", f'{plural} "{name}" already exists'))
            return h.send_json(201, self.put(obj))
        if seen.method != "GET":
            return h.send_json(405, status(405, "MethodNotAllowed", "the server does not allow this method"))
        labels = dict(s.split("=", 1) for s in (seen.query.get("labelSelector", [""])[0].split(",")) if s)
        fields = dict(s.split("=", 1) for s in (seen.query.get("fieldSelector", [""])[0].split(",")) if s)
        prefix = self.object_path(gv, plural, ns, "") if ns else None
        with self.lock:
            items = [copy.deepcopy(o) for p, o in self.objects.items()
                     if (p.startswith(prefix) if prefix else p.rsplit("/", 1)[0].endswith(f"/{plural}"))
                     and o["kind"] == kind]
        items = [o for o in items
                 if all(o["metadata"].get("labels", {}).get(k) == v for k, v in labels.items())
                 and all(o.get(k) == v for k, v in fields.items())]
        h.send_json(200, {"kind": f"{kind}List", "apiVersion": gv, "metadata": {"resourceVersion": str(self._rv)},
                          "items": items})


# ---------------------------------------------------------------- etcd's gRPC gateway


def grpc_error(code: int, message: str) -> dict[str, Any]:
    """The gateway's error body (grpc status code + message)."""
    return {"error": message, "code": code, "message": message}


@dataclass
class EtcdMember:
    id: int
    name: str
    peer_urls: list[str]
    client_urls: list[str] = field(default_factory=list)
    learner: bool = False

    def doc(self) -> dict[str, Any]:
        d: dict[str, Any] = {"ID": str(self.id), "name": self.name, "peerURLs": self.peer_urls,
                             "clientURLs": self.client_urls}
        if self.learner:
            d["isLearner"] = True
        return d


class EtcdGatewayStandIn(_StandIn):
    """etcd's ``/v3/cluster/member/{list,add,promote,remove}`` over its JSON gateway.

    ``unhealthy`` answers that many adds with 503 "unhealthy cluster" (as etcd right
    after a member joined); ``unsynced`` refuses that many promotions of a learner that
    has not caught up; etcd allows one learner at a time.
    """

    def __init__(self) -> None:
        super().__init__()
        self.members: list[EtcdMember] = [EtcdMember(0x1111, "ctl-1", ["https://192.0.2.10:2380"],
                                                     ["https://127.0.0.1:2379"])]
        self.unhealthy = 0
        self.unsynced = 0
        self._next_id = 0x8e9e05c52164694d

    def _header(self) -> dict[str, Any]:
        return {"cluster_id": "14841639068965178418", "member_id": str(self.members[0].id), "raft_term": "2"}

    def answer(self, h: _Handler, seen: Seen) -> None:
        if seen.method != "POST":
            return h.send_json(405, grpc_error(12, "Method Not Allowed"))
        try:
            req = json.loads(seen.body or b"{}")
        except ValueError:
            return h.send_json(400, grpc_error(3, "invalid character in request body"))
        op = seen.path.removeprefix("/v3/cluster/member/")
        with self.lock:
            if op == "list":
                return h.send_json(200, {"header": self._header(), "members": [m.doc() for m in self.members]})
            if op == "add":
                if self.unhealthy:
                    self.unhealthy -= 1
                    return h.send_json(503, grpc_error(14, "etcdserver: unhealthy cluster"))
                if req.get("isLearner") and any(m.learner for m in self.members):
                    return h.send_json(400, grpc_error(9, "etcdserver: too many learner members in cluster"))
                urls = list(req.get("peerURLs") or [])
                if any(u in m.peer_urls for m in self.members for u in urls):
                    return h.send_json(400, grpc_error(9, "etcdserver: Peer URLs already exists"))
                self._next_id += 1
                new = EtcdMember(self._next_id, "", urls, learner=bool(req.get("isLearner")))
                self.members.append(new)
                return h.send_json(200, {"header": self._header(), "member": new.doc(),
                                         "members": [m.doc() for m in self.members]})
            member = next((m for m in self.members if str(m.id) == str(req.get("ID"))), None)
            if op == "promote":
                if member is None:
                    return h.send_json(404, grpc_error(5, "etcdserver: member not found"))
                if not member.learner:
                    return h.send_json(400, grpc_error(9, "etcdserver: can only promote a learner member"))
                if self.unsynced:
                    self.unsynced -= 1
                    return h.send_json(400, grpc_error(
                        9, "etcdserver: can only promote a learner member which is in sync with leader"))
                member.learner = False
                return h.send_json(200, {"header": self._header(), "members": [m.doc() for m in self.members]})
            if op == "remove":
                if member is None:
                    return h.send_json(404, grpc_error(5, "etcdserver: member not found"))
                self.members.remove(member)
                return h.send_json(200, {"header": self._header(), "members": [m.doc() for m in self.members]})
        h.send_json(404, grpc_error(5, "Not Found"))


def silent_listener() -> tuple[socket.socket, int]:
    """A TCP port on 127.0.0.1 that accepts connections (the kernel's backlog) and never answers."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s, s.getsockname()[1]
