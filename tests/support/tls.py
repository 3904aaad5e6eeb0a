"""TLS handshakes that offer one protocol version or cipher list, to check a server's TLS policy.

``handshake(host, port, version=..., ciphers=...)`` returns None when the server completed
the handshake, else OpenSSL's reason. The client itself allows anything (security level 0),
so a refusal is the server's: ``refused_by_server`` checks the reason is an alert it sent.
"""

from __future__ import annotations

import socket
import ssl
import warnings
from pathlib import Path

#: TLS 1.2 suites mke's servers must refuse: no AEAD, or not AES-GCM, or no forward secrecy.
WEAK_TLS12 = {
    "chacha20": "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305",
    "cbc": "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES128-SHA256",
    "static-rsa": "AES128-GCM-SHA256:AES256-GCM-SHA384",
}
GOOD_TLS12 = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"  # ECDSA (mke's keys) or RSA


def handshake(host: str, port: int, *, version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
              ciphers: str | None = None, cert: tuple[Path, Path] | None = None,
              group: str | None = None, timeout: float = 5.0) -> str | None:
    """None when the handshake completed; ``cert`` (certificate, key) for servers that require one;
    ``group``: the only key-exchange group offered (OpenSSL's name: ``X25519``, ``prime256v1``)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if group is not None:
        ctx.set_ecdh_curve(group)
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers((ciphers or "ALL") + ":@SECLEVEL=0")
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: offering them is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ctx.maximum_version = version
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=host) as conn:
            if version >= ssl.TLSVersion.TLSv1_3:
                # the server checks a TLS 1.3 client's certificate after the client is done: read its verdict
                conn.settimeout(0.5)
                try:
                    conn.recv(1)
                except TimeoutError:
                    pass
            return None
    except (ssl.SSLError, OSError) as e:
        return f"{type(e).__name__}: {e}"


def refused_by_server(reason: str | None) -> bool:
    """True when ``reason`` says the server ended the handshake (an alert, or it hung up)."""
    return reason is not None and ("ALERT" in reason or "EOF" in reason or "reset" in reason.lower())
