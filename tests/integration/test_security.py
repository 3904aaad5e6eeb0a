"""Secure defaults (issue 14) checked on a real `mke server` with real binaries.

One controller (etcd, konnectivity when its binary is there) is started for the module;
each test looks at one default from the outside: the raw etcd value of a Secret, the
apiserver's audit log and command line, Pod Security admission, the TLS handshakes every
server port accepts, the modes of every file in the data dir. The kine test starts its
own controller on PostgreSQL and reads kine's /proc/<pid>/cmdline.

Needs root and the real binaries (see tests/integration/test_server.py); docs/security.md
names the test behind each CIS item marked PASS.
"""

from __future__ import annotations

import base64
import grp
import json
import os
import pwd
import shutil
import ssl
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_server import (  # noqa: F401 - postgres is a fixture
    CORE,
    MkeServer,
    base_config,
    children_of,
    find_bin_dir,
    kube_client,
    postgres,
    require,
    wait_for,
)
from tests.support.binaries import reachable_bin_dir, traversable_tmp
from tests.support.tls import GOOD_TLS12, WEAK_TLS12, handshake, refused_by_server

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def server() -> Iterator[MkeServer]:
    bins = require(find_bin_dir(), "etcd", *CORE)
    with traversable_tmp("mke-secure-") as root:  # etcd's user must reach its data dir and binary
        srv = MkeServer(root, reachable_bin_dir(bins, root / "bin"), base_config(bin_dir=root / "bin"))
        try:
            took = srv.start()
            print(f"mke server (etcd) ready in {took:.1f}s")
            yield srv
        finally:
            srv.stop()
            wait_for(lambda: not children_of(srv.data_dir), 30, "every component to stop")
            if srv.log_path.exists():  # the directory goes: its log is kept for a failure's reader
                shutil.copy(srv.log_path, Path(tempfile.gettempdir()) / "mke-secure-server.log")


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def flags_of(pid: int) -> dict[str, str]:
    return {a.split("=", 1)[0]: a.split("=", 1)[1] for a in cmdline(pid) if a.startswith("--") and "=" in a}


