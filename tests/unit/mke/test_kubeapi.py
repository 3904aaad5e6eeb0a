"""mke/kubeapi.py: KubeClient against a Kubernetes API over real mutual TLS.

The server is tests/support/apiservers.py's KubeAPIStandIn: real HTTPS on 127.0.0.1 with
the apiserver certificate that mke/pki.py's ClusterPKI makes, standing in for
kube-apiserver (the real one is exercised by tests/integration/test_server*.py). It
answers discovery, get/list/create/apply/delete in the apiserver's shapes and records
what the client sent, including the client certificate it authenticated with.

Covers: kubeconfig loading (embedded data, file references, bearer tokens, every broken
kubeconfig as one line), TLS (the server's CA is checked; the client key never touches
a file outside the data dir, and is loaded once per process: issue 14 item 1), the typed
helpers, and error mapping to one-line KubeAPIError messages.
"""

from __future__ import annotations

import base64
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from mke.errors import KubeAPIError
from mke.kubeapi import TLS_CONTEXTS, KubeClient, endpoint_from_kubeconfig
from mke.pki import ClusterPKI, PKIRequest, load_cert
from tests.support.apiservers import KubeAPIStandIn, silent_listener, status


@pytest.fixture
def api(tmp_path, make_pki):
    """(pki, kube): a stand-in kube-apiserver serving the pki's apiserver certificate."""
    kube = KubeAPIStandIn()
    pki = make_pki(tmp_path / "data" / "pki", kube.port)
    kube.serve(cert=pki.crt("apiserver"), key=pki.key("apiserver"), client_ca=pki.client_ca_file,
               require_client_cert=False)
    yield pki, kube
    kube.stop()


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


def open_fds() -> dict[str, str]:
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return out


# ---------------------------------------------------------------- credentials


def test_admin_kubeconfig_authenticates_with_its_embedded_client_certificate(api):
    pki, kube = api
    client = KubeClient.from_kubeconfig(pki.kubeconfig("admin"))
    assert client.server == f"https://127.0.0.1:{kube.port}"
    assert client.get("v1", "Secret", "nothing", "kube-system") is None
    seen = kube.seen[-1]
    assert (seen.method, seen.path) == ("GET", "/api/v1/namespaces/kube-system/secrets/nothing")
    assert seen.client_cn == "mke-admin" and seen.client_orgs == ("mke:cluster-admins",)
    assert "Authorization" not in seen.headers
    assert seen.headers["User-Agent"] == "mke"


class FileWrites:
    """Paths this process opens for writing or creates while recording (a ``sys.audit`` hook:
    every ``open``/``os.open``/``os.mkdir`` of Python code, whatever directory it names)."""

    installed = False
    recording: list[str] | None = None

    @classmethod
    def hook(cls, event: str, args: tuple) -> None:
        if cls.recording is None:
            return
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and \
                args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            cls.recording.append(os.fsdecode(args[0]))
        elif event in ("os.mkdir", "os.rename", "os.symlink", "os.link"):
            cls.recording.append(os.fsdecode(args[0]))

    def __enter__(self) -> list[str]:
        if not FileWrites.installed:
            sys.addaudithook(FileWrites.hook)  # cannot be removed; inert while not recording
            FileWrites.installed = True
        FileWrites.recording = []
        return FileWrites.recording

    def __exit__(self, *exc: object) -> None:
        FileWrites.recording = None


