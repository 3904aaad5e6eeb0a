"""kube-router, the default network: pod routing between nodes on any L3 network, and
NetworkPolicy enforcement, with no image and no registry.

kube-router (``github.com/cloudnativelabs/kube-router/v2``, built from source into the
payload like every other binary) runs on each node as a supervised process of mke's
worker, not as a DaemonSet, so that nothing has to be pulled or built as an image and
its CNI config can live in each node's data dir:

- routing (``--run-router``): every node learns the others' pod CIDRs over iBGP (a full
  mesh between the nodes, GoBGP inside kube-router) and installs routes; nodes in
  different subnets are reached through IPIP tunnels (``--enable-overlay``,
  ``--overlay-type=subnet``), so the nodes need not share a layer-2 segment;
- NetworkPolicy (``--run-firewall``): iptables + ipset rules per pod;
- CNI: mke writes ``10-kuberouter.conflist`` (``bridge`` on ``kube-bridge`` with
  ``host-local`` IPAM, then ``portmap``) into the data dir; kube-router fills in the
  node's pod CIDR and MTU (``KUBE_ROUTER_CNI_CONF_FILE``);
- services stay with kube-proxy (``--run-service-proxy=false``).

kube-router authenticates as the node (the kubelet's client certificate), with read
access to what it watches (``mke:kube-router``, bound to the group ``system:nodes``).
It executes iptables, ipset and ip: the embedded host tools, first on its PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mke.components.base import Component, SupervisedComponent, https_ok
from mke.manifests.k8s import cluster_role, cluster_role_binding, rule, subject
from mke.network.base import NetworkProvider
from mke.node import netlink
from mke.node.files import write_file_atomic

if TYPE_CHECKING:
    from mke.components.context import ControllerContext
    from mke.worker.context import WorkerContext, WorkerPaths

BINARY = "kube-router"
CONFLIST = "10-kuberouter.conflist"
BRIDGE = "kube-bridge"
HEALTH_PORT = 20244
# Links kube-router creates on a node (tunnels are named tun-<hash>).
LINKS = (BRIDGE, "kube-dummy-if")
TUNNEL_PREFIX = "tun-"
# kube-router's routes to the other nodes' pod CIDRs (RTPROT_ZEBRA), and the table its policy
# rules send tunnel traffic to (routes.CustomTableID in kube-router).
ROUTE_PROTOCOL = 17
POLICY_TABLE = 77
# The ipsets kube-router makes (NetworkPolicy, node and pod addresses).
IPSET_PREFIXES = ("kube-router-", "KUBE-")


def conflist(ipam_dir: Path) -> dict[str, Any]:
    """The CNI config kube-router completes with the node's pod CIDR (and MTU)."""
    return {
        "cniVersion": "1.0.0",
        "name": "mke-kube-router",
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isDefaultGateway": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(ipam_dir)}},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }


def conflist_subnets(path: Path) -> list[str]:
    """The pod CIDRs kube-router wrote into the conflist ([] until it did)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    for plugin in doc.get("plugins", []):
        ipam = plugin.get("ipam") or {}
        found = [ipam["subnet"]] if ipam.get("subnet") else []
        found += [r.get("subnet") for rs in ipam.get("ranges", []) for r in rs if r.get("subnet")]
        if found:
            return found
    return []


class KubeRouter(SupervisedComponent):
    name = "kube-router"
    binary = BINARY
    ready_timeout = 180.0

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(ctx)
        self.wctx = ctx

    @property
    def conflist_path(self) -> Path:
        return self.wctx.paths.cni_conf_dir / CONFLIST

    def init(self) -> None:
        super().init()
        p = self.wctx.paths
        p.cni_conf_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        p.cni_ipam_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # 0600 (CIS 1.1.9); kube-router rewrites the file in place, which keeps its mode
        if not conflist_subnets(self.conflist_path):  # kube-router keeps its own edits across restarts
            write_file_atomic(self.conflist_path, (json.dumps(conflist(p.cni_ipam_dir), indent=2) + "\n").encode(),
                              0o600)
        else:
            os.chmod(self.conflist_path, 0o600)  # written 0644 by an older mke

    def start(self) -> None:
        self.wctx.wait_for_node_registered(self.name)  # kube-router exits when its Node object is not there yet
        super().start()

    def args(self) -> list[str]:
        o = self.wctx.options
        return [
            f"--kubeconfig={self.wctx.paths.kubelet_kubeconfig}",
            f"--hostname-override={o.node_name}",
            "--run-router=true",
            "--run-firewall=true",
            "--run-service-proxy=false",
            "--run-loadbalancer=false",
            "--enable-cni=true",
            "--enable-pod-egress=true",
            "--enable-overlay=true",
            "--overlay-type=subnet",
            "--bgp-graceful-restart=true",
            f"--service-cluster-ip-range={self.wctx.settings.service_cidr}",
            "--health-addr=127.0.0.1",
            f"--health-port={HEALTH_PORT}",
            "--metrics-port=0",
            "--gobgp-admin-address=127.0.0.1",
        ]

    def env(self) -> dict[str, str]:
        return {"PATH": self.wctx.bin_path_env(), "KUBE_ROUTER_CNI_CONF_FILE": str(self.conflist_path)}

    def ready(self) -> bool:
        ok, _ = https_ok(f"http://127.0.0.1:{HEALTH_PORT}/healthz")
        return ok and bool(conflist_subnets(self.conflist_path))


class KubeRouterProvider(NetworkProvider):
    name = "kuberouter"
    summary = "kube-router: routed pod network on any L3 network (IPIP across subnets) and NetworkPolicy"
    cni_plugins = ("bridge", "host-local", "loopback", "portmap")
    host_cni_dirs = False
    kernel_modules = ("ipip", "ip_set", "xt_set")
    # kube-router names its policy-routing table (77) in iproute2's rt_tables before it adds the
    # rules that keep tunnel traffic in the tunnel; without the file it skips those rules. A
    # kernel-only host has none: give it iproute2's defaults plus kube-router's line (so that
    # kube-router leaves the file as it is and reset can tell it unchanged).
    host_files = (("etc/iproute2/rt_tables",
                   "# written by mke for kube-router: this host had no rt_tables\n"
                   "255\tlocal\n254\tmain\n253\tdefault\n0\tunspec\n77 kube-router\n"),)

    def manifests(self, ctx: ControllerContext) -> list[dict[str, Any]]:
        read = ["get", "list", "watch"]
        role = cluster_role("mke:kube-router", [
            rule([""], ["nodes", "pods", "namespaces", "services", "endpoints"], read),
            rule(["discovery.k8s.io"], ["endpointslices"], read),
            rule(["networking.k8s.io"], ["networkpolicies"], read),
        ])
        binding = cluster_role_binding("mke:kube-router", "mke:kube-router", [subject("Group", "system:nodes")])
        return [role, binding]

    def worker_binaries(self) -> tuple[str, ...]:
        return (BINARY,)

    def worker_components(self, ctx: WorkerContext) -> list[Component]:
        return [KubeRouter(ctx)]

    def cleanup(self, paths: WorkerPaths, say: Callable[[str], None]) -> list[str]:
        problems = []
        path = self._tools(paths)
        exe = shutil.which(BINARY, path=path)
        if exe and self._ran_here(paths):  # kube-router's own undo of its iptables, ipset and IPVS state
            from mke.procenv import clean_env

            env = clean_env(extra={"PATH": path})
            proc = subprocess.run([exe, "--cleanup-config"], capture_output=True, text=True, timeout=120,
                                  env=env, check=False)
            if proc.returncode != 0:
                # not a problem by itself: it gives up on the first ipset still in use or chain it cannot
                # flush, and what it left is removed below (clean_iptables, cleanup_after_iptables),
                # each of which reports what it could not remove
                say(f"kube-router --cleanup-config exited {proc.returncode} ({klog_error(proc.stderr)}): "
                    "mke removes what it left")
            else:
                say("kube-router: removed its iptables, ipset and IPVS state")
        for name in self._links():
            try:
                if netlink.delete_link(name):
                    say(f"removed link {name}")
            except OSError as e:
                problems.append(f"delete link {name}: {e.strerror}")
        # --cleanup-config leaves its routes to the other nodes' pod CIDRs and its policy rules
        cidrs = self._pod_cidrs(paths)
        try:
            for r in netlink.routes_in(cidrs, ROUTE_PROTOCOL):
                netlink.delete_route(r.dst, ROUTE_PROTOCOL)
                say(f"removed route {r.dst} (kube-router's)")
            for rule in netlink.rules_in(cidrs, POLICY_TABLE):
                netlink.delete_rule(rule)
                say(f"removed rule from {rule.source} lookup {POLICY_TABLE} (kube-router's)")
        except OSError as e:
            problems.append(f"kube-router's routes and rules: {e.strerror}")
        return problems

    # nf_tables drops a removed rule's reference to an ipset after the transaction, in a kernel
    # work queue (nf_tables_trans_destroy_work): right after the chains went, a set can still be
    # "in use by a kernel component" for a moment, longer on a loaded host
    IPSET_RELEASE_WAIT = 15.0

    def cleanup_after_iptables(self, paths: WorkerPaths, say: Callable[[str], None]) -> list[str]:
        """The ipsets kube-router's own cleanup could not destroy because a rule still used them
        (it destroys them right after removing only its own rules; reset has now removed every
        KUBE-* chain). A set still in use is tried again until IPSET_RELEASE_WAIT has passed."""
        import time

        problems = []
        ipset = shutil.which("ipset", path=self._tools(paths)) or "ipset"
        deadline = time.monotonic() + self.IPSET_RELEASE_WAIT
        for name in self._ipsets(paths):
            while True:
                proc = subprocess.run([ipset, "destroy", name], capture_output=True, text=True, timeout=30,
                                      check=False)
                if proc.returncode == 0:
                    say(f"removed ipset {name} (kube-router's)")
                    break
                if "in use" not in proc.stderr or time.monotonic() > deadline:
                    problems.append(f"ipset destroy {name}: {proc.stderr.strip()}")
                    break
                time.sleep(0.2)
        return problems

    @staticmethod
    def _tools(paths: WorkerPaths) -> str:
        from mke.worker.cleanup import tools_path

        return tools_path(paths)

    def _ipsets(self, paths: WorkerPaths) -> list[str]:
        ipset = shutil.which("ipset", path=self._tools(paths))
        if not ipset:
            return []
        proc = subprocess.run([ipset, "list", "-n"], capture_output=True, text=True, timeout=30, check=False)
        return [n for n in proc.stdout.split() if n.startswith(IPSET_PREFIXES)]

    def leftovers(self, paths: WorkerPaths) -> list[str]:
        out = [f"link {name}" for name in self._links()]
        cidrs = self._pod_cidrs(paths)
        out += [f"route {r.dst} proto {ROUTE_PROTOCOL}" for r in netlink.routes_in(cidrs, ROUTE_PROTOCOL)]
        out += [f"rule from {r.source} lookup {POLICY_TABLE}" for r in netlink.rules_in(cidrs, POLICY_TABLE)]
        out += [f"ipset {n}" for n in self._ipsets(paths)]
        return out

    @staticmethod
    def _ran_here(paths: WorkerPaths) -> bool:
        """kube-router ran on this node (its CNI config is there): only then is its cleanup ours to run."""
        return (paths.cni_conf_dir / CONFLIST).exists()

    @staticmethod
    def _pod_cidrs(paths: WorkerPaths) -> list[str]:
        """The cluster's pod CIDRs: kube-router's routes (protocol zebra) and rules are those inside
        them; a routing daemon on the host (FRR, Quagga) uses the same protocol number."""
        from mke.worker.join import WorkerSettings

        # after a reset the node's settings are gone: the check then looks in the default pod CIDR
        settings = WorkerSettings.load(paths.settings) or WorkerSettings.defaults()
        return [c for c in settings.pod_cidr.split(",") if c]

    @staticmethod
    def _links() -> list[str]:
        return [n for n in netlink.link_names() if n in LINKS or n.startswith(TUNNEL_PREFIX)]


def klog_error(stderr: str) -> str:
    """The last error line of a klog-formatted stderr ("E1128 14:02:03.123 ... msg"), else its last
    line: kube-router logs at info level after the error that made it fail."""
    from mke.logsink import detect_level

    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if detect_level(line) == "error"]
    return (errors or lines or ["no output"])[-1]


PROVIDER = KubeRouterProvider()
