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


# ---------------------------------------------------------------- a node claiming the control plane's names
# (issue 14.3). A worker token lets anyone register a node and write its Node status, so a
# node can "have" the controller's address there; approve_pending must still refuse.

CONTROLLER_IP = "192.0.2.10"  # this controller (api.address)
OTHER_CONTROLLER_IP = "192.0.2.11"  # another controller, known from the kubernetes EndpointSlice


def controller_ctx(worker: bool = False):
    import io
    from pathlib import Path

    from mke.components.context import ControllerContext
    from mke.config import parse_config
    from mke.logsink import LogSink
    from mke.node.binaries import BinaryResolver

    cfg = parse_config({"api": {"address": CONTROLLER_IP, "externalAddress": "lb.example.com",
                                "sans": ["api.example.com"]}, "controlPlane": {"worker": worker}})
    return ControllerContext(config=cfg, data_dir=Path("/nonexistent"), node_name="ctl-1", api_address=CONTROLLER_IP,
                             host_addresses=(CONTROLLER_IP,), binaries=BinaryResolver(Path("/nonexistent")),
                             sink=LogSink(io.StringIO()))


class FakeClient:
    """Just what approve_pending calls: list CSRs, get a Node or the kubernetes EndpointSlice, PUT approvals."""

    def __init__(self, csrs: list[dict], nodes: dict[str, dict]) -> None:
        self.csrs, self.nodes, self.approved = csrs, nodes, []

    def list(self, api_version: str, kind: str) -> list[dict]:
        assert kind == "CertificateSigningRequest"
        return self.csrs

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        if kind == "Node":
            return self.nodes.get(name)
        if kind == "EndpointSlice" and (name, namespace) == ("kubernetes", "default"):
            return {"endpoints": [{"addresses": [CONTROLLER_IP]}, {"addresses": [OTHER_CONTROLLER_IP]}]}
        return None

    def call(self, method: str, path: str, obj: dict) -> dict:
        self.approved.append(path.split("/")[-2])
        return obj


def node_claiming(name: str, *addresses: tuple[str, str]) -> dict:
    return {"metadata": {"name": name}, "status": {"addresses": [{"type": t, "address": a} for t, a in addresses]}}


def named(doc: dict, name: str) -> dict:
    doc["metadata"]["name"] = name
    return doc


def test_a_worker_token_holders_csr_for_a_control_plane_address_or_name_is_not_approved() -> None:
    # the Node's status (written by the node itself) claims all of them
    evil = node_claiming("w1", ("InternalIP", "192.0.2.21"), ("InternalIP", CONTROLLER_IP),
                         ("InternalIP", OTHER_CONTROLLER_IP), ("InternalIP", "10.96.0.1"),
                         ("InternalIP", "198.51.100.7"), ("Hostname", "w1"),
                         ("InternalDNS", "kubernetes.default.svc"), ("InternalDNS", "kubernetes"),
                         ("ExternalDNS", "lb.example.com"), ("ExternalDNS", "api.example.com"),
                         ("InternalDNS", "localhost"))
    csrs = [named(csr(ips=("192.0.2.21", CONTROLLER_IP)), "this-controller"),
            named(csr(ips=(OTHER_CONTROLLER_IP,)), "other-controller"),
            named(csr(ips=("10.96.0.1",)), "service-ip"),
            named(csr(ips=("127.0.0.1",)), "loopback"),
            named(csr(dns=("w1", "kubernetes.default.svc")), "kubernetes-default-svc"),
            named(csr(dns=("kubernetes",)), "kubernetes"),
            named(csr(dns=("lb.example.com",)), "external-address"),
            named(csr(dns=("api.example.com",)), "api-sans"),
            named(csr(dns=("localhost",)), "localhost"),
            named(csr(), "honest")]
    client = FakeClient(csrs, {"w1": evil})
    from mke.components.csr_approver import KubeletServingCSRApprover

    approver = KubeletServingCSRApprover(controller_ctx())
    approver.approve_pending(client)
    assert client.approved == ["honest"]
    cp = approver.control_plane(client)
    assert f"IP {CONTROLLER_IP} is an address of the control plane" == check_serving_csr(csrs[0], evil, cp)
    assert "DNS name kubernetes.default.svc names the control plane" == check_serving_csr(csrs[4], evil, cp)


def test_kubernetes_names_and_loopback_are_refused_even_without_the_control_planes_addresses() -> None:
    evil = node_claiming("w1", ("InternalIP", "127.0.0.1"), ("Hostname", "w1"),
                         ("InternalDNS", "kubernetes.default.svc.cluster.local"))
    assert "names the control plane" in check_serving_csr(csr(ips=(), dns=("kubernetes.default.svc.cluster.local",)),
                                                          evil)
    assert "is an address of the control plane" in check_serving_csr(csr(ips=("127.0.0.1",), dns=()), evil)
    # a node merely named like kubernetes-... is fine
    ok = node_claiming("kubernetes-w1", ("InternalIP", "192.0.2.21"), ("Hostname", "kubernetes-w1"))
    assert check_serving_csr(csr(cn="system:node:kubernetes-w1", user="system:node:kubernetes-w1",
                                 dns=("kubernetes-w1",)), ok) is None


def test_the_controllers_own_kubelet_may_name_its_host_but_no_other_controller_or_service() -> None:
    from mke.components.csr_approver import KubeletServingCSRApprover

    own = node_claiming("ctl-1", ("InternalIP", CONTROLLER_IP), ("InternalIP", OTHER_CONTROLLER_IP),
                        ("Hostname", "ctl-1"), ("InternalDNS", "kubernetes"))
    mine = dict(cn="system:node:ctl-1", user="system:node:ctl-1")
    csrs = [named(csr(ips=(CONTROLLER_IP,), dns=("ctl-1",), **mine), "own-host"),
            named(csr(ips=(OTHER_CONTROLLER_IP,), dns=("ctl-1",), **mine), "other-controller"),
            named(csr(ips=(CONTROLLER_IP,), dns=("kubernetes",), **mine), "kubernetes")]
    with_worker = FakeClient(csrs, {"ctl-1": own})
    KubeletServingCSRApprover(controller_ctx(worker=True)).approve_pending(with_worker)
    assert with_worker.approved == ["own-host"]
    # without controlPlane.worker there is no kubelet of this controller: a node of that name is someone else
    without = FakeClient([named(csr(ips=(CONTROLLER_IP,), dns=("ctl-1",), **mine), "own-host")], {"ctl-1": own})
    KubeletServingCSRApprover(controller_ctx(worker=False)).approve_pending(without)
    assert without.approved == []
