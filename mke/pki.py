"""The cluster's certificates and keys, made with ``cryptography``.

``ClusterPKI(dir).ensure(request)`` creates what is missing and keeps what is valid:
a certificate is reissued (with its existing key) only when it expires within
``RENEW_BEFORE``, was not signed by the current CA, or names different subjects/SANs.
Keys are ECDSA P-256 and signatures SHA-256, both FIPS 140-approved, so a FIPS build
needs no change here; RSA keys of 2048 bits or more found on disk are accepted too.
Keys are written 0600 and directories 0700, every file by temp + rename.

A CA whose certificate nears expiry is re-signed with its *existing* key and subject,
so certificates it issued earlier keep verifying.

CAs by purpose (``CAS``; docs/security.md "Certificate authorities"), so that nothing a
node can get signed is trusted for a control-plane endpoint:

- ``ca`` (the *server CA*): the apiserver's, the mke API's and konnectivity-server's
  serving certificates, and the apiserver's client certificate towards kubelets. Join
  tokens pin it; kubeconfigs, pods (``--root-ca-file``) and kubelets
  (``clientCAFile``) trust it. It never signs a CSR.
- ``client-ca``: client certificates the apiserver accepts (``--client-ca-file``): admin,
  controller-manager, scheduler, konnectivity-server, and, through the controller-manager,
  kubelets' client certificates.
- ``kubelet-serving-ca``: kubelet serving certificates (the controller-manager signs the
  CSRs mke approves); trusted only by the apiserver and metrics-server to verify kubelets.
- ``front-proxy-ca`` (requestheader) and ``etcd/ca`` (etcd's peers and clients).

A data dir made before the split has only ``ca``. ``ensure`` keeps it as the server CA (so
tokens, kubeconfigs and workers stay valid), creates the others, and writes
``legacy-ca.crt``, a copy of it that stays trusted *also* for client certificates and
kubelet serving certificates (``client-ca-bundle.crt``, ``kubelet-serving-ca-bundle.crt``)
because nodes hold such certificates from before; removing ``legacy-ca.crt`` on every
controller ends that (docs/security.md). A controller that joined another never creates
a CA (nor the Secrets key): they must come from the first controller.

``secrets-encryption.key`` is kube-apiserver's EncryptionConfiguration: Secrets are
stored AES-CBC encrypted (``aescbc``, a 256-bit key from the kernel's CSPRNG) with
``identity`` last, so objects written before encryption was on stay readable. The first
controller creates it; a joining controller gets it with the CAs (the same key on every
controller, or one controller could not read what another wrote) and never makes its
own. Rotation is by hand (docs/security.md); the file is only checked for its shape.

``rotate(names)`` (``mke certificate rotate``) gives leaf certificates new keys while
everything runs: each new certificate keeps the subject, SANs and usages of the one it
replaces, and the key file is renamed into place just before the certificate file.
Writers of the pki dir (``ensure``, ``rotate``) hold ``lock()`` (flock on ``.lock``), so a
running server never acts on half a rotation; ``fingerprint()`` is what a server reports
once it acted on the files (mke.controller).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import ipaddress
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mke.errors import PKIError
from mke.node.files import private_dir, write_file_atomic
from mke.pkifiles import (  # the crypto-free half, re-exported: mke.pki stays the one import for commands
    ADMIN_BINDING_PENDING,
    ADMIN_GROUP,
    CAS,
    CLIENT_CA,
    CLIENT_CA_BUNDLE,
    ENCRYPTION_PROVIDER,
    FILE_KUBECONFIGS,
    KUBECONFIGS,
    KUBELET_SERVING_CA,
    KUBELET_SERVING_CA_BUNDLE,
    LEAF_CAS,
    LEGACY_CA,
    SECRETS_ENCRYPTION,
    SERVER_CA,
    SUPER_ADMIN,
    CertSpec,
    EnsureReport,
    PKIFiles,
    PKIRequest,
    leaf_specs,
)

RENEW_BEFORE = dt.timedelta(days=30)
CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=365)
CLOCK_SKEW = dt.timedelta(hours=1)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


# ---------------------------------------------------------------- keys and certs


def new_key() -> ec.EllipticCurvePrivateKey:
    if os.environ.get("MKE_FIPS_RUNTIME"):  # FIPS mke: generated inside the OpenSSL FIPS provider (docs/fips.md)
        from mke.fips.libcrypto import generate_private_key

        return generate_private_key("EC", curve="P-256")
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _acceptable_key(key: object) -> bool:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return isinstance(key.curve, (ec.SECP256R1, ec.SECP384R1))
    return isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048


def load_key(path: Path) -> PrivateKey | None:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    return key if _acceptable_key(key) else None  # type: ignore[return-value]


def load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _name(cn: str, orgs: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _sign_alg(key: PrivateKey) -> hashes.HashAlgorithm:
    return hashes.SHA256()


def make_ca_cert(key: PrivateKey, cn: str, *, not_before: dt.datetime | None = None) -> x509.Certificate:
    now = not_before or _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, _sign_alg(key))
    )


def make_leaf_cert(spec: CertSpec, key: PrivateKey, ca_cert: x509.Certificate, ca_key: PrivateKey,
                   *, not_before: dt.datetime | None = None, validity: dt.timedelta = LEAF_VALIDITY) -> x509.Certificate:
    now = not_before or _now()
    usages = []
    if spec.server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if spec.client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(spec.cn, spec.orgs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + validity, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=isinstance(key, rsa.RSAPrivateKey), data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in spec.dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in spec.ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, _sign_alg(ca_key))


def cert_sans(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {f"DNS:{d}" for d in ext.get_values_for_type(x509.DNSName)} | {
        f"IP:{i}" for i in ext.get_values_for_type(x509.IPAddress)
    }


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def _subject_matches(cert: x509.Certificate, spec: CertSpec) -> bool:
    cn = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = sorted(a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    return cn == [spec.cn] and orgs == sorted(spec.orgs)


def _expiring(cert: x509.Certificate, now: dt.datetime) -> bool:
    return cert.not_valid_after_utc - now < RENEW_BEFORE or cert.not_valid_before_utc > now + CLOCK_SKEW


def _same_public_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _spec_of(name: str, ca: str, cert: x509.Certificate) -> CertSpec:
    """The CertSpec that ``cert`` was made from: subject, usages and SANs as they are."""
    cn = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    try:
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        usages = set()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(i) for i in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, ips = (), ()
    return CertSpec(name=name, ca=ca, cn=cn[0] if cn else name, orgs=orgs, dns=dns, ips=ips,
                    server=ExtendedKeyUsageOID.SERVER_AUTH in usages, client=ExtendedKeyUsageOID.CLIENT_AUTH in usages)



def encryption_config(key_name: str, secret: bytes) -> bytes:
    """kube-apiserver's EncryptionConfiguration: Secrets with one aescbc key, identity to read old data."""
    import yaml

    doc = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "EncryptionConfiguration",
        "resources": [{
            "resources": ["secrets"],
            "providers": [
                {ENCRYPTION_PROVIDER: {"keys": [{"name": key_name, "secret": base64.b64encode(secret).decode()}]}},
                {"identity": {}},
            ],
        }],
    }
    return ("# kube-apiserver --encryption-provider-config, made by mke (docs/security.md: rotation).\n"
            "# The same file on every controller; keep it secret (0600) and in your backups.\n"
            + yaml.safe_dump(doc, sort_keys=False)).encode()


