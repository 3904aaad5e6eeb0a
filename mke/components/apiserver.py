"""kube-apiserver with secure defaults: no anonymous auth, Node+RBAC, TLS everywhere,
bootstrap tokens, service-account keys from the PKI, konnectivity as egress when enabled."""

from __future__ import annotations

from mke.components.base import SupervisedComponent, https_ok
from mke.node.files import write_file_atomic


class KubeAPIServer(SupervisedComponent):
    name = "kube-apiserver"
    binary = "kube-apiserver"
    ready_timeout = 180.0
    stop_timeout = 15.0

    def __init__(self, ctx, *, etcd_servers: str, etcd_tls: bool = True) -> None:
        super().__init__(ctx)
        self.etcd_servers = etcd_servers
        self.etcd_tls = etcd_tls

    @property
    def egress_config(self):
        return self.ctx.run_dir / "egress-selector.yaml"

    @property
    def konnectivity_socket(self):
        return self.ctx.run_dir / "konnectivity-server.sock"

    def init(self) -> None:
        super().init()
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
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            "--profiling=false",
            "--tls-min-version=VersionTLS12",
            f"--client-ca-file={pki.crt('ca')}",
            f"--tls-cert-file={pki.crt('apiserver')}",
            f"--tls-private-key-file={pki.key('apiserver')}",
            f"--kubelet-certificate-authority={pki.crt('ca')}",
            f"--kubelet-client-certificate={pki.crt('apiserver-kubelet-client')}",
            f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
            "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
            f"--service-cluster-ip-range={cfg.network.service_cidr}",
            f"--service-account-issuer=https://kubernetes.default.svc.{cfg.network.cluster_domain}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
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
