"""Approve kubelet CSRs: the first client certificate of a node that joins with a worker
token, and serving certificates that match their node.

**Client CSRs of joining nodes** (``kubernetes.io/kube-apiserver-client-kubelet`` requested
by ``system:bootstrap:<token id>`` in mke's worker group): a worker token is bound to the
node name of its first use (``TokenStore.bind``), so it gets a certificate for that node
only, and never for a node that is registered already (the controller's own kubelet with
``--enable-worker``, another worker): such a CSR is denied with the reason, which the
joining kubelet sees. The subject must be ``system:node:<name>`` in ``system:nodes`` with
client usages. kube-controller-manager still approves the renewals a node asks for with
its own certificate (``selfnodeclient``); mke no longer grants bootstrap tokens the
``nodeclient`` auto-approval (the binding of older mke is deleted).

**Serving CSRs.** kube-controller-manager never approves ``kubernetes.io/kubelet-serving``
ones. This component does, with the checks
kubeadm documents as the operator's duty: the requester is ``system:node:<name>`` in
``system:nodes``; the CSR's subject is the same; usages are server auth only; every SAN
is one of the Node's own addresses or names. Anything else stays pending.

A Node's status is written by the node itself, so matching it proves little: a holder of
a worker token can claim any address there. So a SAN that names the control plane is
refused whatever the Node says (``ControlPlaneNames``): an address of any controller (the
``kubernetes`` EndpointSlice, and this controller's own addresses and API SANs), the
``kubernetes`` Service IP, ``kubernetes`` and ``kubernetes.*``, ``localhost``, loopback,
the external address and ``api.sans``. The one exception is this controller's own kubelet
(``controlPlane.worker``): the CSR of node ``<this controller's name>`` may name this host's
addresses and name, and nothing else of the list. Kubelet serving certificates are signed
by their own CA, which nothing trusts for a control-plane endpoint (mke.pki); these checks
are a second line.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mke.components.base import LoopComponent
from mke.components.context import ControllerContext
from mke.errors import MkeError

SIGNER = "kubernetes.io/kubelet-serving"
ALLOWED_USAGES = {"digital signature", "key encipherment", "server auth"}
CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
CLIENT_USAGES = {"digital signature", "key encipherment", "client auth"}
BOOTSTRAP_USER = "system:bootstrap:"
# the auto-approval older mke gave worker tokens (mke.manifests.bootstrap_rbac): deleted, this approves now
OLD_AUTOAPPROVE_BINDING = "mke:node-autoapprove-bootstrap"


IP = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, kw_only=True)
class ControlPlaneNames:
    """What no node's serving certificate may name (but ``own_*`` for ``own_node``)."""

    ips: frozenset[IP] = frozenset()
    names: frozenset[str] = frozenset()  # DNS names, lower case
    own_node: str = ""  # this controller's node name when it runs a kubelet, else ""
    own_ips: frozenset[IP] = field(default_factory=frozenset)
    own_names: frozenset[str] = frozenset()

    def refuses_ip(self, ip: IP, node_name: str) -> bool:
        if ip.is_loopback or ip.is_unspecified:
            return True
        if node_name and node_name == self.own_node and ip in self.own_ips:
            return False
        return ip in self.ips

    def refuses_name(self, dns: str, node_name: str) -> bool:
        dns = dns.lower().rstrip(".")
        if dns == "kubernetes" or dns.startswith("kubernetes.") or dns == "localhost" or dns.endswith(".localhost"):
            return True
        if node_name and node_name == self.own_node and dns in self.own_names:
            return False
        return dns in self.names


def control_plane_names(ctx: ControllerContext, controller_ips: Iterable[str] = ()) -> ControlPlaneNames:
    """The control plane's addresses and names from this controller's config and PKI request, plus
    ``controller_ips`` (every apiserver's address, from the ``kubernetes`` EndpointSlice)."""
    from mke.pkifiles import PKIRequest

    cfg = ctx.config
    req = PKIRequest(node_name=ctx.node_name, api_address=ctx.api_address, external_address=cfg.api.external_address,
                     extra_sans=cfg.api.sans, host_addresses=ctx.host_addresses,
                     kubernetes_service_ip=cfg.network.kubernetes_service_ip, cluster_domain=cfg.network.cluster_domain)
    dns, ips = req.api_sans()
    all_ips = {ipaddress.ip_address(i) for i in (*ips, *controller_ips) if _is_ip(i)}
    own_ips = frozenset(ipaddress.ip_address(i) for i in (ctx.api_address, *ctx.host_addresses) if _is_ip(i))
    worker = cfg.control_plane.worker
    return ControlPlaneNames(ips=frozenset(all_ips), names=frozenset(d.lower() for d in dns),
                             own_node=ctx.node_name if worker else "", own_ips=own_ips if worker else frozenset(),
                             own_names=frozenset({ctx.node_name.lower()}) if worker else frozenset())


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