def check_encryption_config(path: Path) -> None:
    """PKIError naming ``path`` unless it reads as an EncryptionConfiguration with providers for Secrets."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise PKIError(f"{path}: unreadable ({' '.join(str(e).split())[:160]})") from e
    if not isinstance(doc, dict) or doc.get("kind") != "EncryptionConfiguration":
        raise PKIError(f"{path}: kind: expected EncryptionConfiguration")
    resources = doc.get("resources")
    if not isinstance(resources, list) or not any(
        isinstance(r, dict) and "secrets" in (r.get("resources") or []) and r.get("providers") for r in resources
    ):
        raise PKIError(f"{path}: resources: no providers for secrets")



class ClusterPKI(PKIFiles):
    """``PKIFiles`` with the crypto in this process: what makes, renews and rotates certificates."""

    def ca_cert(self, stem: str = "ca") -> x509.Certificate:
        cert = load_cert(self.crt(stem))
        if cert is None:
            raise PKIError(f"{self.crt(stem)}: missing or unreadable; run `mke server` to create the PKI")
        return cert


    def rotate(self, names: Iterable[str], *, now: dt.datetime | None = None) -> dict[str, x509.Certificate]:
        """A new key and certificate for each leaf named; returns the new certificates.

        Hold ``lock()`` around it (and around writing what depends on it: ``admin.conf``).
        """
        now = now or _now()
        out: dict[str, x509.Certificate] = {}
        for name in names:
            ca = LEAF_CAS.get(name)
            if ca is None:
                raise PKIError(f"{name}: not a leaf certificate mke makes (one of {', '.join(LEAF_CAS)})")
            old = load_cert(self.crt(name))
            if old is None:
                raise PKIError(f"{self.crt(name)}: missing or unreadable; start `mke server` once to create it")
            ca_key = load_key(self.key(ca))
            if ca_key is None:
                raise PKIError(f"{self.key(ca)}: missing or unusable; rotation needs the CA's key on this controller")
            spec = _spec_of(name, ca, old)
            key = new_key()
            cert = make_leaf_cert(spec, key, self.ca_cert(ca), ca_key, not_before=now)
            try:
                # Readers that load the pair per connection (etcd) may see the new key with the old
                # certificate between the two renames (microseconds); they fail that one handshake
                # and clients dial again. Readers that watch the files (kube-apiserver) keep their
                # pair until the two match again.
                write_file_atomic(self.key(name), key_pem(key), 0o600)
                write_file_atomic(self.crt(name), cert_pem(cert), 0o644)
            except OSError as e:
                raise PKIError(f"{e.filename or self.crt(name)}: cannot write: {e.strerror}") from e
            out[name] = cert
        return out

    # -- ensure

    def ensure(self, req: PKIRequest, *, now: dt.datetime | None = None) -> EnsureReport:
        """Create or renew what is needed; safe to call on every start."""
        with self.lock():
            return self._ensure(req, now=now)

    def _ensure(self, req: PKIRequest, *, now: dt.datetime | None = None) -> EnsureReport:
        now = now or _now()
        rep = EnsureReport()
        try:
            private_dir(self.dir)
            private_dir(self.dir / "etcd")
            self._split_single_ca(req.create_shared, rep)
            cas: dict[str, tuple[x509.Certificate, PrivateKey]] = {}
            for stem, cn in CAS.items():
                cas[stem] = self._ensure_ca(stem, cn, now, rep, create=req.create_shared)
            self._ensure_trust_bundles(rep)
            self._ensure_sa(rep)
            self._ensure_secrets_encryption(req.create_shared, rep)
            for spec in leaf_specs(req):
                ca_cert, ca_key = cas[spec.ca]
                self._ensure_leaf(spec, ca_cert, ca_key, now, rep)
            if (req.create_shared and "admin" in rep.created) or "admin" in rep.resubjected:
                # a new cluster, or an admin.conf that was system:masters: its RBAC binding is made
                # once the apiserver answers (Controller.ensure_admin_binding)
                write_file_atomic(self.dir / ADMIN_BINDING_PENDING, b"", 0o600)
            # Local clients (and admin.conf on this host) use loopback; `mke kubeconfig admin`
            # prints a copy for the advertised or external address.
            local = f"https://127.0.0.1:{req.api_port}"
            for name, stem in KUBECONFIGS.items():
                self.write_kubeconfig(name, local, stem)
        except OSError as e:
            raise PKIError(f"{e.filename or self.dir}: cannot write the PKI: {e.strerror}") from e
        return rep

    def _split_single_ca(self, create: bool, rep: EnsureReport) -> None:
        """A data dir from before CA separation (``ca`` but no ``client-ca``): keep ``ca`` as the
        server CA and trust a copy of it (LEGACY_CA) for what it signed before."""
        ca_crt = self.crt(SERVER_CA)
        if not ca_crt.exists() or self.crt(CLIENT_CA).exists() or self.key(CLIENT_CA).exists():
            return
        if not create:
            raise PKIError(
                f"{self.crt(CLIENT_CA)}: missing on a controller that joined another (a data dir from before CA "
                f"separation); start the upgraded first controller, then copy its pki/client-ca.*, "
                f"pki/kubelet-serving-ca.* and pki/{LEGACY_CA}.crt here (keys 0600) and start again")
        if not self.legacy_ca.exists():
            write_file_atomic(self.legacy_ca, ca_crt.read_bytes(), 0o644)
        rep.migrated = True

    def _ensure_trust_bundles(self, rep: EnsureReport) -> None:
        rep.legacy = self.legacy_ca.exists()
        for bundle, ca in ((CLIENT_CA_BUNDLE, CLIENT_CA), (KUBELET_SERVING_CA_BUNDLE, KUBELET_SERVING_CA)):
            # a bundle written or removed is a change like a renewal: the components restart on it
            path = self.crt(bundle)
            if not rep.legacy:
                if path.exists():
                    path.unlink()
                    rep.renewed.append(bundle)
                continue
            text = self.crt(ca).read_bytes().rstrip(b"\n") + b"\n" + self.legacy_ca.read_bytes()
            if not path.exists() or path.read_bytes() != text:
                (rep.renewed if path.exists() else rep.created).append(bundle)
                write_file_atomic(path, text, 0o644)

    def _ensure_ca(self, stem: str, cn: str, now: dt.datetime, rep: EnsureReport,
                   *, create: bool = True) -> tuple[x509.Certificate, PrivateKey]:
        crt_path, key_path = self.crt(stem), self.key(stem)
        key = load_key(key_path)
        cert = load_cert(crt_path)
        if key is None:
            if crt_path.exists():
                raise PKIError(
                    f"{key_path}: missing or unusable while {crt_path.name} exists; restore the key, "
                    f"or run `mke reset` to start a new cluster"
                )
            if not create:
                raise PKIError(f"{key_path}: missing on a controller that joined another; copy pki/{stem}.crt and "
                               f"pki/{stem}.key (0600) from the first controller: every controller must use the same CAs")
            key = new_key()
            write_file_atomic(key_path, key_pem(key), 0o600)
        if cert is not None and _same_public_key(cert, key) and not _expiring(cert, now):
            rep.kept.append(stem)
            return cert, key
        renewed = cert is not None and _same_public_key(cert, key)
        if cert is not None and renewed:
            # Same key and subject: certificates issued before keep verifying.
            cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value  # type: ignore[assignment]
        cert = make_ca_cert(key, cn, not_before=now)
        write_file_atomic(crt_path, cert_pem(cert), 0o644)
        (rep.renewed if renewed else rep.created).append(stem)
        return cert, key

    def _ensure_sa(self, rep: EnsureReport) -> None:
        key = load_key(self.sa_key)
        if key is None:
            key = new_key()
            write_file_atomic(self.sa_key, key_pem(key), 0o600)
            rep.created.append("sa")
        else:
            rep.kept.append("sa")
        pub = public_pem(key)
        if not self.sa_pub.exists() or self.sa_pub.read_bytes() != pub:
            write_file_atomic(self.sa_pub, pub, 0o644)

    def _ensure_secrets_encryption(self, create: bool, rep: EnsureReport) -> None:
        path = self.secrets_encryption
        if path.exists():
            check_encryption_config(path)
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
            rep.kept.append("secrets-encryption")
            return
        if not create:
            raise PKIError(f"{path}: missing on a controller that joined another; copy that file from the "
                           "first controller (mode 0600): every controller must encrypt Secrets with the same key")
        name = f"key-{_now():%Y%m%d%H%M%S}"
        write_file_atomic(path, encryption_config(name, os.urandom(32)), 0o600)
        rep.created.append("secrets-encryption")

    def _ensure_leaf(self, spec: CertSpec, ca_cert: x509.Certificate, ca_key: PrivateKey, now: dt.datetime,
                     rep: EnsureReport) -> None:
        crt_path, key_path = self.crt(spec.name), self.key(spec.name)
        key = load_key(key_path)
        cert = load_cert(crt_path)
        if key is None:
            key = new_key()
            write_file_atomic(key_path, key_pem(key), 0o600)
            cert = None
        if (
            cert is not None
            and _same_public_key(cert, key)
            and _signed_by(cert, ca_cert)
            and _subject_matches(cert, spec)
            and cert_sans(cert) == spec.san_set()
            and not _expiring(cert, now)
        ):
            rep.kept.append(spec.name)
            return
        existed = cert is not None
        if existed and not _subject_matches(cert, spec):
            rep.resubjected.append(spec.name)
        cert = make_leaf_cert(spec, key, ca_cert, ca_key, not_before=now)
        write_file_atomic(crt_path, cert_pem(cert), 0o644)
        (rep.renewed if existed else rep.created).append(spec.name)



# ---------------------------------------------------------------- the helper (mke.pkifiles)


def csr_facts(request_b64: str) -> dict[str, Any] | str:
    """What the CSR approver checks in a CSR (``spec.request``, base64 PEM): subject CNs and
    organizations, SANs, whether it has names of another kind; or why it does not parse."""
    try:
        req = x509.load_pem_x509_csr(base64.b64decode(request_b64))
        cn = [str(a.value) for a in req.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        orgs = [str(a.value) for a in req.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        subject = req.subject.rfc4514_string()
        try:
            san: x509.SubjectAlternativeName | None = req.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            san = None
    except (ValueError, TypeError) as e:  # binascii.Error is a ValueError
        return f"unparsable request ({e})"
    return {"cn": cn, "orgs": orgs, "subject": subject, "san": san is not None,
            "others": san is not None and any(not isinstance(g, (x509.DNSName, x509.IPAddress)) for g in san),
            "dns": san.get_values_for_type(x509.DNSName) if san is not None else [],
            "ips": [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] if san is not None else []}


def helper_main(argv: list[str]) -> int:
    """``mke _pki ensure|csr-facts``: JSON on stdin, JSON on stdout (mke.pkifiles.Helper)."""
    op = argv[0] if len(argv) == 1 else ""
    if op not in ("ensure", "csr-facts"):
        raise PKIError("mke _pki: ensure or csr-facts (mke's own helper; JSON on stdin)")
    try:
        doc = json.load(sys.stdin)
        if op == "ensure":
            fields = {k: tuple(v) if isinstance(v, list) else v for k, v in doc["request"].items()}
            req, pki_dir = PKIRequest(**fields), Path(doc["dir"])
        else:
            requests = [str(r) for r in doc["requests"]]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise PKIError(f"mke _pki {op}: bad request on stdin ({e})") from e
    out = dataclasses.asdict(ClusterPKI(pki_dir).ensure(req)) if op == "ensure" else \
        [csr_facts(r) for r in requests]
    json.dump(out, sys.stdout)
    return 0


__all__ = [
    "ADMIN_BINDING_PENDING", "ADMIN_GROUP", "CAS", "CLIENT_CA", "CLIENT_CA_BUNDLE", "ENCRYPTION_PROVIDER",
    "FILE_KUBECONFIGS", "KUBECONFIGS", "KUBELET_SERVING_CA", "KUBELET_SERVING_CA_BUNDLE", "LEAF_CAS", "LEGACY_CA",
    "SECRETS_ENCRYPTION", "SERVER_CA", "SUPER_ADMIN", "CertSpec", "ClusterPKI", "EnsureReport", "PKIFiles",
    "PKIRequest", "cert_pem", "cert_sans", "csr_facts", "helper_main", "key_pem", "leaf_specs",
    "load_cert", "load_key", "make_ca_cert", "make_leaf_cert", "new_key",
]
