"""Join tokens of every kind a command line test gives mke: well-formed ones (for either role,
expired, for a cluster that is not there) and broken ones, signed by a throwaway CA."""

from __future__ import annotations

import datetime as dt


def tokens() -> dict[str, str]:
    """Tokens of every kind a case gives: well-formed ones (for the wrong role, expired, for a
    cluster that is not there: https://127.0.0.1:9) and broken ones."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from mke import der
    from mke.tokens import JoinToken

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bad-input-ca")])
    now = dt.datetime.now(dt.UTC)
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
          .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=9))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    pem = ca.public_bytes(serialization.Encoding.PEM).decode()

    def tok(role: str, **kw) -> str:
        return JoinToken(role=role, api_url="https://127.0.0.1:9", mke_api_url="https://127.0.0.1:9", ca_pem=pem,
                         ca_hash=der.ca_pin(pem), token_id="abcdef", token_secret="0123456789abcdef", **kw).encode()

    out = {
        "worker": tok("worker", expires=now + dt.timedelta(hours=1)),
        "controller": tok("controller", expires=now + dt.timedelta(hours=1)),
        "expired-worker": tok("worker", expires=now - dt.timedelta(hours=1)),
        "expired-controller": tok("controller", expires=now - dt.timedelta(hours=1)),
        "too-long": "mke1." + "A" * 20000,
    }
    out["truncated"] = out["worker"][: len(out["worker"]) // 2]
    out["altered"] = JoinToken(role="worker", api_url="https://127.0.0.1:9", ca_pem=pem, ca_hash="sha256:" + "0" * 64,
                               token_id="abcdef", token_secret="0123456789abcdef").encode()
    return out
