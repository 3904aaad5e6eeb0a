"""mke's own API on the controllers (``api.mkeAPIPort``, TLS with the ``mke-api`` cert).

One call: ``POST /v1/join/controller`` with ``Authorization: Bearer <id>.<secret>`` (a
controller token, checked against its bootstrap-token secret: stored, unexpired,
controller role) and ``{"name": ..., "peer_address": ...}``. The answer carries what a
new controller needs and cannot make itself: the three CAs (with keys), the
service-account key pair, the cluster config, and what the storage backend adds
(``StorageBackend.admit_controller``: etcd adds the new member as a learner, promoted
once it caught up, so a joining host that never starts cannot break a 1-member cluster's
quorum, and answers the member list; a single-host SQLite store refuses).
"""

from __future__ import annotations

import base64
import http.server
import json
import ssl
import threading
from typing import Any

from mke import storage
from mke.components.base import Component
from mke.components.context import ControllerContext
from mke.errors import MkeError, TokenError

SHARED_FILES = ("ca.crt", "ca.key", "front-proxy-ca.crt", "front-proxy-ca.key", "etcd/ca.crt", "etcd/ca.key",
                "sa.key", "sa.pub")
MAX_BODY = 64 * 1024


class MkeAPI(Component):
    name = "mke-api"

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.joined: list[str] = []

    # -- the handler's work

    def join_controller(self, bearer: str, body: dict[str, Any]) -> dict[str, Any]:
        from mke.config import config_to_dict
        from mke.kubeapi import KubeClient
        from mke.tokens import TokenStore

        tok_id, _, secret = bearer.partition(".")
        name, peer = str(body.get("name", "")), str(body.get("peer_address", ""))
        if not name or not peer:
            raise TokenError("the join request needs name and peer_address")
        client = KubeClient.from_kubeconfig(self.ctx.pki.kubeconfig("admin"))
        # check() wants a JoinToken; only id, secret and role matter for it
        from mke.tokens import JoinToken

        TokenStore(client).check(JoinToken(role="controller", api_url="https://x", ca_pem="", ca_hash="",
                                           token_id=tok_id, token_secret=secret))
        files = {}
        for rel in SHARED_FILES:
            files[rel] = base64.b64encode((self.ctx.pki_dir / rel).read_bytes()).decode()
        answer: dict[str, Any] = {"files": files, "config": config_to_dict(self.ctx.config)}
        answer.update(storage.get(self.ctx.config.storage.type).admit_controller(self.ctx, name, peer))
        self.joined.append(name)
        self.ctx.sink.line(self.name, f"controller {name} ({peer}) joined with token {tok_id}")
        return answer

    # -- lifecycle

    def start(self) -> None:
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            server_version = "mke"

            def log_message(self, fmt: str, *args: Any) -> None:
                pass

            def _reply(self, code: int, doc: dict[str, Any]) -> None:
                data = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                if self.path != "/v1/join/controller":
                    return self._reply(404, {"error": "not found"})
                auth = self.headers.get("Authorization", "")
                length = int(self.headers.get("Content-Length") or 0)
                if not auth.startswith("Bearer ") or length > MAX_BODY:
                    return self._reply(401, {"error": "a controller token is required"})
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                    return self._reply(200, api.join_controller(auth[7:].strip(), body))
                except TokenError as e:
                    return self._reply(403, {"error": str(e)})
                except (MkeError, ValueError, OSError) as e:
                    return self._reply(500, {"error": str(e)})

        pki = self.ctx.pki
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(pki.crt("mke-api")), str(pki.key("mke-api")))
        srv = http.server.ThreadingHTTPServer(("", self.ctx.config.api.mke_api_port), Handler)
        srv.daemon_threads = True
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        self._server = srv
        self._thread = threading.Thread(target=srv.serve_forever, name="mke-api", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._thread = None

    def state(self) -> dict[str, object]:
        return {"name": self.name, "state": "running" if self._server else "stopped", "joined": list(self.joined)}
