"""Certificate rotation without restarts (issue 19.5): mke.pki ``rotate``, which component
must restart for which changed file (``SupervisedComponent.needs_restart``, from the
component's real flags), the mke API serving a rotated certificate on the next connection
(a real TLS server), and ``mke certificate status|rotate`` on a data dir no server runs on.
The whole path on a running cluster (zero failed API requests, unchanged pids, the new
certificates seen over TLS, exec right after) is tests/e2e/test_cluster.py
(``test_certificate_rotation_without_restarts_and_without_a_failed_request``), on the real
dist/mke, whose embedded konnectivity-server carries the reload patch.
"""

from __future__ import annotations

import dataclasses
import io
import os
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from mke.commands.certificate import SERVICES, served_certificate
from mke.components.apiserver import KubeAPIServer
from mke.components.context import ControllerContext
from mke.components.controller_manager import KubeControllerManager
from mke.components.konnectivity import RELOAD_PATCH, KonnectivityServer
from mke.components.scheduler import KubeScheduler
from mke.config import parse_config
from mke.errors import PKIError
from mke.node.binaries import BinaryResolver
from mke.node.tls import ReloadingServerContext
from mke.pki import LEAF_CAS, ClusterPKI, cert_sans, load_cert, write_file_atomic
from mke.storage.etcd import Etcd
from mke.supervisor import LogSink

