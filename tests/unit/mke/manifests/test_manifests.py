"""mke/manifests: what mke applies, rendered from the config (applying them to a real API is
tests/integration/test_server.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mke.components.context import ControllerContext
from mke.config import parse_config
from mke.manifests import names, render_all
from mke.node.binaries import BinaryResolver


def render(doc: dict[str, Any]) -> list[dict[str, Any]]:
    ctx = ControllerContext(config=parse_config(doc), data_dir=Path("/nonexistent"), node_name="n",
                      api_address="192.0.2.10", binaries=BinaryResolver(Path("/nonexistent")))
    return render_all(ctx)


def images(objs: list[dict[str, Any]]) -> set[str]:
    out = set()
    for o in objs:
        spec = o.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            out.add(c["image"])
    return out


def test_default_set_is_complete_and_valid() -> None:
    objs = render({})
    n = names(objs)
    assert len(n) == len(set(n)), "duplicate objects"
    for o in objs:
        assert o["apiVersion"] and o["kind"] and o["metadata"]["name"]
        assert o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mke"
        yaml.safe_dump(o)  # serialisable
    assert "ClusterRoleBinding/mke:node-autoapprove-bootstrap" not in n  # mke approves (csr_approver)
    for want in ("ClusterRoleBinding/mke:kubelet-bootstrap",
                 "ClusterRoleBinding/mke:node-autoapprove-certificate-rotation",
                 "Deployment/kube-system/coredns", "Service/kube-system/kube-dns",
                 "Deployment/kube-system/metrics-server", "APIService/v1beta1.metrics.k8s.io",
                 "DaemonSet/kube-system/konnectivity-agent-192-0-2-10", "ClusterRoleBinding/mke:node-proxier",
                 "ClusterRole/mke:kube-router", "ClusterRoleBinding/mke:kube-router"):
        assert want in n, want
    calico = names(render({"network": {"provider": "calico"}, "images": {"registry": "registry.local:5000"}}))
    for want in ("DaemonSet/kube-system/calico-node", "CustomResourceDefinition/ippools.crd.projectcalico.org"):
        assert want in calico, want


def test_images_are_pinned_and_overridable() -> None:
    default = images(render({}))
    assert "registry.k8s.io/coredns/coredns:v1.15.0" in default
    assert all(":" in i.rsplit("/", 1)[-1] for i in default)
    mirrored = images(render({"images": {"registry": "registry.local:5000", "coredns": "my.reg/dns/coredns:v9"}}))
    assert all(i.startswith("registry.local:5000/") for i in mirrored), mirrored
    assert "registry.local:5000/dns/coredns:v9" in mirrored


def test_custom_cni_applies_no_network_provider() -> None:
    n = names(render({"network": {"provider": "custom"}}))
    assert not any("calico" in x for x in n)


def test_dns_and_cidrs_follow_the_config() -> None:
    objs = render({"network": {"serviceCIDR": "10.100.0.0/16", "podCIDR": "10.50.0.0/16", "clusterDomain": "k.local"}})
    svc = next(o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == "kube-dns")
    assert svc["spec"]["clusterIP"] == "10.100.0.10"
    cm = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "coredns")
    assert "kubernetes k.local in-addr.arpa" in cm["data"]["Corefile"]
    settings = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "mke-worker-config")
    assert settings["data"]["podCIDR"] == "10.50.0.0/16"  # what each worker's kube-proxy gets as clusterCIDR


def test_konnectivity_agent_only_when_enabled() -> None:
    assert not any(n.startswith("DaemonSet/kube-system/konnectivity-agent")
                   for n in names(render({"konnectivity": {"enabled": False}})))


def _agents(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == "DaemonSet" and "konnectivity" in o["metadata"]["name"]}


def test_one_konnectivity_agent_daemonset_per_controller_each_dialing_its_own() -> None:
    """Issue 14.5: every konnectivity-server needs an agent on every node, without a load
    balancer: one DaemonSet per controller address, each agent dialing that controller."""
    ctx = ControllerContext(config=parse_config({"api": {"externalAddress": "lb.example.com"}}),
                            data_dir=Path("/nonexistent"), node_name="n", api_address="192.0.2.10",
                            binaries=BinaryResolver(Path("/nonexistent")))
    agents = _agents(render_all(ctx, controllers=["192.0.2.12", "192.0.2.10", "2001:db8::1", "192.0.2.10"]))
    assert sorted(agents) == ["konnectivity-agent-192-0-2-10", "konnectivity-agent-192-0-2-12",
                              "konnectivity-agent-2001-db8--1"]
    for name, ds in agents.items():
        pod = ds["spec"]["template"]
        labels = ds["spec"]["selector"]["matchLabels"]
        assert pod["metadata"]["labels"] == labels and labels.items() <= ds["metadata"]["labels"].items()
        assert labels["mke.io/konnectivity-server"] == name.removeprefix("konnectivity-agent-")
        args = pod["spec"]["containers"][0]["args"]
        host = next(a.split("=", 1)[1] for a in args if a.startswith("--proxy-server-host="))
        assert host.replace(".", "-").replace(":", "-") == name.removeprefix("konnectivity-agent-")  # not the LB
    # without the list (the API could not say): this controller's own address
    assert list(_agents(render_all(ctx))) == ["konnectivity-agent-192-0-2-10"]
