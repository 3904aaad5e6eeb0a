"""mke's own API on the controllers (``api.mkeAPIPort``, TLS with the ``mke-api`` cert).

One call: ``POST /v1/join/controller`` with ``Authorization: Bearer <id>.<secret>`` (a
controller token, checked against its bootstrap-token secret: stored, unexpired,
controller role) and ``{"name": ..., "peer_address": ...}``. The answer carries what a
new controller needs and cannot make itself: the three CAs (with keys), the
service-account key pair, the Secrets encryption key (``secrets-encryption.key``, an
EncryptionConfiguration), the cluster config, and what the storage backend adds
(``StorageBackend.admit_controller``: etcd adds the new member as a learner, promoted
once it caught up, so a joining host that never starts cannot break a 1-member cluster's
quorum, and answers the member list; a single-host SQLite store refuses).

The port is open to the network before anyone has authenticated, so no client may hold
it (issue 14 item 2). ``Limits`` sets how much one client can take:

- the accept loop only accepts: each connection's TLS handshake runs on that
  connection's own thread, and must finish within ``handshake_timeout``;
- at most ``max_connections`` connections are served at once, ``max_per_source`` of
  them from one address; a connection over either limit is closed at once;
- the request line, headers and body must all arrive within ``request_timeout`` (a
  deadline for the whole request, not per read, so a client sending one byte at a time
  is cut off too), the line and headers within ``max_header_bytes``;
- the body needs a ``Content-Length`` from 0 to ``max_body``: missing, negative,
  non-numeric (400) or larger (413) is refused before a byte of it is read; chunked
  bodies are refused (400);
- a source whose tokens failed ``failed_tokens`` times within ``failed_window`` seconds
  gets 429 (with ``Retry-After``) before its token is looked at or the Kubernetes API
  is asked anything;
- a malformed request is one tagged log line, never a traceback, and at most
  ``log_burst`` lines are written per ``log_window`` (the rest are counted and reported).

Answers: 200 the join; 400 a malformed request; 401 no or a malformed token; 403 a
token refused; 404 another path; 409 a storage backend that cannot take another
controller; 411/413 the body's length; 429 too many failed tokens; 431 headers too
large; 503 the Kubernetes API did not answer the token check. Errors are
``{"error": "<one line>"}``.
"""

from __future__ import annotations

import base64
import http.server
import io
import ipaddress
import json
import math
import re
import socket
import socketserver
import ssl
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from mke import storage
from mke.components.base import Component
from mke.components.context import ControllerContext
from mke.errors import BusyError, KubeAPIError, MkeError, TokenError, UsageError
from mke.node.tls import ReloadingServerContext

SHARED_FILES = ("ca.crt", "ca.key", "client-ca.crt", "client-ca.key", "kubelet-serving-ca.crt",
                "kubelet-serving-ca.key", "front-proxy-ca.crt", "front-proxy-ca.key", "etcd/ca.crt", "etcd/ca.key",
                "sa.key", "sa.pub", "secrets-encryption.key")
OPTIONAL_SHARED_FILES = ("legacy-ca.crt",)  # a cluster made before CA separation (mke.pki)
JOIN_PATH = "/v1/join/controller"
_BEARER = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")  # mke.tokens' <id>.<secret>
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")  # an etcd member name: no ',' '=' or space


@dataclass(frozen=True, kw_only=True)
class Limits:
    """How much of the mke API one client can take (see the module's docstring)."""

    handshake_timeout: float = 5.0
    request_timeout: float = 10.0
    write_timeout: float = 10.0
    max_connections: int = 64
    max_per_source: int = 8
    max_header_bytes: int = 16 * 1024
    max_body: int = 64 * 1024
    failed_tokens: int = 10
    failed_window: float = 60.0
    log_burst: int = 20
    log_window: float = 60.0
    listen_backlog: int = 128


MAX_BODY = Limits().max_body
LINGER_SECONDS = 0.5  # after an answer, how long unread input is drained before closing
LINGER_BYTES = 256 * 1024


class ConnectionSlots:
    """Connections being served: at most ``total`` at once, ``per_source`` from one address."""

    def __init__(self, total: int, per_source: int) -> None:
        self.total, self.per_source = total, per_source
        self._lock = threading.Lock()
        self._open = 0
        self._by_source: dict[str, int] = {}

    def acquire(self, source: str) -> str | None:
        """Take a slot for ``source``; None when taken, else why not."""
        with self._lock:
            if self._open >= self.total:
                return f"{self._open} connections open (limit {self.total})"
            n = self._by_source.get(source, 0)
            if n >= self.per_source:
                return f"{n} connections open from it (limit {self.per_source})"
            self._open += 1
            self._by_source[source] = n + 1
            return None

    def release(self, source: str) -> None:
        with self._lock:
            self._open -= 1
            n = self._by_source.get(source, 0) - 1
            if n > 0:
                self._by_source[source] = n
            else:
                self._by_source.pop(source, None)

    @property
    def open(self) -> int:
        with self._lock:
            return self._open


