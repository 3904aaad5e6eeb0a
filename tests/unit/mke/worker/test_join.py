"""mke/worker/join.py and mke/worker/node.py's join decisions: every bad token is one line
and leaves nothing behind; a joined node ignores the token.

The cluster side is a real HTTPS server on loopback that answers the two requests a
joining worker makes (SelfSubjectReview, the worker-settings ConfigMap), with a
certificate from the cluster's CA; "another cluster" is one with a different CA.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import ssl
import threading
from pathlib import Path

import pytest

from mke import der
from mke.errors import TokenError
from mke.pki import CertSpec, cert_pem, key_pem, make_ca_cert, make_leaf_cert, new_key
from mke.tokens import GROUP_PREFIX, JoinToken
from mke.worker.context import WorkerOptions
from mke.worker.join import WorkerSettings, bootstrap_kubeconfig, check_token
from mke.worker.node import Worker

NOW = dt.datetime.now(dt.UTC)


class Cluster:
    """A CA, a server certificate for 127.0.0.1, and what the fake API answers."""

    def __init__(self, tmp: Path, name: str) -> None:
        self.ca_key = new_key()
        self.ca = make_ca_cert(self.ca_key, f"{name}-ca")
        key = new_key()
        cert = make_leaf_cert(CertSpec(name="apiserver", ca="ca", cn="kube-apiserver", server=True, ips=("127.0.0.1",)),
                              key, self.ca, self.ca_key)
        self.cert_file = tmp / f"{name}.crt"
        self.key_file = tmp / f"{name}.key"
        self.cert_file.write_bytes(cert_pem(cert))
        self.key_file.write_bytes(key_pem(key))
        self.known_tokens: dict[str, str] = {}  # "id.secret" -> group
        self.settings: dict[str, str] | None = {"clusterDNS": "10.43.0.10", "clusterDomain": "example.local",
                                                 "networkProvider": "bridge", "podCIDR": "10.42.0.0/16"}

    def token(self, *, role: str = "worker", api: str, expires: dt.datetime | None = None, tid: str = "abcdef",
              known: bool = True) -> str:
        tok = JoinToken(role=role, api_url=api, ca_pem=cert_pem(self.ca).decode(), ca_hash=der.ca_pin(cert_pem(self.ca)),
                        token_id=tid, token_secret="0123456789abcdef", expires=expires)
        if known:
            self.known_tokens[tok.bootstrap_token] = f"{GROUP_PREFIX}{role}"
        return tok.encode()


@pytest.fixture
def api(tmp_path):
    """Start a fake API for a Cluster; yields (cluster, url)."""
    servers = []

    def start(cluster: Cluster) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _send(self, status: int, doc: dict) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _group(self) -> str | None:
                auth = self.headers.get("Authorization", "")
                return cluster.known_tokens.get(auth.removeprefix("Bearer "))

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                group = self._group()
                if group is None:
                    return self._send(401, {"kind": "Status", "message": "Unauthorized"})
                self._send(201, {"kind": "SelfSubjectReview", "status": {"userInfo": {
                    "username": "system:bootstrap:abcdef", "groups": ["system:bootstrappers", group, "system:authenticated"]}}})

            def do_GET(self):
                if self._group() is None:
                    return self._send(401, {"message": "Unauthorized"})
                if cluster.settings is None:
                    return self._send(404, {"message": "not found"})
                self._send(200, {"kind": "ConfigMap", "data": cluster.settings})

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cluster.cert_file), str(cluster.key_file))
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"https://127.0.0.1:{srv.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()


def test_good_token_returns_the_cluster_settings(tmp_path, api):
    c = Cluster(tmp_path, "one")
    url = api(c)
    tok, settings = check_token(c.token(api=url))
    assert tok.api_url == url and tok.token_id == "abcdef"
    assert settings is not None and settings.source == "cluster"
    assert (settings.cluster_dns, settings.cluster_domain, settings.network_provider) == ("10.43.0.10", "example.local", "bridge")
    assert settings.pause_image == WorkerSettings.defaults().pause_image  # keys the cluster did not publish


def test_missing_settings_fall_back_to_defaults_with_a_message(tmp_path, api):
    c = Cluster(tmp_path, "one")
    c.settings = None
    said = []
    _, settings = check_token(c.token(api=api(c)), say=said.append)
    assert settings is None and "no worker settings" in said[0]


def _bad_tokens(tmp_path, api):
    one, other = Cluster(tmp_path, "one"), Cluster(tmp_path, "other")
    url = api(one)
    return {
        "malformed": ("mke1.bm90LWEtdG9rZW4", "the join token is malformed"),
        "truncated": (one.token(api=url)[:-20], "the join token is malformed"),
        "other cluster": (other.token(api=url), "is not served with a certificate of the token's CA"),
        "expired": (one.token(api=url, expires=NOW - dt.timedelta(hours=1)), "expired at"),
        "invalidated": (one.token(api=url, known=False, tid="zzzzzz"), "does not accept token zzzzzz: it was invalidated"),
        "controller token": (one.token(api=url, role="controller"), "this is a controller token, not a worker token"),
        "unreachable": (one.token(api="https://127.0.0.1:9"), "cannot reach the API at https://127.0.0.1:9"),
    }


@pytest.mark.parametrize("case", ["malformed", "truncated", "other cluster", "expired", "invalidated",
                                  "controller token", "unreachable"])
def test_bad_tokens_fail_with_one_line_and_leave_nothing_behind(tmp_path, api, case):
    text, message = _bad_tokens(tmp_path, api)[case]
    data_dir = tmp_path / "data"
    w = Worker(data_dir=data_dir, options=WorkerOptions(node_name="w1"), token=text, say=lambda m: None)
    with pytest.raises(TokenError) as e:
        w.run()
    assert message in str(e.value)
    assert "\n" not in str(e.value)
    assert not data_dir.exists()


def test_joined_node_ignores_the_token_but_refuses_another_clusters(tmp_path, api):
    """A node with valid kubelet credentials restarts without a token; another cluster's token is refused."""
    c, other = Cluster(tmp_path, "one"), Cluster(tmp_path, "other")
    url = api(c)
    data = tmp_path / "data"
    (data / "worker" / "pki").mkdir(parents=True)
    key = new_key()
    cert = make_leaf_cert(CertSpec(name="kubelet", ca="ca", cn="system:node:w1", orgs=("system:nodes",), client=True),
                          key, c.ca, c.ca_key)
    pem = data / "worker" / "pki" / "kubelet-client-current.pem"
    pem.write_bytes(cert_pem(cert) + key_pem(key))
    (data / "worker" / "ca.crt").write_bytes(cert_pem(c.ca))
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": "default",
        "clusters": [{"name": "default", "cluster": {"server": url, "certificate-authority": str(data / "worker" / "ca.crt")}}],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
        "users": [{"name": "default", "user": {"client-certificate": str(pem), "client-key": str(pem)}}],
    }
    (data / "worker" / "kubelet.conf").write_text(json.dumps(kubeconfig))
    said: list[str] = []
    w = Worker(data_dir=data, options=WorkerOptions(node_name="w1"), token=c.token(api=url, known=False), say=said.append)
    api_url, _settings, tok = w.authenticate()
    assert api_url == url and tok is None and "ignoring the token" in said[-1]
    w = Worker(data_dir=data, options=WorkerOptions(node_name="w1"), token=None, say=said.append)
    assert w.authenticate()[0] == url
    w = Worker(data_dir=data, options=WorkerOptions(node_name="w1"), token=other.token(api=url), say=said.append)
    with pytest.raises(TokenError, match="belongs to another cluster"):
        w.authenticate()


