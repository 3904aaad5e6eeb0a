"""A worker token mints a client certificate for one node only (issue 14, "worker tokens bound
to a node name on first use"): mke/components/csr_approver.py's client-CSR path and
``TokenStore.bind``.

The token secrets, Nodes and ClusterRoleBindings live in the loopback kube-apiserver stand-in
(tests/support/apiservers.py: real HTTPS, resourceVersion preconditions, so the binding's
atomicity is tested for real); the CSRs are held by the test because the stand-in has no
certificates API (the real kube-controller-manager and kubelet path is the e2e cluster's).
"""

from __future__ import annotations

import base64
import datetime as dt
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mke.components.csr_approver import OLD_AUTOAPPROVE_BINDING, KubeletServingCSRApprover
from mke.kubeapi import KubeClient
from mke.manifests.bootstrap_rbac import WORKER_GROUP
from mke.tokens import NODE_ANNOTATION, TokenStore


def client_csr(name: str, token_id: str, node: str, *, org: str = "system:nodes",
               usages: tuple[str, ...] = ("digital signature", "client auth")) -> dict:
    key = ec.generate_private_key(ec.SECP256R1())
    req = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                                    x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node}")]))
           .sign(key, hashes.SHA256()))
    return {"metadata": {"name": name}, "spec": {
        "signerName": "kubernetes.io/kube-apiserver-client-kubelet", "username": f"system:bootstrap:{token_id}",
        "groups": [WORKER_GROUP, "system:bootstrappers", "system:authenticated"], "usages": list(usages),
        "request": base64.b64encode(req.public_bytes(serialization.Encoding.PEM)).decode()}}


class WithCSRs:
    """The real client for everything but CSRs, which the test holds (and their decisions)."""

    def __init__(self, kube: KubeClient, csrs: list[dict]) -> None:
        self.kube, self.csrs, self.decisions = kube, csrs, {}

    def list(self, api_version: str, kind: str, *a, **kw):
        return self.csrs if kind == "CertificateSigningRequest" else self.kube.list(api_version, kind, *a, **kw)

    def call(self, method: str, path: str, obj: dict) -> dict:
        assert method == "PUT" and path.endswith("/approval")
        self.decisions[obj["metadata"]["name"]] = obj["status"]["conditions"][-1]
        return obj

    def __getattr__(self, name: str):
        return getattr(self.kube, name)


@pytest.fixture()
def cluster(first_controller):
    fc = first_controller()
    kube = KubeClient.from_kubeconfig(fc.pki.kubeconfig("admin"))
    yield fc, kube
    kube.close()


def worker_token(fc) -> str:
    return fc.join_token("worker", ttl=dt.timedelta(hours=1)).token_id


def decide(fc, kube, *csrs: dict) -> dict[str, dict]:
    client = WithCSRs(kube, list(csrs))
    KubeletServingCSRApprover(fc.ctx).approve_pending(client)
    return client.decisions


def test_the_first_use_binds_the_token_and_a_second_node_is_denied(cluster):
    fc, kube = cluster
    tok = worker_token(fc)
    got = decide(fc, kube, client_csr("csr-w1", tok, "w1"))
    assert got["csr-w1"]["type"] == "Approved"
    secret = kube.get("v1", "Secret", f"bootstrap-token-{tok}", "kube-system")
    assert secret["metadata"]["annotations"][NODE_ANNOTATION] == "w1"
    assert [t.node for t in TokenStore(kube).list() if t.token_id == tok] == ["w1"]
    got = decide(fc, kube, client_csr("csr-w2", tok, "w2"))
    assert got["csr-w2"]["type"] == "Denied"
    assert f"worker token {tok} was used for node w1: one worker token per node" in got["csr-w2"]["message"]
    assert any("denied csr-w2" in line for line in fc.log_lines())


def test_a_registered_node_cannot_be_taken_over_with_a_new_token(cluster):
    fc, kube = cluster
    fc.kube.put({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "ctl-1"}})  # the controller's own kubelet
    tok = worker_token(fc)
    got = decide(fc, kube, client_csr("csr-take-over", tok, "ctl-1"))
    assert got["csr-take-over"]["type"] == "Denied"
    assert "node ctl-1 is registered already" in got["csr-take-over"]["message"]
    assert TokenStore(kube).bound(tok) == ""  # not spent on a refused node: a new node may still use it
    assert decide(fc, kube, client_csr("csr-w3", tok, "w3"))["csr-w3"]["type"] == "Approved"


def test_the_node_a_token_is_bound_to_may_bootstrap_again(cluster):
    fc, kube = cluster
    tok = worker_token(fc)
    assert decide(fc, kube, client_csr("first", tok, "w1"))["first"]["type"] == "Approved"
    fc.kube.put({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "w1"}})  # it registered
    assert decide(fc, kube, client_csr("again", tok, "w1"))["again"]["type"] == "Approved"


@pytest.mark.parametrize("kw,why", [
    ({"org": "system:masters"}, "is not system:node:<name> in system:nodes"),
    ({"usages": ("digital signature", "server auth")}, "are not client auth"),
])
def test_a_bad_subject_or_usage_is_denied_and_binds_nothing(cluster, kw, why):
    fc, kube = cluster
    tok = worker_token(fc)
    got = decide(fc, kube, client_csr("bad", tok, "w1", **kw))
    assert got["bad"]["type"] == "Denied" and why in got["bad"]["message"]
    assert TokenStore(kube).bound(tok) == ""


