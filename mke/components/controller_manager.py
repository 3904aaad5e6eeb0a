"""kube-controller-manager: signs kubelet client certificates (and other approved
kube-apiserver-client CSRs) with the client CA and kubelet serving certificates with the
kubelet-serving CA; never with the server CA, and no signer for ``legacy-unknown`` (the
specific signer flags replace ``--cluster-signing-cert-file``). Cleans and signs bootstrap
tokens, allocates node pod CIDRs."""

from __future__ import annotations

from mke.components.base import SupervisedComponent, https_ok
from mke.node.files import private_dir
from mke.node.tls import K8S_MIN_VERSION, go_cipher_suites
from mke.pkifiles import CLIENT_CA, KUBELET_SERVING_CA, SERVER_CA

SECURE_PORT = 10257


class KubeControllerManager(SupervisedComponent):
    name = "kube-controller-manager"
    binary = "kube-controller-manager"
    ready_timeout = 120.0

    @property
    def volume_plugin_dir(self):
        return self.ctx.data_dir / "kube-controller-manager" / "volume-plugins"

    def init(self) -> None:
        super().init()
        # made by mke 0700 (kube-controller-manager would make them 0755)
        private_dir(self.volume_plugin_dir.parent)
        private_dir(self.volume_plugin_dir)

    def args(self) -> list[str]:
        cfg, pki = self.ctx.config, self.ctx.pki
        kubeconfig = pki.kubeconfig("controller-manager")
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={SECURE_PORT}",
            f"--client-ca-file={pki.client_ca_file}",
            f"--requestheader-client-ca-file={pki.crt('front-proxy-ca')}",
            f"--cluster-signing-kubelet-client-cert-file={pki.crt(CLIENT_CA)}",
            f"--cluster-signing-kubelet-client-key-file={pki.key(CLIENT_CA)}",
            f"--cluster-signing-kube-apiserver-client-cert-file={pki.crt(CLIENT_CA)}",
            f"--cluster-signing-kube-apiserver-client-key-file={pki.key(CLIENT_CA)}",
            f"--cluster-signing-kubelet-serving-cert-file={pki.crt(KUBELET_SERVING_CA)}",
            f"--cluster-signing-kubelet-serving-key-file={pki.key(KUBELET_SERVING_CA)}",
            f"--root-ca-file={pki.crt(SERVER_CA)}",  # pods' ca.crt: they verify the apiserver
            # finished pods are deleted beyond 1000 (upstream 12500): a small control plane's
            # datastore does not fill with them; CIS 1.3.1
            "--terminated-pod-gc-threshold=1000",
            f"--service-account-private-key-file={pki.sa_key}",
            "--use-service-account-credentials=true",
            "--controllers=*,bootstrapsigner,tokencleaner",
            "--allocate-node-cidrs=true",
            f"--cluster-cidr={cfg.network.pod_cidr}",
            f"--service-cluster-ip-range={cfg.network.service_cidr}",
            "--leader-elect=true",
            "--profiling=false",
            f"--tls-min-version={K8S_MIN_VERSION}",
            f"--tls-cipher-suites={go_cipher_suites()}",
            # its default, /usr/libexec/kubernetes/..., would be created on the host outside the data dir
            f"--flex-volume-plugin-dir={self.volume_plugin_dir}",
        ]

    def ready(self) -> bool:
        ok, _ = https_ok(f"https://127.0.0.1:{SECURE_PORT}/healthz", verify=False)
        return ok
