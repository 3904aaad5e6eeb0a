"""``mke cluster`` over real SSH: Debian's OpenSSH server in each test host (tests/e2e/sshhost.py),
the real dist/mke as the tool and as the file it ships, the Python kubernetes client as judge.

3 controllers + 2 workers from one cluster file; a second apply changes nothing; an added worker
joins alone; a rolling upgrade to dist/mke host by host, with the API sampled every 200 ms
(a PodDisruptionBudget first stops it at the first worker, naming both; the re-run goes on
where it stopped); a second upgrade changes nothing; a cold start (every controller stopped,
apply again); a backup fetched and checked; reset leaves every host clean. Faults first
(they change nothing that the apply after them does not redo): an unreachable host, a wrong
host key, a host failing sysinfo, each stopping with the host and the step named, and the
phase's exit code; and a host that dies (power cut) during the apply that adds it, after which the
re-run joins it.

The cluster is built from ``MKE_E2E_PREVIOUS`` (the previous release's mke file, as
tests/e2e/test_upgrade.py) when it is set, so that the upgrade has a second build to go to;
without it the cluster is built from dist/mke and the upgrade test is skipped, saying so. The
tool itself is always dist/mke.

Run alone: ``flock /var/tmp/mke-e2e.lock env MKE_E2E_SKIP_BUILD=1 MKE_E2E_NO_CONFORMANCE=1
MKE_E2E_PREVIOUS=/var/tmp/mke-previous/mke-v1.36.5 nox -s e2e -- -k cluster_tool``. Everything lives under /var/tmp/mke-cluster-test, in netns
``mkc-*``; the teardown stops every process it or mke started and removes every mount.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from mke.errors import ClusterDrainError, ClusterError, ClusterPreflightError, ClusterRestoreError
from tests.e2e.apisampler import Sampler
from tests.e2e.cluster import mke_file
from tests.e2e.netns import InNetns, Network
from tests.e2e.sshhost import SSH_PORT, SSHHost, keygen, release_nsdir

BASE = Path("/var/tmp/mke-cluster-test")
CONTROLLERS = ["c1", "c2", "c3"]
WORKERS = ["w1", "w2"]
ADDED = "w3"
EVICTION = "memory.available<50Mi,nodefs.available<1%,nodefs.inodesFree<1%,imagefs.available<1%"


def start_file() -> Path:
    """The mke file the cluster is built from: the previous release when given, else dist/mke."""
    p = os.environ.get("MKE_E2E_PREVIOUS")
    if not p:
        return mke_file()
    if not Path(p).is_file():
        pytest.fail(f"MKE_E2E_PREVIOUS={p}: no such file")
    return Path(p)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class Hosts:
    def __init__(self) -> None:
        self.network = Network(prefix="mkc-")
        self.hosts: dict[str, SSHHost] = {}
        self.client = BASE / "client"
        self.timings: dict[str, float] = {}

    def create(self) -> None:
        self.network.create([*CONTROLLERS, *WORKERS, "client"])
        self.client.mkdir(parents=True, exist_ok=True)
        (self.client / "authorized_keys").write_text(keygen(self.client / "id_ed25519", "mkc-client") + "\n")
        for name in [*CONTROLLERS, *WORKERS]:
            self.add(name)

    def add(self, name: str, index: int | None = None) -> SSHHost:
        h = self.network.hosts.get(name) or self.network.add(name, index or 0)
        s = SSHHost(h, BASE / "hosts", self.client / "authorized_keys").create()
        s.start_sshd()
        self.hosts[name] = s
        return s

    def known_hosts(self, path: Path, wrong: dict[str, str] | None = None) -> Path:
        lines = [f"[{s.host.address}]:{SSH_PORT} {(wrong or {}).get(n, s.public_key)}" for n, s in self.hosts.items()]
        path.write_text("\n".join(lines) + "\n")
        return path

    def cluster_file(self, names: list[str], path: Path | None = None, *, known_hosts: Path | None = None,
                     extra: list[dict] | None = None, mke: Path | None = None) -> Path:
        hosts = []
        for n in names:
            s = self.hosts[n]
            entry = {"address": s.host.address, "name": n, "init": "detached",
                     "role": "controller" if n.startswith("c") else "worker"}
            if entry["role"] == "worker":
                entry["flags"] = [f"--cgroup-root=/mkc-{n}", f"--kubelet-arg=eviction-hard={EVICTION}"]
            hosts.append(entry)
        doc = {"ssh": {"user": "root", "port": SSH_PORT, "keyPath": str(self.client / "id_ed25519"),
                       "knownHosts": str(known_hosts or self.client / "known_hosts")},
               "mke": {"file": str(mke or start_file())},
               "hosts": hosts + (extra or [])}
        path = path or BASE / "cluster.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def tool(self, *args: str, timeout: float = 1800,
             watch: Callable[[str], None] | None = None) -> subprocess.CompletedProcess[str]:
        """dist/mke cluster ... from the client namespace (its own runtime dir: the machine's stays untouched);
        ``watch`` sees each line of its progress (stderr) as it comes."""
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.client), "MKE_RUNTIME_DIR": str(BASE / "runtime")}
        argv = ["nsenter", "--net=/run/netns/mkc-client", "--", str(mke_file()), "cluster", *args]
        t = time.monotonic()
        if watch is None:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        else:
            p = watched(argv, env, timeout, watch)
        took = time.monotonic() - t
        print(f"\n[cluster-tool] mke cluster {' '.join(args)}: exit {p.returncode} in {took:.1f}s\n{p.stderr[-6000:]}",
              file=sys.stderr)
        p.took = took  # type: ignore[attr-defined]
        return p

    def teardown(self) -> None:
        for s in self.hosts.values():
            try:
                s.stop_mke()
            except Exception as e:  # noqa: BLE001 - go on: every host must be torn down
                print(f"[cluster-tool] teardown {s.name}: {e}", file=sys.stderr)
        for s in self.hosts.values():
            s.destroy()
        release_nsdir(BASE / "hosts")
        self.network.destroy()


def watched(argv: list[str], env: dict[str, str], timeout: float,
            watch: Callable[[str], None]) -> subprocess.CompletedProcess[str]:
    """``argv`` run with its stderr read line by line (``watch`` on each) and its stdout kept."""
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        err: list[str] = []
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            for line in proc.stderr:  # type: ignore[union-attr]
                err.append(line)
                watch(line)
            proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reader.join(30)
    return subprocess.CompletedProcess(argv, proc.returncode, "".join(out), "".join(err))


def clean_slate() -> None:
    """What an interrupted run left under BASE: its hosts' mke stopped, mounts and namespaces gone."""
    if not BASE.exists():
        Network(prefix="mkc-").destroy()
        return
    from tests.e2e.cluster import stop_holder

    for d in (BASE / "hosts").glob("*/var-lib/mke"):
        stop_holder(d)
    for ns in (BASE / "hosts" / ".mntns").glob("*"):
        subprocess.run(["umount", "-l", str(ns)], capture_output=True, check=False)
    release_nsdir(BASE / "hosts")
    Network(prefix="mkc-").destroy()
    shutil.rmtree(BASE, ignore_errors=True)


@pytest.fixture(scope="module")
def hosts():
    from tests.e2e.conftest import require

    require()
    if not Path("/usr/sbin/sshd").exists():
        pytest.fail("/usr/sbin/sshd is missing: apt-get install openssh-server (scripts/bootstrap.sh does)")
    clean_slate()
    BASE.mkdir(parents=True)
    h = Hosts()
    try:
        h.create()
        h.known_hosts(h.client / "known_hosts")
        yield h
    finally:
        if not os.environ.get("MKE_E2E_KEEP"):
            h.teardown()
            shutil.rmtree(BASE, ignore_errors=True)
        print(f"[cluster-tool] timings: {h.timings}", file=sys.stderr)


def error_lines(p: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in p.stderr.splitlines() if line.startswith("mke: error: ")]


def test_unreachable_host_stops_at_connect_naming_it(hosts):
    path = hosts.cluster_file([*CONTROLLERS, *WORKERS], BASE / "unreachable.yaml",
                              extra=[{"address": "10.200.0.99", "role": "worker", "name": "gone"}])
    p = hosts.tool("apply", "-c", str(path), timeout=120)
    assert p.returncode == ClusterError.exit_code, p.stderr
    lines = error_lines(p)
    assert lines[0] == "mke: error: host: gone (10.200.0.99)", lines
    assert lines[1] == "mke: error: step: connect: ssh connect", lines
    assert lines[2].startswith("mke: error: error: 10.200.0.99 port 2222: "), lines
    assert not (hosts.hosts["c1"].dir / "bin" / "mke").exists()  # stopped before changing anything


def test_wrong_host_key_is_refused_naming_the_host(hosts):
    other = keygen(BASE / "other_key", "someone-else")
    known = hosts.known_hosts(BASE / "wrong_known_hosts", wrong={"c2": other})
    p = hosts.tool("apply", "-c", str(hosts.cluster_file([*CONTROLLERS, *WORKERS], BASE / "wrong.yaml",
                                                         known_hosts=known)), timeout=120)
    assert p.returncode == ClusterError.exit_code, p.stderr
    lines = error_lines(p)
    assert lines[0] == f"mke: error: host: c2 ({hosts.hosts['c2'].host.address})", lines
    assert lines[1] == "mke: error: step: connect: ssh host key", lines
    assert "does not match the one in" in lines[2], lines
    # an unknown host is refused too, unless --accept-new-host-keys
    empty = BASE / "empty_known_hosts"
    empty.write_text("")
    path = hosts.cluster_file(["c1"], BASE / "unknown.yaml", known_hosts=empty)
    p = hosts.tool("status", "-c", str(path), timeout=120)
    assert "is not in" in p.stdout + p.stderr and "--accept-new-host-keys" in p.stdout + p.stderr


def test_host_failing_sysinfo_stops_naming_host_and_check(hosts):
    w2 = hosts.hosts["w2"]
    w2.hold_port(10250)  # kubelet's port, taken
    try:
        p = hosts.tool("apply", "-c", str(hosts.cluster_file([*CONTROLLERS, *WORKERS], BASE / "sysinfo.yaml")))
    finally:
        w2.release_ports()
    assert p.returncode == ClusterPreflightError.exit_code, p.stderr
    lines = error_lines(p)
    assert lines[0] == f"mke: error: host: w2 ({w2.host.address})", lines
    assert lines[1] == "mke: error: step: preflight: mke sysinfo", lines
    assert "FAIL port 10250" in lines[2], lines
    assert not (hosts.hosts["c1"].dir / "var-lib" / "mke-detached").exists()  # nothing installed anywhere


def test_apply_builds_three_controllers_and_two_workers(hosts):
    path = hosts.cluster_file([*CONTROLLERS, *WORKERS])
    p = hosts.tool("apply", "-c", str(path))
    assert p.returncode == 0, p.stderr
    hosts.timings["apply 5 hosts"] = round(p.took, 1)
    kc = hosts.tool("kubeconfig", "-c", str(path))
    assert kc.returncode == 0, kc.stderr
    (BASE / "admin.conf").write_text(kc.stdout)
    nodes = ready_nodes()
    assert nodes == {"w1": True, "w2": True}
    with InNetns("mkc-client"):
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=str(BASE / "admin.conf"))
        slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
            "default", label_selector="kubernetes.io/service-name=kubernetes")
        addresses = sorted(a for s in slices.items for e in s.endpoints or [] for a in e.addresses)
        api.close()
    assert addresses == sorted(hosts.hosts[c].host.address for c in CONTROLLERS)  # three API servers


