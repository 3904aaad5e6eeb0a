"""kube-router's routes and policy rules that its own --cleanup-config leaves: mke/node/netlink.py
reads and deletes them, only inside the cluster's pod CIDR (a host's FRR uses protocol 17 too).

Runs in a fresh network namespace (``unshare --net``: everything dies with it); the routes
and rules are set up with the host's ``ip`` (iproute2), which only the test needs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[4]

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"),
                                reason="needs root, unshare(1) and ip(8)")

SETUP = """
ip link set lo up
ip link add d0 type veth peer name d1 && ip addr add 10.9.0.1/24 dev d0 && ip link set d1 up && ip link set d0 up
ip route add 10.244.5.0/24 via 10.9.0.2 proto 17      # kube-router's: another node's pod CIDR
ip route add 192.168.77.0/24 via 10.9.0.2 proto 17    # a routing daemon's on the host: not ours
ip route add 10.244.6.0/24 via 10.9.0.2 proto static  # not kube-router's protocol
ip rule add from 10.244.1.0/24 lookup 77              # kube-router's tunnel rule
ip rule add from 172.16.0.0/16 lookup 77              # the host's own
"""

CHECK = """
import sys
from pathlib import Path
from mke.network.kuberouter import PROVIDER
from mke.node import netlink
from mke.worker.context import WorkerPaths
from mke.worker.join import WorkerSettings

paths = WorkerPaths(Path(sys.argv[1]))
paths.worker_dir.mkdir(parents=True)
WorkerSettings.from_data({"podCIDR": "10.244.0.0/16"}, "test").save(paths.settings)
print(sorted(PROVIDER.leftovers(paths)))
said = []
print(PROVIDER.cleanup(paths, said.append))
print(PROVIDER.leftovers(paths))
print(sorted(r.dst for r in netlink.routes(17)), sorted(r.source for r in netlink.rules(77)))
print(len(said))
"""


def test_cleanup_removes_kube_routers_routes_and_rules_and_nothing_else(tmp_path):
    script = SETUP + f'exec {sys.executable} -c "$1" {tmp_path / "data"}\n'
    proc = subprocess.run(["unshare", "--net", "sh", "-ec", script, "sh", CHECK], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert proc.returncode == 0, proc.stderr
    before, problems, after, left, said = proc.stdout.splitlines()
    assert before == str(sorted(["route 10.244.5.0/24 proto 17", "rule from 10.244.1.0/24 lookup 77"]))
    assert problems == "[]" and after == "[]"
    assert left == "['192.168.77.0/24'] ['172.16.0.0/16']"  # the host's own stay
    assert said == "2"


FAILING = """
import sys
from pathlib import Path
from mke.network.kuberouter import CONFLIST, PROVIDER
from mke.worker.cleanup import bin_dirs
from mke.worker.context import WorkerPaths
from mke.worker.join import WorkerSettings

paths = WorkerPaths(Path(sys.argv[1]))
paths.worker_dir.mkdir(parents=True)
WorkerSettings.from_data({"podCIDR": "10.244.0.0/16"}, "test").save(paths.settings)
paths.cni_conf_dir.mkdir(parents=True)
(paths.cni_conf_dir / CONFLIST).write_text("{}")
tool = bin_dirs(paths)[0] / "kube-router"
tool.parent.mkdir(parents=True, exist_ok=True)
tool.write_text(sys.argv[2])
tool.chmod(0o755)
said = []
print(PROVIDER.cleanup(paths, said.append))
print(said[0])
"""

# A stand-in for kube-router (the real one would change this host's iptables): it fails as the
# real one does when an ipset is still in use, then logs at info level.
STAND_IN = """#!/bin/sh
echo 'I1128 14:02:03.000001 1 cleanup.go:10] Cleaning up' >&2
echo 'E1128 14:02:03.000002 1 cleanup.go:20] Failed to destroy ipset kube-router-pod-subnets: in use' >&2
echo 'I1128 14:02:03.000003 1 cleanup.go:30] Done' >&2
exit 1
"""


def test_a_failed_kube_router_cleanup_is_said_with_its_error_line_not_a_problem(tmp_path):
    """reset removes what kube-router's --cleanup-config left (and reports what it could not):
    its exit status alone must not fail reset, and the line says kube-router's error, not its
    last info line."""
    script = f'ip link set lo up; exec {sys.executable} -c "$1" {tmp_path / "data"} "$2"\n'
    proc = subprocess.run(["unshare", "--net", "sh", "-ec", script, "sh", FAILING, STAND_IN], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert proc.returncode == 0, proc.stderr
    problems, said = proc.stdout.splitlines()
    assert problems == "[]"
    assert said == ("kube-router --cleanup-config exited 1 (E1128 14:02:03.000002 1 cleanup.go:20] Failed to destroy "
                    "ipset kube-router-pod-subnets: in use): mke removes what it left")


def test_klog_error_picks_the_last_error_line():
    from mke.network.kuberouter import klog_error

    assert klog_error("I1 a\nE1128 00:00:00.1 x] bad\nI1128 00:00:00.2 y] fine\n") == "E1128 00:00:00.1 x] bad"
    assert klog_error("plain\nlast\n") == "last"
    assert klog_error("") == "no output"
