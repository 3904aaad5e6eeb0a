"""Config generation of the worker: containerd's TOML, the KubeletConfiguration
(mke/worker/containerd.py, kubelet.py), host facts and kernel prerequisites (host.py), the
cluster objects for workers (manifests.py), list-images."""

from __future__ import annotations

import dataclasses
import json
import tarfile
import tomllib
from pathlib import Path

import pytest

from mke.errors import KernelModuleError
from mke.network.bridge import PROVIDER as BRIDGE
from mke.node.binaries import BinaryResolver
from mke.worker import host
from mke.worker.containerd import archive_refs, containerd_config
from mke.worker.context import WORKER_BINARIES, WorkerContext, WorkerOptions, WorkerPaths
from mke.worker.join import WorkerSettings
from mke.worker.kubelet import kubelet_configuration, parse_taint


def make_ctx(tmp_path: Path, *, provider: str = "bridge", version: int = 1, driver: str = "cgroupfs",
             **options) -> WorkerContext:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in (*WORKER_BINARIES, *BRIDGE.cni_plugins):
        (bin_dir / name).write_text("#!/bin/true\n")
        (bin_dir / name).chmod(0o755)
    settings = WorkerSettings.from_data({"networkProvider": provider, "clusterDNS": "10.96.0.10"}, "cluster")
    return WorkerContext(
        paths=WorkerPaths(tmp_path / "data"),
        options=WorkerOptions(node_name="w1", **options),
        settings=settings,
        cgroups=host.CgroupInfo(version=version, driver=driver),
        binaries=BinaryResolver(bin_dir, user_bin_dir=True),
        api_url="https://10.0.0.1:6443",
    )


# --------------------------------------------------------------------------- containerd


