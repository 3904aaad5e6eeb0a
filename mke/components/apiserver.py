"""kube-apiserver with secure defaults: no anonymous auth, Node+RBAC, TLS 1.2+ with ECDHE
and AES-GCM only, bootstrap tokens, service-account keys from the PKI, Secrets encrypted at
rest (``pki/secrets-encryption.key``), an audit log, Pod Security admission from
mke.yaml's ``podSecurity``, konnectivity as egress when enabled.

Its own files live in ``<data-dir>/kube-apiserver/`` (0700): ``admission.yaml`` and
``audit-policy.yaml`` (rewritten on every start, 0600) and ``audit/audit.log`` (kube-apiserver
rotates it: ``AUDIT_LOG_LIMITS``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mke.components.base import SupervisedComponent, https_ok
from mke.node.files import private_dir, write_file_atomic
from mke.node.tls import K8S_MIN_VERSION, go_cipher_suites

if TYPE_CHECKING:
    from mke.config import ClusterConfig

# CIS Kubernetes 1.2.16-1.2.19: days kept, files kept, MB per file
AUDIT_LOG_LIMITS = {"audit-log-maxage": "30", "audit-log-maxbackup": "10", "audit-log-maxsize": "100"}

# Metadata (who, what, when, answer code; never a body) for every request but the noisy,
# read-only or heartbeat traffic of the cluster's own components. Secrets, ConfigMaps and
# token reviews carry credentials in their bodies: they are named explicitly so that a
# later, more verbose catch-all can never log them.
AUDIT_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "nonResourceURLs": ["/healthz*", "/livez*", "/readyz*", "/version", "/metrics",
                                               "/openapi*", "/api", "/apis", "/api/*", "/apis/*"]},
        {"level": "None", "resources": [{"group": "", "resources": ["events"]},
                                        {"group": "events.k8s.io", "resources": ["events"]}]},
        {"level": "None", "verbs": ["get", "list", "watch"], "userGroups": ["system:nodes"]},
        {"level": "None", "verbs": ["get", "list", "watch"],
         "users": ["system:kube-proxy", "system:kube-scheduler", "system:kube-controller-manager",
                   "system:apiserver", "system:konnectivity-server"]},
        {"level": "None", "verbs": ["get", "update"],
         "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]}]},
        {"level": "Metadata", "resources": [{"group": "", "resources": ["secrets", "configmaps",
                                                                         "serviceaccounts/token"]},
                                            {"group": "authentication.k8s.io", "resources": ["tokenreviews"]}]},
        {"level": "Metadata"},
    ],
}


def admission_configuration(cfg: ClusterConfig) -> dict[str, Any]:
    """The AdmissionConfiguration for ``--admission-control-config-file`` (PodSecurity defaults)."""
    psa = cfg.pod_security
    return {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [{
            "name": "PodSecurity",
            "configuration": {
                "apiVersion": "pod-security.admission.config.k8s.io/v1",
                "kind": "PodSecurityConfiguration",
                "defaults": {"enforce": psa.enforce, "enforce-version": "latest",
                             "audit": psa.audit, "audit-version": "latest",
                             "warn": psa.warn, "warn-version": "latest"},
                "exemptions": {"usernames": [], "runtimeClasses": [], "namespaces": list(psa.exempt_namespaces)},
            },
        }, {
            # CIS 1.2.9: a flood of Events (a crash-looping controller, a hostile client) cannot
            # take the API server down; the limits are the ones RKE2's CIS guide uses, far above
            # what a healthy cluster sends
            "name": "EventRateLimit",
            "configuration": {
                "apiVersion": "eventratelimit.admission.k8s.io/v1alpha1",
                "kind": "Configuration",
                "limits": [{"type": "Server", "qps": EVENT_QPS, "burst": EVENT_BURST}],
            },
        }],
    }


EVENT_QPS, EVENT_BURST = 5000, 20000


class KubeAPIServer(SupervisedComponent):
    name = "kube-apiserver"
    binary = "kube-apiserver"
    ready_timeout = 180.0
    stop_timeout = 15.0
    # Reloaded while it runs (Kubernetes 1.36): the serving pair and both client CA files are
    # watched (k8s.io/apiserver options/serving.go, authentication.go: dynamiccertificates),
    # the front-proxy pair too (kube-aggregator apiserver.go), the kubelet client pair is
    # loaded per connection (pkg/kubelet/client: ReloadTLSFiles), the etcd client pair per
    # handshake (etcd client/pkg transport: GetClientCertificate), the encryption config as
    # --encryption-provider-config-automatic-reload asks. The rest (the CAs it verifies kubelets
    # and etcd with, the service-account keys) at start.
    reloads = frozenset({"tls-cert-file", "tls-private-key-file", "client-ca-file", "requestheader-client-ca-file",
                         "proxy-client-cert-file", "proxy-client-key-file", "kubelet-client-certificate",
                         "kubelet-client-key", "etcd-certfile", "etcd-keyfile", "encryption-provider-config"})

    # Go's garbage collector target (GOGC, upstream 100): a collection when the heap has grown by
    # half of what is live instead of by all of it. Measured by tests/bench/bench_scale.py and
    # bench_server.py (docs/performance.md, "Tuned defaults"): kube-apiserver's heap is most of
    # the control plane's memory and grows with the cluster; 50 keeps its RSS below the same
    # binary run with upstream defaults, for a little more CPU. On a controller with 4 GiB or
    # less (ctx.small_host), 25: memory is the scarce thing there (an empty control plane under
    # 480 MiB), for about a quarter more of kube-apiserver's CPU. mke.yaml's extraEnv changes it.
    GOGC = "50"
    GOGC_SMALL_HOST = "25"

    def __init__(self, ctx, *, etcd_servers: str, etcd_tls: bool = True) -> None:
        super().__init__(ctx)
        self.etcd_servers = etcd_servers
        self.etcd_tls = etcd_tls

    def env(self) -> dict[str, str]:
        return {"GOGC": self.GOGC_SMALL_HOST if self.ctx.small_host else self.GOGC}

    @property
    def egress_config(self):
        return self.ctx.run_dir / "egress-selector.yaml"

    @property
    def konnectivity_socket(self):
        return self.ctx.run_dir / "konnectivity-server.sock"

    @property
    def config_dir(self):
        return self.ctx.data_dir / "kube-apiserver"

    @property
    def admission_config(self):
        return self.config_dir / "admission.yaml"

    @property
    def audit_policy(self):
        return self.config_dir / "audit-policy.yaml"

    @property
    def audit_log(self):
        return self.config_dir / "audit" / "audit.log"

    def init(self) -> None:
        import yaml

        super().init()
        private_dir(self.config_dir)
        private_dir(self.audit_log.parent)
        head = "# Generated by mke (mke/components/apiserver.py); rewritten on every start.\n"
        write_file_atomic(self.admission_config,
                          (head + yaml.safe_dump(admission_configuration(self.ctx.config), sort_keys=False)).encode(),
                          0o600)
        write_file_atomic(self.audit_policy, (head + yaml.safe_dump(AUDIT_POLICY, sort_keys=False)).encode(), 0o600)
        if self.ctx.config.konnectivity.enabled:
            self.ctx.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            text = (
                "apiVersion: apiserver.k8s.io/v1beta1\n"
                "kind: EgressSelectorConfiguration\n"
                "egressSelections:\n"
                "- name: cluster\n"
                "  connection:\n"
                "    proxyProtocol: GRPC\n"
                "    transport:\n"
                "      uds:\n"
                f"        udsName: {self.konnectivity_socket}\n"
            )
            write_file_atomic(self.egress_config, text.encode(), 0o600)

    def args(self) -> list[str]:
        cfg, pki = self.ctx.config, self.ctx.pki
        a = [
            f"--advertise-address={self.ctx.api_address}",
            "--bind-address=0.0.0.0" if ":" not in self.ctx.api_address else "--bind-address=::",
            f"--secure-port={cfg.api.port}",
            f"--etcd-servers={self.etcd_servers}",
        ]
        if self.etcd_tls:
            a += [
                f"--etcd-cafile={pki.crt('etcd/ca')}",
                f"--etcd-certfile={pki.crt('apiserver-etcd-client')}",
                f"--etcd-keyfile={pki.key('apiserver-etcd-client')}",
            ]
        a += [
            "--anonymous-auth=false",
            "--authorization-mode=Node,RBAC",
            "--enable-bootstrap-token-auth=true",
            # DenyServiceExternalIPs: Service.spec.externalIPs lets any user with Service access
            # capture traffic to an address (CVE-2020-8554); CIS 1.2.3
            "--enable-admission-plugins=NodeRestriction,DenyServiceExternalIPs,EventRateLimit",
            "--allow-privileged=true",
            "--profiling=false",
            f"--tls-min-version={K8S_MIN_VERSION}",
            f"--tls-cipher-suites={go_cipher_suites()}",
            f"--encryption-provider-config={pki.secrets_encryption}",
            "--encryption-provider-config-automatic-reload=true",
            f"--admission-control-config-file={self.admission_config}",
            f"--audit-policy-file={self.audit_policy}",
            f"--audit-log-path={self.audit_log}",
            *(f"--{k}={v}" for k, v in AUDIT_LOG_LIMITS.items()),
            f"--client-ca-file={pki.client_ca_file}",  # the client CA (docs/security.md), never the server CA
            f"--tls-cert-file={pki.crt('apiserver')}",
            f"--tls-private-key-file={pki.key('apiserver')}",
            f"--kubelet-certificate-authority={pki.kubelet_ca_file}",  # the kubelet-serving CA only
            f"--kubelet-client-certificate={pki.crt('apiserver-kubelet-client')}",
            f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
            "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
            f"--service-cluster-ip-range={cfg.network.service_cidr}",
            f"--service-account-issuer=https://kubernetes.default.svc.{cfg.network.cluster_domain}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            # projected tokens live as long as asked (kubelet asks 1 h and refreshes them), not
            # a year for clients that never re-read them; CIS 1.2.30
            "--service-account-extend-token-expiration=false",
            f"--api-audiences=https://kubernetes.default.svc.{cfg.network.cluster_domain},system:konnectivity-server",
            f"--requestheader-client-ca-file={pki.crt('front-proxy-ca')}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-username-headers=X-Remote-User",
            f"--proxy-client-cert-file={pki.crt('front-proxy-client')}",
            f"--proxy-client-key-file={pki.key('front-proxy-client')}",
            "--enable-aggregator-routing=true",
        ]
        if self.ctx.config.konnectivity.enabled:
            a.append(f"--egress-selector-config-file={self.egress_config}")
        return a

    def ready(self) -> bool:
        pki = self.ctx.pki
        ok, _ = https_ok(f"https://127.0.0.1:{self.ctx.config.api.port}/readyz", ca=pki.crt("ca"),
                         cert=pki.crt("admin"), key=pki.key("admin"))
        return ok