class FailedTokens:
    """Failed token attempts per source address in a sliding window; bounded memory."""

    def __init__(self, limit: int, window: float, *, max_sources: int = 4096) -> None:
        self.limit, self.window, self.max_sources = limit, window, max_sources
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, source: str, now: float | None = None) -> float | None:
        """Seconds until ``source`` may try a token again, or None if it may now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._seen.get(source)
            if times is None:
                return None
            while times and times[0] <= now - self.window:
                times.popleft()
            if not times:
                del self._seen[source]
                return None
            if len(times) < self.limit:
                return None
            return times[0] + self.window - now

    def failed(self, source: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._seen.setdefault(source, deque(maxlen=self.limit))
            times.append(now)
            self._seen.move_to_end(source)
            while len(self._seen) > self.max_sources:
                self._seen.popitem(last=False)  # the source quiet for longest


class LogBudget:
    """At most ``burst`` lines per ``window`` seconds; what was held back is counted and said."""

    def __init__(self, write: Any, burst: int, window: float) -> None:
        self._write, self.burst, self.window = write, burst, window
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._written = 0
        self.suppressed = 0

    def line(self, text: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._start >= self.window:
                if self.suppressed:
                    self._write(f"{self.suppressed} more such lines in the last {self.window:.0f}s were not logged")
                self._start, self._written, self.suppressed = now, 0, 0
            if self._written >= self.burst:
                self.suppressed += 1
                return
            self._written += 1
        self._write(" ".join(text.split()))


class _RequestTooLarge(Exception):
    """The request line and headers did not fit ``max_header_bytes``."""


class _RequestReader(io.RawIOBase):
    """The connection's bytes for one request, within a deadline and a byte budget."""

    def __init__(self, sock: socket.socket, deadline: float, budget: int) -> None:
        self.sock, self.deadline, self.budget = sock, deadline, budget

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.budget <= 0:
            raise _RequestTooLarge()
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self.sock.settimeout(left)
        n = self.sock.recv_into(memoryview(b)[:min(len(b), self.budget)])
        self.budget -= n
        return n


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    server_version = "mke"
    sys_version = ""
    wbufsize = -1  # buffered; flushed once per answer

    def setup(self) -> None:
        super().setup()
        limits = self.server.limits
        self.rfile.close()  # the plain makefile(); replaced by one with a deadline and a budget
        self._reader = _RequestReader(self.connection, time.monotonic() + limits.request_timeout,
                                      limits.max_header_bytes)
        self.rfile = io.BufferedReader(self._reader)

    @property
    def source(self) -> str:
        return str(self.client_address[0])

    def handle(self) -> None:
        self.close_connection = True
        try:
            self.handle_one_request()
        except _RequestTooLarge:
            self.reply(431, f"the request line and headers exceed {self.server.limits.max_header_bytes} bytes")
        except (OSError, ValueError) as e:
            self.server.log(f"{self.source}: {type(e).__name__}: {e}")

    # -- BaseHTTPRequestHandler's hooks: one line, JSON, never a traceback

    def log_message(self, format: str, *args: Any) -> None:
        pass  # every answer is not worth a line; errors are logged by reply()

    def log_error(self, format: str, *args: Any) -> None:
        self.server.log(f"{self.source}: {format % args}")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        self.reply(code, message or self.responses.get(code, ("error",))[0])

    def reply(self, code: int, doc: dict[str, Any] | str, headers: dict[str, str] | None = None) -> None:
        if isinstance(doc, str):
            doc = {"error": " ".join(doc.split())}
            self.server.log(f"{self.source}: {code} {doc['error']}")
        data = json.dumps(doc).encode()
        self.close_connection = True
        self.request_version = "HTTP/1.1"  # a status line even for what parsed as HTTP/0.9 or not at all
        try:
            self.connection.settimeout(self.server.limits.write_timeout)
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError as e:
            self.server.log(f"{self.source}: could not send the answer ({e})")

    # -- the one call

    def _body(self) -> bytes:
        """The body, by a Content-Length checked before anything is read."""
        if self.headers.get("Transfer-Encoding"):
            raise _BadRequest(400, "Transfer-Encoding is not accepted; send a Content-Length")
        values = self.headers.get_all("Content-Length") or []
        if not values:
            raise _BadRequest(411, "a Content-Length is required")
        if len(values) > 1 or not values[0].strip().isdigit() or not values[0].strip().isascii():
            raise _BadRequest(400, "Content-Length must be one non-negative integer")
        length = int(values[0])
        if length > self.server.limits.max_body:
            raise _BadRequest(413, f"the body exceeds {self.server.limits.max_body} bytes")
        self._reader.budget = length
        data = self.rfile.read(length)
        if len(data) != length:
            raise _BadRequest(400, "the body is shorter than its Content-Length")
        return data

    def do_POST(self) -> None:
        server, src = self.server, self.source
        try:
            body = self._body()
            if self.path != JOIN_PATH:
                raise _BadRequest(404, "not found")
            wait = server.failed_tokens.retry_after(src)
            if wait is not None:
                return self.reply(429, "too many failed tokens from this address; try again later",
                                  {"Retry-After": str(max(1, math.ceil(wait)))})
            auth = self.headers.get("Authorization", "")
            bearer = auth[7:].strip() if auth.startswith("Bearer ") else ""
            if not _BEARER.match(bearer):
                server.failed_tokens.failed(src)
                return self.reply(401, "a controller token is required")
            try:
                doc = json.loads(body)
            except (ValueError, RecursionError):
                doc = None
            if not isinstance(doc, dict):
                raise _BadRequest(400, "the body must be a JSON object")
            name, peer = doc.get("name"), doc.get("peer_address")
            if not isinstance(name, str) or not _NAME.match(name):
                raise _BadRequest(400, "name: expected a node name (letters, digits, '.', '-', '_')")
            if not isinstance(peer, str) or not _host_or_ip(peer):
                raise _BadRequest(400, "peer_address: expected an IP address or a host name")
            answer = server.api.join_controller(bearer, {"name": name, "peer_address": peer})
        except _BadRequest as e:
            return self.reply(e.status, str(e))
        except TokenError as e:
            server.failed_tokens.failed(src)
            return self.reply(403, str(e))
        except UsageError as e:
            return self.reply(409, str(e))
        except KubeAPIError as e:
            server.log(f"{src}: the token could not be checked: {e}")
            return self.reply(503, "the cluster's API did not answer; try again", {"Retry-After": "5"})
        except BusyError as e:  # another membership change must finish first
            server.log(f"{src}: the join must wait: {e}")
            return self.reply(503, str(e), {"Retry-After": str(max(1, math.ceil(e.retry_after or 5)))})
        except (MkeError, OSError, ValueError) as e:
            server.log(f"{src}: the join failed: {type(e).__name__}: {e}")
            return self.reply(500, "the join failed on the controller; see its log")
        self.reply(200, answer)