def test_no_key_material_is_written_outside_the_data_dir_and_it_is_loaded_once(api, tmp_path, monkeypatch):
    """Issue 14 item 1: every client used to copy the admin certificate and key into a new
    /tmp/mke-kubeconfig-* dir that was never removed. Many clients, from many threads,
    now write no file anywhere, leave nothing in the temp dir, hold no descriptor, and
    load the key once."""
    pki, kube = api
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    fds_before = open_fds()
    loads_before = TLS_CONTEXTS.loads
    key_pem = pki.key("admin").read_bytes()

    def clients(n: int) -> None:
        for _ in range(n):
            c = KubeClient.from_kubeconfig(pki.kubeconfig("admin"))
            assert c.get("v1", "ConfigMap", "x", "default") is None
            c.http.close()

    with FileWrites() as written:
        threads = [threading.Thread(target=clients, args=(25,)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    assert sum(1 for s in kube.seen if s.path.endswith("/configmaps/x")) == 200
    assert written == []
    assert list(tmp.iterdir()) == []
    assert TLS_CONTEXTS.loads - loads_before == 1
    leaked = {fd: target for fd, target in open_fds().items() if fd not in fds_before}
    assert not [t for t in leaked.values() if "memfd" in t or "mke" in t], leaked
    # The only copy of the key on disk is the pki dir's own.
    copies = [p for p in tmp_path.rglob("*") if p.is_file() and key_pem in p.read_bytes()]
    assert copies == [pki.key("admin")]


def test_a_renewed_certificate_is_loaded_again(api):
    pki, kube = api
    KubeClient.from_kubeconfig(pki.kubeconfig("admin")).get("v1", "Secret", "a", "default")
    first = kube.seen[-1].client_serial
    loads = TLS_CONTEXTS.loads
    KubeClient.from_kubeconfig(pki.kubeconfig("admin")).get("v1", "Secret", "a", "default")
    assert TLS_CONTEXTS.loads == loads  # unchanged kubeconfig: the cached context
    pki.key("admin").unlink()  # a new key and certificate, and admin.conf rewritten
    pki.ensure(PKIRequest(node_name="ctl-1", api_address="127.0.0.1", api_port=kube.port))
    KubeClient.from_kubeconfig(pki.kubeconfig("admin")).get("v1", "Secret", "a", "default")
    assert TLS_CONTEXTS.loads == loads + 1
    second = kube.seen[-1].client_serial
    new_cert = load_cert(pki.crt("admin"))
    assert new_cert is not None
    assert second != first and int(second, 16) == new_cert.serial_number


def test_kubeconfig_with_file_references_and_a_bearer_token(api, tmp_path):
    pki, kube = api
    kube.tokens.add("abcdef.0123456789abcdef")
    d = tmp_path / "kc"
    d.mkdir()
    (d / "ca.crt").write_bytes(pki.crt("ca").read_bytes())
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": "t",
           "clusters": [{"name": "c", "cluster": {"server": kube.url, "certificate-authority": "ca.crt"}}],
           "contexts": [{"name": "t", "context": {"cluster": "c", "user": "u"}}],
           "users": [{"name": "u", "user": {"token": "abcdef.0123456789abcdef"}}]}
    (d / "token.conf").write_text(yaml.safe_dump(doc))
    ep = endpoint_from_kubeconfig(d / "token.conf")
    assert ep.ca_file == d / "ca.crt"  # relative to the kubeconfig, as kubectl reads it
    assert "0123456789abcdef" not in repr(ep)
    client = KubeClient(ep)
    assert client.list("v1", "Namespace") == []
    seen = kube.seen[-1]
    assert seen.client_cn is None and seen.headers["Authorization"] == "Bearer abcdef.0123456789abcdef"

    doc["users"][0]["user"]["token"] = "zzzzzz.0123456789abcdef"
    (d / "bad.conf").write_text(yaml.safe_dump(doc))
    with pytest.raises(KubeAPIError) as e:
        KubeClient.from_kubeconfig(d / "bad.conf").list("v1", "Namespace")
    assert "HTTP 401: Unauthorized" in one_line(e)


def test_kubeconfig_with_client_certificate_files(api, tmp_path):
    """The kubelet's kubeconfig: certificate and key in one file the kubeconfig names."""
    pki, kube = api
    pem = tmp_path / "client.pem"
    pem.write_bytes(pki.crt("scheduler").read_bytes() + pki.key("scheduler").read_bytes())
    doc = {"current-context": "k", "contexts": [{"name": "k", "context": {"cluster": "c", "user": "u"}}],
           "clusters": [{"name": "c", "cluster": {"server": kube.url, "certificate-authority": str(pki.crt("ca"))}}],
           "users": [{"name": "u", "user": {"client-certificate": str(pem), "client-key": str(pem)}}]}
    (tmp_path / "k.conf").write_text(yaml.safe_dump(doc))
    KubeClient.from_kubeconfig(tmp_path / "k.conf").get("v1", "Node", "n1")
    assert kube.seen[-1].client_cn == "system:kube-scheduler"


def _kubeconfig_cases(tmp_path: Path, pki: ClusterPKI, other_key: ClusterPKI) -> dict[str, tuple[Path, str]]:
    good = yaml.safe_load(pki.kubeconfig("admin").read_text())

    def write(name: str, doc: object) -> Path:
        p = tmp_path / f"{name}.conf"
        p.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
        return p

    def changed(path: str, value: object) -> dict:
        doc = yaml.safe_load(yaml.safe_dump(good))
        *parents, last = path.split(".")
        node = doc
        for k in parents:
            node = node[int(k)] if k.isdigit() else node[k]
        if value is None:
            del node[last]
        else:
            node[last] = value
        return doc

    return {
        "missing": (tmp_path / "nope.conf", "cannot read the kubeconfig"),
        "not yaml": (write("notyaml", "{{{: ["), "not a usable kubeconfig"),
        "a list": (write("list", "[1, 2]"), "not a usable kubeconfig"),
        "no current context": (write("nocur", changed("current-context", None)), "no 'current-context'"),
        "unknown context": (write("unknown", changed("current-context", "elsewhere")),
                            "no entry for the current context"),
        "no server": (write("noserver", changed("clusters.0.cluster.server", None)), "no 'server'"),
        "bad base64": (write("b64", changed("users.0.user.client-key-data", "%%%not-base64")),
                       "client-key-data is not valid base64"),
        "no CA": (write("noca", changed("clusters.0.cluster.certificate-authority-data", None)),
                  "the cluster has no certificate authority"),
        "not https": (write("http", changed("clusters.0.cluster.server", "http://127.0.0.1:6443")),
                      "is not an https://host[:port] URL"),
        "bad port": (write("port", changed("clusters.0.cluster.server", "https://127.0.0.1:99999")),
                     "is not an https://host[:port] URL"),
        "key of another cert": (write("mismatch", changed(
            "users.0.user.client-key-data", base64.b64encode(other_key.key("admin").read_bytes()).decode())),
            "cannot load TLS material"),
        "garbage CA": (write("garbageca", changed(
            "clusters.0.cluster.certificate-authority-data", base64.b64encode(b"not a certificate").decode())),
            "cannot load TLS material"),
    }


@pytest.mark.parametrize("case", ["missing", "not yaml", "a list", "no current context", "unknown context",
                                  "no server", "bad base64", "no CA", "not https", "bad port",
                                  "key of another cert", "garbage CA"])
def test_broken_kubeconfigs_are_one_line_naming_the_file(api, tmp_path, make_pki, case):
    pki, kube = api
    path, message = _kubeconfig_cases(tmp_path, pki, make_pki(tmp_path / "other", cluster="other"))[case]
    with pytest.raises(KubeAPIError) as e:
        KubeClient.from_kubeconfig(path)
    msg = one_line(e)
    assert message in msg and str(path) in msg, msg


def test_a_server_with_another_clusters_certificate_is_refused(api, tmp_path, make_pki):
    pki, _ = api
    other = KubeAPIStandIn()
    other_pki = make_pki(tmp_path / "other", other.port, cluster="other")
    other.serve(cert=other_pki.crt("apiserver"), key=other_pki.key("apiserver"), client_ca=other_pki.client_ca_file,
                require_client_cert=False)
    try:
        doc = yaml.safe_load(pki.kubeconfig("admin").read_text())
        doc["clusters"][0]["cluster"]["server"] = other.url
        (tmp_path / "k.conf").write_text(yaml.safe_dump(doc))
        with pytest.raises(KubeAPIError) as e:
            KubeClient.from_kubeconfig(tmp_path / "k.conf").get("v1", "Secret", "s", "default")
        assert "certificate does not verify" in one_line(e)
        assert other.seen == []
    finally:
        other.stop()


# ---------------------------------------------------------------- the typed helpers


def test_create_get_list_apply_delete(api):
    pki, kube = api
    c = KubeClient.from_kubeconfig(pki.kubeconfig("admin"))
    created = c.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                        "metadata": {"name": "s1", "namespace": "kube-system", "labels": {"app": "x"}},
                        "stringData": {"k": "v"}})
    assert created["data"] == {"k": base64.b64encode(b"v").decode()}
    assert kube.seen[-1].method == "POST" and kube.seen[-1].path == "/api/v1/namespaces/kube-system/secrets"
    got = c.get("v1", "Secret", "s1", "kube-system")
    assert got is not None and got["metadata"]["labels"] == {"app": "x"}
    c.create({"apiVersion": "v1", "kind": "Secret", "type": "other", "metadata": {"name": "s2", "namespace": "kube-system"}})
    assert [s["metadata"]["name"] for s in c.list("v1", "Secret", "kube-system", label_selector="app=x")] == ["s1"]
    assert [s["metadata"]["name"] for s in c.list("v1", "Secret", "kube-system", field_selector="type=other")] == ["s2"]
    assert kube.seen[-1].query == {"fieldSelector": ["type=other"]}

    obj = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 1}}
    c.apply(obj)
    seen = kube.seen[-1]
    assert (seen.method, seen.path) == ("PATCH", "/apis/apps/v1/namespaces/default/deployments/d")
    assert seen.query == {"fieldManager": ["mke"], "force": ["true"]}
    assert seen.headers["Content-Type"] == "application/apply-patch+yaml"
    c.apply({**obj, "spec": {"replicas": 3}}, force=False)
    assert kube.seen[-1].query["force"] == ["false"]
    assert c.get("apps/v1", "Deployment", "d", "default")["spec"] == {"replicas": 3}

    assert c.delete("v1", "Secret", "s1", "kube-system") is True
    assert c.delete("v1", "Secret", "s1", "kube-system") is False
    assert c.get("v1", "Secret", "s1", "kube-system") is None


