"""mke's own TLS servers (mke/node/tls.py): in a FIPS runtime, key exchange only over P-256.

Real handshakes over loopback between Python's ssl contexts (this test's OpenSSL, not the FIPS
provider: what is checked is the group list mke sets, which the FIPS provider would otherwise
fill with X25519 too; the e2e TLS probe found exactly that on dist/mke-fips's mke API).
"""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from pathlib import Path

import pytest

from mke.node.tls import server_context
from tests.support.tls import handshake


def self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mke-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(hours=1))
            .sign(key, hashes.SHA256()))
    crt, pem = tmp / "tls.crt", tmp / "tls.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


def serve(ctx: ssl.SSLContext, connections: int) -> tuple[int, threading.Thread]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()

    def loop() -> None:
        with sock:
            for _ in range(connections):
                conn, _ = sock.accept()
                conn.settimeout(5)
                try:
                    with ctx.wrap_socket(conn, server_side=True):
                        pass
                except (ssl.SSLError, OSError):
                    pass

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return sock.getsockname()[1], t


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_fips_runtime_server_agrees_keys_over_p256_only(tmp_path: Path, version: ssl.TLSVersion) -> None:
    crt, key = self_signed(tmp_path)
    fips = server_context(fips=True)
    fips.load_cert_chain(str(crt), str(key))
    port, t = serve(fips, 2)
    assert handshake("127.0.0.1", port, version=version, group="prime256v1") is None
    assert handshake("127.0.0.1", port, version=version, group="X25519") is not None  # refused
    t.join(10)


def test_the_standard_build_server_keeps_x25519(tmp_path: Path) -> None:
    """Outside FIPS mode X25519 stays (a strong curve; Go's servers take it too): the check above
    is a FIPS rule, not a general one."""
    crt, key = self_signed(tmp_path)
    std = server_context(fips=False)
    std.load_cert_chain(str(crt), str(key))
    port, t = serve(std, 1)
    assert handshake("127.0.0.1", port, version=ssl.TLSVersion.TLSv1_3, group="X25519") is None
    t.join(10)
