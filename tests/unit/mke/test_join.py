"""mke/join.py: a controller joins with a controller token; what it writes, what it refuses.

Two servers answer it. The real MkeAPI (tests/unit/mke/conftest.py's first_controller),
serving TLS on 127.0.0.1, in front of tests/support/apiservers.py's stand-ins for
kube-apiserver and etcd's gRPC gateway (the real ones are exercised by
tests/integration/test_server*.py). And, for answers a real mke API never gives, a
loopback HTTPS server with the same mke-api certificate that answers what a test tells
it to (a hostile or broken controller).

Covers: token decoding (each bad token one line, nothing written), the request (TLS
against the token's CA, kept in memory; retried while the API is busy), the files
(0600 keys, 0644 the rest, 0700 dirs, written atomically only after the whole answer was
checked; bad names refused), and the restart that does not ask again.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import socket
import stat
import tempfile
import threading
import time
from pathlib import Path

import pytest

from mke import der
from mke import join as join_module
from mke.components.mke_api import SHARED_FILES, Limits
from mke.config import config_to_dict, parse_config
from mke.errors import MkeError, TokenError
from mke.join import join_control_plane
from mke.pki import load_cert
from mke.tokens import JoinToken
from tests.support.apiservers import TLSServer

LOCAL = parse_config({"api": {"address": "192.0.2.11"}})


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


def token_for(pki, mke_api_url: str, *, expires: dt.datetime | None = None, ca_pki=None) -> str:
    """A controller token with ``ca_pki``'s CA (default ``pki``'s) naming ``mke_api_url``."""
    ca = load_cert((ca_pki or pki).crt("ca"))
    assert ca is not None
    return JoinToken(role="controller", api_url="https://127.0.0.1:6443", mke_api_url=mke_api_url,
                     ca_pem=(ca_pki or pki).crt("ca").read_text(), ca_hash=der.ca_pin((ca_pki or pki).crt("ca").read_bytes()), token_id="abcdef",
                     token_secret="0123456789abcdef", expires=expires).encode()


# ---------------------------------------------------------------- against the real mke API


def test_join_writes_the_shared_files_with_their_modes_and_remembers_the_join(first_controller, tmp_path,
                                                                             monkeypatch):
    fc = first_controller()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    data = tmp_path / "ctl-2"
    local = parse_config({"api": {"address": "192.0.2.11"},
                          "registries": {"mirrors": {"docker.io": {"endpoints": ["http://192.0.2.99:5000"]}}}})
    cfg, join = join_control_plane(fc.join_token().encode(), local, data_dir=data, name="ctl-2",
                                   peer_address="192.0.2.11")

    assert join == {"etcd_initial_cluster": "ctl-1=https://192.0.2.10:2380,ctl-2=https://192.0.2.11:2380"}
    assert cfg.api.address == "192.0.2.11"  # this host's, not the first controller's
    assert cfg.registries == local.registries  # a node's own, never the first controller's
    assert cfg.api.port == fc.ctx.config.api.port and cfg.storage == fc.ctx.config.storage
    pki = data / "pki"
    for rel in SHARED_FILES:
        assert (pki / rel).read_bytes() == (fc.pki.dir / rel).read_bytes()
        assert mode(pki / rel) == (0o600 if rel.endswith(".key") else 0o644), rel
    assert sorted(str(p.relative_to(pki)) for p in pki.rglob("*") if p.is_file()) == sorted(SHARED_FILES)
    assert (mode(data), mode(pki), mode(pki / "etcd")) == (0o700, 0o700, 0o700)
    state = json.loads((data / "join.json").read_text())
    assert mode(data / "join.json") == 0o600 and "files" not in state
    cluster = {k: v for k, v in config_to_dict(fc.ctx.config).items() if k != "registries"}
    assert state["config"] == json.loads(json.dumps(cluster))
    assert list(tmp.iterdir()) == []  # the token's CA never went through a file
    assert fc.api.joined == ["ctl-2"]


def test_a_restart_does_not_ask_again_even_when_the_token_expired(first_controller, tmp_path):
    fc = first_controller()
    data = tmp_path / "ctl-2"
    first = join_control_plane(fc.join_token().encode(), LOCAL, data_dir=data, name="ctl-2",
                               peer_address="192.0.2.11")
    url = fc.url
    fc.api.stop()  # nobody to ask
    seen = len(fc.kube.seen)
    expired = token_for(fc.pki, url, expires=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    assert join_control_plane(expired, LOCAL, data_dir=data, name="ctl-2", peer_address="192.0.2.11") == first
    assert len(fc.kube.seen) == seen


def test_a_joined_controller_refuses_another_clusters_token(first_controller, tmp_path, make_pki):
    fc = first_controller()
    data = tmp_path / "ctl-2"
    join_control_plane(fc.join_token().encode(), LOCAL, data_dir=data, peer_address="192.0.2.11")
    other = make_pki(tmp_path / "other", cluster="other")
    with pytest.raises(TokenError) as e:
        join_control_plane(token_for(fc.pki, fc.url, ca_pki=other), LOCAL, data_dir=data)
    assert "already belongs to another cluster" in one_line(e)


def test_a_corrupt_join_record_is_one_line(first_controller, tmp_path):
    fc = first_controller()
    data = tmp_path / "ctl-2"
    tok = fc.join_token().encode()
    join_control_plane(tok, LOCAL, data_dir=data, peer_address="192.0.2.11")
    (data / "join.json").write_text("{half")
    with pytest.raises(MkeError) as e:
        join_control_plane(tok, LOCAL, data_dir=data)
    assert one_line(e).startswith(f"{data}/join.json: unreadable")


@pytest.mark.parametrize(("case", "message"), [
    ("worker token", "this is a worker token, not a controller token"),
    ("expired", "expired at"),
    ("no mke API", "carries no mke API address"),
    ("invalidated", "refused the join: token zzzzzz is unknown or was invalidated"),
    ("another cluster's CA", "is not served with a certificate of the token's CA"),
    ("unreachable", "cannot reach the controller's mke API at https://127.0.0.1:9"),
    ("malformed", "the join token is malformed"),
])
def test_bad_tokens_are_one_line_and_write_nothing(first_controller, tmp_path, make_pki, case, message):
    fc = first_controller()
    good = fc.join_token()
    other = make_pki(tmp_path / "other", cluster="other")
    text = {
        "worker token": lambda: fc.join_token("worker").encode(),
        "expired": lambda: token_for(fc.pki, fc.url, expires=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)),
        "no mke API": lambda: token_for(fc.pki, ""),
        "invalidated": lambda: JoinToken(**{**good.__dict__, "token_id": "zzzzzz"}).encode(),
        "another cluster's CA": lambda: token_for(fc.pki, fc.url, ca_pki=other),
        "unreachable": lambda: token_for(fc.pki, "https://127.0.0.1:9"),
        "malformed": lambda: good.encode()[:-30],
    }[case]()
    data = tmp_path / "ctl-2"
    with pytest.raises(TokenError) as e:
        join_control_plane(text, LOCAL, data_dir=data, peer_address="192.0.2.11")
    assert message in one_line(e)
    assert not data.exists()
    assert fc.api.joined == [] and fc.etcd.seen == []


def test_a_full_api_that_closes_connections_is_retried(first_controller, tmp_path):
    """The mke API closes a connection over its per-source limit at once; the join tries again."""
    fc = first_controller(limits=Limits(max_per_source=1, handshake_timeout=60))
    tok = fc.join_token().encode()
    hog = socket.create_connection(("127.0.0.1", fc.api.address[1]))  # the one slot of 127.0.0.1
    threading.Timer(1.0, hog.close).start()
    t0 = time.monotonic()
    join_control_plane(tok, LOCAL, data_dir=tmp_path / "ctl-2", name="ctl-2", peer_address="192.0.2.11")
    assert time.monotonic() - t0 >= 0.9
    assert any("127.0.0.1: connection closed: 1 connections open from it (limit 1)" in line
               for line in fc.log_lines())
    assert fc.api.joined == ["ctl-2"]


# ---------------------------------------------------------------- against a controller that misbehaves


class ScriptedAPI:
    """HTTPS with the pki's mke-api certificate; answers POST /v1/join/controller from a script."""

    def __init__(self, pki) -> None:
        api = self
        self.script: list[tuple[int, bytes, dict[str, str]]] = []
        self.requests: list[dict] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                api.requests.append({"path": self.path, "auth": self.headers["Authorization"],
                                     "body": json.loads(body)})
                status, data, headers = api.script.pop(0) if len(api.script) > 1 else api.script[0]
                self.send_response(status)
                for k, v in {"Content-Length": str(len(data)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = TLSServer(Handler)
        self.server.serve(cert=pki.crt("mke-api"), key=pki.key("mke-api"), client_ca=None)
        self.url = self.server.url

    def answer(self, status: int, doc: object, headers: dict[str, str] | None = None) -> None:
        data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.script.append((status, data, headers or {}))


@pytest.fixture
def scripted(tmp_path, make_pki):
    pki = make_pki(tmp_path / "first" / "pki")
    api = ScriptedAPI(pki)
    yield pki, api
    api.server.stop()


def good_answer(pki, **files_override) -> dict:
    files = {rel: base64.b64encode((pki.dir / rel).read_bytes()).decode() for rel in SHARED_FILES}
    for k, v in files_override.items():
        if v is None:
            files.pop(k.replace("__", "/"), None)
        else:
            files[k.replace("__", "/")] = v
    return {"files": files, "config": config_to_dict(parse_config({})), "etcd_initial_cluster": "a=https://x:2380"}


def test_the_request_carries_the_token_name_and_peer(scripted, tmp_path):
    pki, api = scripted
    api.answer(200, good_answer(pki))
    join_control_plane(token_for(pki, api.url), LOCAL, data_dir=tmp_path / "d", name="ctl-9",
                       peer_address="192.0.2.19")
    assert api.requests == [{"path": "/v1/join/controller", "auth": "Bearer abcdef.0123456789abcdef",
                             "body": {"name": "ctl-9", "peer_address": "192.0.2.19"}}]


def _bad_answers(pki, tmp_path, other_pki) -> dict[str, tuple[int, object, str]]:
    b64 = base64.b64encode(b"x").decode()
    outside = str(tmp_path / "outside" / "evil.crt")
    return {
        "parent dir": (200, good_answer(pki, **{"..__evil.key": b64}), "bad file name '../evil.key'"),
        "absolute": (200, {**good_answer(pki), "files": {**good_answer(pki)["files"], outside: b64}},
                     "bad file name"),
        "climbs out": (200, good_answer(pki, **{"etcd__..__..__x.key": b64}), "bad file name"),
        "two dirs": (200, good_answer(pki, **{"a__b__c.crt": b64}), "bad file name 'a/b/c.crt'"),
        "other suffix": (200, good_answer(pki, **{"kubelet.conf": b64}), "bad file name 'kubelet.conf'"),
        "hidden": (200, good_answer(pki, **{".hidden.key": b64}), "bad file name '.hidden.key'"),
        "empty name": (200, good_answer(pki, **{"": b64}), "bad file name ''"),
        "bad base64": (200, good_answer(pki, **{"sa.key": "%%%"}), "sent sa.key in a form that does not decode"),
        "no CA key": (200, good_answer(pki, **{"ca.key": None}), "the controller's answer lacks ca.key"),
        "no encryption key": (200, good_answer(pki, **{"secrets-encryption.key": None}),
                              "lacks secrets-encryption.key (an older mke? upgrade that controller first)"),
        "no client CA": (200, good_answer(pki, **{"client-ca.key": None}),
                         "lacks client-ca.key (an older mke? upgrade that controller first)"),
        "no kubelet-serving CA": (200, good_answer(pki, **{"kubelet-serving-ca.crt": None}),
                                  "lacks kubelet-serving-ca.crt (an older mke? upgrade that controller first)"),
        "another CA": (200, good_answer(pki, **{"ca.crt": base64.b64encode(other_pki.crt("ca").read_bytes())
                                                .decode()}), "a CA that is not the token's"),
        "no files": (200, {"config": {}}, "answered without files or config"),
        "not JSON": (200, b"<html>hello</html>", "not a join answer (not a JSON object)"),
        "a list": (200, [1, 2], "not a join answer"),
        "too big": (200, b"{" + b" " * (1024 * 1024 + 10) + b"}", "answered more than 1048576 bytes"),
        "refused": (403, {"error": "token abcdef: wrong secret"}, "refused the join: token abcdef: wrong secret"),
        "refused with lines": (500, {"error": "line one\nline two"}, "refused the join: line one line two"),
    }


@pytest.mark.parametrize("case", ["parent dir", "absolute", "climbs out", "two dirs", "other suffix", "hidden",
                                  "empty name", "bad base64", "no CA key", "no encryption key", "no client CA",
                                  "no kubelet-serving CA", "another CA", "no files", "not JSON",
                                  "a list", "too big", "refused", "refused with lines"])
def test_a_bad_answer_is_refused_whole_and_writes_nothing(scripted, tmp_path, make_pki, case):
    pki, api = scripted
    status, doc, message = _bad_answers(pki, tmp_path, make_pki(tmp_path / "other", cluster="other"))[case]
    api.answer(status, doc)
    data = tmp_path / "ctl-2"
    with pytest.raises(TokenError) as e:
        join_control_plane(token_for(pki, api.url), LOCAL, data_dir=data, peer_address="192.0.2.11")
    assert message in one_line(e)
    assert not data.exists()
    assert not (tmp_path / "outside").exists()


def test_a_busy_api_is_asked_again_after_retry_after(scripted, tmp_path):
    pki, api = scripted
    api.answer(429, {"error": "too many failed tokens from this address; try again later"}, {"Retry-After": "1"})
    api.answer(503, {"error": "the cluster's API did not answer; try again"})
    api.answer(200, good_answer(pki))
    t0 = time.monotonic()
    _, join = join_control_plane(token_for(pki, api.url), LOCAL, data_dir=tmp_path / "d", peer_address="192.0.2.11")
    assert time.monotonic() - t0 >= 1.4  # 1 s (Retry-After), then 0.5 s... backoff
    assert len(api.requests) == 3 and join == {"etcd_initial_cluster": "a=https://x:2380"}


def test_a_busy_api_is_given_up_at_the_deadline(scripted, tmp_path, monkeypatch):
    pki, api = scripted
    api.answer(429, {"error": "too many failed tokens from this address; try again later"}, {"Retry-After": "60"})
    monkeypatch.setattr(join_module, "JOIN_DEADLINE", 1.5)
    t0 = time.monotonic()
    with pytest.raises(TokenError) as e:
        join_control_plane(token_for(pki, api.url), LOCAL, data_dir=tmp_path / "d", peer_address="192.0.2.11")
    assert time.monotonic() - t0 < 5
    assert one_line(e) == (f"{api.url} is busy (HTTP 429: too many failed tokens from this address; try again "
                           "later); try again later")
    assert not (tmp_path / "d").exists()
