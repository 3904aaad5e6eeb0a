"""Approve kubelet serving-certificate CSRs that match their node.

kube-controller-manager approves kubelet *client* CSRs (through the RBAC mke applies),
but never ``kubernetes.io/kubelet-serving`` ones. This component does, with the checks
kubeadm documents as the operator's duty: the requester is ``system:node:<name>`` in
``system:nodes``; the CSR's subject is the same; usages are server auth only; every SAN
is one of the Node's own addresses or names. Anything else stays pending.
"""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from mke.components.base import LoopComponent
from mke.components.context import ControllerContext
from mke.errors import MkeError

SIGNER = "kubernetes.io/kubelet-serving"
ALLOWED_USAGES = {"digital signature", "key encipherment", "server auth"}


def check_serving_csr(csr: dict[str, Any], node: dict[str, Any] | None) -> str | None:
    """None when ``csr`` may be approved, else why not."""
    spec = csr.get("spec", {})
    user = spec.get("username", "")
    if spec.get("signerName") != SIGNER:
        return "not a kubelet-serving CSR"
    if not user.startswith("system:node:") or "system:nodes" not in spec.get("groups", []):
        return f"requested by {user!r}, not a node"
    node_name = user.removeprefix("system:node:")
    if not set(spec.get("usages", [])) <= ALLOWED_USAGES or "server auth" not in spec.get("usages", []):
        return f"usages {spec.get('usages')} are not server auth"
    try:
        req = x509.load_pem_x509_csr(base64.b64decode(spec["request"]))
    except (KeyError, ValueError) as e:
        return f"unparsable request ({e})"
    cn = [a.value for a in req.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = [a.value for a in req.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    if cn != [user] or orgs != ["system:nodes"]:
        return f"subject {req.subject.rfc4514_string()} does not match {user}"
    try:
        san = req.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "no subject alternative names"
    others = [g for g in san if not isinstance(g, (x509.DNSName, x509.IPAddress))]
    if others:
        return "SANs other than DNS names and IP addresses"
    if node is None:
        return f"node {node_name} is not registered yet"
    addrs = node.get("status", {}).get("addresses", [])
    ips = set()
    for a in addrs:
        try:
            ips.add(ipaddress.ip_address(a["address"]))
        except ValueError:
            pass
    names = {a["address"] for a in addrs if a.get("type") in ("Hostname", "InternalDNS", "ExternalDNS")} | {node_name}
    for ip in san.get_values_for_type(x509.IPAddress):
        if ip not in ips:
            return f"IP {ip} is not an address of node {node_name}"
    for dns in san.get_values_for_type(x509.DNSName):
        if dns not in names:
            return f"DNS name {dns} is not a name of node {node_name}"
    return None


class KubeletServingCSRApprover(LoopComponent):
    name = "csr-approver"
    interval = 5.0
    retry_interval = 5.0
    first_delay = 5.0

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.ctx: ControllerContext = ctx
        self._client: Any = None
        self._reported: set[str] = set()
        self.approved = 0

    def approve_pending(self, client: Any) -> int:
        n = 0
        for csr in client.list("certificates.k8s.io/v1", "CertificateSigningRequest"):
            if csr.get("spec", {}).get("signerName") != SIGNER:
                continue
            if any(c.get("type") in ("Approved", "Denied") for c in csr.get("status", {}).get("conditions", []) or []):
                continue
            name = csr["metadata"]["name"]
            node_name = csr["spec"].get("username", "").removeprefix("system:node:")
            node = client.get("v1", "Node", node_name) if node_name else None
            why = check_serving_csr(csr, node)
            if why:
                if name not in self._reported:
                    self.ctx.sink.line(self.name, f"leaving {name} pending: {why}")
                    self._reported.add(name)
                continue
            csr.setdefault("status", {}).setdefault("conditions", []).append({
                "type": "Approved", "status": "True", "reason": "MkeKubeletServingApprove",
                "message": "approved by mke: SANs match the node's addresses"})
            client.call("PUT", f"/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}/approval", csr)
            self.ctx.sink.line(self.name, f"approved {name} for node {node_name}")
            n += 1
        self.approved += n
        return n

    def sync(self) -> None:
        from mke.kubeapi import KubeClient

        try:
            self._client = self._client or KubeClient.from_kubeconfig(self.ctx.pki.kubeconfig("admin"))
            self.approve_pending(self._client)
        except MkeError:
            self._client = None  # a new connection next time
            raise

    def ready(self) -> bool:
        return True  # nothing to wait for: CSRs come when kubelets do

    def state(self) -> dict[str, object]:
        return {**super().state(), "approved": self.approved}