def test_discovery_is_cached_skips_subresources_and_is_redone_for_a_new_kind(api):
    pki, kube = api
    c = KubeClient.from_kubeconfig(pki.kubeconfig("admin"))
    assert c.resource("v1", "Node").plural == "nodes"  # not nodes/status
    assert not c.resource("v1", "Node").namespaced
    c.get("v1", "Node", "a")
    c.get("v1", "Node", "b")
    assert [s.path for s in kube.seen].count("/api/v1") == 1
    with pytest.raises(KubeAPIError) as e:
        c.resource("v1", "Widget")  # an unknown kind: discovery is asked again
    assert "the API has no kind Widget in v1" in one_line(e)
    assert [s.path for s in kube.seen].count("/api/v1") == 2
    with pytest.raises(KubeAPIError, match="no kind Gadget in example.com/v1"):
        c.resource("example.com/v1", "Gadget")  # no such group: 404 from discovery
    # A CRD applied a moment ago: its kind appears in discovery later; apply looks again.
    kube.resources["example.com/v1"] = [("Gadget", "gadgets", True)]
    c.apply({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g", "namespace": "ns"}})
    assert kube.seen[-1].path == "/apis/example.com/v1/namespaces/ns/gadgets/g"
    c.forget_discovery()
    c.get("v1", "Node", "a")
    assert [s.path for s in kube.seen].count("/api/v1") == 3


def test_a_dropped_keep_alive_connection_is_retried_once(api):
    pki, kube = api
    c = KubeClient.from_kubeconfig(pki.kubeconfig("admin"))
    c.get("v1", "Node", "a")
    kube.fail(0, b"", when=lambda s: s.path == "/api/v1/nodes/b")
    assert c.get("v1", "Node", "b") is None
    assert [s.path for s in kube.seen].count("/api/v1/nodes/b") == 2
    kube.fail(0, b"", when=lambda s: s.path == "/api/v1/nodes/c", times=2)
    with pytest.raises(KubeAPIError) as e:
        c.get("v1", "Node", "c")
    assert "GET https://127.0.0.1" in one_line(e)


# ---------------------------------------------------------------- errors


def test_http_errors_are_one_line_with_the_status_message(api):
    pki, kube = api
    c = KubeClient.from_kubeconfig(pki.kubeconfig("admin"))
    c.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}})
    with pytest.raises(KubeAPIError) as e:
        c.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}})
    assert one_line(e) == f'POST {kube.url}/api/v1/namespaces: HTTP 409: namespaces "n" already exists'

    kube.fail(422, status(422, "Invalid", 'Deployment "d" is invalid:\n* spec.replicas: Invalid value: -1\n'
                                          '* spec.selector: Required value'), when=lambda s: s.method == "PATCH")
    with pytest.raises(KubeAPIError) as e:
        c.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}})
    assert one_line(e).endswith('HTTP 422: Deployment "d" is invalid: * spec.replicas: Invalid value: -1 '
                                '* spec.selector: Required value')

    kube.fail(502, b"<html>\n<body>Bad gateway</body>\n</html>\n", when=lambda s: s.path == "/api/v1/nodes/x")
    with pytest.raises(KubeAPIError) as e:
        c.get("v1", "Node", "x")
    assert one_line(e) == f"GET {kube.url}/api/v1/nodes/x: HTTP 502: <html> <body>Bad gateway</body> </html>"

    kube.fail(500, status(500, "InternalError", "etcdserver: request timed out"),
              when=lambda s: s.method == "DELETE")
    with pytest.raises(KubeAPIError, match="HTTP 500: etcdserver: request timed out"):
        c.delete("v1", "Node", "x")

    kube.fail(200, b"this is not json", when=lambda s: s.path == "/api/v1/nodes/y")
    with pytest.raises(KubeAPIError) as e:
        c.get("v1", "Node", "y")
    assert "the answer is not JSON" in one_line(e)

    kube.fail(503, status(503, "ServiceUnavailable", "the server is shutting down"),
              when=lambda s: s.path == "/apis/apps/v1")
    c.forget_discovery()
    with pytest.raises(KubeAPIError, match="GET .*/apis/apps/v1: HTTP 503: the server is shutting down"):
        c.get("apps/v1", "Deployment", "d", "default")


