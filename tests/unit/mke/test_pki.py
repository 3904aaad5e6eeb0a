"""mke/pki.py: a real PKI on disk, checked with openssl and cryptography."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mke.errors import PKIError
from mke.pki import CAS, ClusterPKI, PKIRequest, cert_sans, leaf_specs, load_cert, load_key

REQ = PKIRequest(node_name="ctl-1", api_address="192.0.2.10", host_addresses=("192.0.2.10", "2001:db8::10"),
                 extra_sans=("api.example.com", "198.51.100.7"), external_address="lb.example.com")
OPENSSL = shutil.which("openssl")


def _files(pki: ClusterPKI) -> dict[str, bytes]:
    return {str(p.relative_to(pki.dir)): p.read_bytes() for p in sorted(pki.dir.rglob("*")) if p.is_file()}


@pytest.fixture()
def pki(tmp_path: Path) -> ClusterPKI:
    p = ClusterPKI(tmp_path / "pki")
    p.ensure(REQ)
    return p


def test_layout_and_permissions(pki: ClusterPKI) -> None:
    assert stat.S_IMODE(pki.dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((pki.dir / "etcd").stat().st_mode) == 0o700
    keys = list(pki.dir.rglob("*.key")) + list(pki.dir.rglob("*.conf"))
    assert len(keys) >= 17
    for k in keys:
        assert stat.S_IMODE(k.stat().st_mode) == 0o600, k
    for stem in [*CAS, *(s.name for s in leaf_specs(REQ))]:
        assert pki.crt(stem).exists() and pki.key(stem).exists(), stem
    assert pki.sa_key.exists() and pki.sa_pub.exists()


@pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")
def test_openssl_verifies_every_leaf_against_its_ca(pki: ClusterPKI) -> None:
    for spec in leaf_specs(REQ):
        res = subprocess.run([OPENSSL, "verify", "-CAfile", str(pki.crt(spec.ca)), str(pki.crt(spec.name))],
                             capture_output=True, text=True)
        assert res.returncode == 0 and res.stdout.strip().endswith("OK"), (spec.name, res.stdout, res.stderr)
    # and a leaf does not verify against another CA
    res = subprocess.run([OPENSSL, "verify", "-CAfile", str(pki.crt("etcd/ca")), str(pki.crt("apiserver"))],
                         capture_output=True, text=True)
    assert res.returncode != 0


@pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")
def test_apiserver_cert_sans_usage_and_algorithms(pki: ClusterPKI) -> None:
    text = subprocess.run([OPENSSL, "x509", "-noout", "-text", "-in", str(pki.crt("apiserver"))],
                          capture_output=True, text=True, check=True).stdout
    for want in ("DNS:kubernetes.default.svc.cluster.local", "DNS:api.example.com", "DNS:lb.example.com",
                 "DNS:ctl-1", "IP Address:10.96.0.1", "IP Address:192.0.2.10", "IP Address:198.51.100.7",
                 "IP Address:127.0.0.1", "IP Address:2001:DB8:0:0:0:0:0:10", "TLS Web Server Authentication",
                 "ecdsa-with-SHA256", "NIST CURVE: P-256"):
        assert want in text, want
    assert "CA:FALSE" in text


def test_keys_are_p256_and_signatures_sha256(pki: ClusterPKI) -> None:
    for p in pki.dir.rglob("*.key"):
        if p == pki.secrets_encryption:
            continue  # an EncryptionConfiguration (AES keys), not a PEM key
        key = load_key(p)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    for p in pki.dir.rglob("*.crt"):
        cert = load_cert(p)
        assert cert is not None and cert.signature_hash_algorithm.name == "sha256"


def test_client_certs_subjects(pki: ClusterPKI) -> None:
    admin = load_cert(pki.crt("admin"))
    assert admin is not None
    orgs = [a.value for a in admin.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)]
    assert orgs == ["mke:cluster-admins"]  # cluster-admin through RBAC, not system:masters (CIS 5.1.7)
    sup = load_cert(pki.crt("super-admin"))
    assert sup is not None and sup.subject.rfc4514_string() == "CN=mke-super-admin,O=system:masters"
    assert pki.internal_kubeconfig == pki.dir / "super-admin.conf"
    assert pki.internal_kubeconfig.stat().st_mode & 0o777 == 0o600
    kcm = load_cert(pki.crt("controller-manager"))
    assert kcm is not None and kcm.subject.rfc4514_string() == "CN=system:kube-controller-manager"


def test_ensure_is_idempotent(pki: ClusterPKI) -> None:
    before = _files(pki)
    rep = pki.ensure(REQ)
    assert rep.created == [] and rep.renewed == []
    assert _files(pki) == before


def test_renews_leaves_within_30_days_keeping_keys(pki: ClusterPKI) -> None:
    key_before = pki.key("apiserver").read_bytes()
    old = load_cert(pki.crt("apiserver"))
    assert old is not None
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=340)  # leaves expire in 365 days
    rep = pki.ensure(REQ, now=later)
    assert "apiserver" in rep.renewed and "etcd/peer" in rep.renewed
    assert "ca" not in rep.renewed and rep.created == []
    new = load_cert(pki.crt("apiserver"))
    assert new is not None and new.not_valid_after_utc > old.not_valid_after_utc
    assert pki.key("apiserver").read_bytes() == key_before
    # the next day: nothing to do
    assert pki.ensure(REQ, now=later + dt.timedelta(days=1)).renewed == []


def test_valid_certs_are_kept_until_30_days_before_expiry(pki: ClusterPKI) -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=300)
    assert pki.ensure(REQ, now=soon).renewed == []


def test_ca_renewal_keeps_old_leaves_valid(pki: ClusterPKI, tmp_path: Path) -> None:
    old = {"ca": pki.crt("mke-api").read_bytes(), "client-ca": pki.crt("admin").read_bytes()}
    ca_keys = {stem: pki.key(stem).read_bytes() for stem in old}
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3650 - 10)
    rep = pki.ensure(REQ, now=later)
    for stem, leaf_pem in old.items():
        assert stem in rep.renewed
        assert pki.key(stem).read_bytes() == ca_keys[stem]
        x509.load_pem_x509_certificate(leaf_pem).verify_directly_issued_by(load_cert(pki.crt(stem)))  # raises if not


def test_san_change_reissues_only_serving_certs(pki: ClusterPKI) -> None:
    req = PKIRequest(**{**REQ.__dict__, "extra_sans": ("api.example.com", "new.example.com")})
    rep = pki.ensure(req)
    assert set(rep.renewed) == {"apiserver", "konnectivity", "mke-api"}
    assert "DNS:new.example.com" in cert_sans(load_cert(pki.crt("apiserver")))


def test_foreign_leaf_is_replaced(pki: ClusterPKI, tmp_path: Path) -> None:
    other = ClusterPKI(tmp_path / "other")
    other.ensure(REQ)
    shutil.copy(other.crt("admin"), pki.crt("admin"))
    shutil.copy(other.key("admin"), pki.key("admin"))
    rep = pki.ensure(REQ)
    assert "admin" in rep.renewed
    load_cert(pki.crt("admin")).verify_directly_issued_by(load_cert(pki.crt("client-ca")))


def test_ca_cert_without_key_is_an_error(pki: ClusterPKI) -> None:
    pki.key("ca").unlink()
    with pytest.raises(PKIError, match=r"ca\.key: missing"):
        pki.ensure(REQ)


def test_corrupt_leaf_is_rewritten(pki: ClusterPKI) -> None:
    pki.crt("scheduler").write_text("garbage")
    pki.key("scheduler").write_text("garbage")
    rep = pki.ensure(REQ)
    assert "scheduler" in rep.renewed + rep.created
    assert load_cert(pki.crt("scheduler")) is not None


def test_kubeconfigs_embed_ca_and_client(pki: ClusterPKI) -> None:
    doc = yaml.safe_load(pki.kubeconfig("admin").read_text())
    assert doc["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert doc["users"][0]["user"]["client-certificate-data"]
    for name in ("controller-manager", "scheduler", "konnectivity"):
        assert pki.kubeconfig(name).exists()


def test_secrets_encryption_key_is_aescbc_256_and_private(pki: ClusterPKI) -> None:
    import base64

    path = pki.secrets_encryption
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = yaml.safe_load(path.read_text())
    assert doc["kind"] == "EncryptionConfiguration" and doc["apiVersion"] == "apiserver.config.k8s.io/v1"
    (res,) = doc["resources"]
    assert res["resources"] == ["secrets"]
    first, last = res["providers"]
    assert last == {"identity": {}}  # objects written before encryption stay readable
    (key,) = first["aescbc"]["keys"]
    assert len(base64.b64decode(key["secret"])) == 32 and key["name"]


def test_secrets_encryption_key_is_kept_and_never_made_by_a_joined_controller(tmp_path: Path, pki: ClusterPKI) -> None:
    import dataclasses

    before = pki.secrets_encryption.read_bytes()
    pki.secrets_encryption.chmod(0o644)
    rep = pki.ensure(REQ)
    assert pki.secrets_encryption.read_bytes() == before and "secrets-encryption" in rep.kept
    assert stat.S_IMODE(pki.secrets_encryption.stat().st_mode) == 0o600
    joined = dataclasses.replace(REQ, create_shared=False)
    pki.ensure(joined)  # it has one: fine
    pki.secrets_encryption.unlink()
    with pytest.raises(PKIError, match="secrets-encryption.key: missing on a controller that joined"):
        pki.ensure(joined)
    assert not pki.secrets_encryption.exists()
    pki.secrets_encryption.write_text("kind: Something\n")
    with pytest.raises(PKIError, match="kind: expected EncryptionConfiguration"):
        pki.ensure(REQ)
    other = ClusterPKI(tmp_path / "other")
    other.ensure(REQ)
    assert other.secrets_encryption.read_bytes() != before  # a new key per cluster


# ---------------------------------------------------------------- CAs by purpose (issue 14.3)

SERVER_LEAVES = {"apiserver", "konnectivity", "mke-api"}


def test_each_purpose_has_its_own_ca_and_the_server_ca_signs_only_the_control_planes_identities(pki: ClusterPKI) -> None:
    from cryptography.hazmat.primitives import serialization

    cas = ("ca", "client-ca", "kubelet-serving-ca", "front-proxy-ca", "etcd/ca")
    spki = {stem: load_cert(pki.crt(stem)).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) for stem in cas}
    assert len(set(spki.values())) == len(cas)
    by_ca: dict[str, set[str]] = {}
    for spec in leaf_specs(REQ):
        load_cert(pki.crt(spec.name)).verify_directly_issued_by(load_cert(pki.crt(spec.ca)))
        by_ca.setdefault(spec.ca, set()).add(spec.name)
    # the server CA: what nodes and clients verify the control plane with, and nothing a node can get
    assert by_ca["ca"] == SERVER_LEAVES | {"apiserver-kubelet-client"}
    assert by_ca["client-ca"] == {"admin", "super-admin", "controller-manager", "scheduler", "konnectivity-client"}
    assert "kubelet-serving-ca" not in by_ca  # only the controller-manager signs with it, for kubelets
    assert pki.client_ca_file == pki.crt("client-ca") and pki.kubelet_ca_file == pki.crt("kubelet-serving-ca")
    assert not pki.legacy_ca.exists()


def _serve_once(cert: Path, key: Path, client_ctx, hostname: str) -> None:
    """One TLS handshake: a server with ``cert``, a client with ``client_ctx`` asking for ``hostname``."""
    import socket
    import ssl
    import threading

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(cert), str(key))
    a, b = socket.socketpair()

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                s.recv(1)
        except (OSError, ssl.SSLError):
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname=hostname):
            pass
    finally:
        b.close()
        t.join(5)


def test_a_kubelet_serving_certificate_is_not_accepted_for_the_apiserver_by_a_token_holder(tmp_path: Path) -> None:
    """Even if a node got the approver to sign the controller's address and kubernetes.default.svc,
    a client that pins the token's CA (as `mke worker` and a joining controller do) refuses it."""
    import io
    import ssl

    from cryptography.hazmat.primitives import serialization

    from mke.components.context import ControllerContext
    from mke.components.controller_manager import KubeControllerManager
    from mke.config import parse_config
    from mke.logsink import LogSink
    from mke.node.binaries import BinaryResolver
    from mke.pki import CertSpec, cert_pem, key_pem, make_leaf_cert, new_key

    pki = ClusterPKI(tmp_path / "pki")
    pki.ensure(REQ)
    # what kube-controller-manager signs kubernetes.io/kubelet-serving CSRs with, from its flags
    ctx = ControllerContext(config=parse_config({}), data_dir=tmp_path, node_name="ctl-1", api_address="192.0.2.10",
                            binaries=BinaryResolver(tmp_path / "bin"), sink=LogSink(io.StringIO()))
    kcm = KubeControllerManager(ctx)
    kcm.binary_path = Path("/usr/bin/true")
    flags = dict(a.split("=", 1) for a in kcm.process_spec().args[1:] if "=" in a)
    signer_crt = flags.get("--cluster-signing-kubelet-serving-cert-file") or flags["--cluster-signing-cert-file"]
    signer_key = flags.get("--cluster-signing-kubelet-serving-key-file") or flags["--cluster-signing-key-file"]
    signer = load_cert(Path(signer_crt))
    signer_private = serialization.load_pem_private_key(Path(signer_key).read_bytes(), None)
    forged = CertSpec(name="forged", ca="?", cn="system:node:w1", orgs=("system:nodes",), server=True,
                      dns=("w1", "kubernetes.default.svc"), ips=("192.0.2.21", REQ.api_address))
    key = new_key()
    (tmp_path / "forged.key").write_bytes(key_pem(key))
    (tmp_path / "forged.crt").write_bytes(cert_pem(make_leaf_cert(forged, key, signer, signer_private)))

    pinned = pki.crt("ca").read_text()  # what `mke token create` puts into every token
    client = ssl.create_default_context(cadata=pinned)
    for hostname in (REQ.api_address, "kubernetes.default.svc"):
        with pytest.raises(ssl.SSLCertVerificationError):
            _serve_once(tmp_path / "forged.crt", tmp_path / "forged.key", client, hostname)
    # while the apiserver, with the same pinned CA, is accepted (the check itself works)
    _serve_once(pki.crt("apiserver"), pki.key("apiserver"), ssl.create_default_context(cadata=pinned),
                REQ.api_address)
    # and the apiserver verifies kubelets with the signer, not with the server CA
    assert signer_crt == str(pki.crt("kubelet-serving-ca"))


