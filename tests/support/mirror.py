"""A real HTTP server that serves an upstream-shaped tree, with faults on demand.

Serves ``root/<host>/<path>`` at ``http://127.0.0.1:PORT/<host>/<path>`` (the layout
``--mirror`` expects), honours Range requests (for resume), and can be told per path
to answer 404, 500 a number of times, cut the body short, or stall mid-body.
"""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path


class _Faults:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.status: dict[str, list[int]] = {}  # path -> statuses to answer first, one per request
        self.truncate: dict[str, list[int]] = {}  # path -> byte counts to send before closing, one per request
        self.stall: dict[str, tuple[int, float]] = {}  # path -> (bytes, seconds): send, then sleep
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)


class MirrorServer:
    def __init__(self, root: Path):
        self.root = root
        self.faults = _Faults()
        handler = self._handler()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "MirrorServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # fault injection, keyed by the upstream URL (https://host/path)
    @staticmethod
    def _key(upstream_url: str) -> str:
        return "/" + upstream_url.split("://", 1)[1]

    def fail(self, upstream_url: str, *statuses: int) -> None:
        with self.faults.lock:
            self.faults.status[self._key(upstream_url)] = list(statuses)

    def truncate(self, upstream_url: str, *sizes: int) -> None:
        with self.faults.lock:
            self.faults.truncate[self._key(upstream_url)] = list(sizes)

    def stall(self, upstream_url: str, after_bytes: int, seconds: float) -> None:
        with self.faults.lock:
            self.faults.stall[self._key(upstream_url)] = (after_bytes, seconds)

    def requests_for(self, upstream_url: str) -> list[str | None]:
        key = self._key(upstream_url)
        return [rng for p, rng in self.faults.requests if p == key]

    def _handler(self):
        root, faults = self.root, self.faults

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                rng = self.headers.get("Range")
                with faults.lock:
                    faults.requests.append((path, rng))
                    statuses = faults.status.get(path)
                    status = statuses.pop(0) if statuses else None
                    cuts = faults.truncate.get(path)
                    cut = cuts.pop(0) if cuts else None
                    stall = faults.stall.get(path)
                if status:
                    body = f"injected {status}\n".encode()
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                file = (root / path.lstrip("/")).resolve()
                if not str(file).startswith(str(root.resolve())) or not file.is_file():
                    self.send_error(404)
                    return
                data = file.read_bytes()
                start = 0
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-", 1)[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if stall is not None:
                    n, seconds = stall
                    self.wfile.write(body[:n])
                    self.wfile.flush()
                    time.sleep(seconds)
                    body = body[n:]
                self.wfile.write(body)

        return Handler