def curl(server: MkeServer, method: str, path: str, body: dict[str, Any] | None = None, *,
         user: str = "admin") -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body) of one request as the cluster admin (``user``: the pki stem)."""

    pki = server.data_dir / "pki"
    with tempfile.TemporaryDirectory() as tmp:
        head_file, body_file = Path(tmp) / "head", Path(tmp) / "body"
        argv = ["curl", "-s", "--max-time", "20", "--cacert", str(pki / "ca.crt"), "--cert", str(pki / f"{user}.crt"),
                "--key", str(pki / f"{user}.key"), "-X", method, "-D", str(head_file), "-o", str(body_file),
                "-w", "%{http_code}", f"https://127.0.0.1:{server.port}{path}"]
        if body is not None:
            argv += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
        code = int(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
        headers: dict[str, str] = {}
        for line in head_file.read_text().splitlines()[1:]:
            k, _, v = line.partition(":")
            k, v = k.strip().lower(), v.strip()
            headers[k] = f"{headers[k]}\n{v}" if k in headers else v
        text = body_file.read_text()
    return code, headers, (json.loads(text) if text.strip().startswith("{") else text)


# ---------------------------------------------------------------- 4. no secret on a command line
# First in the file: it runs its own controller, which must not overlap the module's (the
# controller-manager's and scheduler's ports are fixed); the module's starts at its first use.


@pytest.mark.database
def test_kine_never_has_the_database_password_on_its_command_line(tmp_path: Path, postgres: str) -> None:  # noqa: F811
    bins = require(find_bin_dir(), "kine", *CORE)
    password = postgres.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    srv = MkeServer(tmp_path, bins, base_config({"type": "kine", "kine": {"dataSource": postgres}}, bin_dir=bins))
    try:
        srv.start()
        kine = srv.component_pid("kine")
        assert password not in "\0".join(cmdline(kine))
        for pid in [*children_of(srv.data_dir), kine]:
            assert password not in "\0".join(cmdline(pid)), cmdline(pid)[0]
        environ = Path(f"/proc/{kine}/environ").read_bytes().split(b"\0")
        assert f"KINE_ENDPOINT={postgres}".encode() in environ
        assert stat.S_IMODE(Path(f"/proc/{kine}/environ").stat().st_mode) == 0o400  # the owner (root) only
        # the cluster works on it
        from kubernetes import client

        assert client.CoreV1Api(kube_client(srv)).read_namespace("kube-system")
    finally:
        srv.stop()
    assert wait_for(lambda: not children_of(srv.data_dir), 30, "every component to stop")


# ---------------------------------------------------------------- 1. Secrets encrypted at rest


def etcd_value(server: MkeServer, key: str) -> bytes | None:
    """The raw value etcd holds under ``key`` (etcd's JSON gateway, mke's etcd client cert)."""
    from mke.kubeapi import Endpoint, HTTPSClient

    pki = server.data_dir / "pki"
    client = HTTPSClient(Endpoint(server="https://127.0.0.1:2379", ca_file=pki / "etcd" / "ca.crt",
                                  cert_file=pki / "etcd" / "client.crt", key_file=pki / "etcd" / "client.key"))
    try:
        status, data = client.request("POST", "/v3/kv/range",
                                      json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode(),
                                      {"Content-Type": "application/json"})
    finally:
        client.close()
    assert status == 200, data
    kvs = json.loads(data).get("kvs") or []
    return base64.b64decode(kvs[0]["value"]) if kvs else None


def test_secrets_are_stored_encrypted_with_aescbc(server: MkeServer) -> None:
    from kubernetes import client

    core = client.CoreV1Api(kube_client(server))
    name = f"enc-{uuid.uuid4().hex[:8]}"
    core.create_namespaced_secret("default", client.V1Secret(metadata=client.V1ObjectMeta(name=name),
                                                             string_data={"password": "hunter2-plaintext"}))
    core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name),
                                                                    data={"note": "not-a-secret"}))
    raw = etcd_value(server, f"/registry/secrets/default/{name}")
    assert raw is not None
    assert raw.startswith(b"k8s:enc:aescbc:v1:key-"), raw[:40]
    assert b"hunter2-plaintext" not in raw and b"password" not in raw
    # Only Secrets: a ConfigMap is stored as it was (the check reads what it means to)
    assert b"not-a-secret" in (etcd_value(server, f"/registry/configmaps/default/{name}") or b"")
    # and the API still reads it back
    assert base64.b64decode(core.read_namespaced_secret(name, "default").data["password"]) == b"hunter2-plaintext"
    key = server.data_dir / "pki" / "secrets-encryption.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    flags = flags_of(server.component_pid("kube-apiserver"))
    assert flags["--encryption-provider-config"] == str(key)


# ---------------------------------------------------------------- 2. audit log


def test_audit_log_is_on_and_records_metadata_only(server: MkeServer) -> None:
    from kubernetes import client

    flags = flags_of(server.component_pid("kube-apiserver"))
    log = server.data_dir / "kube-apiserver" / "audit" / "audit.log"
    assert flags["--audit-log-path"] == str(log)
    assert flags["--audit-policy-file"] == str(server.data_dir / "kube-apiserver" / "audit-policy.yaml")
    assert (flags["--audit-log-maxage"], flags["--audit-log-maxbackup"], flags["--audit-log-maxsize"]) == (
        "30", "10", "100")

    core = client.CoreV1Api(kube_client(server))
    name = f"audit-{uuid.uuid4().hex[:8]}"
    core.create_namespaced_secret("default", client.V1Secret(metadata=client.V1ObjectMeta(name=name),
                                                             string_data={"token": "audit-me-not"}))

    def events() -> list[dict[str, Any]]:
        return [e for e in map(json.loads, log.read_text().splitlines())
                if (e.get("objectRef") or {}).get("name") == name]

    found = wait_for(events, 30, "the audit event of the secret's creation")
    create = next(e for e in found if e["verb"] == "create")
    assert create["level"] == "Metadata" and create["user"]["username"] == "mke-admin"
    assert create["responseStatus"]["code"] == 201
    assert "requestObject" not in create and "responseObject" not in create
    assert "audit-me-not" not in log.read_text()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


# ---------------------------------------------------------------- 3. Pod Security admission

PRIVILEGED_POD = {
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "priv"},
    "spec": {"hostNetwork": True, "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10.2",
                                                  "securityContext": {"privileged": True}}]},
}
BASELINE_POD = {  # fine for baseline, not for restricted (no runAsNonRoot, no seccomp, caps kept)
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain"},
    "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10.2"}]},
}


def namespace(server: MkeServer, name: str, labels: dict[str, str] | None = None) -> None:
    """Create it and wait for its default service account (pods are refused until then)."""
    code, _, body = curl(server, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                               "metadata": {"name": name, "labels": labels or {}}})
    assert code == 201, body
    wait_for(lambda: curl(server, "GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")[0] == 200, 60,
             f"the default service account of {name}")


def test_pod_security_enforces_baseline_warns_restricted_and_exempts_kube_system(server: MkeServer) -> None:
    ns = f"psa-{uuid.uuid4().hex[:8]}"
    namespace(server, ns)
    code, _, body = curl(server, "POST", f"/api/v1/namespaces/{ns}/pods?dryRun=All", PRIVILEGED_POD)
    assert code == 403, body
    assert isinstance(body, dict) and 'violates PodSecurity "baseline:latest"' in body["message"], body
    code, headers, body = curl(server, "POST", f"/api/v1/namespaces/{ns}/pods?dryRun=All", BASELINE_POD)
    assert code == 201, body
    assert "would violate PodSecurity" in headers.get("warning", "") and "restricted:latest" in headers["warning"], headers
    # kube-system is exempt: mke's add-ons (the network provider's privileged pods) run there
    code, headers, body = curl(server, "POST", "/api/v1/namespaces/kube-system/pods?dryRun=All", PRIVILEGED_POD)
    assert code == 201, body
    assert "PodSecurity" not in headers.get("warning", "")
    # a namespace's own label still wins (the e2e framework labels its namespaces so)
    namespace(server, f"{ns}-priv", {"pod-security.kubernetes.io/enforce": "privileged"})
    code, _, body = curl(server, "POST", f"/api/v1/namespaces/{ns}-priv/pods?dryRun=All", PRIVILEGED_POD)
    assert code == 201, body


def test_services_with_external_ips_are_refused(server: MkeServer) -> None:
    """CIS 1.2.3 (CVE-2020-8554): DenyServiceExternalIPs admission; a Service without them is fine."""
    ns = f"eip-{uuid.uuid4().hex[:8]}"
    namespace(server, ns)
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"ports": [{"port": 80}], "selector": {"app": "web"}}}
    code, _, body = curl(server, "POST", f"/api/v1/namespaces/{ns}/services?dryRun=All",
                         {**svc, "spec": {**svc["spec"], "externalIPs": ["203.0.113.10"]}})
    assert code == 403, body
    assert isinstance(body, dict) and "Use of external IPs is denied by admission control" in body["message"], body
    code, _, body = curl(server, "POST", f"/api/v1/namespaces/{ns}/services?dryRun=All", svc)
    assert code == 201, body


def test_cis_flags_on_the_running_processes(server: MkeServer) -> None:
    """CIS 1.3.1 and 1.2.30, read from the running processes' command lines."""
    def args(component: str) -> list[bytes]:
        return Path(f"/proc/{server.component_pid(component)}/cmdline").read_bytes().split(b"\0")

    assert b"--terminated-pod-gc-threshold=1000" in args("kube-controller-manager")
    assert b"--service-account-extend-token-expiration=false" in args("kube-apiserver")
    assert b"--enable-admission-plugins=NodeRestriction,DenyServiceExternalIPs,EventRateLimit" in args("kube-apiserver")
    # EventRateLimit is configured (admission.yaml) and lets a normal Event through
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "cis-check"},
             "involvedObject": {"kind": "Namespace", "name": "default"}, "reason": "Check", "message": "CIS 1.2.9"}
    code, _, body = curl(server, "POST", "/api/v1/namespaces/default/events?dryRun=All", event)
    assert code == 201, body


