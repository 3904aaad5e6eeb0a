"""mke/der.py: the CA pin read without cryptography equals cryptography's, and bad input is a ValueError."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from mke import der
from mke.pki import cert_pem, make_ca_cert, new_key


def _self_signed(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> x509.Certificate:
    """A CA as other tools make them: an RSA or P-384 key, a long serial and a name over 127
    bytes (so DER lengths take more than one byte)."""
    name = x509.Name([x509.NameAttribute(oid, f"someone else's CA, {oid._name} " * 2)
                      for oid in (NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME)])
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))


def _cryptographys_pin(cert: x509.Certificate) -> str:
    """The pin as cryptography computes it: the independent answer der.ca_pin must give."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


@pytest.mark.parametrize("key", [new_key(), ec.generate_private_key(ec.SECP384R1()),
                                 rsa.generate_private_key(public_exponent=65537, key_size=2048)],
                         ids=["mke-p256", "p384", "rsa2048"])
def test_the_pin_is_cryptographys_for_every_key_mke_accepts(key) -> None:
    cert = make_ca_cert(key, "kubernetes-server-ca") if isinstance(key, ec.EllipticCurvePrivateKey) \
        and isinstance(key.curve, ec.SECP256R1) else _self_signed(key)
    pem = cert_pem(cert)
    assert der.ca_pin(pem) == der.ca_pin(pem.decode()) == _cryptographys_pin(cert)
    # text around it (a bundle's comment, a second certificate) does not matter: the first one counts
    other = cert_pem(make_ca_cert(new_key(), "other"))
    assert der.ca_pin(b"# the cluster CA\n" + pem + other) == _cryptographys_pin(cert)


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    length = bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes(
        (n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + length + body


def _children(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        _, start, end = der._element(data, pos, len(data))
        out.append(data[pos:end])
        pos = end
    return out


def test_a_version_1_certificate_has_no_version_field_and_still_pins() -> None:
    cert = make_ca_cert(new_key(), "ca")
    raw = cert.public_bytes(serialization.Encoding.DER)
    _, c0, c1 = der._element(raw, 0, len(raw))
    tbs, sig_alg, sig = _children(raw[c0:c1])
    _, t0, t1 = der._element(tbs, 0, len(tbs))
    fields = _children(tbs[t0:t1])
    assert fields[0][0] == der.VERSION
    v1 = _tlv(0x30, _tlv(0x30, b"".join(fields[1:7])) + sig_alg + sig)  # no version, no extensions
    spki = fields[6]
    assert der.certificate_spki(v1) == spki
    assert der.certificate_spki(raw) == spki


def test_bad_input_is_one_value_error() -> None:
    cert = make_ca_cert(new_key(), "ca")
    raw = cert.public_bytes(serialization.Encoding.DER)
    pem = cert_pem(cert).decode()
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                                                              "x")]))
           .sign(new_key(), hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    body = pem.split("-----")[2]
    cases = {
        "no PEM certificate": "",
        "no PEM certificate ": csr,  # a CSR is not a certificate
        "does not decode": pem.replace(body, body[:-10] + "!!!!" + body[-6:]),
        "truncated DER": "-----BEGIN CERTIFICATE-----\n" + base64.b64encode(raw[:-20]).decode()
                         + "\n-----END CERTIFICATE-----\n",
        "bytes after": "-----BEGIN CERTIFICATE-----\n" + base64.b64encode(raw + b"\0\0").decode()
                       + "\n-----END CERTIFICATE-----\n",
        "SEQUENCE": "-----BEGIN CERTIFICATE-----\n" + base64.b64encode(_tlv(0x02, b"\1")).decode()
                    + "\n-----END CERTIFICATE-----\n",
        "not an X.509 certificate": "-----BEGIN CERTIFICATE-----\n"
                                    + base64.b64encode(_tlv(0x30, _tlv(0x30, _tlv(0x02, b"\1")))).decode()
                                    + "\n-----END CERTIFICATE-----\n",
        "bad DER length": "-----BEGIN CERTIFICATE-----\n" + base64.b64encode(b"\x30\x85" + b"\0" * 8).decode()
                          + "\n-----END CERTIFICATE-----\n",
    }
    for why, text in cases.items():
        with pytest.raises(ValueError, match=why.strip()):
            der.ca_pin(text)


@pytest.mark.parametrize("years", [1, 30, 100])  # UTCTime to 2049, GeneralizedTime from 2050 (RFC 5280)
def test_the_end_of_validity_is_cryptographys(years: int) -> None:
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "system:node:w1")])
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(dt.datetime(1960, 1, 1, tzinfo=dt.UTC))
            .not_valid_after(now.replace(year=now.year + years)).sign(key, hashes.SHA256()))
    raw = cert.public_bytes(serialization.Encoding.DER)
    assert der.certificate_not_after(raw) == cert.not_valid_after_utc
    assert der.certificate_not_after(der.pem_certificate(cert_pem(cert))) == cert.not_valid_after_utc
    # a time in neither form: notAfter's tag made an OCTET STRING, at its place in the validity
    _, begin, end = der._tbs_fields(raw)[3]
    start, stop = der._sequence(raw, begin, end)
    _, _, after = der._element(raw, start, stop)
    bad = raw[:after] + b"\x04" + raw[after + 1:]
    with pytest.raises(ValueError, match="neither UTCTime nor GeneralizedTime"):
        der.certificate_not_after(bad)
