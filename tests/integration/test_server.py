"""`mke server` on this machine with real binaries, checked with the Python `kubernetes` client.

Needs root and the docker-mode (or any real) binaries: etcd, kine, kube-apiserver,
kube-controller-manager, kube-scheduler (konnectivity-server when present), found in
$MKE_TEST_BIN_DIR or dist/linux-amd64/bin. Skips with the reason otherwise. The
MariaDB and PostgreSQL backends start their own servers from Debian's packages on
loopback (scripts/bootstrap.sh installs them).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.binaries import real_bin_dir
from tests.support.databases import DatabaseUnavailable, mariadb_server, postgres_server

REPO = Path(__file__).resolve().parents[2]
CORE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")

pytestmark = [pytest.mark.root, pytest.mark.slow]


def find_bin_dir() -> Path | None:
    return real_bin_dir()[0]


def require(bin_dir: Path | None, *names: str) -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if bin_dir is None:
        pytest.skip(f"no real binaries: {real_bin_dir()[1]}")
    missing = [n for n in names if not os.access(bin_dir / n, os.X_OK)]
    if missing:
        pytest.fail(f"{bin_dir} lacks {', '.join(missing)} ({real_bin_dir()[1]})")
    return bin_dir


def wait_for(pred: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - the condition may raise while things start
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last})")


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float = 60) -> None:
    """SIGTERM a running mke (it stops its components in order); SIGKILL after ``timeout``."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class MkeServer:
    """`python -m mke server` as a child process; logs go to a file in the data dir's parent."""

    def __init__(self, root: Path, bin_dir: Path, config: dict[str, Any], *, repo: Path = REPO) -> None:
        self.root = root
        self.repo = repo  # the mke source to run (another tree: an older mke, for upgrades)
        self.bin_dir = bin_dir
        self.data_dir = root / "data"
        self.config_path = root / "mke.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = root / "mke.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        t0 = time.monotonic()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mke", "server", "--config", str(self.config_path), "--data-dir",
             str(self.data_dir), "--bin-dir", str(self.bin_dir)],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.repo, env={**os.environ, "PYTHONPATH": str(self.repo)},
        )
        self.wait_ready(t0)
        return time.monotonic() - t0

    def wait_ready(self, t0: float | None = None, timeout: float = 120) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"mke server exited with {self.proc.returncode}; see {self.log_path}:\n"
                                     + self.log_tail())
            st = self.status()
            return st.get("pid") == self.proc.pid and st.get("phase") == "running" and self.readyz()

        wait_for(ready, timeout, "the control plane")

    def readyz(self) -> bool:
        pki = self.data_dir / "pki"
        res = subprocess.run(["curl", "-sf", "--max-time", "2", "--cacert", str(pki / "ca.crt"), "--cert",
                              str(pki / "admin.crt"), "--key", str(pki / "admin.key"),
                              f"https://127.0.0.1:{self.port}/readyz"], capture_output=True)
        return res.returncode == 0

    @property
    def port(self) -> int:
        return int(yaml.safe_load(self.config_path.read_text()).get("api", {}).get("port", 6443))

    def status(self) -> dict[str, Any]:
        try:
            return json.loads((self.data_dir / "run" / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def component_pid(self, name: str) -> int:
        return next(c["pid"] for c in self.status()["components"] if c["name"] == name)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None

    def mke(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([sys.executable, "-m", "mke", *args, "--data-dir", str(self.data_dir)],
                             capture_output=True, text=True, cwd=self.repo,
                             env={**os.environ, "PYTHONPATH": str(self.repo)})
        if check:
            assert res.returncode == 0, res.stderr
        return res


def children_of(data_dir: Path) -> list[int]:
    """Pids of the component processes mke started for ``data_dir`` (not mke itself)."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"={data_dir}/" in cmd and " -m mke " not in cmd:
            out.append(int(p.name))
    return out


def kube_client(server: MkeServer) -> Any:
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(server.data_dir / "pki" / "admin.conf"), client_configuration=cfg)
    return client.ApiClient(cfg)


def base_config(storage: dict[str, Any] | None = None, bin_dir: Path | None = None) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    if storage:
        cfg["storage"] = storage
    if bin_dir is None or not os.access(bin_dir / "konnectivity-server", os.X_OK):
        cfg["konnectivity"] = {"enabled": False}
    return cfg


@pytest.fixture(scope="module")
def bin_dir() -> Path | None:
    return find_bin_dir()


# ---------------------------------------------------------------- databases


@pytest.fixture()
def postgres() -> Iterator[str]:
    try:
        with postgres_server() as db:
            yield db.dsn
    except DatabaseUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture()
def mariadb() -> Iterator[str]:
    try:
        with mariadb_server() as db:
            yield db.dsn
    except DatabaseUnavailable as e:
        pytest.skip(str(e))


# ---------------------------------------------------------------- the checks


def check_konnectivity_agents_follow_the_controllers(server: MkeServer) -> None:
    """Issue 14.5: one konnectivity-agent DaemonSet per address in the kubernetes EndpointSlice
    (here: this controller, behind a load balancer address that the agents do not use);
    mke's DaemonSets of controllers that are gone (and the single one of older mke versions)
    are deleted on the next apply; a DaemonSet mke did not make is left alone."""
    from kubernetes import client

    api = kube_client(server)
    apps = client.AppsV1Api(api)
    advertised = client.DiscoveryV1Api(api).read_namespaced_endpoint_slice("kubernetes", "default").endpoints[0].addresses[0]
    address = advertised.replace(".", "-").replace(":", "-")

    def agent_sets() -> dict[str, Any]:
        return {d.metadata.name: d for d in apps.list_namespaced_daemon_set("kube-system").items
                if d.metadata.name.startswith("konnectivity-agent")}

    ds = wait_for(lambda: agent_sets().get(f"konnectivity-agent-{address}"), 90, "this controller's agent DaemonSet")
    args = ds.spec.template.spec.containers[0].args
    assert f"--proxy-server-host={advertised}" in args  # the controller itself, not api.externalAddress

    def stale(name: str, labels: dict[str, str]) -> client.V1DaemonSet:
        return client.V1DaemonSet(metadata=client.V1ObjectMeta(name=name, labels=labels), spec=client.V1DaemonSetSpec(
            selector=client.V1LabelSelector(match_labels={"stale": name}),
            template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels={"stale": name}),
                                              spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="x")]))))

    mkes = {"k8s-app": "konnectivity-agent", "app.kubernetes.io/managed-by": "mke"}
    for name, labels in (("konnectivity-agent", mkes), ("konnectivity-agent-192-0-2-99", mkes),
                         ("konnectivity-agent-someone-elses", {"k8s-app": "konnectivity-agent"})):
        apps.create_namespaced_daemon_set("kube-system", stale(name, labels))
    wait_for(lambda: set(agent_sets()) == {f"konnectivity-agent-{address}", "konnectivity-agent-someone-elses"}, 90,
             "mke's DaemonSets of gone controllers deleted, the other one kept")
    apps.delete_namespaced_daemon_set("konnectivity-agent-someone-elses", "kube-system")


def check_cluster(server: MkeServer) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    api = kube_client(server)
    core = client.CoreV1Api(api)
    names = {n.metadata.name for n in core.list_namespace().items}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names

    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="mke-test")))
    core.create_namespaced_config_map("mke-test", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="hello"), data={"greeting": "hi"}))
    assert core.read_namespaced_config_map("hello", "mke-test").data == {"greeting": "hi"}

    # RBAC: a Role bound to user alice allows configmaps in mke-test only.
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role("mke-test", client.V1Role(
        metadata=client.V1ObjectMeta(name="cm-reader"),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get", "list"])]))
    rbac.create_namespaced_role_binding("mke-test", client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="alice-cm-reader"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="cm-reader"),
        subjects=[client.RbacV1Subject(kind="User", name="alice", api_group="rbac.authorization.k8s.io")]))
    authz = client.AuthorizationV1Api(api)

    def allowed(ns: str, verb: str) -> bool:
        review = authz.create_subject_access_review(client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
            user="alice", resource_attributes=client.V1ResourceAttributes(namespace=ns, verb=verb,
                                                                         resource="configmaps"))))
        return bool(review.status.allowed)

    wait_for(lambda: allowed("mke-test", "get"), 10, "the RoleBinding to take effect")
    assert not allowed("kube-system", "get")
    assert not allowed("mke-test", "delete")

    # No anonymous access.
    res = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
                          str(server.data_dir / "pki" / "ca.crt"), f"https://127.0.0.1:{server.port}/api"],
                         capture_output=True, text=True)
    assert res.stdout == "401"

    # The manifests mke applies are there (bootstrap RBAC, CoreDNS service).
    wait_for(lambda: rbac.read_cluster_role_binding("mke:kubelet-bootstrap"), 60, "bootstrap RBAC")
    assert core.read_namespaced_service("kube-dns", "kube-system").spec.cluster_ip == "10.96.0.10"

    # A worker token: a bootstrap-token secret that authenticates as the bootstrap group.
    tok_str = server.mke("token", "create", "--role=worker", "--expiry=1h").stdout.strip()
    from mke.tokens import decode_token

    tok = decode_token(tok_str, role="worker")
    # health for monitoring: every component running, /readyz, no certificate expired
    st = server.mke("status", check=False)
    assert st.returncode == 0 and "health:     ok" in st.stdout, st.stdout + st.stderr
    # one source of truth: without --config the token carries the running server's api.externalAddress
    external = yaml.safe_load(server.config_path.read_text()).get("api", {}).get("externalAddress")
    if external:
        assert tok.api_url == f"https://{external}:{server.port}"
    secret = core.read_namespaced_secret(f"bootstrap-token-{tok.token_id}", "kube-system")
    assert secret.type == "bootstrap.kubernetes.io/token"
    data = {k: base64.b64decode(v).decode() for k, v in secret.data.items()}
    assert data["token-secret"] == tok.token_secret and data["expiration"]
    assert data["auth-extra-groups"] == "system:bootstrappers:mke:worker"
    assert tok.token_id in server.mke("token", "list").stdout

    def whoami(bearer: str) -> tuple[int, dict[str, Any]]:
        res = subprocess.run(
            ["curl", "-s", "-w", "\n%{http_code}", "--cacert", str(server.data_dir / "pki" / "ca.crt"),
             "-H", f"Authorization: Bearer {bearer}", "-H", "Content-Type: application/json", "-X", "POST",
             "-d", '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}',
             f"https://127.0.0.1:{server.port}/apis/authentication.k8s.io/v1/selfsubjectreviews"],
            capture_output=True, text=True)
        body, _, code = res.stdout.rpartition("\n")
        return int(code), (json.loads(body) if body.strip().startswith("{") else {})

    code, review = whoami(tok.bootstrap_token)
    assert code == 201, review
    info = review["status"]["userInfo"]
    assert info["username"] == f"system:bootstrap:{tok.token_id}"
    assert "system:bootstrappers:mke:worker" in info["groups"]

    server.mke("token", "invalidate", tok.token_id)
    with pytest.raises(ApiException):
        core.read_namespaced_secret(f"bootstrap-token-{tok.token_id}", "kube-system")
    assert wait_for(lambda: whoami(tok.bootstrap_token)[0] == 401, 40, "the token to stop working")  # the apiserver caches a valid token for 10 s


def test_server_with_etcd_survives_kills(tmp_path: Path, bin_dir: Path | None) -> None:
    bins = require(bin_dir, "etcd", *CORE)
    # behind a load balancer: `mke token create` (no --config) must still put this address in tokens
    server = MkeServer(tmp_path, bins, base_config(bin_dir=bins) | {"api": {"externalAddress": "lb.mke.test"}})
    try:
        took = server.start()
        print(f"mke server (etcd) ready in {took:.1f}s")
        assert (server.data_dir / "run" / "etcd.pid").exists()
        check_cluster(server)
        # the PKI was made by `mke _pki ensure` helpers: cryptography is not resident in the
        # long-running server (issue 18, mke.pkifiles)
        assert server.proc is not None
        maps = Path(f"/proc/{server.proc.pid}/maps").read_text()
        assert "cryptography" not in maps and (server.data_dir / "pki" / "apiserver.crt").exists()

        from kubernetes import client

        core = client.CoreV1Api(kube_client(server))
        if not base_config(bin_dir=bins).get("konnectivity"):  # konnectivity enabled: the agents' DaemonSets
            check_konnectivity_agents_follow_the_controllers(server)
        # kill -9 of kube-apiserver, then of etcd: restarted, objects still there.
        for component in ("kube-apiserver", "etcd"):
            old = server.component_pid(component)
            os.kill(old, signal.SIGKILL)
            wait_for(lambda c=component, o=old: server.component_pid(c) not in (o, None), 60, f"{component} restarted",
                     interval=0.5)
            wait_for(server.readyz, 90, f"/readyz after killing {component}")
            assert wait_for(lambda: core.read_namespaced_config_map("hello", "mke-test").data, 30,
                            "the configmap") == {"greeting": "hi"}

        # kill -9 of mke itself, then start it again: the old children are stopped, data kept.
        assert server.proc is not None
        stale = children_of(server.data_dir)
        assert stale
        server.proc.kill()
        server.proc.wait()
        took = server.start()
        print(f"mke server restarted after kill -9 in {took:.1f}s")
        for pid in stale:
            assert not Path(f"/proc/{pid}").exists() or b"zombie" in Path(f"/proc/{pid}/status").read_bytes().lower()
        assert core.read_namespaced_config_map("hello", "mke-test").data == {"greeting": "hi"}

        # a second mke on the same data dir is refused
        res = subprocess.run([sys.executable, "-m", "mke", "server", "--data-dir", str(server.data_dir), "--bin-dir",
                              str(bins)], capture_output=True, text=True, cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
        assert res.returncode == 11 and "another mke" in res.stderr
        st = server.mke("status")
        assert "kube-apiserver" in st.stdout and "running" in st.stdout
    finally:
        server.stop()
    assert wait_for(lambda: not children_of(server.data_dir), 30, "every component to stop")
    assert not list((server.data_dir / "run").glob("*.pid"))


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.database),
                                     pytest.param("mariadb", marks=pytest.mark.database)])
def test_server_with_kine(backend: str, tmp_path: Path, bin_dir: Path | None, request: pytest.FixtureRequest) -> None:
    bins = require(bin_dir, "kine", *CORE)
    storage: dict[str, Any] = {"type": "kine"}
    if backend != "sqlite":
        storage["kine"] = {"dataSource": request.getfixturevalue(backend)}
    server = MkeServer(tmp_path, bins, base_config(storage, bin_dir=bins))
    try:
        took = server.start()
        print(f"mke server (kine {backend}) ready in {took:.1f}s")
        check_cluster(server)
        old = server.component_pid("kine")
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: server.component_pid("kine") not in (old, None), 60, "kine restarted", interval=0.5)
        from kubernetes import client

        core = client.CoreV1Api(kube_client(server))
        assert wait_for(lambda: core.read_namespaced_config_map("hello", "mke-test").data, 60,
                        "the configmap after kine restarted") == {"greeting": "hi"}
    finally:
        server.stop()
    assert wait_for(lambda: not children_of(server.data_dir), 30, "every component to stop")


# ---------------------------------------------------------------- CAs by purpose (issue 14.3, docs/security.md)

# The last mke with one CA for everything (docs/security.md "Certificate authorities": upgrades).
SINGLE_CA_COMMIT = "f7ad41c"


def _cmdline_flags(data_dir: Path, binary: str) -> dict[str, str]:
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            argv = (p / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv and Path(argv[0]).name == binary and any(f"={data_dir}/" in a for a in argv):
            return {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv[1:] if a.startswith("--") and "=" in a}
    raise AssertionError(f"no {binary} running for {data_dir}")


def _issued_by(cert_pem: bytes, ca_file: Path) -> bool:
    from cryptography import x509

    from mke.pki import load_cert

    try:
        x509.load_pem_x509_certificate(cert_pem).verify_directly_issued_by(load_cert(ca_file))
        return True
    except Exception:  # noqa: BLE001 - any failure means "not issued by it"
        return False


def _signed_by_the_controller_manager(server: MkeServer, signer: str, cn: str, usages: list[str],
                                      ips: tuple[str, ...] = ()) -> bytes:
    """A CSR for ``signer``, approved by the admin (not by mke's approver): what does kube-controller-manager sign it with?"""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from kubernetes import client

    key = ec.generate_private_key(ec.SECP256R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
    if ips:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("kubernetes.default.svc")] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]), False)
    pem = b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    certs = client.CertificatesV1Api(kube_client(server))
    name = f"mke-test-{signer.rsplit('/', 1)[-1]}"
    certs.create_certificate_signing_request(client.V1CertificateSigningRequest(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1CertificateSigningRequestSpec(signer_name=signer, usages=usages,
                                                    request=base64.b64encode(pem).decode())))
    from kubernetes.client.rest import ApiException

    def approved() -> bool:  # kube-controller-manager may approve a kubelet client CSR of the admin itself
        csr = certs.read_certificate_signing_request(name)
        if any(c.type == "Approved" for c in csr.status.conditions or []):
            return True
        csr.status.conditions = [client.V1CertificateSigningRequestCondition(
            type="Approved", status="True", reason="MkeTest", message="approved by the test")]
        try:
            certs.replace_certificate_signing_request_approval(name, csr)
        except ApiException as e:
            if e.status != 409:
                raise
            return False
        return True

    wait_for(approved, 30, f"the {signer} CSR approved")
    issued = wait_for(lambda: certs.read_certificate_signing_request(name).status.certificate, 60,
                      f"kube-controller-manager to sign {signer}")
    return base64.b64decode(issued)


def check_ca_separation(server: MkeServer, *, legacy: bool) -> None:
    """The apiserver serves a server-CA certificate, trusts the client CA for clients and the kubelet-serving CA
    for kubelets; kube-controller-manager signs kubelet client and serving CSRs with those, never the server CA."""
    import ssl

    pki = server.data_dir / "pki"
    served = ssl.get_server_certificate(("127.0.0.1", server.port)).encode()
    assert _issued_by(served, pki / "ca.crt") and not _issued_by(served, pki / "client-ca.crt")
    assert _issued_by((pki / "admin.crt").read_bytes(), pki / "client-ca.crt")
    assert not _issued_by((pki / "admin.crt").read_bytes(), pki / "ca.crt")
    suffix = "-bundle" if legacy else ""
    api = _cmdline_flags(server.data_dir, "kube-apiserver")
    assert api["--client-ca-file"] == str(pki / f"client-ca{suffix}.crt")
    assert api["--kubelet-certificate-authority"] == str(pki / f"kubelet-serving-ca{suffix}.crt")
    assert api["--tls-cert-file"] == str(pki / "apiserver.crt")
    kcm = _cmdline_flags(server.data_dir, "kube-controller-manager")
    assert "--cluster-signing-cert-file" not in kcm and kcm["--root-ca-file"] == str(pki / "ca.crt")

    # a kubelet serving certificate for the controller's address and kubernetes.default.svc (the attack of
    # issue 14.3): signed by the kubelet-serving CA, which a client pinning the token's CA does not accept
    serving = _signed_by_the_controller_manager(server, "kubernetes.io/kubelet-serving", "system:node:mke-test",
                                                ["digital signature", "server auth"], ips=("127.0.0.1",))
    assert _issued_by(serving, pki / "kubelet-serving-ca.crt") and not _issued_by(serving, pki / "ca.crt")
    client_cert = _signed_by_the_controller_manager(server, "kubernetes.io/kube-apiserver-client-kubelet",
                                                    "system:node:mke-test", ["digital signature", "client auth"])
    assert _issued_by(client_cert, pki / "client-ca.crt") and not _issued_by(client_cert, pki / "ca.crt")
    # metrics-server is told to verify kubelets with the same CAs as the apiserver
    from kubernetes import client

    cm = client.CoreV1Api(kube_client(server)).read_namespaced_config_map("mke-kubelet-serving-ca", "kube-system")
    assert cm.data["ca.crt"] == Path(api["--kubelet-certificate-authority"]).read_text()


def test_ca_separation_on_a_new_cluster(tmp_path: Path, bin_dir: Path | None) -> None:
    bins = require(bin_dir, "kine", *CORE)
    server = MkeServer(tmp_path, bins, base_config({"type": "kine"}, bin_dir=bins))
    try:
        server.start()
        check_ca_separation(server, legacy=False)
        assert not (server.data_dir / "pki" / "legacy-ca.crt").exists()
    finally:
        server.stop()


def test_a_single_ca_data_dir_from_an_older_mke_keeps_working_after_the_upgrade(tmp_path: Path,
                                                                              bin_dir: Path | None) -> None:
    bins = require(bin_dir, "kine", *CORE)
    old_src = tmp_path / "old-mke"
    old_src.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", SINGLE_CA_COMMIT, "mke"], capture_output=True)
    if archive.returncode != 0:
        pytest.skip(f"no commit {SINGLE_CA_COMMIT} (the single-CA mke) in this checkout")
    subprocess.run(["tar", "-x", "-C", str(old_src)], input=archive.stdout, check=True)
    cfg = base_config({"type": "kine"}, bin_dir=bins)
    old = MkeServer(tmp_path, bins, cfg, repo=old_src)
    pki = old.data_dir / "pki"
    try:
        old.start()
        from kubernetes import client

        client.CoreV1Api(kube_client(old)).create_namespaced_config_map("default", client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="before-upgrade"), data={"a": "b"}))
        token = old.mke("token", "create", "--role=worker", "--expiry=2h").stdout.strip()
    finally:
        old.stop()
    assert not (pki / "client-ca.crt").exists()  # really the old layout
    old_ca = (pki / "ca.crt").read_bytes()
    old_admin = {n: (pki / f"admin.{n}").read_bytes() for n in ("crt", "key")}  # a copy a user kept
    (tmp_path / "old-admin.crt").write_bytes(old_admin["crt"])
    (tmp_path / "old-admin.key").write_bytes(old_admin["key"])

    new = MkeServer(tmp_path, bins, cfg)
    try:
        new.start()
        assert (pki / "ca.crt").read_bytes() == old_ca and (pki / "legacy-ca.crt").read_bytes() == old_ca
        log = new.log_path.read_text(errors="replace")
        assert "legacy-ca.crt (the CA from before CA separation) is still trusted" in log
        from kubernetes import client

        assert client.CoreV1Api(kube_client(new)).read_namespaced_config_map("before-upgrade", "default").data == {
            "a": "b"}
        # the token made before the upgrade still pins this cluster's (server) CA and is accepted
        from mke import der
        from mke.tokens import decode_token

        tok = decode_token(token, role="worker")
        assert tok.ca_hash == der.ca_pin((pki / "ca.crt").read_bytes())
        res = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(pki / "ca.crt"),
             "-H", f"Authorization: Bearer {tok.bootstrap_token}", "-H", "Content-Type: application/json", "-X",
             "POST", "-d", '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}',
             f"https://127.0.0.1:{new.port}/apis/authentication.k8s.io/v1/selfsubjectreviews"],
            capture_output=True, text=True)
        assert res.stdout == "201"
        # a client certificate issued by the old CA (an admin.conf a user kept, a kubelet's) is still accepted
        res = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(pki / "ca.crt"),
                              "--cert", str(tmp_path / "old-admin.crt"), "--key", str(tmp_path / "old-admin.key"),
                              f"https://127.0.0.1:{new.port}/api/v1/namespaces"], capture_output=True, text=True)
        assert res.stdout == "200"
        check_ca_separation(new, legacy=True)
    finally:
        new.stop()
