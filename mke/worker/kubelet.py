"""kubelet for the worker: a KubeletConfiguration file, TLS bootstrap, and node readiness.

The first start has a bootstrap kubeconfig holding the join token: kubelet sends a CSR,
the controller-manager approves and signs it (RBAC from the controller's manifests),
kubelet writes ``worker/kubelet.conf`` pointing at its rotating client certificate in
``worker/pki``. Later starts use that kubeconfig and ignore any token. Serving
certificates are requested too (``serverTLSBootstrap``); the controller approves them,
so the apiserver can verify kubelet when it proxies logs, exec and metrics.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path
from typing import Any

from mke.components.base import Component, SupervisedComponent, https_ok
from mke.errors import KubeAPIError
from mke.node.files import write_file_atomic
from mke.node.hostinfo import DNS_SUBDOMAIN
from mke.node.tls import GO_CIPHER_SUITES, K8S_MIN_VERSION
from mke.worker.context import WorkerContext

HEALTHZ_PORT = 10248
# As k3s: evict only when a file system is nearly full (kubelet's defaults, 10% of the node's
# disk, evict pods from roomy shared disks); --kubelet-arg=eviction-hard=... overrides.
EVICTION_HARD = {"memory.available": "100Mi", "nodefs.available": "5%", "nodefs.inodesFree": "5%",
                 "imagefs.available": "5%"}


POD_PIDS_LIMIT = 4096


def kubelet_default_name() -> str:
    """The node name kubelet takes without --hostname-override: the host name, trimmed and
    lowercased (k8s.io/component-helpers node/util GetHostname). mke's default (--name) is
    its first label, so a host named with dots still needs the flag."""
    import socket

    return socket.gethostname().strip().lower()


def kubelet_configuration(ctx: WorkerContext, *, swap: bool = False, resolv_conf: str = "/etc/resolv.conf") -> dict[str, Any]:
    p, s, o = ctx.paths, ctx.settings, ctx.options
    cfg: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": "0.0.0.0",
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": HEALTHZ_PORT,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True, "cacheTTL": "2m0s"},
            "x509": {"clientCAFile": str(p.ca)},
        },
        "authorization": {"mode": "Webhook", "webhook": {"cacheAuthorizedTTL": "5m0s", "cacheUnauthorizedTTL": "30s"}},
        "cgroupDriver": ctx.cgroups.driver,
        "containerRuntimeEndpoint": f"unix://{p.containerd_socket}",
        "clusterDNS": [s.cluster_dns],
        "clusterDomain": s.cluster_domain,
        "resolvConf": resolv_conf,
        "rotateCertificates": True,
        "serverTLSBootstrap": True,
        "tlsMinVersion": K8S_MIN_VERSION,
        "tlsCipherSuites": list(GO_CIPHER_SUITES),
        "podLogsDir": o.pod_logs_dir,
        "volumePluginDir": str(p.kubelet_root / "volume-plugins"),
        "staticPodPath": "",
        "protectKernelDefaults": ctx.protect_kernel_defaults,  # CIS 4.2.6: mke set the values first
        # CIS 4.2.15: a container without a seccomp profile gets the runtime's default one
        # (containerd's; privileged containers stay unconfined), not none
        "seccompDefault": True,
        # CIS 4.2.14: one pod cannot exhaust the node's pids (fork bombs); a pod's own
        # securityContext cannot raise it. Override: --kubelet-arg=pod-max-pids=N
        "podPidsLimit": POD_PIDS_LIMIT,
        "failSwapOn": not swap,
        "evictionHard": dict(EVICTION_HARD),
        # Pulls in parallel (kubelet's default is one at a time): on an air-gapped node a pull of an
        # image from an unreachable registry hangs until DNS or connect time out (about 50 s each,
        # again and again with back-off), and one at a time every other pod's pull waits behind it.
        "serializeImagePulls": False,
        "maxParallelImagePulls": MAX_PARALLEL_IMAGE_PULLS,
    }
    if swap:
        cfg["memorySwap"] = {"swapBehavior": "NoSwap"}
    if ctx.cgroups.version == 1:
        cfg["failCgroupV1"] = False
    if o.cgroup_root:
        cfg["cgroupRoot"] = o.cgroup_root
    if o.taints:
        cfg["registerWithTaints"] = [parse_taint(t) for t in o.taints]
    return cfg


def parse_taint(text: str) -> dict[str, str]:
    """``key=value:Effect`` or ``key:Effect``."""
    from mke.errors import UsageError

    kv, sep, effect = text.rpartition(":")
    if not sep or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute") or not kv:
        raise UsageError(f"--taint {text!r}: expected key[=value]:NoSchedule|PreferNoSchedule|NoExecute")
    key, _, value = kv.partition("=")
    out = {"key": key, "effect": effect}
    if value:
        out["value"] = value
    return out


_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
# What the NodeRestriction admission plugin lets a kubelet set on its own Node in the kubernetes.io and
# k8s.io namespaces (kubelet --node-labels): these keys, or the kubelet./node. prefixes.
_KUBELET_LABELS = {
    "kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os", "beta.kubernetes.io/arch",
    "beta.kubernetes.io/os", "beta.kubernetes.io/instance-type", "node.kubernetes.io/instance-type",
    "failure-domain.beta.kubernetes.io/region", "failure-domain.beta.kubernetes.io/zone",
    "topology.kubernetes.io/region", "topology.kubernetes.io/zone",
}


def check_label(text: str) -> tuple[str, str]:
    """``key=value`` as a node label kubelet may set on itself, or a UsageError saying why not."""
    from mke.errors import UsageError

    key, eq, value = text.partition("=")
    prefix, slash, name = key.rpartition("/")
    if not eq:
        raise UsageError(f"--label {text!r}: expected KEY=VALUE")
    if not _LABEL_NAME.fullmatch(name) or (slash and (not prefix or len(prefix) > 253 or not DNS_SUBDOMAIN.fullmatch(prefix))):
        raise UsageError(f"--label {text!r}: {key!r} is not a label key ([prefix/]name: name up to 63 of "
                         "A-Z a-z 0-9 - _ . beginning and ending with a letter or digit, prefix a DNS subdomain)")
    if value and not _LABEL_NAME.fullmatch(value):
        raise UsageError(f"--label {text!r}: {value!r} is not a label value (up to 63 of A-Z a-z 0-9 - _ ., "
                         "beginning and ending with a letter or digit, or empty)")
    namespace = prefix.endswith(("kubernetes.io", "k8s.io"))
    if namespace and key not in _KUBELET_LABELS and not prefix.startswith(("kubelet.kubernetes.io", "node.kubernetes.io")) \
            and not prefix.endswith((".kubelet.kubernetes.io", ".node.kubernetes.io")):
        raise UsageError(f"--label {text!r}: a kubelet may not set {prefix}/ labels on its own node (the "
                         "NodeRestriction admission plugin refuses them, e.g. node-role.kubernetes.io); "
                         "set it with `mke kubectl label node` once the node has joined")
    return key, value


def check_node_ip(text: str, host_addresses: tuple[str, ...]) -> str:
    """An address of this host usable as the node's InternalIP (kubelet refuses any other), or a UsageError."""
    import ipaddress

    from mke.errors import UsageError

    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise UsageError(f"--node-ip {text!r}: not an IP address") from None
    if ip.is_loopback or ip.is_unspecified or ip.is_multicast:
        raise UsageError(f"--node-ip {text}: a loopback, unspecified or multicast address cannot be a node's address")
    if str(ip) not in host_addresses:
        have = ", ".join(host_addresses) or "none"
        raise UsageError(f"--node-ip {text}: not an address of this host (it has: {have}); kubelet would refuse it")
    return str(ip)