# ---------------------------------------------------------------- 5. TLS on every server port


def tls_ports(server: MkeServer) -> dict[str, tuple[int, tuple[Path, Path] | None]]:
    """name -> (port, the client certificate its server requires, if it does)."""
    pki = server.data_dir / "pki"
    etcd_client = (pki / "etcd" / "client.crt", pki / "etcd" / "client.key")
    ports: dict[str, tuple[int, tuple[Path, Path] | None]] = {
        "kube-apiserver": (server.port, None), "etcd (clients)": (2379, etcd_client),
        "etcd (peers)": (2380, etcd_client), "kube-controller-manager": (10257, None),
        "kube-scheduler": (10259, None), "mke API": (9443, None)}
    if any(c["name"] == "konnectivity-server" for c in server.status()["components"]):
        ports["konnectivity-server (agents)"] = (8132, None)
    return ports


def test_every_server_port_takes_only_tls12_ecdhe_aes_gcm_or_tls13(server: MkeServer) -> None:
    failures = []
    host = server.status()["api_address"]  # etcd's peer port listens there only
    for name, (port, cert) in tls_ports(server).items():
        addr = host if name == "etcd (peers)" else "127.0.0.1"
        if (why := handshake(addr, port, ciphers=GOOD_TLS12, cert=cert)) is not None:
            failures.append(f"{name}:{port}: ECDHE with AES-GCM refused: {why}")
        if (why := handshake(addr, port, version=ssl.TLSVersion.TLSv1_3, cert=cert)) is not None:
            failures.append(f"{name}:{port}: TLS 1.3 refused: {why}")
        if not refused_by_server(why := handshake(addr, port, version=ssl.TLSVersion.TLSv1_1, cert=cert)):
            failures.append(f"{name}:{port}: TLS 1.1 not refused by the server ({why})")
        for weak, ciphers in WEAK_TLS12.items():
            if not refused_by_server(why := handshake(addr, port, ciphers=ciphers, cert=cert)):
                failures.append(f"{name}:{port}: TLS 1.2 {weak} not refused by the server ({why})")
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------- 6. file modes

