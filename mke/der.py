"""The few facts mke's long-running processes read from a certificate, without ``cryptography``.

A CA pin (``sha256:`` of the SubjectPublicKeyInfo, kubeadm's ``--discovery-token-ca-cert-hash``)
is all a running server, a joining controller and a backup need from a certificate, and a
worker needs only its kubelet certificate's end of validity. Loading
``cryptography`` for it keeps about 15 MiB resident in ``mke server`` for its whole life (its
Rust extension and the part of libcrypto it touches; docs/performance.md), so this reads the
DER itself: a certificate is ``SEQUENCE { tbsCertificate SEQUENCE { [0] version, serial,
signature, issuer, validity, subject, subjectPublicKeyInfo, ... }, ... }`` (RFC 5280 4.1).
Only the structure is checked, not the signature: callers compare the pin with one they trust.
Everything that signs, verifies or parses more runs in a short-lived helper (mke.pkifiles).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.*?)\s*-----END CERTIFICATE-----", re.S)
SEQUENCE, VERSION, UTC_TIME, GENERALIZED_TIME = 0x30, 0xA0, 0x17, 0x18


def _element(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER element at ``pos``, inside ``end``."""
    if pos + 2 > end:
        raise ValueError("truncated DER")
    tag, length = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("a multi-byte DER tag where a certificate has none")
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or pos + n > end:
            raise ValueError("a bad DER length")
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    if pos + length > end:
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _sequence(data: bytes, pos: int, end: int) -> tuple[int, int]:
    tag, start, stop = _element(data, pos, end)
    if tag != SEQUENCE:
        raise ValueError(f"expected a SEQUENCE, found tag 0x{tag:02x}")
    return start, stop


def pem_certificate(pem: bytes | str) -> bytes:
    """The DER of the first certificate in ``pem`` (ValueError when there is none)."""
    data = pem.encode() if isinstance(pem, str) else pem
    m = _PEM_CERT.search(data)
    if m is None:
        raise ValueError("no PEM certificate")
    try:
        return base64.b64decode(b"".join(m.group(1).split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError("a PEM certificate that does not decode") from e


def _tbs_fields(der: bytes) -> list[tuple[int, int, int]]:
    """(tag, element start, element end) of the certificate's serial, signature, issuer, validity,
    subject and subjectPublicKeyInfo (RFC 5280 4.1; the optional [0] version skipped)."""
    start, stop = _sequence(der, 0, len(der))
    if stop != len(der):
        raise ValueError("bytes after the certificate")
    pos, tbs_end = _sequence(der, start, stop)
    fields: list[tuple[int, int, int]] = []
    while pos < tbs_end and len(fields) < 7:
        tag, _, end = _element(der, pos, tbs_end)
        fields.append((tag, pos, end))
        pos = end
    if fields and fields[0][0] == VERSION:
        fields = fields[1:]
    if len(fields) < 6 or fields[0][0] != 0x02 or any(tag != SEQUENCE for tag, _, _ in fields[1:6]):
        raise ValueError("not an X.509 certificate")
    return fields[:6]


def certificate_spki(der: bytes) -> bytes:
    """The SubjectPublicKeyInfo element (header included) of the certificate ``der``."""
    _, begin, end = _tbs_fields(der)[5]
    return der[begin:end]


def certificate_not_after(der: bytes) -> dt.datetime:
    """The end of the certificate's validity (UTC): UTCTime ``YYMMDDHHMMSSZ`` (years 1950-2049)
    or GeneralizedTime ``YYYYMMDDHHMMSSZ``, the two forms RFC 5280 4.1.2.5 allows."""
    _, begin, end = _tbs_fields(der)[3]
    pos, stop = _sequence(der, begin, end)
    _, _, after = _element(der, pos, stop)  # notBefore
    tag, body, body_end = _element(der, after, stop)
    text = der[body:body_end].decode("ascii", errors="replace")
    forms = {UTC_TIME: (13, "%y%m%d%H%M%SZ"), GENERALIZED_TIME: (15, "%Y%m%d%H%M%SZ")}
    if tag not in forms or len(text) != forms[tag][0]:
        raise ValueError("a validity time that is neither UTCTime nor GeneralizedTime in Z form")
    try:
        when = dt.datetime.strptime(text, forms[tag][1]).replace(tzinfo=dt.UTC)
    except ValueError as e:
        raise ValueError(f"a validity time that does not read ({text!r})") from e
    if tag == UTC_TIME and when.year >= 2050:  # strptime's %y: 00-68 -> 20xx; RFC 5280: 50-99 -> 19xx
        when = when.replace(year=when.year - 100)
    return when


def ca_pin(pem: bytes | str) -> str:
    """``sha256:<hex>`` of the first certificate's SubjectPublicKeyInfo (the CA pin of join
    tokens and backups); ValueError when ``pem`` holds no well-formed certificate."""
    return "sha256:" + hashlib.sha256(certificate_spki(pem_certificate(pem))).hexdigest()
