"""The bridge network provider: pods on a Linux bridge, routes between nodes set by mke.

Works without pulling any image, which an air-gapped cluster needs:

- each node gets a pod CIDR from the controller-manager (``--allocate-node-cidrs``);
  once kubelet has registered the node, mke writes a CNI conflist for it: ``bridge``
  (``mke0``, the node's gateway, hairpin on) with ``host-local`` IPAM in the node's
  CIDR (its state in the data dir), then ``portmap`` for hostPorts; containerd runs
  ``loopback`` for every pod itself;
- pod-to-pod traffic across nodes is routed, not encapsulated: for every other node,
  ``<its pod CIDR> via <its InternalIP>`` (protocol ``mke``, number 77, so that mke
  finds and removes only its own routes). The nodes must share a layer-2 network;
- pods reach the rest of the world masqueraded (``MKE-POSTROUTING`` in nat), but not
  each other (pod IPs are kept inside the cluster CIDR), and ``MKE-FORWARD`` accepts
  pod traffic even where the FORWARD policy is DROP (Docker sets it).

The loop re-reads the nodes every ``interval`` seconds and converges; it never fails
the worker, it reports what it could not do.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mke.components.base import Component, LoopComponent
from mke.errors import KubeAPIError
from mke.manifests.k8s import cluster_role, cluster_role_binding, rule, subject
from mke.network.base import NetworkProvider
from mke.node import netlink
from mke.node.files import write_file_atomic

if TYPE_CHECKING:
    from mke.components.context import ControllerContext
    from mke.worker.context import WorkerContext, WorkerPaths

BRIDGE = "mke0"
NETWORK_NAME = "mke-bridge"
CONFLIST = "10-mke-bridge.conflist"
ROUTE_PROTO = 77  # the routing protocol number of mke's routes (ip route ... proto 77)
NAT_CHAIN = "MKE-POSTROUTING"
FILTER_CHAIN = "MKE-FORWARD"
COMMENT = "mke: bridge network"


def bridge_conflist(pod_subnet: str, ipam_dir: Path, *, mtu: int | None = None) -> dict[str, Any]:
    net = ipaddress.ip_network(pod_subnet, strict=True)
    default = "0.0.0.0/0" if net.version == 4 else "::/0"
    bridge: dict[str, Any] = {
        "type": "bridge",
        "bridge": BRIDGE,
        "isGateway": True,
        "ipMasq": False,  # mke masquerades only traffic leaving the cluster CIDR (MKE-POSTROUTING)
        "hairpinMode": True,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": str(net)}]],
            "routes": [{"dst": default}],
            "dataDir": str(ipam_dir),
        },
    }
    if mtu:
        bridge["mtu"] = mtu
    return {
        "cniVersion": "1.0.0",
        "name": NETWORK_NAME,
        "plugins": [bridge, {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}],
    }


def desired_routes(nodes: list[dict[str, Any]], me: str) -> dict[str, str]:
    """pod CIDR -> next hop (the node's InternalIP) for every other node that has both."""
    out: dict[str, str] = {}
    for n in nodes:
        name = n.get("metadata", {}).get("name")
        if name == me:
            continue
        cidrs = n.get("spec", {}).get("podCIDRs") or ([n["spec"]["podCIDR"]] if n.get("spec", {}).get("podCIDR") else [])
        addrs = [a["address"] for a in n.get("status", {}).get("addresses", []) if a.get("type") == "InternalIP"]
        for cidr in cidrs:
            fam = ipaddress.ip_network(cidr).version
            via = next((a for a in addrs if ipaddress.ip_address(a).version == fam), None)
            if via:
                out[str(ipaddress.ip_network(cidr))] = via
    return out


def nat_rules(cluster_cidr: str) -> list[list[str]]:
    return [
        ["-s", cluster_cidr, "-d", cluster_cidr, "-m", "comment", "--comment", COMMENT, "-j", "RETURN"],
        ["-s", cluster_cidr, "!", "-d", "224.0.0.0/4", "-m", "comment", "--comment", COMMENT,
         "-j", "MASQUERADE", "--random-fully"],
    ]


def forward_rules(cluster_cidr: str) -> list[list[str]]:
    return [
        ["-s", cluster_cidr, "-m", "comment", "--comment", COMMENT, "-j", "ACCEPT"],
        ["-d", cluster_cidr, "-m", "comment", "--comment", COMMENT, "-j", "ACCEPT"],
    ]


class IPTables:
    """Keeps mke's two chains in place with ``exe`` (``iptables`` or ``ip6tables``), found on
    ``path``: the embedded tools first (``-w``: wait for the lock)."""

    def __init__(self, exe: str, path: str) -> None:
        self.exe = exe
        self.env = {"PATH": path}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.exe, "-w", "5", *args], capture_output=True, text=True, timeout=30,
                              env=self.env, check=False)
        if check and proc.returncode != 0:
            raise OSError(f"{self.exe} {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def ensure_chain(self, table: str, chain: str, parent: str, rules: list[list[str]], *, insert: bool) -> bool:
        """Make ``chain`` hold exactly ``rules`` and ``parent`` jump to it; True if anything changed."""
        changed = False
        if self.run("-t", table, "-S", chain, check=False).returncode != 0:
            self.run("-t", table, "-N", chain)
            changed = True
        jump = ["-m", "comment", "--comment", COMMENT, "-j", chain]
        if self.run("-t", table, "-C", parent, *jump, check=False).returncode != 0:
            self.run("-t", table, "-I" if insert else "-A", parent, *(["1"] if insert else []), *jump)
            changed = True
        have = [line for line in self.run("-t", table, "-S", chain).stdout.splitlines() if line.startswith("-A ")]
        want_ok = len(have) == len(rules) and all(
            self.run("-t", table, "-C", chain, *r, check=False).returncode == 0 for r in rules)
        if not want_ok:
            self.run("-t", table, "-F", chain)
            for r in rules:
                self.run("-t", table, "-A", chain, *r)
            changed = True
        return changed


def ip_routes(proto: int = ROUTE_PROTO) -> dict[str, str]:
    """mke's routes (both families): pod CIDR -> next hop."""
    return {r.dst: r.gateway for fam in (socket.AF_INET, socket.AF_INET6) for r in netlink.routes(proto, fam)
            if not r.dst.endswith("/0")}


def set_route(cidr: str, via: str) -> None:
    try:
        netlink.replace_route(cidr, via, ROUTE_PROTO)
    except OSError as e:
        raise OSError(f"route {cidr} via {via}: {e.strerror}") from e


def delete_route(cidr: str) -> None:
    netlink.delete_route(cidr, ROUTE_PROTO)


class BridgeNetwork(LoopComponent):
    name = "network"
    ready_timeout = 180.0
    interval = 10.0
    retry_interval = 1.0

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(ctx)
        self.ctx: WorkerContext = ctx
        self._written = False
        self.pod_cidr: str | None = None
        self.routes: dict[str, str] = {}
        self._client: Any = None

    @property
    def conflist_path(self) -> Path:
        return self.ctx.paths.cni_conf_dir / CONFLIST

    def ready(self) -> bool:
        return self._written

    def state(self) -> dict[str, object]:
        return {**super().state(), "state": "configured" if self._written else "waiting",
                "pod_cidr": self.pod_cidr, "routes": dict(self.routes)}

    def _client_or_none(self) -> Any:
        from mke.kubeapi import KubeClient

        if self._client is None and self.ctx.paths.kubelet_kubeconfig.exists():
            self._client = KubeClient.from_kubeconfig(self.ctx.paths.kubelet_kubeconfig, timeout=5.0)
        return self._client

    def sync(self) -> None:
        client = self._client_or_none()
        if client is None:
            return
        try:
            node = client.get("v1", "Node", self.ctx.options.node_name)
        except (KubeAPIError, OSError) as e:
            self.report("node", str(e))
            return
        cidr = (node or {}).get("spec", {}).get("podCIDR")
        if not cidr:
            self.report("node", "no pod CIDR allocated yet (the controller-manager allocates it)")
            return
        self.report("node", None)
        self.pod_cidr = cidr
        doc = bridge_conflist(cidr, self.ctx.paths.cni_ipam_dir)
        text = json.dumps(doc, indent=2) + "\n"
        try:
            current = self.conflist_path.read_text()
        except OSError:
            current = ""
        if current != text:
            self.ctx.paths.cni_ipam_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_file_atomic(self.conflist_path, text.encode(), 0o600)  # CIS 1.1.9: CNI files 0600
            self.ctx.sink.line(self.name, f"pod CIDR {cidr}: wrote {self.conflist_path}")
        self._written = True
        self.sync_iptables()
        self.sync_routes(client)

    def sync_iptables(self) -> None:
        cluster = self.ctx.settings.pod_cidr
        exe = "iptables" if ipaddress.ip_network(cluster).version == 4 else "ip6tables"
        path = self.ctx.bin_path_env()
        if not shutil.which(exe, path=path):
            self.report("iptables", f"no {exe} (neither embedded nor on PATH): pods cannot reach addresses "
                                    "outside the cluster")
            return
        ipt = IPTables(exe, path)
        try:
            ipt.ensure_chain("nat", NAT_CHAIN, "POSTROUTING", nat_rules(cluster), insert=False)
            ipt.ensure_chain("filter", FILTER_CHAIN, "FORWARD", forward_rules(cluster), insert=True)
            self.report("iptables", None)
        except (OSError, subprocess.SubprocessError) as e:
            self.report("iptables", str(e))

    def sync_routes(self, client: Any) -> None:
        try:
            nodes = client.list("v1", "Node")
        except (KubeAPIError, OSError) as e:
            self.report("routes", f"cannot list nodes ({e}); pods on other nodes are unreachable")
            return
        want = desired_routes(nodes, self.ctx.options.node_name)
        try:
            have = ip_routes()
            for cidr, via in want.items():
                if have.get(cidr) != via:
                    set_route(cidr, via)
                    self.ctx.sink.line(self.name, f"route {cidr} via {via}")
            for cidr in set(have) - set(want):
                delete_route(cidr)
                self.ctx.sink.line(self.name, f"removed route {cidr} (node gone)")
            self.routes = want
            self.report("routes", None)
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            self.report("routes", str(e))


class Bridge(NetworkProvider):
    name = "bridge"
    summary = "pods on a Linux bridge per node, routed between nodes on one L2 network (no image needed)"
    cni_plugins = ("bridge", "host-local", "loopback", "portmap")
    host_cni_dirs = False

    def manifests(self, ctx: ControllerContext) -> list[dict[str, Any]]:
        # Each worker routes to the others' pod CIDRs, so nodes may list and watch Node
        # objects (the Node authorizer alone lets a node read only its own).
        return [
            cluster_role("mke:node-routes", [rule([""], ["nodes"], ["get", "list", "watch"])]),
            cluster_role_binding("mke:node-routes", "mke:node-routes", [subject("Group", "system:nodes")]),
        ]

    def worker_components(self, ctx: WorkerContext) -> list[Component]:
        return [BridgeNetwork(ctx)]

    def cleanup(self, paths: WorkerPaths, say: Callable[[str], None]) -> list[str]:
        problems = []
        try:
            if netlink.delete_link(BRIDGE):
                say(f"removed bridge {BRIDGE}")
        except OSError as e:
            problems.append(f"delete link {BRIDGE}: {e.strerror}")
        try:
            netlink.flush_routes(ROUTE_PROTO)
        except OSError as e:
            problems.append(f"flush routes of protocol {ROUTE_PROTO}: {e.strerror}")
        return problems

    def leftovers(self, paths: WorkerPaths) -> list[str]:
        out = []
        if netlink.link_index(BRIDGE) is not None:
            out.append(f"link {BRIDGE}")
        routes = [f"{r.dst} via {r.gateway}" for fam in (socket.AF_INET, socket.AF_INET6)
                  for r in netlink.routes(ROUTE_PROTO, fam)]
        if routes:
            out.append(f"routes {', '.join(routes)}")
        return out


PROVIDER = Bridge()