def ready_nodes() -> dict[str, bool]:
    with InNetns("mkc-client"):
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=str(BASE / "admin.conf"))
        try:
            items = client.CoreV1Api(api).list_node().items
        finally:
            api.close()
    return {n.metadata.name: any(c.type == "Ready" and c.status == "True" for c in n.status.conditions)
            for n in items}


def test_second_apply_changes_nothing(hosts):
    p = hosts.tool("apply", "-c", str(BASE / "cluster.yaml"))
    assert p.returncode == 0, p.stderr
    hosts.timings["second apply"] = round(p.took, 1)
    assert "no change:" in p.stderr
    for word in ("uploaded", "installed", "started", "config written"):
        assert word not in p.stderr, word
    st = hosts.tool("status", "-c", str(BASE / "cluster.yaml"))
    assert st.returncode == 0, st.stdout + st.stderr
    rows = {line.split()[1]: line.split() for line in st.stdout.splitlines()[1:6]}
    assert set(rows) == {*CONTROLLERS, *WORKERS}, st.stdout
    assert all(r[5] == "running" for r in rows.values()), st.stdout
    assert rows["w1"][-1] == "Ready" and rows["c1"][-1] == "-", st.stdout
    assert "health: ok" in st.stdout


def test_a_host_dying_during_apply_stops_naming_it(hosts):
    """The added worker's host dies (its link goes down, then every process in it is killed: no
    FIN, no RST, as a power cut) as soon as the tool has connected to it, while it is probed
    (then uploaded to); the tool notices by its SSH keepalives and stops naming the host and the
    step. The host comes back (link up, sshd again) for the next test's re-run."""
    w3 = hosts.add(ADDED, 7)  # 1-5: c1-c3, w1, w2; 6: the client
    hosts.known_hosts(hosts.client / "known_hosts")
    path = hosts.cluster_file([*CONTROLLERS, *WORKERS, ADDED])
    killed: list[float] = []

    def power_cut(line: str) -> None:
        if not killed and line.strip().split(" ", 1)[-1].startswith(f"[{ADDED} (") and " connected as " in line:
            w3.power_cut()
            killed.append(time.monotonic())

    p = hosts.tool("apply", "-c", str(path), watch=power_cut, timeout=600)
    assert killed, p.stderr
    assert p.returncode != 0, p.stderr
    lines = error_lines(p)
    assert lines[0] == f"mke: error: host: {ADDED} ({w3.host.address})", lines
    assert lines[1].startswith("mke: error: step: "), lines
    assert any(w in lines[2] for w in ("keepalive", "SSH connection", "onnection lost", "no end after")), lines
    hosts.timings["apply: a host cut off after connect, seconds to stop"] = round(time.monotonic() - killed[0], 1)
    assert ready_nodes() == {"w1": True, "w2": True}  # the rest of the cluster untouched
    w3.power_on()