Facts = dict[str, Any] | str  # mke.pki.csr_facts: what a CSR's request says, or why it does not parse


def request_facts(spec: dict[str, Any]) -> Facts:
    """``mke.pki.csr_facts`` of ``spec.request`` in this process (loads cryptography: the
    approver inside ``mke server`` gets its facts from the helper instead, mke.pkifiles)."""
    if not isinstance(spec.get("request"), str):
        return "unparsable request (no request)"
    from mke.pki import csr_facts

    return csr_facts(spec["request"])


def check_serving_csr(csr: dict[str, Any], node: dict[str, Any] | None,
                      control_plane: ControlPlaneNames | None = None, facts: Facts | None = None) -> str | None:
    """None when ``csr`` may be approved, else why not. Without ``control_plane``, only
    loopback, ``localhost`` and ``kubernetes``/``kubernetes.*`` are refused outright.
    ``facts``: ``request_facts`` of its spec, made here when not given."""
    control_plane = control_plane or ControlPlaneNames()
    spec = csr.get("spec", {})
    user = spec.get("username", "")
    if spec.get("signerName") != SIGNER:
        return "not a kubelet-serving CSR"
    if not user.startswith("system:node:") or "system:nodes" not in spec.get("groups", []):
        return f"requested by {user!r}, not a node"
    node_name = user.removeprefix("system:node:")
    if not set(spec.get("usages", [])) <= ALLOWED_USAGES or "server auth" not in spec.get("usages", []):
        return f"usages {spec.get('usages')} are not server auth"
    facts = request_facts(spec) if facts is None else facts
    if isinstance(facts, str):
        return facts
    if facts["cn"] != [user] or facts["orgs"] != ["system:nodes"]:
        return f"subject {facts['subject']} does not match {user}"
    if not facts["san"]:
        return "no subject alternative names"
    if facts["others"]:
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
    for ip in map(ipaddress.ip_address, facts["ips"]):
        if control_plane.refuses_ip(ip, node_name):
            return f"IP {ip} is an address of the control plane"
        if ip not in ips:
            return f"IP {ip} is not an address of node {node_name}"
    for dns in facts["dns"]:
        if control_plane.refuses_name(dns, node_name):
            return f"DNS name {dns} names the control plane"
        if dns not in names:
            return f"DNS name {dns} is not a name of node {node_name}"
    return None


def is_bootstrap_client_csr(csr: dict[str, Any]) -> bool:
    """A kubelet client CSR made with an mke worker token (this approver's to decide)."""
    from mke.manifests.bootstrap_rbac import WORKER_GROUP

    spec = csr.get("spec", {})
    return spec.get("signerName") == CLIENT_SIGNER and spec.get("username", "").startswith(BOOTSTRAP_USER) \
        and WORKER_GROUP in (spec.get("groups") or [])


def bootstrap_client_csr(csr: dict[str, Any], facts: Facts | None = None) -> tuple[str, str, str | None] | None:
    """(token id, node name, why it may not be approved or None) of a kubelet client CSR made with
    an mke worker token; None for any other CSR (not this approver's). ``facts``: as for
    ``check_serving_csr``."""
    if not is_bootstrap_client_csr(csr):
        return None
    spec = csr["spec"]
    token_id = spec["username"].removeprefix(BOOTSTRAP_USER)
    facts = request_facts(spec) if facts is None else facts
    if isinstance(facts, str):
        return token_id, "", facts
    cn, orgs = facts["cn"], facts["orgs"]
    if len(cn) != 1 or not cn[0].startswith("system:node:") or orgs != ["system:nodes"]:
        return token_id, "", f"subject {facts['subject']} is not system:node:<name> in system:nodes"
    node_name = cn[0].removeprefix("system:node:")
    usages = set(spec.get("usages") or [])
    if not usages <= CLIENT_USAGES or "client auth" not in usages:
        return token_id, node_name, f"usages {sorted(usages)} are not client auth"
    return token_id, node_name, None