def test_containerd_config_keeps_everything_under_the_data_dir(tmp_path):
    ctx = make_ctx(tmp_path)
    cfg = tomllib.loads(containerd_config(ctx))
    data = str(tmp_path / "data")
    assert cfg["version"] == 3
    assert cfg["root"] == f"{data}/containerd" and cfg["state"] == f"{data}/run/containerd"
    assert cfg["plugins"]["io.containerd.internal.v1.opt"]["path"] == f"{data}/containerd/opt"  # not /opt
    assert cfg["grpc"]["address"] == f"{data}/run/containerd/containerd.sock"
    images = cfg["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == "registry.k8s.io/pause:3.10.2"
    rt = cfg["plugins"]["io.containerd.cri.v1.runtime"]
    runc = rt["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"] == {"BinaryName": str(tmp_path / "bin" / "runc"), "Root": f"{data}/run/containerd/runc",
                               "SystemdCgroup": False}
    assert rt["cni"]["bin_dirs"] == [str(tmp_path / "bin")]
    assert rt["cni"]["conf_dir"] == f"{data}/cni/net.d"


def test_containerd_follows_the_cgroup_driver_and_the_network_provider(tmp_path):
    cfg = tomllib.loads(containerd_config(make_ctx(tmp_path, provider="calico", version=2, driver="systemd")))
    rt = cfg["plugins"]["io.containerd.cri.v1.runtime"]
    assert rt["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    assert rt["cni"]["conf_dir"] == "/etc/cni/net.d"  # calico writes its config there
    assert rt["cni"]["bin_dirs"][0] == "/opt/cni/bin"


def test_containerd_config_survives_odd_paths(tmp_path):
    odd = tmp_path / 'a "quoted" dir\\x'
    odd.mkdir()
    cfg = tomllib.loads(containerd_config(make_ctx(odd)))
    assert cfg["root"] == f"{odd}/data/containerd"


def test_archive_refs_reads_the_index(tmp_path):
    import io

    index = {"manifests": [{"annotations": {"io.containerd.image.name": "registry.k8s.io/pause:3.10.2"}},
                           {"annotations": {"io.containerd.image.name": "registry.k8s.io/coredns/coredns:v1.12.1"}}]}
    path = tmp_path / "a.tar"
    with tarfile.open(path, "w") as t:
        data = json.dumps(index).encode()
        ti = tarfile.TarInfo("index.json")
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
    assert archive_refs(path) == ["registry.k8s.io/coredns/coredns:v1.12.1", "registry.k8s.io/pause:3.10.2"]
    (tmp_path / "junk.tar").write_bytes(b"junk" * 200)
    from mke.errors import ComponentError

    with pytest.raises(ComponentError, match="junk.tar: not an image archive"):
        archive_refs(tmp_path / "junk.tar")


# --------------------------------------------------------------------------- kubelet


def test_kubelet_configuration_on_cgroup_v1(tmp_path):
    ctx = make_ctx(tmp_path, cgroup_root="/mke-w1", taints=("node-role.kubernetes.io/control-plane:NoSchedule",))
    cfg = kubelet_configuration(ctx, resolv_conf="/run/systemd/resolve/resolv.conf")
    data = str(tmp_path / "data")
    assert cfg["kind"] == "KubeletConfiguration" and cfg["apiVersion"] == "kubelet.config.k8s.io/v1beta1"
    assert cfg["failCgroupV1"] is False and cfg["cgroupDriver"] == "cgroupfs" and cfg["cgroupRoot"] == "/mke-w1"
    assert cfg["containerRuntimeEndpoint"] == f"unix://{data}/run/containerd/containerd.sock"
    assert cfg["authentication"]["anonymous"]["enabled"] is False
    assert cfg["authentication"]["x509"]["clientCAFile"] == f"{data}/worker/ca.crt"
    assert cfg["authorization"]["mode"] == "Webhook" and cfg["readOnlyPort"] == 0
    assert cfg["rotateCertificates"] is True and cfg["serverTLSBootstrap"] is True
    assert cfg["tlsMinVersion"] == "VersionTLS12"
    assert cfg["tlsCipherSuites"] and all(s.startswith("TLS_ECDHE_") and "_GCM_" in s for s in cfg["tlsCipherSuites"])
    assert cfg["clusterDNS"] == ["10.96.0.10"] and cfg["clusterDomain"] == "cluster.local"
    assert cfg["resolvConf"] == "/run/systemd/resolve/resolv.conf"
    assert cfg["registerWithTaints"] == [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
    assert cfg["failSwapOn"] is True and "memorySwap" not in cfg
    assert cfg["evictionHard"]["nodefs.available"] == "5%"
    # a pull that hangs on an unreachable registry does not hold every other pull (air-gapped nodes)
    assert cfg["serializeImagePulls"] is False and cfg["maxParallelImagePulls"] == 5


def test_kubelet_configuration_on_cgroup_v2_with_swap(tmp_path):
    cfg = kubelet_configuration(make_ctx(tmp_path, version=2, driver="systemd"), swap=True)
    assert "failCgroupV1" not in cfg and "cgroupRoot" not in cfg and cfg["cgroupDriver"] == "systemd"
    assert cfg["failSwapOn"] is False and cfg["memorySwap"] == {"swapBehavior": "NoSwap"}


def test_kubelet_args_and_bootstrap(tmp_path):
    from mke.worker.kubelet import Kubelet

    ctx = make_ctx(tmp_path, node_ip="10.0.0.2", labels=("a=b",), extra_args={"kubelet": {"v": "2"}})
    k = Kubelet(ctx)
    k.init()
    args = k.process_spec().args
    assert args[0] == str(tmp_path / "bin" / "kubelet")
    assert "--node-ip=10.0.0.2" in args and "--node-labels=a=b" in args and "--v=2" in args
    assert "--hostname-override=w1" in args  # this machine is not called w1
    assert not any(a.startswith("--bootstrap-kubeconfig") for a in args)  # no bootstrap file: joined already
    ctx.paths.bootstrap_kubeconfig.write_text("x")
    assert f"--bootstrap-kubeconfig={ctx.paths.bootstrap_kubeconfig}" in k.process_spec().args
    assert ctx.paths.kubelet_config.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("text,ok", [
    ("dedicated=infra:NoSchedule", {"key": "dedicated", "value": "infra", "effect": "NoSchedule"}),
    ("gpu:NoExecute", {"key": "gpu", "effect": "NoExecute"}),
    ("gpu", None), ("gpu:Never", None), (":NoSchedule", None),
])
def test_parse_taint(text, ok):
    from mke.errors import UsageError

    if ok is None:
        with pytest.raises(UsageError, match="--taint"):
            parse_taint(text)
    else:
        assert parse_taint(text) == ok


# --------------------------------------------------------------------------- host


def test_detect_cgroups(tmp_path):
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "cgroup.controllers").write_text("cpu memory pids\n")
    (tmp_path / "systemd").mkdir()
    assert host.detect_cgroups(tmp_path / "v2", systemd_dir=tmp_path / "systemd") == host.CgroupInfo(version=2, driver="systemd")
    v1 = host.detect_cgroups(tmp_path / "nothing", systemd_dir=tmp_path / "no-systemd")
    assert v1 == host.CgroupInfo(version=1, driver="cgroupfs")
    assert "failCgroupV1=false" in (v1.warning or "")


def _fake_kernel(tmp_path: Path, *, bridge: bool, forward: str = "0", tunables: dict[str, str] | None = None
                 ) -> tuple[Path, Path]:
    proc, sys = tmp_path / "proc", tmp_path / "sys"
    (proc / "sys" / "net" / "ipv4").mkdir(parents=True)
    (proc / "sys" / "net" / "ipv4" / "ip_forward").write_text(forward + "\n")
    for key, value in (host.KUBELET_SYSCTLS if tunables is None else tunables).items():
        f = proc / "sys" / key.replace(".", "/")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(value + "\n")
    (proc / "filesystems").write_text("nodev\tsysfs\nnodev\toverlay\n")
    (sys / "module").mkdir(parents=True)
    if bridge:
        (proc / "sys" / "net" / "bridge").mkdir(parents=True)
        (proc / "sys" / "net" / "bridge" / "bridge-nf-call-iptables").write_text("1\n")
    return proc, sys


def test_prerequisites_set_what_they_can_and_report_the_rest(tmp_path):
    proc, sys = _fake_kernel(tmp_path, bridge=False)
    tried = []

    def no_module(name: str) -> str:
        tried.append(name)
        raise KernelModuleError(f"kernel module {name} is neither loaded, built in, nor in /lib/modules/x")

    checks = {c.name: c for c in host.Prerequisites(proc=proc, sys=sys, load_module=no_module).ensure()}
    assert checks["module overlay"].status == "ok"
    assert checks["module br_netfilter"].status == "missing"
    assert "kernel module br_netfilter is neither loaded" in checks["module br_netfilter"].detail
    assert tried == ["br_netfilter"]
    assert checks["sysctl net.ipv4.ip_forward"].status == "set"
    assert (proc / "sys" / "net" / "ipv4" / "ip_forward").read_text() == "1"
    assert checks["sysctl net.bridge.bridge-nf-call-iptables"].status == "missing"
    assert "br_netfilter" in checks["sysctl net.bridge.bridge-nf-call-iptables"].line()
    assert "sysctl net.ipv6.conf.all.forwarding" not in checks  # optional and absent: not reported


def test_kubelet_kernel_settings_are_set_so_kubelet_can_protect_them(tmp_path):
    """CIS 4.2.6: mke sets what kubelet would (the stock kernel has overcommit 0, panic 0,
    panic_on_oops 0, small key quotas), then kubelet runs with protectKernelDefaults: true."""
    stock = {**host.KUBELET_SYSCTLS, "vm.overcommit_memory": "0", "kernel.panic": "0", "kernel.panic_on_oops": "0",
             "kernel.keys.root_maxkeys": "200", "kernel.keys.root_maxbytes": "20000"}
    proc, sys = _fake_kernel(tmp_path, bridge=True, forward="1", tunables=stock)
    checks = host.Prerequisites(proc=proc, sys=sys, load_module=lambda m: "loaded").ensure()
    by_name = {c.name: c for c in checks}
    assert by_name["sysctl kernel.panic"].status == "set" and by_name["sysctl kernel.panic"].detail == "was 0"
    assert by_name["sysctl vm.panic_on_oom"].status == "ok"
    for key, want in host.KUBELET_SYSCTLS.items():
        assert (proc / "sys" / key.replace(".", "/")).read_text().strip() == want
    assert host.kernel_defaults_match(checks) and not host.missing(checks)


def test_without_a_kubelet_kernel_setting_kubelet_does_not_protect_them(tmp_path):
    tunables = {k: v for k, v in host.KUBELET_SYSCTLS.items() if k != "kernel.keys.root_maxbytes"}
    proc, sys = _fake_kernel(tmp_path, bridge=True, forward="1", tunables=tunables)
    checks = host.Prerequisites(proc=proc, sys=sys, load_module=lambda m: "loaded").ensure()
    assert [c.line() for c in host.missing(checks)] == [
        "sysctl kernel.keys.root_maxbytes: missing (not available in this kernel)"]
    assert not host.kernel_defaults_match(checks)
    assert kubelet_configuration(make_ctx(tmp_path))["protectKernelDefaults"] is True
    assert kubelet_configuration(dataclasses.replace(make_ctx(tmp_path), protect_kernel_defaults=False)
                                 )["protectKernelDefaults"] is False


def test_kubelet_gets_hostname_override_only_when_the_node_name_is_not_its_own(tmp_path, monkeypatch):
    """CIS 4.2.8: kubelet's own name is the host name, trimmed and lowercased."""
    import socket

    from mke.worker.kubelet import Kubelet

    monkeypatch.setattr(socket, "gethostname", lambda: "Node-7\n")
    ctx = make_ctx(tmp_path)
    for name, flag in (("node-7", False), ("w1", True)):
        named = dataclasses.replace(ctx, options=dataclasses.replace(ctx.options, node_name=name))
        args = Kubelet(named).args()
        assert (f"--hostname-override={name}" in args) is flag, args
    monkeypatch.setattr(socket, "gethostname", lambda: "node-7.example.com")  # mke's default name: node-7
    named = dataclasses.replace(ctx, options=dataclasses.replace(ctx.options, node_name="node-7"))
    assert "--hostname-override=node-7" in Kubelet(named).args()


def test_kubelet_defaults_to_the_runtime_seccomp_profile_and_a_pid_limit(tmp_path):
    """CIS 4.2.14 and 4.2.15; --kubelet-arg flags still override the file (kubelet's own rule)."""
    cfg = kubelet_configuration(make_ctx(tmp_path))
    assert cfg["seccompDefault"] is True and cfg["podPidsLimit"] == 4096


def test_prerequisites_all_ok(tmp_path):
    proc, sys = _fake_kernel(tmp_path, bridge=True, forward="1")
    checks = host.Prerequisites(proc=proc, sys=sys, load_module=lambda m: "loaded").ensure()
    assert not host.missing(checks)


def test_ensure_cgroup_root_in_every_v1_hierarchy(tmp_path):
    from mke.worker.node import ensure_cgroup_root

    for c in ("cpu", "memory", "pids"):
        (tmp_path / c).mkdir()
        (tmp_path / c / "cgroup.procs").write_text("")
    (tmp_path / "unified").mkdir()  # no cgroup.procs here: not a hierarchy we write to
    made = ensure_cgroup_root(host.CgroupInfo(version=1, driver="cgroupfs"), "/mke-w1", tmp_path)
    assert sorted(p.parent.name for p in made) == ["cpu", "memory", "pids"]
    assert ensure_cgroup_root(host.CgroupInfo(version=1, driver="cgroupfs"), "/mke-w1", tmp_path) == []
    assert ensure_cgroup_root(host.CgroupInfo(version=1, driver="systemd"), "/x", tmp_path) == []


# --------------------------------------------------------------------------- cluster side


def test_worker_manifests_publish_settings():
    from types import SimpleNamespace

    from mke.config import default_config, with_overrides
    from mke.worker.manifests import objects

    cfg = with_overrides(default_config(), **{"network.provider": "bridge", "network.service_cidr": "10.43.0.0/16"})
    objs = {f"{o['kind']}/{o['metadata']['name']}": o for o in objects(SimpleNamespace(config=cfg))}
    cm = objs["ConfigMap/mke-worker-config"]
    assert cm["data"]["clusterDNS"] == "10.43.0.10" and cm["data"]["networkProvider"] == "bridge"
    assert objs["Role/mke:worker-config-reader"]["rules"][0]["resourceNames"] == ["mke-worker-config"]
    groups = [s["name"] for s in objs["RoleBinding/mke:worker-config-reader"]["subjects"]]
    assert groups == ["system:bootstrappers:mke:worker", "system:nodes"]
    assert WorkerSettings.from_data(cm["data"], "cluster") == WorkerSettings.from_config(cfg, "cluster")


def test_list_images_follows_the_config(capsys):
    from mke.cli import main

    assert main(["airgap", "list-images"]) == 0
    out = capsys.readouterr().out.split()
    assert "registry.k8s.io/pause:3.10.2" in out and not any("calico" in i for i in out)  # kube-router: no image
    assert main(["airgap", "list-images", "--all"]) == 0
    assert "quay.io/calico/node:v3.30.3" in capsys.readouterr().out.split()
    from mke.commands.airgap import images
    from mke.config import default_config, with_overrides

    bridge = images(with_overrides(default_config(), **{"network.provider": "bridge", "images.registry": "reg.local:5000"}))
    assert all(r.startswith("reg.local:5000/") for r in bridge) and not any("calico" in r for r in bridge)


def test_without_cap_sys_resource_containerd_restricts_oom_scores(tmp_path):
    import dataclasses

    ctx = dataclasses.replace(make_ctx(tmp_path), can_lower_oom_score=False)
    cfg = tomllib.loads(containerd_config(ctx))
    assert "oom_score" not in cfg
    assert cfg["plugins"]["io.containerd.cri.v1.runtime"]["restrict_oom_score_adj"] is True
    full = tomllib.loads(containerd_config(make_ctx(tmp_path)))
    assert full["oom_score"] == -999 and full["plugins"]["io.containerd.cri.v1.runtime"]["restrict_oom_score_adj"] is False
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t000001fffeffffff\n")
    assert host.has_capability(21, status) and not host.has_capability(host.CAP_SYS_RESOURCE, status)


def test_resolv_conf_for_pods(tmp_path):
    etc, resolved = tmp_path / "resolv.conf", tmp_path / "resolved.conf"
    assert host.host_resolv_conf(etc, resolved) == ""  # a bare host: kubelet must not be pointed at a missing file
    etc.write_text("nameserver 192.0.2.53\n")
    assert host.host_resolv_conf(etc, resolved) == str(etc)
    etc.write_text("nameserver 127.0.0.53\n")
    assert host.host_resolv_conf(etc, resolved) == str(etc)  # the stub, but no real file to use instead
    resolved.write_text("nameserver 192.0.2.53\n")
    assert host.host_resolv_conf(etc, resolved) == str(resolved)


def test_kube_proxy_runs_on_the_node_with_its_credentials(tmp_path):
    from mke.worker.kubeproxy import KubeProxy, proxy_configuration

    ctx = make_ctx(tmp_path)
    cfg = proxy_configuration(ctx)
    assert cfg["mode"] == "iptables" and cfg["hostnameOverride"] == "w1"
    assert cfg["clientConnection"]["kubeconfig"] == str(ctx.paths.kubelet_kubeconfig)
    assert cfg["clusterCIDR"] == ctx.settings.pod_cidr and cfg["conntrack"] == {"maxPerCore": 0}
    assert cfg["healthzBindAddress"].startswith("127.0.0.1:") and cfg["metricsBindAddress"].startswith("127.0.0.1:")
    ctx.paths.worker_dir.mkdir(parents=True)
    kp = KubeProxy(ctx)
    kp.init()
    assert kp.process_spec().args[1:] == (f"--config={kp.config_path}",)
    assert kp.config_path.stat().st_mode & 0o777 == 0o600
    assert kp.process_spec().env["PATH"].split(":")[0] == str(tmp_path / "bin")  # the staged tools first


def test_system_files_only_where_missing_and_removed_only_if_unchanged(tmp_path):
    root, record = tmp_path / "root", tmp_path / "worker" / "host-files.json"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "group").write_text("theirs\n")  # the host has one: never touched
    assert host.ensure_system_files(record, root) == [str(root / "etc" / n) for n in ("passwd", "hosts", "resolv.conf")]
    assert (root / "etc" / "passwd").read_text().startswith("root:x:0:0:")
    assert host.ensure_system_files(record, root) == []  # idempotent
    assert host.remove_system_files(record) == []
    assert not (root / "etc" / "passwd").exists() and (root / "etc" / "group").read_text() == "theirs\n"
    bare = tmp_path / "bare"
    bare.mkdir()
    assert len(host.ensure_system_files(record, bare)) == 4
    (bare / "etc" / "passwd").write_text("edited by someone\n")
    problems = host.remove_system_files(record)
    assert problems and "changed since mke created it" in problems[0]
    assert (bare / "etc" / "passwd").exists() and not (bare / "etc" / "group").exists()
    assert not (bare / "etc" / "hosts").exists() and not (bare / "etc" / "resolv.conf").exists()
    assert (bare / "etc").exists()  # not empty: kept


def test_the_network_providers_host_files_with_their_dirs_and_all_removed(tmp_path):
    """kube-router needs iproute2's rt_tables (a kernel-only host has no /etc/iproute2): made with
    its parents, already naming kube-router's table (kube-router leaves it unchanged), and reset
    removes the file and both dirs, deepest first."""
    from mke.network.kuberouter import KubeRouterProvider

    root, record = tmp_path / "bare", tmp_path / "host-files.json"
    root.mkdir()
    made = host.ensure_system_files(record, root, extra=KubeRouterProvider.host_files)
    assert str(root / "etc" / "iproute2" / "rt_tables") in made
    assert "77 kube-router" in (root / "etc" / "iproute2" / "rt_tables").read_text()
    assert host.remove_system_files(record) == []
    assert list(root.iterdir()) == []


# --------------------------------------------------------------------------- node credentials


def test_node_credentials_wait_for_the_certificate_the_kubeconfig_names(tmp_path):
    """kubelet writes its kubeconfig before the CSR is signed; clients started then fail."""
    ctx = make_ctx(tmp_path)
    kc = ctx.paths.kubelet_kubeconfig
    assert not ctx.node_credentials_present()
    kc.parent.mkdir(parents=True, exist_ok=True)
    pem = tmp_path / "kubelet-client-current.pem"
    kc.write_text(f"users:\n- name: default-auth\n  user:\n    client-certificate: {pem}\n    client-key: {pem}\n")
    assert not ctx.node_credentials_present()
    pem.write_text("cert")
    assert ctx.node_credentials_present()
    kc.write_text("users: [")
    assert not ctx.node_credentials_present()


def test_worker_configs_and_the_cni_conflist_are_0600(tmp_path):
    """CIS 1.1.9 (CNI files 600) and 4.1.9 (kubelet config 600): what init() writes."""
    import os
    import stat

    from mke.network.kuberouter import BINARY, KubeRouter
    from mke.worker.kubelet import Kubelet

    ctx = make_ctx(tmp_path, provider="kuberouter")
    (tmp_path / "bin" / BINARY).write_text("#!/bin/true\n")
    (tmp_path / "bin" / BINARY).chmod(0o755)
    kubelet = Kubelet(ctx)
    kubelet.init()
    assert stat.S_IMODE(ctx.paths.kubelet_config.stat().st_mode) == 0o600
    router = KubeRouter(ctx)
    router.init()
    assert stat.S_IMODE(router.conflist_path.stat().st_mode) == 0o600
    os.chmod(router.conflist_path, 0o644)  # as an older mke wrote it; kube-router has filled in its subnet since
    doc = json.loads(router.conflist_path.read_text())
    doc["plugins"][0]["ipam"]["ranges"] = [[{"subnet": "10.244.1.0/24"}]]
    router.conflist_path.write_text(json.dumps(doc))
    router.init()
    assert json.loads(router.conflist_path.read_text()) == doc  # kube-router's edits kept
    assert stat.S_IMODE(router.conflist_path.stat().st_mode) == 0o600