REPO = Path(__file__).resolve().parents[3]


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def public(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture()
def pki(tmp_path: Path, make_pki) -> ClusterPKI:
    return make_pki(tmp_path / "data" / "pki")


def test_rotate_gives_new_keys_and_keeps_subject_sans_and_usages(pki: ClusterPKI):
    names = pki.leaves()
    assert set(names) == set(LEAF_CAS)
    old = {n: load_cert(pki.crt(n)) for n in names}
    new = pki.rotate(names)
    for n in names:
        before, after = old[n], load_cert(pki.crt(n))
        assert after is not None and before is not None
        assert der(after) == der(new[n])
        assert public(after) != public(before), f"{n}: same key"
        assert after.subject == before.subject and cert_sans(after) == cert_sans(before)
        usages = lambda c: set(c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)  # noqa: E731
        assert usages(after) == usages(before)
        after.verify_directly_issued_by(pki.ca_cert(LEAF_CAS[n]))
        assert pki.key(n).stat().st_mode & 0o777 == 0o600
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages(load_cert(pki.crt("apiserver")))


def test_rotate_refuses_what_is_not_a_leaf(pki: ClusterPKI):
    with pytest.raises(PKIError, match="ca: not a leaf certificate"):
        pki.rotate(["ca"])


def test_ensure_keeps_a_rotated_certificate(pki: ClusterPKI):
    from mke.pki import PKIRequest

    pki.rotate(["apiserver"])
    rotated = pki.crt("apiserver").read_bytes()
    rep = pki.ensure(PKIRequest(node_name="ctl-1", api_address="127.0.0.1"))
    assert "apiserver" in rep.kept and pki.crt("apiserver").read_bytes() == rotated


def test_component_kubeconfigs_name_their_files_and_admin_carries_its_data(pki: ClusterPKI):
    for name in ("controller-manager", "scheduler", "konnectivity"):
        user = yaml.safe_load(pki.kubeconfig(name).read_text())["users"][0]["user"]
        assert Path(user["client-certificate"]).parent == pki.dir and "client-certificate-data" not in user
    assert "client-certificate-data" in yaml.safe_load(pki.kubeconfig("admin").read_text())["users"][0]["user"]


@pytest.fixture()
def ctx(pki: ClusterPKI) -> ControllerContext:
    data = pki.dir.parent
    return ControllerContext(config=parse_config({}), data_dir=data, node_name="ctl-1", api_address="127.0.0.1",
                             binaries=BinaryResolver(data / "bin", user_bin_dir=True), sink=LogSink(io.StringIO()))


def components(ctx: ControllerContext) -> dict[str, object]:
    cs = [KubeAPIServer(ctx, etcd_servers="https://127.0.0.1:2379"), Etcd(ctx), KubeControllerManager(ctx),
          KubeScheduler(ctx), KonnectivityServer(ctx)]
    for c in cs:
        c.started_files = c.files_state()  # as start() records it
    return {c.name: c for c in cs}


def test_an_upstream_konnectivity_alone_restarts_when_every_leaf_is_rotated(pki: ClusterPKI, ctx: ControllerContext):
    """konnectivity-server from --bin-dir (as upstream builds it) reads its agent-facing pair only at start."""
    cs = components(ctx)
    pki.rotate(pki.leaves())
    need = {name: c.needs_restart() for name, c in cs.items()}
    assert need["konnectivity-server"], "konnectivity-server reads its agent-facing pair only at start"
    assert sorted(need["konnectivity-server"]) == ["konnectivity.crt", "konnectivity.key"]  # only what changed
    assert {n: v for n, v in need.items() if n != "konnectivity-server"} == {
        "kube-apiserver": [], "etcd": [], "kube-controller-manager": [], "kube-scheduler": []}


class PatchedPayload(BinaryResolver):
    """What ``BinaryResolver.patches`` reads from a docker-mode payload's manifest: the embedded
    konnectivity-server carries recipes/konnectivity.toml's patch (the e2e rotation test runs
    the real dist/mke)."""

    def patches(self, name: str) -> tuple[str, ...]:
        return (f"{RELOAD_PATCH} (sha256 {'0' * 64}): reload",) if name == "konnectivity-server" else ()


def test_nothing_restarts_when_the_embedded_konnectivity_carries_the_reload_patch(pki: ClusterPKI, ctx: ControllerContext):
    patched = dataclasses.replace(ctx, binaries=PatchedPayload(ctx.data_dir / "bin"))
    cs = components(patched)
    assert cs["konnectivity-server"].reloads == {"cluster-cert", "cluster-key"}
    pki.rotate(pki.leaves())
    assert {name: c.needs_restart() for name, c in cs.items()} == {
        "kube-apiserver": [], "etcd": [], "kube-controller-manager": [], "kube-scheduler": [], "konnectivity-server": []}


def test_the_reload_patch_is_the_one_the_recipe_applies():
    from build.recipes import load_recipe

    recipe = load_recipe(REPO / "recipes" / "konnectivity.toml")
    assert [p.file for p in recipe.source.patches] == [RELOAD_PATCH]


def test_what_a_component_reads_only_at_start_restarts_it(pki: ClusterPKI, ctx: ControllerContext):
    cs = components(ctx)
    files = cs["kube-apiserver"].files_read()
    assert files[pki.crt("apiserver")] is True and files[pki.key("apiserver-etcd-client")] is True
    assert files[pki.sa_key] is False and files[pki.crt("etcd/ca")] is False
    scheduler = cs["kube-scheduler"].files_read()
    assert scheduler[pki.kubeconfig("scheduler")] is False  # the kubeconfig itself: at start
    assert scheduler[pki.crt("scheduler")] is True  # the client pair it names: client-go reloads it
    assert files[pki.secrets_encryption] is True  # --encryption-provider-config-automatic-reload
    # a CA etcd and the apiserver read at start changes: both restart, nothing else
    write_file_atomic(pki.crt("etcd/ca"), pki.crt("etcd/ca").read_bytes() + b"\n", 0o644)
    restart = {n: c.needs_restart() for n, c in cs.items() if c.needs_restart()}
    assert restart == {"etcd": ["etcd/ca.crt"], "kube-apiserver": ["etcd/ca.crt"]}


def test_a_flag_naming_another_file_restarts_a_component(pki: ClusterPKI, ctx: ControllerContext):
    cs = components(ctx)
    # the legacy CA of a data dir from before CA separation: the apiserver's client CA flag (a
    # file it reloads) now names the bundle, which the running process does not watch
    write_file_atomic(pki.legacy_ca, pki.crt("ca").read_bytes(), 0o644)
    write_file_atomic(pki.crt("client-ca-bundle"), pki.crt("client-ca").read_bytes(), 0o644)
    assert cs["kube-apiserver"].needs_restart() == ["the files its flags name"]
    assert cs["kube-scheduler"].needs_restart() == [] and cs["etcd"].needs_restart() == []


def test_a_flag_that_reads_a_file_at_start_wins_over_one_that_reloads_it(ctx: ControllerContext):
    api = KubeAPIServer(ctx, etcd_servers="https://127.0.0.1:2379")
    extra = {"service-account-key-file": str(ctx.pki.crt("apiserver"))}
    ctx.extra_args = lambda name: extra if name == api.name else {}  # type: ignore[method-assign]
    assert api.files_read()[ctx.pki.crt("apiserver")] is False


# -- serving a rotated certificate without a restart


def serve(tls: ReloadingServerContext) -> tuple[int, threading.Event]:
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    done = threading.Event()

    def loop() -> None:
        ls.settimeout(0.2)
        while not done.is_set():
            try:
                conn, _ = ls.accept()
            except TimeoutError:
                continue
            try:
                with tls.current().wrap_socket(conn, server_side=True) as s:
                    s.recv(1)
            except (OSError, ssl.SSLError):
                pass
        ls.close()

    threading.Thread(target=loop, daemon=True).start()
    return ls.getsockname()[1], done


def test_reloading_context_serves_the_new_pair_and_keeps_the_old_one_while_half_written(pki: ClusterPKI):
    tls = ReloadingServerContext(pki.crt("mke-api"), pki.key("mke-api"), check_every=0.0)
    port, done = serve(tls)
    try:
        first = served_certificate("127.0.0.1", port)
        assert first == der(load_cert(pki.crt("mke-api")))
        # half a rotation: a new key under the old certificate does not load; the old pair stays
        from mke.pki import key_pem, new_key

        old_key = pki.key("mke-api").read_bytes()
        write_file_atomic(pki.key("mke-api"), key_pem(new_key()), 0o600)
        assert served_certificate("127.0.0.1", port) == first
        write_file_atomic(pki.key("mke-api"), old_key, 0o600)
        new = pki.rotate(["mke-api"])["mke-api"]
        assert served_certificate("127.0.0.1", port) == der(new)
        assert tls.loads >= 2
    finally:
        done.set()


def test_the_mke_api_serves_a_rotated_certificate_on_the_next_connection(first_controller):
    fc = first_controller()
    host, port = fc.api.address
    assert served_certificate(host, port) == der(load_cert(fc.pki.crt("mke-api")))
    new = ClusterPKI(fc.pki.dir).rotate(["mke-api"])["mke-api"]  # mke certificate rotate's in-process PKI
    import time

    deadline = time.monotonic() + 5
    while served_certificate(host, port) != der(new):
        assert time.monotonic() < deadline, "the mke API still serves the old certificate"
        time.sleep(0.2)


# -- the command, on a data dir no server runs on


def mke(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MKE_")}
    return subprocess.run([sys.executable, "-m", "mke", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=False, env={**env, "PYTHONPATH": str(REPO)})


def test_rotate_without_a_running_server_rotates_the_files_and_says_so(pki: ClusterPKI):
    data = pki.dir.parent
    before = {n: pki.crt(n).read_bytes() for n in pki.leaves()}
    admin = pki.kubeconfig("admin").read_text()
    r = mke("certificate", "rotate", "--data-dir", str(data), "--service", "kube-apiserver", "--service", "admin")
    assert r.returncode == 0, r.stderr
    assert "no mke server runs on this data dir" in r.stdout
    changed = {n for n in before if pki.crt(n).read_bytes() != before[n]}
    assert changed == set(SERVICES["kube-apiserver"]) | set(SERVICES["admin"])
    new_admin = yaml.safe_load(pki.kubeconfig("admin").read_text())["users"][0]["user"]["client-certificate-data"]
    import base64

    assert base64.b64decode(new_admin) == pki.crt("admin").read_bytes() and pki.kubeconfig("admin").read_text() != admin
    assert pki.kubeconfig("admin").stat().st_mode & 0o777 == 0o600


def test_status_lists_every_certificate_and_fails_on_an_expired_one(pki: ClusterPKI):
    import datetime as dt

    from mke.pki import CertSpec, key_pem, load_key, make_leaf_cert, new_key

    data = pki.dir.parent
    r = mke("certificate", "status", "--data-dir", str(data), "--json")
    assert r.returncode == 0, r.stderr
    import json

    rows = {row["file"]: row for row in json.loads(r.stdout)["certificates"]}
    assert rows["pki/apiserver.crt"]["subject"] == "kube-apiserver"
    assert rows["pki/apiserver.crt"]["issuer"] == "kubernetes-server-ca"
    key = new_key()
    old = make_leaf_cert(CertSpec(name="scheduler", ca="client-ca", cn="system:kube-scheduler", client=True), key,
                         pki.ca_cert("client-ca"), load_key(pki.key("client-ca")),
                         not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=400))
    from mke.pki import cert_pem

    write_file_atomic(pki.key("scheduler"), key_pem(key), 0o600)
    write_file_atomic(pki.crt("scheduler"), cert_pem(old), 0o644)
    r = mke("certificate", "status", "--data-dir", str(data))
    assert r.returncode == 7, r
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "pki/scheduler.crt" in r.stderr
    assert "pki/scheduler.crt" in r.stdout


def test_rotate_on_a_worker_says_kubelet_rotates_its_own(tmp_path: Path):
    (tmp_path / "worker").mkdir()
    r = mke("certificate", "rotate", "--data-dir", str(tmp_path))
    assert r.returncode != 0 and "kubelet rotates its own" in r.stderr and "Traceback" not in r.stderr


def test_the_controller_makes_kube_apiservers_first_kubelet_connection_after_its_client_certificate_changed(
        tmp_path: Path, make_pki):
    """client-go closes every connection of a transport whose client certificate changed, the
    one being handshaken too: the first exec/logs after a rotation would fail with "error
    dialing backend: EOF". The controller spends that failure itself: upgrade requests through
    the node proxy (which always dial) until one gets through. The stand-in API answers two
    dial failures, then the kubelet's answer; the real path is tests/e2e (exec right after
    ``mke certificate rotate``)."""
    from mke.config import default_config
    from mke.controller import Controller
    from tests.support.apiservers import KubeAPIStandIn, status

    kube = KubeAPIStandIn()
    pki = make_pki(tmp_path / "data" / "pki", kube.port)
    kube.serve(cert=pki.crt("apiserver"), key=pki.key("apiserver"), client_ca=pki.client_ca_file,
               require_client_cert=False)
    try:
        kube.put({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "w1"},
                  "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
        probe = lambda s: s.path == "/api/v1/nodes/w1/proxy/healthz"  # noqa: E731
        kube.fail(500, status(500, "InternalError", "error dialing backend: EOF"), when=probe, times=2)
        kube.fail(200, b"ok", when=probe)
        ctl = Controller(default_config(), data_dir=tmp_path / "data", name="ctl-1")
        out = io.StringIO()
        ctl.ctx.sink = LogSink(out)
        ctl.manager = object()  # as if started
        ctl.renew_kubelet_connections()  # the first call records what kube-apiserver started with
        assert not [s for s in kube.seen if probe(s)]
        pki.rotate(["apiserver-kubelet-client"])
        ctl.renew_kubelet_connections()
        probes = [s for s in kube.seen if probe(s)]
        assert len(probes) == 3 and all(s.headers.get("Upgrade") == "websocket" and
                                        s.headers.get("Connection") == "Upgrade" for s in probes)
        assert "reconnected to the kubelets with its new client certificate (3 tries through node w1)" in out.getvalue()
        ctl.renew_kubelet_connections()  # nothing changed since: nothing sent
        assert len([s for s in kube.seen if probe(s)]) == 3
    finally:
        kube.stop()


def test_rotate_looks_for_etcds_new_peer_certificate_where_etcd_listens(pki: ClusterPKI, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch):
    """The peer certificate names every address of the host (docker0's 172.17.0.1 among them);
    etcd listens for peers on one (its peer address: the advertised one). ``rotate`` waited for
    the new certificate on the lowest-sorting address of the certificate, where nothing listens,
    and said "still serving the old certificate" after 90 s on any host with a docker0."""
    import mke.pki
    from mke.commands.certificate import _serving_endpoints

    monkeypatch.setattr(mke.pki, "cert_sans", lambda cert: ["DNS:localhost", "IP:127.0.0.1", "IP:172.17.0.1",
                                                            "IP:192.0.2.2"])
    running = {"storage": "etcd", "api_address": "192.0.2.2"}
    assert _serving_endpoints(pki, tmp_path / "no-such-data-dir", running)["etcd/peer"] == ("192.0.2.2", 2380)
    # no address in the record (an older mke's status file): the certificate's, as before
    assert _serving_endpoints(pki, tmp_path / "no-such-data-dir", {"storage": "etcd"})["etcd/peer"] == ("172.17.0.1",
                                                                                                       2380)
