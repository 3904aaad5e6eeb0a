"""The bridge network provider (mke/network/bridge.py): its CNI conflist, routes, iptables
rules and what it adds to the cluster."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mke import network
from mke.config import default_config, with_overrides
from mke.network.bridge import bridge_conflist, desired_routes, forward_rules, nat_rules


def test_bridge_conflist(tmp_path):
    doc = bridge_conflist("10.244.1.0/24", tmp_path / "ipam")
    assert doc["cniVersion"] == "1.0.0" and doc["name"] == "mke-bridge"
    bridge, portmap = doc["plugins"]
    assert bridge["type"] == "bridge" and bridge["bridge"] == "mke0" and bridge["isGateway"] and bridge["hairpinMode"]
    assert bridge["ipMasq"] is False
    assert bridge["ipam"] == {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]],
                              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(tmp_path / "ipam")}
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}
    with pytest.raises(ValueError):
        bridge_conflist("10.244.1.7/24", tmp_path)


def test_routes_to_every_other_node():
    def node(name, cidr, ip):
        n = {"metadata": {"name": name}, "spec": {}, "status": {"addresses": [{"type": "Hostname", "address": name}]}}
        if cidr:
            n["spec"]["podCIDR"] = cidr
        if ip:
            n["status"]["addresses"].append({"type": "InternalIP", "address": ip})
        return n

    nodes = [node("w1", "10.244.1.0/24", "10.0.0.2"), node("w2", "10.244.2.0/24", "10.0.0.3"),
             node("new", None, "10.0.0.4"), node("noip", "10.244.4.0/24", None)]
    assert desired_routes(nodes, "w1") == {"10.244.2.0/24": "10.0.0.3"}
    assert desired_routes(nodes, "w2") == {"10.244.1.0/24": "10.0.0.2"}


def test_masquerade_only_leaves_the_cluster():
    nat = nat_rules("10.244.0.0/16")
    assert nat[0][:4] == ["-s", "10.244.0.0/16", "-d", "10.244.0.0/16"] and nat[0][-1] == "RETURN"
    assert "MASQUERADE" in nat[1]
    assert [r[-1] for r in forward_rules("10.244.0.0/16")] == ["ACCEPT", "ACCEPT"]


def test_nodes_may_list_nodes_only_with_the_bridge_provider():
    def cluster_roles(provider: str) -> set[str]:
        cfg = with_overrides(default_config(), **{"network.provider": provider})
        objs = network.get(provider).manifests(SimpleNamespace(config=cfg, api_address="192.0.2.1"))
        return {o["metadata"]["name"] for o in objs if o["kind"] == "ClusterRole"}

    assert "mke:node-routes" in cluster_roles("bridge")
    assert "mke:node-routes" not in cluster_roles("calico") and not cluster_roles("custom")