def test_an_added_worker_joins_alone(hosts):
    """After the fault (the host back), the same apply again: just that host joins."""
    if ADDED not in hosts.hosts:
        hosts.add(ADDED, 7)
        hosts.known_hosts(hosts.client / "known_hosts")
    path = hosts.cluster_file([*CONTROLLERS, *WORKERS, ADDED])
    p = hosts.tool("apply", "-c", str(path))
    assert p.returncode == 0, p.stderr
    hosts.timings["apply adding 1 worker"] = round(p.took, 1)
    changed = {line.split("[", 1)[1].split(" ", 1)[0] for line in p.stderr.splitlines()
               if "[" in line and any(w in line for w in ("uploaded", "installed", "started"))}
    assert changed == {ADDED}, p.stderr
    assert ready_nodes() == {"w1": True, "w2": True, ADDED: True}


SECURE = {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 65535,
          "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def deployment(name: str, replicas: int, node: str | None = None) -> dict:
    spec = {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10.2", "imagePullPolicy": "Never",
                            "securityContext": SECURE}], "terminationGracePeriodSeconds": 1}
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}


def budget(name: str, **spec: object) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}}, **spec}}


def running_digests(hosts: Hosts) -> dict[str, str | None]:
    """host -> sha256 of the mke file its running mke started from (asked by mke cluster probe there)."""
    out = {}
    for name, s in hosts.hosts.items():
        p = s.mke("cluster", "probe", "--data-dir", "/var/lib/mke", "--file", "/usr/local/bin/mke")
        out[name] = json.loads(p.stdout).get("running_sha256") if p.returncode == 0 else None
    return out


