"""The pki dir without ``cryptography``: its names, paths, writers' lock and fingerprint,
kubeconfigs, and what a long-running ``mke server`` asks of the certificates.

``mke server`` lives for months; importing ``cryptography`` would keep its Rust extension and
the part of libcrypto it touches (about 15 MiB) resident for all that time, for work done at
start and every 12 hours (docs/performance.md, empty cluster). So the server holds a
``PKIFiles``, whose ``ensure`` and ``csr_facts`` run in a short-lived helper, this same mke
started as ``mke _pki <op>`` with JSON on stdin and stdout (no secret on its command line),
and reads CA pins with mke.der. Commands that run and exit (``mke certificate``, ``mke
kubeconfig``) use mke.pki's ``ClusterPKI``: the same class with the crypto in process.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import ipaddress
import json
import os
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mke.errors import PKIError
from mke.node.files import private_dir, write_file_atomic

HELPER_TIMEOUT = 300.0  # seconds; ensure makes ECDSA keys, which takes milliseconds


@dataclass(frozen=True, kw_only=True)
class CertSpec:
    """One leaf certificate: subject, usages and SANs, and the CA that signs it."""

    name: str  # file stem relative to the pki dir, e.g. "apiserver" or "etcd/server"
    ca: str  # CA stem, e.g. "ca", "etcd/ca"
    cn: str
    orgs: tuple[str, ...] = ()
    server: bool = False
    client: bool = False
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()

    def san_set(self) -> set[str]:
        return {f"DNS:{d}" for d in self.dns} | {f"IP:{ipaddress.ip_address(i)}" for i in self.ips}


@dataclass(frozen=True, kw_only=True)
class PKIRequest:
    """What the certificates must cover; built by the server from the config and the host."""

    node_name: str
    api_address: str  # advertised API address (an IP)
    api_port: int = 6443
    external_address: str = ""
    extra_sans: tuple[str, ...] = ()  # config api.sans: IPs or DNS names
    host_addresses: tuple[str, ...] = ()
    kubernetes_service_ip: str = "10.96.0.1"
    cluster_domain: str = "cluster.local"
    etcd_peer_address: str = ""
    # False on a controller that joined another: the CAs and the Secrets encryption key must
    # come from there (join), and a missing one is an error rather than a new, different one.
    create_shared: bool = True

    def api_sans(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        dns = ["kubernetes", "kubernetes.default", "kubernetes.default.svc",
               f"kubernetes.default.svc.{self.cluster_domain}", "localhost", self.node_name]
        ips = ["127.0.0.1", "::1", self.kubernetes_service_ip, self.api_address, *self.host_addresses]
        for extra in (*self.extra_sans, self.external_address):
            if not extra:
                continue
            try:
                ips.append(str(ipaddress.ip_address(extra)))
            except ValueError:
                dns.append(extra)
        return _unique(dns), _unique(str(ipaddress.ip_address(i)) for i in ips if i)


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


# stem -> CN of a new CA (an existing CA keeps its subject). "ca" is the server CA.
CAS = {"ca": "kubernetes-server-ca", "client-ca": "kubernetes-client-ca",
       "kubelet-serving-ca": "kubernetes-kubelet-serving-ca", "front-proxy-ca": "kubernetes-front-proxy-ca",
       "etcd/ca": "etcd-ca"}
SERVER_CA, CLIENT_CA, KUBELET_SERVING_CA = "ca", "client-ca", "kubelet-serving-ca"
# The single CA of a data dir made before CA separation (a copy of ca.crt), still trusted
# for client and kubelet serving certificates issued before; see the module docstring.
LEGACY_CA = "legacy-ca"
# What a controller trusts for client certificates and for kubelets when LEGACY_CA exists.
CLIENT_CA_BUNDLE, KUBELET_SERVING_CA_BUNDLE = "client-ca-bundle", "kubelet-serving-ca-bundle"


# The group of admin.conf's certificate, bound to cluster-admin by the ClusterRoleBinding of the
# same name (kubeadm's kubeadm:cluster-admins). mke creates that binding once, when it creates
# the cluster or re-issues an admin certificate that was in system:masters (ADMIN_BINDING_PENDING),
# never again: deleting it revokes every admin.conf.
ADMIN_GROUP = "mke:cluster-admins"
# mke's own API client on a controller (system:masters: it must work before any RBAC exists and
# whatever an operator does to RBAC): pki/super-admin.conf, 0600, never handed out.
SUPER_ADMIN = "super-admin"
# In the pki dir while the admin binding is still to be created (by Controller.ensure_admin_binding).
ADMIN_BINDING_PENDING = "admin-binding.pending"


def leaf_specs(req: PKIRequest) -> list[CertSpec]:
    api_dns, api_ips = req.api_sans()
    peer = req.etcd_peer_address or req.api_address
    etcd_ips = _unique(["127.0.0.1", "::1", peer, *req.host_addresses])
    return [
        CertSpec(name="apiserver", ca=SERVER_CA, cn="kube-apiserver", server=True, dns=api_dns, ips=api_ips),
        # kubelets trust the CA their token pins (the server CA) for clients: only the
        # apiserver's certificate, no node's, authenticates to a kubelet by certificate
        CertSpec(name="apiserver-kubelet-client", ca=SERVER_CA, cn="mke:apiserver-kubelet-client", client=True),
        CertSpec(name="front-proxy-client", ca="front-proxy-ca", cn="front-proxy-client", client=True),
        # people's admin.conf: cluster-admin through RBAC (ADMIN_GROUP's binding), so it can be
        # revoked; mke's own clients use SUPER_ADMIN, the only system:masters credential (CIS 5.1.7)
        CertSpec(name="admin", ca=CLIENT_CA, cn="mke-admin", orgs=(ADMIN_GROUP,), client=True),
        CertSpec(name=SUPER_ADMIN, ca=CLIENT_CA, cn="mke-super-admin", orgs=("system:masters",), client=True),
        CertSpec(name="controller-manager", ca=CLIENT_CA, cn="system:kube-controller-manager", client=True),
        CertSpec(name="scheduler", ca=CLIENT_CA, cn="system:kube-scheduler", client=True),
        CertSpec(name="konnectivity-client", ca=CLIENT_CA, cn="system:konnectivity-server", client=True),
        CertSpec(name="konnectivity", ca=SERVER_CA, cn="konnectivity-server", server=True, dns=api_dns,
                 ips=api_ips),
        CertSpec(name="mke-api", ca=SERVER_CA, cn="mke-api", server=True, dns=api_dns, ips=api_ips),
        CertSpec(name="apiserver-etcd-client", ca="etcd/ca", cn="kube-apiserver-etcd-client", client=True),
        CertSpec(name="etcd/server", ca="etcd/ca", cn=f"etcd-server-{req.node_name}", server=True, client=True,
                 dns=("localhost", req.node_name), ips=etcd_ips),
        CertSpec(name="etcd/peer", ca="etcd/ca", cn=f"etcd-peer-{req.node_name}", server=True, client=True,
                 dns=("localhost", req.node_name), ips=etcd_ips),
        CertSpec(name="etcd/client", ca="etcd/ca", cn="mke-etcd-client", client=True),
    ]


SECRETS_ENCRYPTION = "secrets-encryption.key"  # relative to the pki dir
ENCRYPTION_PROVIDER = "aescbc"


# kubeconfig name -> client cert stem
KUBECONFIGS = {
    "admin": "admin",
    SUPER_ADMIN: SUPER_ADMIN,
    "controller-manager": "controller-manager",
    "scheduler": "scheduler",
    "konnectivity": "konnectivity-client",
}
# Kubeconfigs that name their certificate and key files instead of carrying them: client-go
# reloads a client certificate given as files (k8s.io/client-go/transport, ReloadTLSFiles),
# so a rotated certificate needs no restart. admin.conf carries its data: people copy it.
FILE_KUBECONFIGS = frozenset({"controller-manager", "scheduler", "konnectivity"})
# leaf stem -> the CA stem that signs it (the same for every request)
LEAF_CAS = {s.name: s.ca for s in leaf_specs(PKIRequest(node_name="node", api_address="127.0.0.1"))}


@dataclass(kw_only=True)
class EnsureReport:
    created: list[str] = field(default_factory=list)
    renewed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    migrated: bool = False  # this start split a single-CA data dir (LEGACY_CA written)
    legacy: bool = False  # LEGACY_CA is trusted (a data dir made before CA separation)
    resubjected: list[str] = field(default_factory=list)  # re-issued because the subject changed


class PKIFiles:
    """Files under one pki dir. Paths: ``<dir>/<stem>.crt|.key``, ``sa.key|.pub``, ``<name>.conf``."""

    def __init__(self, pki_dir: Path) -> None:
        self.dir = Path(pki_dir)

    def crt(self, stem: str) -> Path:
        return self.dir / f"{stem}.crt"

    def key(self, stem: str) -> Path:
        return self.dir / f"{stem}.key"

    def kubeconfig(self, name: str) -> Path:
        return self.dir / f"{name}.conf"

    @property
    def internal_kubeconfig(self) -> Path:
        """mke's own client on this controller (system:masters; see SUPER_ADMIN)."""
        return self.kubeconfig(SUPER_ADMIN)

    @property
    def admin_binding_pending(self) -> Path:
        return self.dir / ADMIN_BINDING_PENDING

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    @property
    def secrets_encryption(self) -> Path:
        return self.dir / SECRETS_ENCRYPTION

    @property
    def legacy_ca(self) -> Path:
        return self.crt(LEGACY_CA)

    @property
    def client_ca_file(self) -> Path:
        """The CAs trusted for client certificates (the client CA, and the legacy CA if any)."""
        return self.crt(CLIENT_CA_BUNDLE) if self.legacy_ca.exists() else self.crt(CLIENT_CA)

    @property
    def kubelet_ca_file(self) -> Path:
        """The CAs trusted for kubelet serving certificates (the kubelet-serving CA, and the legacy CA if any)."""
        return self.crt(KUBELET_SERVING_CA_BUNDLE) if self.legacy_ca.exists() else self.crt(KUBELET_SERVING_CA)

    # -- writers' lock, and what a running server has acted on

    @contextlib.contextmanager
    def lock(self, *, wait: bool = True) -> Iterator[bool]:
        """Hold the pki dir's writers' lock; with ``wait=False`` yield False at once when another holds it."""
        try:
            private_dir(self.dir)
            fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise PKIError(f"{e.filename or self.dir}: cannot write the PKI: {e.strerror}") from e
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # releases the lock

    def fingerprint(self) -> str:
        """One digest of every certificate, key and kubeconfig in the pki dir (names and contents)."""
        h = hashlib.sha256()
        for path in sorted(self.dir.rglob("*")):
            if path.suffix in (".crt", ".key", ".conf", ".pub") and path.is_file():
                h.update(str(path.relative_to(self.dir)).encode() + b"\0")
                h.update(hashlib.sha256(path.read_bytes()).digest())
        return h.hexdigest()

    def leaves(self) -> list[str]:
        """The leaf certificates present in this pki dir, in ``leaf_specs`` order."""
        return [name for name in LEAF_CAS if self.crt(name).exists()]


    def ca_pin(self, stem: str = "ca") -> str:
        """``sha256:`` of the CA's public key (join tokens, backups), read without cryptography."""
        from mke import der

        path = self.crt(stem)
        try:
            return der.ca_pin(path.read_bytes())
        except FileNotFoundError as e:
            raise PKIError(f"{path}: missing; run `mke server` to create the PKI") from e
        except OSError as e:
            raise PKIError(f"{path}: unreadable: {e.strerror}") from e
        except ValueError as e:
            raise PKIError(f"{path}: not a PEM certificate ({e}); restore it from a backup") from e

    # -- what needs cryptography, in a helper process

    def ensure(self, req: PKIRequest) -> EnsureReport:
        """``ClusterPKI.ensure`` in a short-lived ``mke _pki ensure``: create or renew what is needed."""
        return self.start_ensure(req).result()

    def start_ensure(self, req: PKIRequest) -> Helper:
        """``ensure`` started: the helper works while the caller does something else (mke server's
        start checks versions and finds binaries meanwhile); ``result()`` waits for its report."""
        return Helper("ensure", {"dir": str(self.dir), "request": dataclasses.asdict(req)},
                      lambda doc: EnsureReport(**doc))

    # -- kubeconfigs

    def kubeconfig_text(self, server: str, cert_stem: str, user: str = "mke", *, files: bool = False) -> str:
        """A kubeconfig for ``server`` as the client certificate ``cert_stem``: carrying the
        certificate and key, or with ``files`` naming them (client-go then reloads them)."""
        import yaml

        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        ca = b64(self.crt("ca"))  # first: a missing CA is the error to name
        if files:
            creds = {"client-certificate": str(self.crt(cert_stem)), "client-key": str(self.key(cert_stem))}
        else:
            creds = {"client-certificate-data": b64(self.crt(cert_stem)), "client-key-data": b64(self.key(cert_stem))}
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "mke", "cluster": {"server": server, "certificate-authority-data": ca}}],
            "users": [{"name": user, "user": creds}],
            "contexts": [{"name": "mke", "context": {"cluster": "mke", "user": user}}],
            "current-context": "mke",
        }
        return yaml.safe_dump(doc, sort_keys=False)

    def write_kubeconfig(self, name: str, server: str, cert_stem: str) -> Path:
        path = self.kubeconfig(name)
        text = self.kubeconfig_text(server, cert_stem, user=name, files=name in FILE_KUBECONFIGS).encode()
        if not path.exists() or path.read_bytes() != text:
            write_file_atomic(path, text, 0o600)
        return path


