"""Kubernetes' version-skew rules as mke applies them before a node starts (mke/skew.py),
and GET /version against a real TLS server (the cluster's answer as kube-apiserver gives it)."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mke import skew
from mke.errors import VersionSkewError


@pytest.mark.parametrize(("kubelet", "apiserver", "refused"), [
    ("v1.37.2", "v1.37.0", None),               # same minor, newer patch: fine
    ("v1.36.5", "v1.37.2", None),               # one behind: fine (workers after controllers)
    ("v1.34.0", "v1.37.2", None),               # three behind: the limit
    ("v1.33.9", "v1.37.2", "more than 3 minor versions older"),
    ("v1.37.2", "v1.36.5", "newer than the cluster's kube-apiserver v1.36.5: upgrade the controllers first"),
    ("1.37.2", "Kubernetes v1.37.2-mke.1", None),
    ("garbage", "v1.36.5", None),               # unknown: not refused on a guess
])
def test_kubelet_rules(kubelet: str, apiserver: str, refused: str | None) -> None:
    problem = skew.kubelet_problem(kubelet, apiserver)
    assert (problem is None) == (refused is None)
    if refused:
        assert refused in problem and "\n" not in problem and "docs/upgrade.md" in problem


@pytest.mark.parametrize(("new", "previous", "what", "refused"), [
    ("v1.37.2", "v1.36.5", "this data dir's control plane", None),     # one minor up
    ("v1.36.6", "v1.36.5", "this data dir's control plane", None),     # a patch
    ("v1.36.4", "v1.36.5", "this data dir's control plane", None),     # a patch back: allowed
    ("v1.38.0", "v1.36.5", "this data dir's control plane", "more than one minor version newer"),
    ("v1.35.9", "v1.36.5", "this data dir's control plane", "does not go back a minor version"),
    ("v1.36.5", "v1.37.2", "the cluster's kube-apiserver", None),      # HA: one minor apart is allowed
    ("v1.35.0", "v1.37.2", "the cluster's kube-apiserver", "does not go back"),
    ("v1.38.1", "v1.36.5", "the cluster's kube-apiserver", "with an mke file of v1.37 first"),
])
def test_controller_rules(new: str, previous: str, what: str, refused: str | None) -> None:
    problem = skew.controller_problem(new, previous, what=what)
    assert (problem is None) == (refused is None), problem
    if refused:
        assert refused in problem and what in problem and "\n" not in problem


def test_the_recorded_version_is_compared_at_the_next_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    versions = {"kube-apiserver": "v1.36.5"}
    monkeypatch.setattr(skew, "embedded_version", lambda name, bin_dir=None: versions.get(name))
    assert skew.check_controller(tmp_path, None) == "v1.36.5"  # nothing recorded: a new data dir
    skew.record(tmp_path, "v1.36.5")
    assert (tmp_path / skew.RECORD).stat().st_mode & 0o777 == 0o600
    versions["kube-apiserver"] = "v1.37.2"
    assert skew.check_controller(tmp_path, None) == "v1.37.2"
    versions["kube-apiserver"] = "v1.38.0"
    with pytest.raises(VersionSkewError, match=r"v1.38.0 is more than one minor version newer than this data dir"):
        skew.check_controller(tmp_path, None)
    (tmp_path / skew.RECORD).write_text("not a version\n")
    assert skew.recorded(tmp_path) is None  # unreadable: as if nothing was recorded


def test_embedded_version_asks_the_binary_in_a_bin_dir(tmp_path: Path) -> None:
    kubelet = tmp_path / "kubelet"
    kubelet.write_text("#!/bin/sh\necho 'Kubernetes v1.36.5'\n")
    kubelet.chmod(0o755)
    assert skew.embedded_version("kubelet", tmp_path) == "v1.36.5"
    assert skew.embedded_version("kube-apiserver", tmp_path) is None  # not there


@pytest.fixture
def version_server(tmp_path: Path) -> Iterator[tuple[str, str, dict]]:
    """A real HTTPS server answering GET /version like kube-apiserver, with a CA made here."""
    from mke.pki import ClusterPKI, PKIRequest

    pki = ClusterPKI(tmp_path / "pki")
    pki.ensure(PKIRequest(node_name="ctl", api_address="127.0.0.1"))
    answer = {"status": 200, "body": {"major": "1", "minor": "37", "gitVersion": "v1.37.2"}}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(answer["body"]).encode()
            self.send_response(answer["status"])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.crt("apiserver"), pki.key("apiserver"))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", pki.crt("ca").read_text(), answer
    finally:
        server.shutdown()
        server.server_close()


def test_a_worker_newer_than_the_cluster_is_refused_and_an_unreachable_one_only_said(
        version_server: tuple[str, str, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, ca, answer = version_server
    assert skew.apiserver_version(url, ca) == "v1.37.2"
    said: list[str] = []
    monkeypatch.setattr(skew, "embedded_version", lambda name, bin_dir=None: "v1.38.0")
    with pytest.raises(VersionSkewError, match="kubelet v1.38.0 is newer than the cluster's kube-apiserver v1.37.2"):
        skew.check_kubelet(url, ca, None, said.append)
    monkeypatch.setattr(skew, "embedded_version", lambda name, bin_dir=None: "v1.37.2")
    skew.check_kubelet(url, ca, None, said.append)
    assert said == []
    answer["status"] = 500
    skew.check_kubelet(url, ca, None, said.append)
    skew.check_kubelet("https://127.0.0.1:9", ca, None, said.append)
    assert len(said) == 2 and all("version skew not checked" in s for s in said)
    # a joining controller two minors ahead of the cluster is refused before its token is used
    answer["status"] = 200
    monkeypatch.setattr(skew, "embedded_version", lambda name, bin_dir=None: "v1.39.0")
    with pytest.raises(VersionSkewError, match=f"the cluster's kube-apiserver at {url}"):
        skew.check_controller(tmp_path / "data", None, api_url=url, ca_pem=ca)