def test_rolling_upgrade_host_by_host_with_the_api_answering(hosts):
    if start_file() == mke_file():
        pytest.skip("MKE_E2E_PREVIOUS is not set: the cluster runs dist/mke already, there is no second build to "
                    "upgrade to (give the previous release's mke file)")
    from kubernetes import client, config
    from kubernetes.utils import create_from_dict

    old, new = sha256(start_file()), sha256(mke_file())
    assert old != new
    path = hosts.cluster_file([*CONTROLLERS, *WORKERS, ADDED], BASE / "cluster-new.yaml", mke=mke_file())
    with InNetns("mkc-client"):
        api = config.new_client_from_config(config_file=str(BASE / "admin.conf"))
        core = client.CoreV1Api(api)
        core.create_namespaced_config_map("default", client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="sampled"), data={"made": "before the upgrade"}))
        # web: 3 pods that move one at a time (maxUnavailable 1); pinned: one pod on w1 that its
        # budget (minAvailable 1) does not let go: the first upgrade run stops at w1, naming both
        for obj in (deployment("web", 3), budget("web", maxUnavailable=1), deployment("pinned", 1, node="w1"),
                    budget("pinned", minAvailable=1)):
            create_from_dict(api, obj, namespace="default")
        apps = client.AppsV1Api(api)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            ds = {d: apps.read_namespaced_deployment(d, "default").status.available_replicas or 0
                  for d in ("web", "pinned")}
            if ds == {"web": 3, "pinned": 1}:
                break
            time.sleep(2)
        assert ds == {"web": 3, "pinned": 1}, ds
    addresses = {c: hosts.hosts[c].host.address for c in CONTROLLERS}
    sampler = Sampler("mkc-client", BASE / "admin.conf", addresses, "sampled")
    sampler.start()
    first = second = None
    try:
        first = hosts.tool("upgrade", "-c", str(path), "--drain-timeout", "30")
        assert first.returncode == ClusterDrainError.exit_code, first.stderr
        lines = error_lines(first)
        assert lines[0] == f"mke: error: host: w1 ({hosts.hosts['w1'].host.address})", lines
        assert lines[1] == "mke: error: step: drain: drain node w1", lines
        assert "not drained after 30s: pod default/pinned-" in lines[2], lines
        assert "PodDisruptionBudget default/pinned does not allow its eviction" in lines[2], lines
        digests = running_digests(hosts)  # w2, w3 run the old file, whose probe cannot tell (None)
        assert {n: digests[n] for n in [*CONTROLLERS, "w1"]} == {**dict.fromkeys(CONTROLLERS, new), "w1": old}, digests
        for w in ("w2", ADDED):  # untouched: not even uploaded to
            assert sha256(hosts.hosts[w].dir / "bin" / "mke") == old, w
        with InNetns("mkc-client"):
            client.PolicyV1Api(api).delete_namespaced_pod_disruption_budget("pinned", "default")
        second = hosts.tool("upgrade", "-c", str(path), "--drain-timeout", "120")
        assert second.returncode == 0, second.stderr
    finally:
        figures = sampler.finish()
        hosts.timings["upgrade sampler (both runs)"] = figures
        for key, p in (("upgrade: controllers, stopped at w1 by its budget (30 s drain timeout)", first),
                       ("upgrade: the re-run (controllers skipped, 3 workers)", second)):
            if p is not None:
                hosts.timings[key] = round(p.took, 1)
    for c in CONTROLLERS:
        assert f"[{c} ({hosts.hosts[c].host.address})] skipped: runs the target file already" in second.stderr
    for w in ("w1", "w2", ADDED):
        assert f"[{w} ({hosts.hosts[w].host.address})] upgraded in" in second.stderr, w
    assert running_digests(hosts) == dict.fromkeys(hosts.hosts, new)
    assert figures["samples_unanswered"] == 0, figures
    with InNetns("mkc-client"):
        nodes = core.list_node().items
        assert {n.metadata.name: bool(n.spec.unschedulable) for n in nodes} == dict.fromkeys(["w1", "w2", ADDED], False)
        assert core.read_namespaced_config_map("sampled", "default").data == {"made": "before the upgrade"}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # the last worker's pods start again elsewhere
            ds = {d: apps.read_namespaced_deployment(d, "default").status.available_replicas or 0
                  for d in ("web", "pinned")}
            if ds == {"web": 3, "pinned": 1}:
                break
            time.sleep(2)
        api.close()
    assert ds == {"web": 3, "pinned": 1}, ds
    again = hosts.tool("upgrade", "-c", str(path))
    assert again.returncode == 0 and "no change: every host runs this mke file" in again.stderr, again.stderr
    hosts.timings["upgrade: third run, no change"] = round(again.took, 1)
    # etcd ran as root under the previous file (mke before CIS 1.1.12); the new one runs it as the
    # system user etcd (these hosts share the machine's /etc) and gave it the data dir the old one
    # wrote: CIS 1.1.12's own audit (`stat -c %U:%G` of --data-dir) and the process's ids
    for c in CONTROLLERS:
        h = hosts.hosts[c]
        owner = subprocess.run(h.wrap(["stat", "-c", "%U:%G %a", "/var/lib/mke/etcd"]), capture_output=True,
                               text=True, check=True).stdout.split()
        assert owner == ["etcd:etcd", "700"], (c, owner)
        status = json.loads(h.outside("/var/lib/mke/run/status.json").read_text())
        pid = next(x["pid"] for x in status["components"] if x["name"] == "etcd")
        uid = Path(f"/proc/{pid}/status").read_text().split("\nUid:\t", 1)[1].split("\n", 1)[0].split()
        assert uid == [str(pwd.getpwnam("etcd").pw_uid)] * 4, (c, uid)