def client_cert_status(kubeconfig: Path, *, now: dt.datetime | None = None) -> tuple[bool, str]:
    """(usable, why) for kubelet's own kubeconfig: present, and its client certificate not expired."""
    import yaml

    from mke import der  # not cryptography: mke worker runs for months (mke.der)

    if not kubeconfig.exists():
        return False, f"{kubeconfig} does not exist"
    try:
        doc = yaml.safe_load(kubeconfig.read_text())
        user = doc["users"][0]["user"]
        if "client-certificate-data" in user:
            import base64

            pem = base64.b64decode(user["client-certificate-data"])
        else:
            pem = Path(user["client-certificate"]).read_bytes()
        not_after = der.certificate_not_after(der.pem_certificate(pem))
    except (OSError, KeyError, IndexError, TypeError, ValueError, yaml.YAMLError) as e:
        return False, f"{kubeconfig}: unreadable credentials ({e})"
    now = now or dt.datetime.now(dt.UTC)
    if not_after <= now:
        return False, f"its client certificate expired at {not_after:%Y-%m-%d %H:%M} UTC"
    return True, f"client certificate valid until {not_after:%Y-%m-%d %H:%M} UTC"


MAX_PARALLEL_IMAGE_PULLS = 5

# kubelet's words when the cluster denied its bootstrap CSR (k8s.io/client-go util/certificate/csr)
CSR_DENIED = re.compile(r'certificate signing request is denied, reason: [^,]*, message: (.*?)(?:\\?"|$)')