class KubeletServingCSRApprover(LoopComponent):
    name = "csr-approver"
    interval = 2.0  # a joining node waits for its client certificate
    retry_interval = 5.0
    first_delay = 2.0

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.ctx: ControllerContext = ctx
        self._client: Any = None
        self._reported: set[str] = set()
        self._old_binding_gone = False
        self.approved = 0
        self._facts: dict[str, Facts] = {}  # spec.request -> its facts, for the CSRs still undecided

    def control_plane(self, client: Any) -> ControlPlaneNames:
        """This controller's names and addresses and every apiserver's address (all controllers)."""
        ips: list[str] = []
        eps = client.get("discovery.k8s.io/v1", "EndpointSlice", "kubernetes", "default") or {}
        for ep in eps.get("endpoints") or []:
            ips += [a for a in ep.get("addresses") or [] if isinstance(a, str)]
        return control_plane_names(self.ctx, ips)

    def decide(self, client: Any, csr: dict[str, Any], approve: bool, reason: str, message: str) -> None:
        name = csr["metadata"]["name"]
        csr.setdefault("status", {}).setdefault("conditions", []).append({
            "type": "Approved" if approve else "Denied", "status": "True", "reason": reason, "message": message})
        client.call("PUT", f"/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}/approval", csr)

    def client_csr(self, client: Any, csr: dict[str, Any], token_id: str, node_name: str, why: str | None) -> bool:
        """Approve or deny a joining node's client CSR; True when approved."""
        from mke.tokens import TokenStore

        name = csr["metadata"]["name"]
        if why is None:
            bound = TokenStore(client).bind(token_id, node_name) if client.get("v1", "Node", node_name) is None \
                else TokenStore(client).bound(token_id)
            if bound != node_name:
                why = (f"worker token {token_id} was used for node {bound}: one worker token per node "
                       "(mke token create --role=worker)" if bound else
                       f"node {node_name} is registered already: a worker token cannot take over a node (delete "
                       "the Node first, or start the node from its own data dir)")
        if why is not None:
            self.decide(client, csr, False, "MkeWorkerTokenRefused", why)
            self.ctx.sink.line(self.name, f"denied {name} (token {token_id}, node {node_name or '?'}): {why}",
                               level="warn")
            return False
        self.decide(client, csr, True, "MkeWorkerTokenApprove", f"worker token {token_id} is bound to node {node_name}")
        self.ctx.sink.line(self.name, f"approved {name}: node {node_name}'s client certificate (token {token_id})")
        return True

    def facts(self, csrs: list[dict[str, Any]]) -> dict[str, Facts]:
        """The facts of these CSRs' requests: the new ones from one ``mke _pki csr-facts`` helper
        (cryptography stays out of mke server), the others remembered while they stay undecided."""
        from mke.pkifiles import csr_facts

        requests = {c["spec"]["request"] for c in csrs if isinstance(c.get("spec", {}).get("request"), str)}
        new = sorted(requests - self._facts.keys())
        self._facts = {r: f for r, f in self._facts.items() if r in requests}
        self._facts.update(zip(new, csr_facts(new), strict=True))
        return self._facts

    def approve_pending(self, client: Any) -> int:
        n = 0
        control_plane: ControlPlaneNames | None = None
        mine = [csr for csr in client.list("certificates.k8s.io/v1", "CertificateSigningRequest")
                if not any(c.get("type") in ("Approved", "Denied")
                           for c in csr.get("status", {}).get("conditions", []) or [])
                and (is_bootstrap_client_csr(csr) or csr.get("spec", {}).get("signerName") == SIGNER)]
        facts = self.facts(mine)
        for csr in mine:
            request = csr["spec"].get("request")
            known = facts.get(request, "unparsable request (no request)") if isinstance(request, str) \
                else "unparsable request (no request)"
            joining = bootstrap_client_csr(csr, known)
            if joining is not None:
                n += self.client_csr(client, csr, *joining)
                continue
            if csr.get("spec", {}).get("signerName") != SIGNER:
                continue
            name = csr["metadata"]["name"]
            node_name = csr["spec"].get("username", "").removeprefix("system:node:")
            node = client.get("v1", "Node", node_name) if node_name else None
            control_plane = control_plane or self.control_plane(client)
            why = check_serving_csr(csr, node, control_plane, known)
            if why:
                if name not in self._reported:
                    self.ctx.sink.line(self.name, f"leaving {name} pending: {why}", level="warn")
                    self._reported.add(name)
                continue
            self.decide(client, csr, True, "MkeKubeletServingApprove", "approved by mke: SANs match the node's addresses")
            self.ctx.sink.line(self.name, f"approved {name} for node {node_name}")
            n += 1
        self.approved += n
        return n

    def sync(self) -> None:
        from mke.kubeapi import KubeClient

        try:
            self._client = self._client or KubeClient.from_kubeconfig(self.ctx.pki.internal_kubeconfig)
            if not self._old_binding_gone:
                # older mke let kube-controller-manager approve every worker token's client CSR
                self._client.delete("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", OLD_AUTOAPPROVE_BINDING)
                self._old_binding_gone = True
            self.approve_pending(self._client)
        except MkeError:
            self._client = None  # a new connection next time
            raise

    def ready(self) -> bool:
        return True  # nothing to wait for: CSRs come when kubelets do

    def state(self) -> dict[str, object]:
        return {**super().state(), "approved": self.approved}