def test_cold_start_every_controller_stopped_then_apply(hosts):
    path = BASE / "cluster-new.yaml" if (BASE / "cluster-new.yaml").exists() else BASE / "cluster.yaml"
    for c in CONTROLLERS:
        p = hosts.hosts[c].mke("stop", "controller", timeout=300)
        assert p.returncode == 0, (c, p.stdout, p.stderr)
    st = hosts.tool("status", "-c", str(path))
    assert "no controller's API is ready" in st.stdout, st.stdout
    p = hosts.tool("apply", "-c", str(path))
    assert p.returncode == 0, p.stderr
    hosts.timings["cold start: apply with 3 controllers down"] = round(p.took, 1)
    assert "no controller runs; 3 have joined before: starting them together" in p.stderr
    assert ready_nodes() == dict.fromkeys(["w1", "w2", ADDED], True)
    st = hosts.tool("status", "-c", str(path))
    assert st.returncode == 0 and "health: ok" in st.stdout, st.stdout


def test_backup_is_fetched_and_checked(hosts):
    path = BASE / "cluster-new.yaml" if (BASE / "cluster-new.yaml").exists() else BASE / "cluster.yaml"
    out = BASE / "backups" / "cluster.tar.zst"
    with InNetns("mkc-client"):
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=str(BASE / "admin.conf"))
        client.CoreV1Api(api).create_namespaced_config_map("default", client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="in-backup"), data={"made": "before the backup"}))
        api.close()
    p = hosts.tool("backup", "-c", str(path), "--out", str(out))
    assert p.returncode == 0, p.stderr
    hosts.timings["backup"] = round(p.took, 1)
    assert out.stat().st_mode & 0o777 == 0o600
    assert "matches the controller's" in p.stderr and "files match the manifest" in p.stderr
    check = subprocess.run([str(mke_file()), "restore", "--check", str(out)], capture_output=True, text=True,
                           timeout=300, env={"PATH": "/usr/bin:/bin", "MKE_RUNTIME_DIR": str(BASE / "runtime")})
    assert check.returncode == 0 and ": OK:" in check.stdout, check.stdout + check.stderr
    left = [x.name for x in (hosts.hosts["c1"].dir / "var-lib" / "mke" / "cluster").iterdir()]
    assert not [x for x in left if "backup" in x], left  # the controller's copy is gone
    assert not [x for x in out.parent.iterdir() if x.name.startswith(".")]  # no temp file left here


