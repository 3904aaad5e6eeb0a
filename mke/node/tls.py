"""The TLS policy of every server mke runs: TLS 1.2 at least, and for TLS 1.2 only ECDHE key
exchange with AES-GCM (FIPS 140-approved, forward secret, AEAD; CIS Kubernetes 1.2.x
"strong cryptographic ciphers").

The same list is given to each component in its own spelling: the Kubernetes components
(``--tls-cipher-suites``, kubelet's ``tlsCipherSuites``), etcd and konnectivity-server
(``--cipher-suites``) take Go's names; mke's own API (Python's ``ssl``) takes OpenSSL's.
TLS 1.3's suites are not configurable in Go or in Python's ``ssl``: all three are AEAD;
a FIPS build's Go (``GODEBUG=fips140=on``) and OpenSSL FIPS provider leave only the
AES-GCM ones (docs/security.md).
"""

from __future__ import annotations

import os
import ssl
import threading
import time
from pathlib import Path

#: Go's names, strongest first; ECDSA first because mke's keys are ECDSA P-256.
GO_CIPHER_SUITES: tuple[str, ...] = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
)
#: The same suites in OpenSSL's cipher-list syntax (TLS 1.2 and below).
OPENSSL_CIPHERS = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384"

#: Kubernetes components' (and kubelet's config) spelling of the minimum version.
K8S_MIN_VERSION = "VersionTLS12"
#: etcd's spelling.
ETCD_MIN_VERSION = "TLS1.2"


def go_cipher_suites() -> str:
    """The suites as one comma-separated flag value."""
    return ",".join(GO_CIPHER_SUITES)


#: The key-exchange group of a FIPS runtime's servers: an approved NIST curve (SP 800-56A), the
#: one mke's keys use. The OpenSSL FIPS provider also implements X25519 and X448, which FIPS
#: 140-3 does not approve for key agreement (Go's FIPS mode refuses them too); the e2e TLS probe
#: found the mke API accepting X25519 on the FIPS build before this.
FIPS_GROUP = "prime256v1"


def server_context(*, fips: bool | None = None) -> ssl.SSLContext:
    """A server context with the policy (load the certificate chain into it). In a FIPS runtime
    (``fips`` None: asked of the environment) key exchange is limited to P-256, for TLS 1.2 and
    1.3 alike (Python's ``set_ecdh_curve`` sets OpenSSL's group list)."""
    from mke.fips.runtime_env import is_fips_runtime

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(OPENSSL_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    if is_fips_runtime() if fips is None else fips:
        ctx.set_ecdh_curve(FIPS_GROUP)
    return ctx


class ReloadingServerContext:
    """A server context for a certificate and key on disk, made again when either file changes
    (looked at no more than once per ``check_every`` seconds), so a renewed or rotated
    certificate is served without a restart. A pair that does not load (the key renamed into
    place, the certificate not yet: a rotation in progress) keeps the context before it.
    """

    def __init__(self, cert: Path, key: Path, *, check_every: float = 1.0) -> None:
        self.cert, self.key, self.check_every = Path(cert), Path(key), check_every
        self._lock = threading.Lock()
        self._ctx: ssl.SSLContext | None = None
        self._stamp: tuple[tuple[int, int, int], ...] | None = None
        self._checked = 0.0
        self.loads = 0  # how many times a pair was loaded
        self.current()  # a pair that does not load at start is the caller's error

    def _files(self) -> tuple[tuple[int, int, int], ...]:
        return tuple((st.st_ino, st.st_mtime_ns, st.st_size) for st in (os.stat(self.cert), os.stat(self.key)))

    def current(self) -> ssl.SSLContext:
        with self._lock:
            now = time.monotonic()
            if self._ctx is not None and now - self._checked < self.check_every:
                return self._ctx
            self._checked = now
            try:
                stamp = self._files()
                if stamp != self._stamp or self._ctx is None:
                    ctx = server_context()
                    ctx.load_cert_chain(str(self.cert), str(self.key))
                    self._ctx, self._stamp = ctx, stamp
                    self.loads += 1
            except (OSError, ssl.SSLError):
                if self._ctx is None:
                    raise
            return self._ctx
