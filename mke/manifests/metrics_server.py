"""metrics-server: serves metrics.k8s.io from kubelet summaries.

It verifies kubelets with the kubelet-serving CA (``pki.kubelet_ca_file``, published as the
ConfigMap ``mke-kubelet-serving-ca``), not with its service account's ``ca.crt``, which is
the server CA and does not sign kubelet serving certificates (mke.pki)."""

from __future__ import annotations

from typing import Any

from mke.components.context import ControllerContext
from mke.manifests.k8s import (
    CRITICAL_TOLERATIONS,
    NS,
    cluster_role,
    cluster_role_binding,
    config_map,
    meta,
    role_binding,
    rule,
    service,
    service_account,
    subject,
)
from mke.node.tls import K8S_MIN_VERSION, go_cipher_suites

LABELS = {"k8s-app": "metrics-server"}
KUBELET_CA_CONFIGMAP = "mke-kubelet-serving-ca"
KUBELET_CA_DIR = "/etc/mke/kubelet-serving-ca"


def kubelet_ca_pem(ctx: ControllerContext) -> str:
    """The CAs trusted for kubelet serving certificates ("" before the PKI exists)."""
    try:
        return ctx.pki.kubelet_ca_file.read_text()
    except OSError:
        return ""


def objects(ctx: ControllerContext) -> list[dict[str, Any]]:
    import hashlib

    sa = [subject("ServiceAccount", "metrics-server")]
    kubelet_ca = kubelet_ca_pem(ctx)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta("metrics-server", NS, **LABELS),
        "spec": {
            "selector": {"matchLabels": LABELS},
            "strategy": {"rollingUpdate": {"maxUnavailable": 0}},
            "template": {
                # a new CA bundle (mke.pki's legacy CA removed) restarts it
                "metadata": {"labels": LABELS, "annotations": {
                    "mke.io/kubelet-serving-ca-sha256": hashlib.sha256(kubelet_ca.encode()).hexdigest()}},
                "spec": {
                    "priorityClassName": "system-cluster-critical",
                    "serviceAccountName": "metrics-server",
                    "tolerations": CRITICAL_TOLERATIONS,
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [{
                        "name": "metrics-server",
                        "image": ctx.config.images.ref("metrics_server"),
                        "imagePullPolicy": "IfNotPresent",
                        "args": ["--cert-dir=/tmp", "--secure-port=10250",
                                 "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
                                 "--kubelet-use-node-status-port", "--metric-resolution=15s",
                                 f"--kubelet-certificate-authority={KUBELET_CA_DIR}/ca.crt",
                                 f"--tls-min-version={K8S_MIN_VERSION}", f"--tls-cipher-suites={go_cipher_suites()}"],
                        "ports": [{"containerPort": 10250, "name": "https", "protocol": "TCP"}],
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "https", "scheme": "HTTPS"},
                                           "initialDelaySeconds": 20, "periodSeconds": 10},
                        "livenessProbe": {"httpGet": {"path": "/livez", "port": "https", "scheme": "HTTPS"},
                                          "periodSeconds": 10},
                        "resources": {"requests": {"cpu": "100m", "memory": "200Mi"}},
                        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "runAsNonRoot": True, "runAsUser": 1000,
                                            "capabilities": {"drop": ["ALL"]},
                                            "seccompProfile": {"type": "RuntimeDefault"}},
                        "volumeMounts": [{"name": "tmp-dir", "mountPath": "/tmp"},
                                         {"name": "kubelet-ca", "mountPath": KUBELET_CA_DIR, "readOnly": True}],
                    }],
                    "volumes": [{"name": "tmp-dir", "emptyDir": {}},
                                {"name": "kubelet-ca", "configMap": {"name": KUBELET_CA_CONFIGMAP}}],
                },
            },
        },
    }
    return [
        config_map(KUBELET_CA_CONFIGMAP, {"ca.crt": kubelet_ca}),
        service_account("metrics-server"),
        cluster_role("system:aggregated-metrics-reader", [rule(["metrics.k8s.io"], ["pods", "nodes"],
                                                               ["get", "list", "watch"])],
                     **{"rbac.authorization.k8s.io/aggregate-to-admin": "true",
                        "rbac.authorization.k8s.io/aggregate-to-edit": "true",
                        "rbac.authorization.k8s.io/aggregate-to-view": "true"}),
        cluster_role("system:metrics-server", [
            rule([""], ["nodes/metrics"], ["get"]),
            rule([""], ["pods", "nodes"], ["get", "list", "watch"]),
        ]),
        role_binding("metrics-server-auth-reader", NS, "Role", "extension-apiserver-authentication-reader", sa),
        cluster_role_binding("metrics-server:system:auth-delegator", "system:auth-delegator", sa),
        cluster_role_binding("system:metrics-server", "system:metrics-server", sa),
        service("metrics-server", LABELS, [{"name": "https", "port": 443, "protocol": "TCP",
                                            "targetPort": "https"}], **LABELS),
        deployment,
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": meta("v1beta1.metrics.k8s.io", None, **LABELS),
            "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100,
                     "versionPriority": 100, "insecureSkipTLSVerify": True,
                     "service": {"name": "metrics-server", "namespace": NS}},
        },
    ]