def test_reset_leaves_every_host_clean(hosts):
    path = BASE / "cluster.yaml"
    p = hosts.tool("reset", "-c", str(path))  # no terminal, no --force: refused, nothing done
    assert p.returncode == 2 and "--force" in p.stderr
    assert (hosts.hosts["c1"].dir / "bin" / "mke").exists()
    p = hosts.tool("reset", "-c", str(path), "--force")
    assert p.returncode == 0, p.stderr
    for name, s in hosts.hosts.items():
        assert not (s.dir / "bin" / "mke").exists(), name
        assert not any((s.dir / "var-lib" / "mke-detached").glob("mke-*")), name
        left = [x.name for x in (s.dir / "var-lib" / "mke").iterdir()] if (s.dir / "var-lib" / "mke").exists() else []
        assert set(left) <= {"runtime"}, (name, left)  # the entry's staged runtime: mke's own program
        check = subprocess.run(s.wrap([str(mke_file()), "reset", "--check", "--data-dir", "/var/lib/mke",
                                       "--cgroup-root", f"/mkc-{name}"]), capture_output=True, text=True,
                               timeout=120, env={"PATH": "/usr/bin:/bin", "MKE_RUNTIME_DIR": str(BASE / "runtime")})
        assert check.returncode == 0, (name, check.stdout, check.stderr)