def csr_facts(requests: Iterable[str]) -> list[dict[str, Any] | str]:
    """``mke.pki.csr_facts`` of each base64 PEM CSR, in one ``mke _pki csr-facts``."""
    requests = list(requests)
    return Helper("csr-facts", {"requests": requests}).result() if requests else []


def helper_command() -> tuple[list[str], dict[str, str]]:
    """The command and environment of the helper: this very mke again (mke.start.self_command),
    from source with this module's tree first on PYTHONPATH."""
    from mke import start

    env = dict(os.environ)
    if not start.executable:
        src = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return start.self_command(running_file=True), env


class Helper:
    """One ``mke _pki <op>`` running, ``payload`` as JSON on its stdin."""

    def __init__(self, op: str, payload: dict[str, Any], make: Any = None) -> None:
        self.op, self.make = op, make
        cmd, env = helper_command()
        try:
            self.proc = subprocess.Popen([*cmd, "_pki", op], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env=env)
        except OSError as e:
            raise PKIError(f"{cmd[0]}: cannot run the PKI helper: {e.strerror}") from e
        stdin, self.proc.stdin = self.proc.stdin, None  # communicate() then only reads
        assert stdin is not None
        try:  # the whole request now: the helper reads it at once and works while the caller goes on
            with stdin:
                stdin.write(json.dumps(payload).encode())
        except BrokenPipeError:
            pass  # it exited before reading: result() reports its error

    def result(self) -> Any:
        """Its answer (through ``make``), or PKIError with the helper's own one-line error."""
        try:
            out, err = self.proc.communicate(timeout=HELPER_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            self.proc.kill()
            self.proc.communicate()
            raise PKIError(f"mke _pki {self.op}: no answer in {HELPER_TIMEOUT:.0f} s") from e
        if self.proc.returncode != 0:
            lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
            why = lines[-1].removeprefix("mke: error: ") if lines else f"exit status {self.proc.returncode}"
            raise PKIError(why)
        try:
            doc = json.loads(out)
        except ValueError as e:
            raise PKIError(f"mke _pki {self.op} answered something that is not JSON ({e})") from e
        return self.make(doc) if self.make is not None else doc

    def abandon(self) -> None:
        """Let it finish (it writes every file by temp + rename, under the pki lock) and drop its answer."""
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self.proc.communicate(timeout=HELPER_TIMEOUT)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