class Kubelet(SupervisedComponent):
    name = "kubelet"
    binary = "kubelet"
    ready_timeout = 120.0
    stop_timeout = 20.0

    def failure(self) -> str | None:
        """A denied client certificate (a worker token used for another node, a node registered
        already: mke's csr-approver) ends the wait at once, with the cluster's reason, as a
        TokenError (exit 6), the same error ``wait_for_node_credentials`` raises when it asks the
        API first: which of the two sees the denial first is a race (kubelet 1.37 exits at once)."""
        from mke.errors import TokenError

        sup = self.supervisor
        for line in reversed(list(sup.tail) if sup is not None else []):
            m = CSR_DENIED.search(line)
            if m:
                raise TokenError(f"the cluster denied this node's client certificate: {m.group(1)}")
        return super().failure()

    def __init__(self, ctx: WorkerContext, *, swap: bool = False, resolv_conf: str = "/etc/resolv.conf") -> None:
        super().__init__(ctx)  # type: ignore[arg-type]
        self.wctx = ctx
        self.swap = swap
        self.resolv_conf = resolv_conf

    def init(self) -> None:
        import yaml

        super().init()
        p = self.wctx.paths
        p.kubelet_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        p.kubelet_cert_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.wctx.options.pod_logs_dir:
            Path(self.wctx.options.pod_logs_dir).mkdir(parents=True, exist_ok=True, mode=0o755)
        cfg = kubelet_configuration(self.wctx, swap=self.swap, resolv_conf=self.resolv_conf)
        text = "# Generated by mke (mke/worker/kubelet.py); rewritten on every start.\n" + yaml.safe_dump(cfg, sort_keys=False)
        write_file_atomic(p.kubelet_config, text.encode(), 0o600)

    def args(self) -> list[str]:
        p, o = self.wctx.paths, self.wctx.options
        a = [
            f"--config={p.kubelet_config}",
            f"--kubeconfig={p.kubelet_kubeconfig}",
            f"--cert-dir={p.kubelet_cert_dir}",
            f"--root-dir={p.kubelet_root}",
        ]
        if o.node_name != kubelet_default_name():  # CIS 4.2.8: only when the name is not kubelet's own
            a.append(f"--hostname-override={o.node_name}")
        if p.bootstrap_kubeconfig.exists():
            a.append(f"--bootstrap-kubeconfig={p.bootstrap_kubeconfig}")
        if o.node_ip:
            a.append(f"--node-ip={o.node_ip}")
        if o.labels:
            a.append(f"--node-labels={','.join(o.labels)}")
        return a

    def env(self) -> dict[str, str]:
        return {"PATH": self.wctx.bin_path_env()}

    def ready(self) -> bool:
        ok, _ = https_ok(f"http://127.0.0.1:{HEALTHZ_PORT}/healthz")
        return ok


class NodeReady(Component):
    """Waits until the API reports this node Ready (kubelet registered, CNI configured)."""

    name = "node"
    ready_timeout = 900.0
    poll = 1.0

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self._client: Any = None
        self._next = 0.0
        self.ready_at: float | None = None
        self.t0 = time.monotonic()
        self.last = "waiting for kubelet to register"

    def start(self) -> None:
        self.t0 = time.monotonic()

    def node(self) -> dict[str, Any] | None:
        from mke.kubeapi import KubeClient

        if self._client is None:
            if not self.ctx.paths.kubelet_kubeconfig.exists():
                self.last = "waiting for kubelet's client certificate (TLS bootstrap)"
                return None
            self._client = KubeClient.from_kubeconfig(self.ctx.paths.kubelet_kubeconfig, timeout=5.0)
        return self._client.get("v1", "Node", self.ctx.options.node_name)

    def ready(self) -> bool:
        if self.ready_at is not None:
            return True
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.poll
        try:
            node = self.node()
        except (KubeAPIError, OSError) as e:
            self.last = str(e)
            return False
        if node is None:
            return False
        cond = {c["type"]: c for c in node.get("status", {}).get("conditions", [])}
        ready = cond.get("Ready", {})
        if ready.get("status") == "True":
            self.ready_at = now - self.t0
            self.ctx.sink.line(self.name, f"node {self.ctx.options.node_name} is Ready")
            return True
        self.last = f"Ready={ready.get('status', '?')}: {ready.get('message', '')}"
        return False

    def failure(self) -> str | None:
        return None

    def state(self) -> dict[str, object]:
        return {"name": self.name, "state": "ready" if self.ready_at is not None else "waiting",
                "detail": None if self.ready_at is not None else self.last}