# (rule, predicate on the path relative to the data dir, the loosest mode allowed): first match wins
FILE_RULES: list[tuple[str, Any, int]] = [
    ("private keys and the Secrets encryption key", lambda p: p.suffix == ".key", 0o600),
    ("kubeconfigs", lambda p: p.suffix == ".conf", 0o600),
    ("certificates and public keys", lambda p: p.suffix in (".crt", ".pub"), 0o644),
    ("binaries", lambda p: p.parts[0] == "bin", 0o755),
    ("everything else (configs, state, logs, databases, pid files)", lambda p: True, 0o600),
]
DIR_RULES: list[tuple[str, Any, int]] = [
    ("the data dir (etcd's group may pass through)", lambda p: str(p) == ".", 0o710),
    ("binaries", lambda p: p.parts[0] == "bin", 0o755),
    ("every other directory", lambda p: True, 0o700),
]


def loosest(rules: list[tuple[str, Any, int]], rel: Path) -> tuple[str, int]:
    return next((what, mode) for what, pred, mode in rules if pred(rel))


def test_every_file_in_the_data_dir_has_its_mode(server: MkeServer) -> None:
    root = server.data_dir
    bad = []
    seen = 0
    for dirpath, _dirs, filenames in os.walk(root):
        d = Path(dirpath)
        for path, rules in [(d, DIR_RULES)] + [(d / f, FILE_RULES) for f in filenames]:
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode) or stat.S_ISSOCK(st.st_mode):
                continue
            seen += 1
            what, allowed = loosest(rules, path.relative_to(root))
            mode = stat.S_IMODE(st.st_mode)
            if mode & ~allowed:
                bad.append(f"{path.relative_to(root)}: {mode:04o}, {what} must be {allowed:04o} or stricter")
            rel = path.relative_to(root)
            owner = "etcd" if rel.parts and rel.parts[0] in ("etcd", "etcd-tls") else "root"
            if pwd.getpwuid(st.st_uid).pw_name != owner:
                bad.append(f"{rel}: owned by uid {st.st_uid}, not {owner}")
            group = "etcd" if owner == "etcd" or str(rel) == "." else "root"
            if grp.getgrgid(st.st_gid).gr_name != group:
                bad.append(f"{rel}: group {st.st_gid}, not {group}")
    assert seen > 40
    assert not bad, "\n".join(bad)


# ---------------------------------------------------------------- CIS 1.1.11 / 1.1.12: etcd's own user