def _single_ca_data_dir(pki: ClusterPKI) -> bytes:
    """Turn a fresh PKI into the layout mke made before CA separation: one CA ("ca") signed
    every client and serving certificate; no client-ca, kubelet-serving-ca or legacy-ca."""
    from mke.pki import cert_pem, make_leaf_cert

    for stem in ("client-ca", "kubelet-serving-ca"):
        pki.crt(stem).unlink()
        pki.key(stem).unlink()
    ca, ca_key = load_cert(pki.crt("ca")), load_key(pki.key("ca"))
    for spec in leaf_specs(REQ):
        if spec.ca in ("client-ca", "ca"):
            pki.crt(spec.name).write_bytes(cert_pem(make_leaf_cert(spec, load_key(pki.key(spec.name)), ca, ca_key)))
    return pki.crt("ca").read_bytes()


@pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")
def test_a_single_ca_data_dir_keeps_its_ca_as_the_server_ca_and_trusts_it_as_legacy(pki: ClusterPKI,
                                                                                    tmp_path: Path) -> None:
    from mke.pki import CertSpec, cert_pem, make_leaf_cert, new_key

    old_ca = _single_ca_data_dir(pki)
    old_ca_key = pki.key("ca").read_bytes()
    # a kubelet client certificate the old controller-manager signed with the single CA
    kubelet = CertSpec(name="old-kubelet", ca="ca", cn="system:node:w1", orgs=("system:nodes",), client=True)
    k = new_key()
    old_kubelet = tmp_path / "old-kubelet.crt"
    old_kubelet.write_bytes(cert_pem(make_leaf_cert(kubelet, k, load_cert(pki.crt("ca")), load_key(pki.key("ca")))))

    rep = pki.ensure(REQ)
    assert rep.migrated and rep.legacy
    # tokens, kubeconfigs and workers pin ca.crt: unchanged, and still the server CA
    assert pki.crt("ca").read_bytes() == old_ca and pki.key("ca").read_bytes() == old_ca_key
    assert pki.legacy_ca.read_bytes() == old_ca
    assert {"client-ca", "kubelet-serving-ca", "client-ca-bundle", "kubelet-serving-ca-bundle"} <= set(rep.created)
    assert {"admin", "controller-manager", "scheduler", "konnectivity-client"} <= set(rep.renewed)
    assert "apiserver" in rep.kept and "mke-api" in rep.kept
    # the apiserver still accepts what nodes hold from before, and the new client certificates
    assert pki.client_ca_file == pki.crt("client-ca-bundle") and pki.kubelet_ca_file == pki.crt("kubelet-serving-ca-bundle")
    for cert in (old_kubelet, pki.crt("admin")):
        res = subprocess.run([OPENSSL, "verify", "-CAfile", str(pki.client_ca_file), str(cert)],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
    assert stat.S_IMODE(pki.client_ca_file.stat().st_mode) == 0o644
    assert old_ca in pki.kubelet_ca_file.read_bytes() and pki.crt("kubelet-serving-ca").read_bytes() in pki.kubelet_ca_file.read_bytes()

    # the next start: nothing to migrate, nothing new
    again = pki.ensure(REQ)
    assert not again.migrated and again.legacy and again.created == [] and again.renewed == []
    # the operator removes the legacy CA once every node renewed: the bundles go
    pki.legacy_ca.unlink()
    done = pki.ensure(REQ)
    assert not done.migrated and not done.legacy
    assert set(done.renewed) == {"client-ca-bundle", "kubelet-serving-ca-bundle"}  # components restart on it
    assert pki.client_ca_file == pki.crt("client-ca") and not pki.crt("client-ca-bundle").exists()
    assert not pki.crt("kubelet-serving-ca-bundle").exists()


def test_a_joined_controller_never_makes_a_ca(pki: ClusterPKI) -> None:
    import dataclasses

    joined = dataclasses.replace(REQ, create_shared=False)
    pki.ensure(joined)  # it has them all (from the join): fine
    for stem in ("client-ca", "kubelet-serving-ca"):
        crt, key = pki.crt(stem).read_bytes(), pki.key(stem).read_bytes()
        pki.crt(stem).unlink()
        pki.key(stem).unlink()
        with pytest.raises(PKIError, match=rf"{stem}\.(crt|key): missing on a controller that joined another"):
            pki.ensure(joined)
        assert not pki.key(stem).exists()
        pki.crt(stem).write_bytes(crt)
        pki.key(stem).write_bytes(key)
    # a joined controller from before CA separation, restarted before the first one was copied from
    _single_ca_data_dir(pki)
    with pytest.raises(PKIError, match=r"client-ca\.crt: missing on a controller that joined another .*legacy-ca\.crt"):
        pki.ensure(joined)
    assert not pki.legacy_ca.exists() and not pki.crt("client-ca").exists()


def test_the_admin_binding_is_pending_on_a_new_cluster_and_on_an_admin_cert_from_system_masters(tmp_path) -> None:
    """The ClusterRoleBinding that makes admin.conf cluster-admin is created once (by the
    controller, when the marker is there): at cluster creation, and when an admin certificate
    in system:masters (mke before the split) is re-issued; not on a joining controller, not
    on a restart."""
    from mke.pki import CertSpec, make_leaf_cert

    first = ClusterPKI(tmp_path / "first")
    first.ensure(REQ)
    assert first.admin_binding_pending.exists()
    first.admin_binding_pending.unlink()  # what Controller.ensure_admin_binding does once it is made
    first.ensure(REQ)
    assert not first.admin_binding_pending.exists()  # a restart: never again
    # an admin certificate from before the split, in system:masters, with the same key
    old = CertSpec(name="admin", ca="client-ca", cn="mke-admin", orgs=("system:masters",), client=True)
    cert = make_leaf_cert(old, load_key(first.key("admin")), load_cert(first.crt("client-ca")),
                          load_key(first.key("client-ca")))
    first.crt("admin").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    rep = first.ensure(REQ)
    assert rep.resubjected == ["admin"] and "admin" in rep.renewed
    assert first.admin_binding_pending.exists()
    orgs = [a.value for a in load_cert(first.crt("admin")).subject.get_attributes_for_oid(
        x509.NameOID.ORGANIZATION_NAME)]
    assert orgs == ["mke:cluster-admins"]
    # a controller joining the cluster makes no binding (the cluster has it, or its operator deleted it)
    joiner = ClusterPKI(tmp_path / "joiner")
    for stem in ("ca", "client-ca", "kubelet-serving-ca", "front-proxy-ca", "etcd/ca"):
        (joiner.dir / stem).parent.mkdir(parents=True, exist_ok=True)
        for path in (first.crt(stem), first.key(stem)):
            target = joiner.dir / path.relative_to(first.dir)
            target.write_bytes(path.read_bytes())
    for name in ("sa.key", "sa.pub", "secrets-encryption.key"):
        (joiner.dir / name).write_bytes((first.dir / name).read_bytes())
    joiner.ensure(dataclasses.replace(REQ, create_shared=False))
    assert joiner.crt("admin").exists() and not joiner.admin_binding_pending.exists()