def test_csrs_that_are_not_a_joining_nodes_are_left_alone(cluster):
    fc, kube = cluster
    renewal = client_csr("renewal", "ignored", "w1")
    renewal["spec"]["username"] = "system:node:w1"  # kube-controller-manager's (selfnodeclient)
    other_group = client_csr("other-group", worker_token(fc), "w1")
    other_group["spec"]["groups"] = ["system:bootstrappers", "system:authenticated"]
    assert decide(fc, kube, renewal, other_group) == {}


def test_two_first_uses_racing_bind_the_token_to_one_node(cluster):
    fc, kube = cluster
    tok = worker_token(fc)
    results: list[str] = []

    def bind(node: str) -> None:
        c = KubeClient.from_kubeconfig(fc.pki.kubeconfig("admin"))
        try:
            results.append(TokenStore(c).bind(tok, node))
        finally:
            c.close()

    racers = [threading.Thread(target=bind, args=(n,)) for n in ("a", "b", "c", "d")]
    for t in racers:
        t.start()
    for t in racers:
        t.join(timeout=30)
    assert len(results) == 4 and len(set(results)) == 1 and results[0] in "abcd"
    assert TokenStore(kube).bound(tok) == results[0]


def test_the_old_auto_approval_for_worker_tokens_is_deleted(cluster):
    fc, kube = cluster
    fc.kube.resources["rbac.authorization.k8s.io/v1"] = [("ClusterRoleBinding", "clusterrolebindings", False)]
    fc.kube.put({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                 "metadata": {"name": OLD_AUTOAPPROVE_BINDING}})
    approver = KubeletServingCSRApprover(fc.ctx)
    approver._client = WithCSRs(kube, [])
    approver.sync()
    assert kube.get("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", OLD_AUTOAPPROVE_BINDING) is None


def test_the_worker_stops_with_the_clusters_reason_when_its_certificate_is_denied():
    """The kubelet component's failure(): the denial kubelet logs (client-go's words) ends the
    wait at once with the reason, instead of a kubelet that keeps restarting, as a TokenError
    (exit 6) like the API-side check (the e2e saw exit 7 when kubelet's log won the race)."""
    import collections

    from mke.errors import TokenError
    from mke.worker.kubelet import Kubelet

    class Sup:
        restarts = 0
        tail = collections.deque([
            "I1128 05:00:00.000 1 bootstrap.go:120] \"Waiting for client certificate\"",
            "E1128 05:00:01.000 1 bootstrap.go:266] \"Unhandled Error\" err=\"certificate signing request is denied, "
            "reason: MkeWorkerTokenRefused, message: worker token abcdef was used for node w1: one worker token per "
            "node (mke token create --role=worker)\" logger=\"UnhandledError\"",
            "I1128 05:00:01.100 1 server.go:300] \"shutting down\""])

    k = Kubelet.__new__(Kubelet)
    k.supervisor = Sup()  # type: ignore[assignment]
    with pytest.raises(TokenError) as e:
        k.failure()
    assert str(e.value) == ("the cluster denied this node's client certificate: worker token abcdef was used for "
                            "node w1: one worker token per node (mke token create --role=worker)")
    assert e.value.exit_code == 6
    Sup.tail = collections.deque(["I1128 all is well"])
    assert k.failure() is None


def test_a_joining_worker_learns_its_certificate_was_denied(cluster, tmp_path):
    """mke/worker/join.py ``denied_client_csr``, asked with the bootstrap token as mke worker asks
    it while it waits for kubelet's TLS bootstrap: the Denied CSR this token made for this node."""
    import yaml

    from mke.worker.join import denied_client_csr

    fc, kube = cluster
    tok = worker_token(fc)
    secret = kube.get("v1", "Secret", f"bootstrap-token-{tok}", "kube-system")
    bearer = f"{tok}.{base64.b64decode(secret['data']['token-secret']).decode()}"
    fc.kube.tokens.add(bearer)
    fc.kube.resources["certificates.k8s.io/v1"] = [("CertificateSigningRequest", "certificatesigningrequests", False)]
    mine = client_csr("mine", tok, "bad")
    mine["status"] = {"conditions": [{"type": "Denied", "reason": "MkeWorkerTokenRefused",
                                      "message": "worker token was used for node w1: one worker token per node"}]}
    other_node = client_csr("other", tok, "w9")
    other_node["status"] = {"conditions": [{"type": "Denied", "message": "not this node's"}]}
    for csr in (other_node, mine):
        fc.kube.put({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", **csr})
    kc = tmp_path / "bootstrap-kubelet.conf"
    kc.write_text(yaml.safe_dump({
        "clusters": [{"name": "mke", "cluster": {"server": fc.kube.url, "certificate-authority": str(fc.pki.crt("ca"))}}],
        "users": [{"name": "kubelet-bootstrap", "user": {"token": bearer}}],
        "contexts": [{"name": "mke", "context": {"cluster": "mke", "user": "kubelet-bootstrap"}}],
        "current-context": "mke"}))  # as mke/worker/join.py bootstrap_kubeconfig writes it
    assert denied_client_csr(kc, "bad") == "worker token was used for node w1: one worker token per node"
    assert denied_client_csr(kc, "w2") is None  # nothing denied for this node
    kc.write_text("not: [a kubeconfig")
    assert denied_client_csr(kc, "bad") is None
