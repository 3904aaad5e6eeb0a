"""``mke cluster`` over real SSH: Debian's OpenSSH server in each test host (tests/e2e/sshhost.py),
the real dist/mke as the tool and as the file it ships, the Python kubernetes client as judge.

3 controllers + 2 workers from one cluster file; a second apply changes nothing; an added worker
joins alone; reset leaves every host clean. Faults first (they change nothing that the apply
after them does not redo): an unreachable host, a wrong host key, a host failing sysinfo, each
stopping with the host and the step named, and the phase's exit code.

Run alone: ``flock /var/tmp/mke-e2e.lock env MKE_E2E_SKIP_BUILD=1 MKE_E2E_NO_CONFORMANCE=1
nox -s e2e -- -k cluster_tool``. Everything lives under /var/tmp/mke-cluster-test, in netns
``mkc-*``; the teardown stops every process it or mke started and removes every mount.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mke.errors import ClusterError, ClusterPreflightError
from tests.e2e.cluster import mke_file
from tests.e2e.netns import InNetns, Network
from tests.e2e.sshhost import SSH_PORT, SSHHost, keygen, release_nsdir

BASE = Path("/var/tmp/mke-cluster-test")
CONTROLLERS = ["c1", "c2", "c3"]
WORKERS = ["w1", "w2"]
ADDED = "w3"
EVICTION = "memory.available<50Mi,nodefs.available<1%,nodefs.inodesFree<1%,imagefs.available<1%"


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
                     extra: list[dict] | None = None) -> Path:
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
               "mke": {"file": str(mke_file())},
               "hosts": hosts + (extra or [])}
        path = path or BASE / "cluster.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def tool(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        """dist/mke cluster ... from the client namespace (its own runtime dir: the machine's stays untouched)."""
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.client), "MKE_RUNTIME_DIR": str(BASE / "runtime")}
        t = time.monotonic()
        p = subprocess.run(["nsenter", "--net=/run/netns/mkc-client", "--", str(mke_file()), "cluster", *args],
                           capture_output=True, text=True, timeout=timeout, env=env, check=False)
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


def test_an_added_worker_joins_alone(hosts):
    hosts.add(ADDED, 7)  # 1-5: c1-c3, w1, w2; 6: the client
    hosts.known_hosts(hosts.client / "known_hosts")
    path = hosts.cluster_file([*CONTROLLERS, *WORKERS, ADDED])
    p = hosts.tool("apply", "-c", str(path))
    assert p.returncode == 0, p.stderr
    hosts.timings["apply adding 1 worker"] = round(p.took, 1)
    changed = {line.split("[", 1)[1].split(" ", 1)[0] for line in p.stderr.splitlines()
               if "[" in line and any(w in line for w in ("uploaded", "installed", "started"))}
    assert changed == {ADDED}, p.stderr
    assert ready_nodes() == {"w1": True, "w2": True, ADDED: True}


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
