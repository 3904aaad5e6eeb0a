"""A small real registry: the pull half of the OCI distribution API over HTTP or HTTPS.

Stands in for the distribution registry (``registry:2``) until its binary is a recipe:
``GET``/``HEAD`` of ``/v2/``, ``/v2/<name>/manifests/<tag or digest>`` and
``/v2/<name>/blobs/<digest>``, for images written by mke/images/oci.py; anything else is
404 with an OCI error body. Every request is recorded (method, path) so that a test can
tell which server a pull went through.
"""

from __future__ import annotations

import http.server
import json
import re
import ssl
import threading
from pathlib import Path

from mke.images.oci import MEDIA_MANIFEST, Image, split_ref

_PATH_RE = re.compile(r"^/v2/(?P<name>[a-z0-9._/-]+)/(?P<kind>manifests|blobs)/(?P<ref>[A-Za-z0-9_.:-]+)$")


class OCIRegistry:
    """Serves ``images`` under their repository path (the reference without its registry host)."""

    def __init__(self, images: list[Image], *, cert: Path | None = None, key: Path | None = None) -> None:
        self.manifests: dict[tuple[str, str], Path] = {}  # (repository, tag or digest) -> manifest blob
        self.blobs: dict[str, Path] = {}
        for image in images:
            name, tag = split_ref(image.ref)
            repo = name.split("/", 1)[1] if "/" in name and ("." in name.split("/")[0] or ":" in name.split("/")[0]) \
                else name
            self.manifests[(repo, tag)] = self.manifests[(repo, image.manifest.digest)] = image.manifest.path
            for blob in (image.config, *(layer.blob for layer in image.layers)):
                self.blobs[blob.digest] = blob.path
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if cert is not None and key is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(cert), str(key))
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}"

    def __enter__(self) -> OCIRegistry:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def pulled(self) -> list[str]:
        """The paths of the manifests and blobs answered (HEAD or GET, status 200), without the
        query (containerd adds ``?ns=<registry>`` when it pulls through a mirror)."""
        with self.lock:
            paths = [p.split("?", 1)[0] for m, p in self.requests if m.endswith(" 200")]
        return [p for p in paths if p.startswith("/v2/") and p != "/v2/"]

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                with registry.lock:
                    registry.requests.append((f"{self.command} {status}", self.path))
                self.send_response(status)
                headers = {"Docker-Distribution-API-Version": "registry/2.0", **headers}
                for k, v in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(body)

            def _not_found(self, code: str) -> None:
                body = json.dumps({"errors": [{"code": code, "message": self.path}]}).encode()
                self._answer(404, body, {"Content-Type": "application/json"})

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path in ("/v2", "/v2/"):
                    self._answer(200, b"{}", {"Content-Type": "application/json"})
                    return
                m = _PATH_RE.match(path)
                if not m:
                    self._not_found("NAME_UNKNOWN")
                    return
                if m["kind"] == "manifests":
                    blob = registry.manifests.get((m["name"], m["ref"]))
                    media = MEDIA_MANIFEST
                else:
                    blob = registry.blobs.get(m["ref"])
                    media = "application/octet-stream"
                if blob is None:
                    self._not_found("MANIFEST_UNKNOWN" if m["kind"] == "manifests" else "BLOB_UNKNOWN")
                    return
                data = blob.read_bytes()
                import hashlib

                self._answer(200, data, {"Content-Type": media,
                                         "Docker-Content-Digest": "sha256:" + hashlib.sha256(data).hexdigest()})

            do_HEAD = do_GET

        return Handler