def test_no_token_and_not_joined_says_how_to_get_one(tmp_path):
    w = Worker(data_dir=tmp_path / "d", options=WorkerOptions(node_name="w1"), token=None)
    with pytest.raises(TokenError, match="mke token create --role=worker"):
        w.run()
    assert not (tmp_path / "d").exists()


def test_bootstrap_kubeconfig_uses_the_token_and_ca_file(tmp_path, api):
    import yaml

    c = Cluster(tmp_path, "one")
    tok, _ = check_token(c.token(api=api(c)))
    doc = yaml.safe_load(bootstrap_kubeconfig(tok, tmp_path / "ca.crt"))
    assert doc["users"][0]["user"]["token"] == "abcdef.0123456789abcdef"
    assert doc["clusters"][0]["cluster"] == {"server": tok.api_url, "certificate-authority": str(tmp_path / "ca.crt")}


def test_settings_round_trip_through_the_cache_file(tmp_path):
    s = WorkerSettings.from_data({"clusterDNS": "10.0.0.10"}, "cluster")
    s.save(tmp_path / "s.json")
    back = WorkerSettings.load(tmp_path / "s.json")
    assert back is not None and back.cluster_dns == "10.0.0.10" and back.source == "cache"
    assert WorkerSettings.load(tmp_path / "missing.json") is None


def test_worker_command_token_sources(tmp_path, monkeypatch):
    import argparse

    from mke.commands.worker import read_token
    from mke.errors import UsageError

    f = tmp_path / "tok"
    f.write_text("mke1.fromfile\n")
    ns = argparse.Namespace(token=None, token_file=f)
    assert read_token(ns) == "mke1.fromfile"
    monkeypatch.setenv("MKE_TOKEN", "mke1.fromenv")
    assert read_token(argparse.Namespace(token=None, token_file=None)) == "mke1.fromenv"
    assert read_token(argparse.Namespace(token="mke1.arg", token_file=None)) == "mke1.arg"
    with pytest.raises(UsageError, match="not both"):
        read_token(argparse.Namespace(token="x", token_file=f))


def test_kubelets_client_certificate_status_reads_its_end_of_validity(tmp_path):
    """mke worker decides whether kubelet must bootstrap again from its kubeconfig's client
    certificate, read with mke.der (real certificates, in the data and in the file form)."""
    import base64

    import yaml

    from mke.worker.kubelet import client_cert_status

    ca_key = new_key()
    ca = make_ca_cert(ca_key, "kubernetes-client-ca")
    now = dt.datetime.now(dt.UTC)
    spec = CertSpec(name="kubelet", ca="client-ca", cn="system:node:w1", orgs=("system:nodes",), client=True)
    cert = make_leaf_cert(spec, new_key(), ca, ca_key, not_before=now - dt.timedelta(days=400))  # 365 days: expired
    fresh = make_leaf_cert(spec, new_key(), ca, ca_key, not_before=now)

    def kubeconfig(name: str, user: dict) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump({"users": [{"name": "kubelet", "user": user}]}))
        return path

    expired = kubeconfig("expired.conf", {"client-certificate-data": base64.b64encode(cert_pem(cert)).decode()})
    ok, why = client_cert_status(expired)
    assert not ok and why == f"its client certificate expired at {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    (tmp_path / "kubelet.crt").write_bytes(cert_pem(fresh))
    ok, why = client_cert_status(kubeconfig("files.conf", {"client-certificate": str(tmp_path / "kubelet.crt")}))
    assert ok and why == f"client certificate valid until {fresh.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    ok, why = client_cert_status(kubeconfig("bad.conf", {"client-certificate-data": base64.b64encode(b"junk").decode()}))
    assert not ok and "unreadable credentials (no PEM certificate)" in why
    assert client_cert_status(tmp_path / "missing.conf") == (False, f"{tmp_path / 'missing.conf'} does not exist")