def test_restore_builds_the_cluster_again_from_the_backup(hosts):
    """After the reset: the cluster of the backup on the same hosts, with the same CA (the admin
    kubeconfig from before works) and its objects."""
    path = BASE / "cluster-new.yaml" if (BASE / "cluster-new.yaml").exists() else BASE / "cluster.yaml"
    archive = BASE / "backups" / "cluster.tar.zst"
    if not archive.exists():
        pytest.fail("no backup archive: test_backup_is_fetched_and_checked did not run or failed")
    p = hosts.tool("restore", "-c", str(path), str(archive))
    assert p.returncode == 0, p.stderr
    hosts.timings["restore (then apply), 6 hosts"] = round(p.took, 1)
    assert "restored cluster" in p.stderr and "archive uploaded to" in p.stderr
    assert ready_nodes() == dict.fromkeys(["w1", "w2", ADDED], True)  # the kubeconfig from before the backup
    with InNetns("mkc-client"):
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=str(BASE / "admin.conf"))
        cm = client.CoreV1Api(api).read_namespaced_config_map("in-backup", "default")
        api.close()
    assert cm.data == {"made": "before the backup"}
    again = hosts.tool("restore", "-c", str(path), str(archive), timeout=120)  # now they hold a cluster
    assert again.returncode == ClusterRestoreError.exit_code, again.stderr
    assert "it holds a cluster already (running)" in again.stderr
    p = hosts.tool("reset", "-c", str(path), "--force")
    assert p.returncode == 0, p.stderr
