"""mke/tokens.py: encoding, every kind of bad token, and the bootstrap-token secret."""

from __future__ import annotations

import base64
import datetime as dt
import json
import zlib

import pytest

from mke import der
from mke.errors import TokenError, UsageError
from mke.pki import ClusterPKI, PKIRequest
from mke.tokens import PREFIX, JoinToken, TokenStore, decode_token, parse_duration

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def ca_pem(tmp_path_factory: pytest.TempPathFactory) -> str:
    pki = ClusterPKI(tmp_path_factory.mktemp("pki"))
    pki.ensure(PKIRequest(node_name="n", api_address="192.0.2.1"))
    return pki.crt("ca").read_text()


def make(ca_pem: str, **kw: object) -> JoinToken:
    args = dict(role="worker", api_url="https://192.0.2.1:6443", ca_pem=ca_pem,
                ca_hash=der.ca_pin(ca_pem), token_id="abcdef",
                token_secret="0123456789abcdef", expires=NOW + dt.timedelta(hours=24))
    args.update(kw)
    return JoinToken(**args)  # type: ignore[arg-type]


def test_round_trip(ca_pem: str) -> None:
    tok = make(ca_pem)
    s = tok.encode()
    assert s.startswith(PREFIX) and "\n" not in s and " " not in s
    assert decode_token(s, role="worker", now=NOW) == tok


def test_no_expiry(ca_pem: str) -> None:
    tok = make(ca_pem, expires=None)
    assert decode_token(tok.encode(), now=NOW + dt.timedelta(days=9999)).expires is None


def _mangle(s: str, doc_change: dict) -> str:
    body = s[len(PREFIX):]
    doc = json.loads(zlib.decompress(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))
    doc.update(doc_change)
    return PREFIX + base64.urlsafe_b64encode(zlib.compress(json.dumps(doc).encode())).decode()


@pytest.mark.parametrize("mangle, message", [
    (lambda s: s[:-10], "malformed"),
    (lambda s: s.replace(PREFIX, "k0s1."), "does not start with"),
    (lambda s: "", "does not start with"),
    (lambda s: PREFIX + "!!!!", "malformed"),
    (lambda s: _mangle(s, {"token": "ABCDEF.0123456789abcdef"}), "malformed"),
    (lambda s: _mangle(s, {"role": "admin"}), "malformed"),
    (lambda s: _mangle(s, {"api": "http://192.0.2.1:6443"}), "malformed"),
    (lambda s: _mangle(s, {"ca_hash": "sha256:" + "0" * 64}), "CA does not match"),
    (lambda s: _mangle(s, {"ca": "not a cert"}), "CA certificate"),
])
def test_bad_tokens_are_one_line_errors(ca_pem: str, mangle, message: str) -> None:
    with pytest.raises(TokenError) as e:
        decode_token(mangle(make(ca_pem).encode()), now=NOW)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_expired(ca_pem: str) -> None:
    s = make(ca_pem).encode()
    with pytest.raises(TokenError, match="expired at 2026-01-03T03:04:05Z"):
        decode_token(s, now=NOW + dt.timedelta(hours=25))


def test_wrong_role(ca_pem: str) -> None:
    s = make(ca_pem, role="controller").encode()
    with pytest.raises(TokenError, match="controller token, not a worker token"):
        decode_token(s, role="worker", now=NOW)


def test_secret_manifest(ca_pem: str) -> None:
    m = make(ca_pem).secret_manifest()
    assert m["metadata"] == {"name": "bootstrap-token-abcdef", "namespace": "kube-system",
                             "labels": {"mke.io/token-role": "worker"}}
    assert m["type"] == "bootstrap.kubernetes.io/token"
    d = m["stringData"]
    assert d["token-id"] == "abcdef" and d["token-secret"] == "0123456789abcdef"
    assert d["expiration"] == "2026-01-03T03:04:05Z"
    assert d["usage-bootstrap-authentication"] == "true"
    assert d["auth-extra-groups"] == "system:bootstrappers:mke:worker"
    ctl = make(ca_pem, role="controller").secret_manifest()["stringData"]
    assert ctl["usage-bootstrap-authentication"] == "false"  # controller tokens only work on mke's join API


@pytest.mark.parametrize("text, want", [("24h", dt.timedelta(hours=24)), ("7d", dt.timedelta(days=7)),
                                        ("1h30m", dt.timedelta(minutes=90)), ("0", None)])
def test_durations(text: str, want: dt.timedelta | None) -> None:
    assert parse_duration(text) == want