def test_etcd_runs_as_its_own_user_that_owns_its_data_dir(server: MkeServer) -> None:
    """CIS 1.1.12 as kube-bench checks it (the --data-dir from etcd's command line, `stat -c %U:%G`
    of it: etcd:etcd), names resolved by the host's own NSS (glibc's pwd/grp, not mke's parser).
    etcd's process has no other ids and no supplementary groups; it reads its keys from copies
    it owns, while the pki dir's keys stay root's and 0600 (1.1.19-1.1.21)."""
    pid = server.component_pid("etcd")
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":\t" in line)
    user = pwd.getpwnam("etcd")
    assert status["Uid"].split() == [str(user.pw_uid)] * 4 and user.pw_uid != 0
    assert status["Gid"].split() == [str(user.pw_gid)] * 4
    assert status["Groups"].strip() == ""
    flags = flags_of(pid)
    data = Path(flags["--data-dir"])
    st = data.stat()
    assert (pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name) == ("etcd", "etcd")
    assert stat.S_IMODE(st.st_mode) == 0o700  # 1.1.11
    for flag in ("--key-file", "--peer-key-file", "--cert-file", "--trusted-ca-file"):
        f = Path(flags[flag])
        assert f.parent == server.data_dir / "etcd-tls" and f.stat().st_uid == user.pw_uid, flag
        original = server.data_dir / "pki" / "etcd" / f.name
        assert f.read_bytes() == original.read_bytes()
        assert original.stat().st_uid == 0
    assert stat.S_IMODE((server.data_dir / "pki" / "etcd" / "server.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((server.data_dir / "etcd-tls" / "server.key").stat().st_mode) == 0o600


def test_a_rotated_etcd_pair_reaches_etcd_as_its_own_user_without_a_restart(server: MkeServer) -> None:
    """`mke certificate rotate --service etcd` rewrites the pki dir's pairs as root; the controller
    copies them to etcd's own files, and etcd (same process) serves the new certificate on both
    of its ports; the originals stay root's."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from mke.commands.certificate import served_certificate

    def der(path: Path) -> bytes:
        return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(serialization.Encoding.DER)

    pki, tls = server.data_dir / "pki" / "etcd", server.data_dir / "etcd-tls"
    client = (pki / "client.crt", pki / "client.key")
    pid = server.component_pid("etcd")
    old = der(pki / "server.crt")
    assert served_certificate("127.0.0.1", 2379, client=client) == old
    r = server.mke("certificate", "rotate", "--service", "etcd", "--json")
    assert set(json.loads(r.stdout)["rotated"]) == {"etcd/server", "etcd/peer"}
    new = der(pki / "server.crt")
    assert new != old and der(tls / "server.crt") == new and der(tls / "peer.crt") == der(pki / "peer.crt")
    assert (tls / "server.key").read_bytes() == (pki / "server.key").read_bytes()
    etcd_uid = pwd.getpwnam("etcd").pw_uid
    assert all((tls / n).stat().st_uid == etcd_uid for n in ("server.crt", "server.key", "peer.crt", "peer.key"))
    assert (pki / "server.key").stat().st_uid == 0
    assert served_certificate("127.0.0.1", 2379, client=client) == new
    peer_host = server.status()["api_address"]
    assert served_certificate(peer_host, 2380, client=client) == der(pki / "peer.crt")
    assert server.component_pid("etcd") == pid


# ---------------------------------------------------------------- CIS 5.1.7: admin.conf is not system:masters


def test_admin_conf_is_cluster_admin_through_a_binding_that_revokes_it(server: MkeServer) -> None:
    """admin.conf's certificate is in mke:cluster-admins, bound to cluster-admin by a
    ClusterRoleBinding that mke makes once; the only system:masters certificate is mke's own
    super-admin (0600, never printed by `mke kubeconfig`). Deleting the binding revokes
    admin.conf, and mke does not make it again (mke's own client and `mke token` keep working)."""
    from cryptography import x509

    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    code, _, body = curl(server, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", review)
    assert code == 201, body
    groups = body["status"]["userInfo"]["groups"]
    assert body["status"]["userInfo"]["username"] == "mke-admin"
    assert "mke:cluster-admins" in groups and "system:masters" not in groups
    binding_path = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/mke:cluster-admins"
    code, _, binding = curl(server, "GET", binding_path)
    assert code == 200 and binding["roleRef"]["name"] == "cluster-admin"
    assert binding["subjects"] == [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io",
                                    "name": "mke:cluster-admins"}]
    pki = server.data_dir / "pki"
    masters = sorted(str(p.relative_to(pki)) for p in pki.rglob("*.crt")
                     if "system:masters" in x509.load_pem_x509_certificate(p.read_bytes()).subject.rfc4514_string())
    assert masters == ["super-admin.crt"]
    assert stat.S_IMODE((pki / "super-admin.conf").stat().st_mode) == 0o600
    assert not (pki / "admin-binding.pending").exists()
    printed = server.mke("kubeconfig", "admin").stdout
    assert base64.b64encode((pki / "admin.crt").read_bytes()).decode() in printed
    assert base64.b64encode((pki / "super-admin.crt").read_bytes()).decode() not in printed
    try:
        code, _, _ = curl(server, "DELETE", binding_path, user="super-admin")
        assert code == 200
        assert curl(server, "GET", "/api/v1/namespaces")[0] == 403  # admin.conf is revoked
        # not made again: two of the controller's ticks later (5 s each) it is still gone
        import time

        time.sleep(12)
        assert curl(server, "GET", binding_path, user="super-admin")[0] == 404
        assert curl(server, "GET", "/api/v1/namespaces")[0] == 403
        # mke's own client does not depend on it: tokens are still made
        out = server.mke("token", "create", "--role=worker", "--expiry", "10m").stdout
        assert out.strip()
    finally:
        binding = {k: binding[k] for k in ("apiVersion", "kind", "roleRef", "subjects")} | {
            "metadata": {"name": "mke:cluster-admins"}}
        curl(server, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding, user="super-admin")
    wait_for(lambda: curl(server, "GET", "/api/v1/namespaces")[0] == 200, 30, "admin.conf to work again")


# ---------------------------------------------------------------- 1b. key rotation (docs/security.md)


def test_the_documented_key_rotation_reencrypts_secrets_with_the_new_key(server: MkeServer) -> None:
    """docs/security.md's procedure on one controller: new key first (old one second, to read
    with), restart kube-apiserver, rewrite every Secret, drop the old key, restart again."""
    import yaml
    from kubernetes import client

    path = server.data_dir / "pki" / "secrets-encryption.key"
    doc = yaml.safe_load(path.read_text())
    providers = doc["resources"][0]["providers"]
    old_key = providers[0]["aescbc"]["keys"][0]
    core = client.CoreV1Api(kube_client(server))
    name = f"rot-{uuid.uuid4().hex[:8]}"
    core.create_namespaced_secret("default", client.V1Secret(metadata=client.V1ObjectMeta(name=name),
                                                             string_data={"v": "before-rotation"}))
    assert etcd_value(server, f"/registry/secrets/default/{name}").startswith(  # type: ignore[union-attr]
        f"k8s:enc:aescbc:v1:{old_key['name']}:".encode())

    def restart_apiserver() -> None:
        import signal

        old = server.component_pid("kube-apiserver")
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: server.component_pid("kube-apiserver") not in (old, None), 60, "kube-apiserver restarted",
                 interval=0.5)
        wait_for(server.readyz, 90, "/readyz after the restart")

    new_key = {"name": "key-rotated", "secret": base64.b64encode(os.urandom(32)).decode()}
    providers[0]["aescbc"]["keys"] = [new_key, old_key]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    restart_apiserver()
    # `mke kubectl get secrets -A -o json | mke kubectl replace -f -`: the same kubectl, as the admin
    kubectl = [str(server.bin_dir / "kubectl"), f"--kubeconfig={server.data_dir / 'pki' / 'admin.conf'}"]
    listing = subprocess.run([*kubectl, "get", "secrets", "--all-namespaces", "-o", "json"], capture_output=True,
                             text=True, check=True).stdout
    rewrite = subprocess.run([*kubectl, "replace", "-f", "-"], input=listing, capture_output=True, text=True)
    assert rewrite.returncode == 0, rewrite.stderr
    assert etcd_value(server, f"/registry/secrets/default/{name}").startswith(  # type: ignore[union-attr]
        b"k8s:enc:aescbc:v1:key-rotated:")
    providers[0]["aescbc"]["keys"] = [new_key]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    restart_apiserver()
    core = client.CoreV1Api(kube_client(server))
    assert base64.b64decode(core.read_namespaced_secret(name, "default").data["v"]) == b"before-rotation"
