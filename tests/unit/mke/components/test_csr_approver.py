"""mke/components/csr_approver.py: which kubelet-serving CSRs are approved (real CSRs)."""

from __future__ import annotations

import base64
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mke.components.csr_approver import check_serving_csr

NODE = {"metadata": {"name": "w1"}, "status": {"addresses": [
    {"type": "InternalIP", "address": "192.0.2.21"}, {"type": "Hostname", "address": "w1"}]}}


def csr(cn: str = "system:node:w1", org: str = "system:nodes", ips: tuple[str, ...] = ("192.0.2.21",),
        dns: tuple[str, ...] = ("w1",), user: str = "system:node:w1", usages: tuple[str, ...] | None = None) -> dict:
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    req = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                                    x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .add_extension(x509.SubjectAlternativeName(sans), critical=False)
           .sign(key, hashes.SHA256()))
    pem = req.public_bytes(serialization.Encoding.PEM)
    return {"metadata": {"name": "csr-x"}, "spec": {
        "signerName": "kubernetes.io/kubelet-serving", "username": user, "groups": ["system:nodes",
                                                                                   "system:authenticated"],
        "usages": list(usages or ("digital signature", "server auth")),
        "request": base64.b64encode(pem).decode()}}


def test_matching_csr_is_approved() -> None:
    assert check_serving_csr(csr(), NODE) is None


def test_rejections() -> None:
    assert "not a node" in check_serving_csr(csr(user="alice"), NODE)
    assert "does not match" in check_serving_csr(csr(cn="system:node:w2"), NODE)
    assert "does not match" in check_serving_csr(csr(org="system:masters"), NODE)
    assert "192.0.2.99 is not an address" in check_serving_csr(csr(ips=("192.0.2.99",)), NODE)
    assert "evil.example.com is not a name" in check_serving_csr(csr(dns=("evil.example.com",)), NODE)
    assert "not server auth" in check_serving_csr(csr(usages=("client auth",)), NODE)
    assert "not registered" in check_serving_csr(csr(), None)