@pytest.mark.parametrize("text", ["", "24", "1y", "-1h", "30s", "h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


class FakeAPI:
    """Stands in for KubeClient's storage only (the real API is covered by tests/integration/test_server.py)."""

    def __init__(self) -> None:
        self.objects: dict[str, dict] = {}

    def create(self, obj: dict) -> dict:
        data = {k: base64.b64encode(v.encode()).decode() for k, v in obj["stringData"].items()}
        self.objects[obj["metadata"]["name"]] = {**obj, "data": data}
        return obj

    def list(self, api_version: str, kind: str, namespace: str, field_selector: str = "") -> list[dict]:
        return list(self.objects.values())

    def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict | None:
        return self.objects.get(name)

    def delete(self, api_version: str, kind: str, name: str, namespace: str) -> bool:
        return self.objects.pop(name, None) is not None


def test_store_create_list_check_invalidate(ca_pem: str) -> None:
    api = FakeAPI()
    store = TokenStore(api)
    tok = store.create(role="controller", api_url="https://192.0.2.1:6443", mke_api_url="https://192.0.2.1:9443",
                       ca_pem=ca_pem, ttl=dt.timedelta(hours=1), now=NOW)
    assert tok.expires == NOW + dt.timedelta(hours=1)
    decoded = decode_token(tok.encode(), role="controller", now=NOW)
    assert decoded.mke_api_url == "https://192.0.2.1:9443"
    [info] = store.list()
    assert (info.token_id, info.role, info.expires) == (tok.token_id, "controller", tok.expires)
    store.check(decoded, now=NOW)
    with pytest.raises(TokenError, match="expired"):
        store.check(decoded, now=NOW + dt.timedelta(hours=2))
    forged = JoinToken(**{**decoded.__dict__, "token_secret": "x" * 16})
    with pytest.raises(TokenError, match="wrong secret"):
        store.check(forged, now=NOW)
    assert store.invalidate(tok.encode()) == tok.token_id
    with pytest.raises(TokenError, match="unknown or was invalidated"):
        store.check(decoded, now=NOW)
    with pytest.raises(TokenError, match="no token with id"):
        store.invalidate(tok.token_id)


def test_hostile_tokens_are_refused_before_they_cost_memory() -> None:
    """Issue 14: a 400 KB token used to inflate to 300 MB before being looked at."""
    import base64
    import resource
    import zlib

    from mke.errors import TokenError
    from mke.tokens import MAX_TOKEN_CHARS, decode_token

    with pytest.raises(TokenError, match="characters long, more than any mke token"):
        decode_token("mke1." + "A" * 400_000)
    def bomb(mib: int) -> str:  # mib MiB of JSON whitespace, compressed without holding it in memory
        c = zlib.compressobj(9)
        chunk, out = b" " * (1 << 20), [c.compress(b"{")]
        out += [c.compress(chunk) for _ in range(mib)]
        out += [c.compress(b"}"), c.flush()]
        return "mke1." + base64.urlsafe_b64encode(b"".join(out)).decode().rstrip("=")

    text = bomb(300)  # ~400 KB, the review's example
    assert len(text) < 500_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(TokenError):
        decode_token(text)
    small_text = bomb(8)  # under the length limit, still a bomb
    assert len(small_text) <= MAX_TOKEN_CHARS
    with pytest.raises(TokenError, match="inflates to more than"):
        decode_token(small_text)
    grew_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grew_kib < 50 * 1024, grew_kib  # nothing near the inflated size was ever allocated


# ---------------------------------------------------------------- the token never stays on argv or in env

_READS_TOKEN = """
import os, sys, time
from mke.commands.worker import read_token
import argparse
tok = read_token(argparse.Namespace(token=sys.argv[1] if len(sys.argv) > 1 else None, token_file=None))
print(tok, "MKE_TOKEN" in os.environ, flush=True)
sys.stdin.read()  # until the test has looked at /proc/<pid>/cmdline
"""


@pytest.mark.parametrize("source", ["argument", "environment"])
def test_a_token_is_hidden_from_ps_and_not_passed_on(source: str, tmp_path) -> None:
    """/proc/<pid>/cmdline of the real process no longer holds the token once mke read it,
    and MKE_TOKEN is gone from mke's environment (every process it starts inherits that)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    secret = "mke1.abcdef.0123456789abcdef-secret"
    repo = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    argv = [sys.executable, "-c", _READS_TOKEN]
    if source == "argument":
        argv.append(secret)
    else:
        env["MKE_TOKEN"] = secret
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line == [secret, "False"], (line, proc.stderr.read() if proc.poll() is not None else "")
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert secret.encode() not in cmdline
        if source == "argument":
            assert b"*" * len(secret) in cmdline
    finally:
        _, err = proc.communicate("", timeout=30)
    assert err == ""  # hidden: nothing to warn about


def test_controller_tokens_must_expire_and_are_single_use_by_default(ca_pem: str):
    from mke.errors import UsageError
    from mke.tokens import SINGLE_USE_LABEL, check_lifetime

    with pytest.raises(UsageError, match="controller tokens must expire"):
        check_lifetime("controller", None)
    check_lifetime("worker", None)  # a worker token may live forever
    ctl = make(ca_pem, role="controller")
    assert ctl.secret_manifest(single_use=True)["metadata"]["labels"][SINGLE_USE_LABEL] == "true"
    assert SINGLE_USE_LABEL not in ctl.secret_manifest()["metadata"]["labels"]
