"""RBAC the cluster needs from mke: worker bootstrap tokens may create CSRs (mke's
csr-approver approves a joining node's client CSR, binding the token to that node: no
auto-approval for tokens); nodes may renew their client certs; the apiserver's kubelet
client may use the kubelet API; konnectivity-server may review agent tokens."""

from __future__ import annotations

from typing import Any

from mke.components.context import ControllerContext
from mke.manifests.k8s import cluster_role_binding, subject
from mke.tokens import GROUP_PREFIX

WORKER_GROUP = f"{GROUP_PREFIX}worker"


def objects(ctx: ControllerContext) -> list[dict[str, Any]]:
    return [
        cluster_role_binding("mke:kubelet-bootstrap", "system:node-bootstrapper",
                             [subject("Group", WORKER_GROUP)]),
        cluster_role_binding("mke:node-autoapprove-certificate-rotation",
                             "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
                             [subject("Group", "system:nodes")]),
        cluster_role_binding("mke:apiserver-kubelet-client", "system:kubelet-api-admin",
                             [subject("User", "mke:apiserver-kubelet-client")]),
        cluster_role_binding("mke:konnectivity-server", "system:auth-delegator",
                             [subject("User", "system:konnectivity-server")]),
    ]