def _host_or_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return bool(re.match(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*"
                             r"[A-Za-z0-9])?)*$", text))


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """Accepts only; every connection's handshake and request run on its own thread (see Limits)."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], api: MkeAPI, tls: ReloadingServerContext, limits: Limits) -> None:
        self.request_queue_size = limits.listen_backlog
        self.api, self.tls, self.limits = api, tls, limits
        self.slots = ConnectionSlots(limits.max_connections, limits.max_per_source)
        self.failed_tokens = FailedTokens(limits.failed_tokens, limits.failed_window)
        # what it logs is a client refused or a request that failed
        self.log_budget = LogBudget(lambda text: api.ctx.sink.line(api.name, text, level="warn"), limits.log_burst,
                                    limits.log_window)
        self._active: set[socket.socket] = set()
        self._active_lock = threading.Lock()
        super().__init__(address, _Handler)

    def log(self, text: str) -> None:
        self.log_budget.line(text)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        why = self.slots.acquire(str(client_address[0]))
        if why is not None:
            self.log(f"{client_address[0]}: connection closed: {why}")
            return False
        with self._active_lock:
            self._active.add(request)
        return True

    def _done(self, request: Any, client_address: Any) -> None:
        with self._active_lock:
            self._active.discard(request)
        self.slots.release(str(client_address[0]))

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done(request, client_address)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        conn = self.tls.current().wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        with self._active_lock:  # the TLS socket took over the connection (``request`` is detached)
            self._active.discard(request)
            self._active.add(conn)
        try:
            conn.settimeout(self.limits.handshake_timeout)  # for the whole handshake, not per read
            try:
                conn.do_handshake()
            except TimeoutError:
                self.log(f"{client_address[0]}: no TLS handshake within {self.limits.handshake_timeout:g}s")
                return
            except (OSError, ssl.SSLError) as e:
                self.log(f"{client_address[0]}: TLS handshake failed: {getattr(e, 'reason', None) or e}")
                return
            self.RequestHandlerClass(conn, client_address, self)
            self._linger(conn)
        finally:
            with self._active_lock:
                self._active.discard(conn)
            conn.close()

    def _linger(self, conn: ssl.SSLSocket) -> None:
        """Half-close, then read what the client still sends (an unread body) for a moment.

        Closing a socket with unread input makes the kernel send a reset, and the client
        may lose the answer it has not read yet (a 413 or 431 above all).
        """
        end = time.monotonic() + LINGER_SECONDS
        budget = LINGER_BYTES
        try:
            conn.shutdown(socket.SHUT_WR)  # also ends TLS on our side: what follows is read raw
            while budget > 0 and (left := end - time.monotonic()) > 0:
                conn.settimeout(left)
                n = len(conn.recv(65536))
                if not n:
                    return
                budget -= n
        except OSError:
            pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        e = sys.exc_info()[1]
        self.log(f"{client_address[0]}: {type(e).__name__}: {e}")

    def close_connections(self) -> None:
        """Cut every connection being served (stop: no thread waits for a slow client)."""
        with self._active_lock:
            socks = list(self._active)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class MkeAPI(Component):
    name = "mke-api"

    def __init__(self, ctx: ControllerContext, *, host: str = "", limits: Limits | None = None) -> None:
        self.ctx = ctx
        self.host = host  # "" = every address (joining controllers come from the network)
        self.limits = limits or Limits()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._admit_lock = threading.Lock()
        self.joined: list[str] = []

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the API listens on, once started."""
        assert self._server is not None, "mke-api: not started"
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def connections(self) -> int:
        """Connections being served now."""
        return self._server.slots.open if self._server is not None else 0

    @property
    def log_suppressed(self) -> int:
        """Log lines about clients held back by the budget in the current window."""
        return self._server.log_budget.suppressed if self._server is not None else 0

    # -- the handler's work

    def join_controller(self, bearer: str, body: dict[str, Any]) -> dict[str, Any]:
        from mke.config import config_to_dict
        from mke.kubeapi import KubeClient
        from mke.tokens import JoinToken, TokenStore

        tok_id, _, secret = bearer.partition(".")
        name, peer = str(body.get("name", "")), str(body.get("peer_address", ""))
        if not name or not peer:
            raise TokenError("the join request needs name and peer_address")
        # check() and use() want a JoinToken; only id, secret and role matter for them
        tok = JoinToken(role="controller", api_url="https://x", ca_pem="", ca_hash="", token_id=tok_id,
                        token_secret=secret)
        client = KubeClient.from_kubeconfig(self.ctx.pki.internal_kubeconfig)
        try:
            TokenStore(client).check(tok)  # before anything else: a wrong token learns nothing more
        finally:
            client.close()
        files = {}
        for rel in SHARED_FILES:
            files[rel] = base64.b64encode((self.ctx.pki_dir / rel).read_bytes()).decode()
        for rel in OPTIONAL_SHARED_FILES:
            if (self.ctx.pki_dir / rel).exists():
                files[rel] = base64.b64encode((self.ctx.pki_dir / rel).read_bytes()).decode()
        # registries are this node's own (their files are paths on this host): not the cluster's
        config = {k: v for k, v in config_to_dict(self.ctx.config).items() if k != "registries"}
        answer: dict[str, Any] = {"files": files, "config": config}
        with self._admit_lock:  # one membership change at a time
            client = KubeClient.from_kubeconfig(self.ctx.pki.internal_kubeconfig)
            try:
                store = TokenStore(client)
                spent = store.use(tok)  # a single-use token: spent now, given back if the admission fails
                try:
                    answer.update(storage.get(self.ctx.config.storage.type).admit_controller(self.ctx, name, peer))
                except BaseException:
                    if spent is not None:
                        store.give_back(spent)
                    raise
            finally:
                client.close()
            self.joined.append(name)
        self.ctx.sink.line(self.name, f"controller {name} ({peer}) joined with token {tok_id}"
                           + (" (single use: spent)" if spent is not None else ""))
        return answer

    # -- lifecycle

    def start(self) -> None:
        pki = self.ctx.pki
        tls = ReloadingServerContext(pki.crt("mke-api"), pki.key("mke-api"))  # a rotated certificate: no restart
        srv = _Server((self.host, self.ctx.config.api.mke_api_port), self, tls, self.limits)
        self._server = srv
        self._thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2}, name="mke-api",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None

    def state(self) -> dict[str, object]:
        return {"name": self.name, "state": "running" if self._server else "stopped", "joined": list(self.joined)}