def test_unreachable_and_silent_servers_are_one_line(api, tmp_path):
    pki, kube = api
    kube_port = kube.port
    kube.stop()  # nothing listens there any more
    with pytest.raises(KubeAPIError) as e:
        KubeClient.from_kubeconfig(pki.kubeconfig("admin")).get("v1", "Node", "a")
    assert f"https://127.0.0.1:{kube_port}/api/v1" in one_line(e) and "refused" in str(e.value)

    sock, port = silent_listener()  # accepts, never answers the TLS handshake
    try:
        doc = yaml.safe_load(pki.kubeconfig("admin").read_text())
        doc["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
        (tmp_path / "silent.conf").write_text(yaml.safe_dump(doc))
        c = KubeClient.from_kubeconfig(tmp_path / "silent.conf", timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(KubeAPIError) as e:
            c.list("v1", "Node")
        assert time.monotonic() - t0 < 5
        assert "timed out" in one_line(e)
        with pytest.raises(KubeAPIError, match="not ready after 1s"):
            c.wait_ready(1.0)
    finally:
        sock.close()


def test_wait_ready_polls_until_readyz_answers(api):
    pki, kube = api
    kube.fail(500, b"[-]etcd failed", when=lambda s: s.path == "/readyz", times=3)
    c = KubeClient.from_kubeconfig(pki.kubeconfig("admin"))
    c.wait_ready(10.0, interval=0.01)
    assert [s.path for s in kube.seen].count("/readyz") == 4
    assert c.get_status("GET", "/readyz") == (200, b"ok")

