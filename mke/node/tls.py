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

import ssl

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


def server_context() -> ssl.SSLContext:
    """A server context with the policy (load the certificate chain into it)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(OPENSSL_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx
