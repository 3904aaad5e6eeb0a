"""mke worker's flags are checked before anything starts (issue 19): before, a bad --label, --name
or --node-ip was found by kubelet only after containerd had started and the data dir was written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mke.errors import UsageError
from mke.node.hostinfo import check_node_name
from mke.worker.kubelet import check_label, check_node_ip

REPO = Path(__file__).resolve().parents[4]


@pytest.mark.parametrize("label", ["role=db", "example.com/tier=", "kubelet.kubernetes.io/x=y",
                                   "node.kubernetes.io/instance-type=m5", "topology.kubernetes.io/zone=a",
                                   "sub.node.kubernetes.io/x=1", "a_b.c-d=E_f.1"])
def test_good_labels(label):
    assert check_label(label) == tuple(label.split("=", 1))


@pytest.mark.parametrize("label,why", [
    ("role", "expected KEY=VALUE"),
    ("=x", "not a label key"),
    ("-bad=x", "not a label key"),
    ("Example.com/x=y", "not a label key"),
    ("/x=y", "not a label key"),
    ("k=" + "v" * 64, "not a label value"),
    ("k=bad value", "not a label value"),
    ("node-role.kubernetes.io/worker=true", "may not set node-role.kubernetes.io/"),
    ("kubernetes.io/role=x", "may not set kubernetes.io/"),
    ("x.k8s.io/y=z", "may not set x.k8s.io/"),
])
def test_bad_labels(label, why):
    with pytest.raises(UsageError, match=f"--label {label!r}") as e:
        check_label(label)
    assert why in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["w1", "node-1.example.com", "a" * 253])
def test_good_names(name):
    assert check_node_name(name) == name


@pytest.mark.parametrize("name", ["", "-w1", "w_1", "w1.", "a" * 254, "w 1"])
def test_bad_names(name):
    with pytest.raises(UsageError, match="--name"):
        check_node_name(name)


def test_node_ip_must_be_an_address_of_the_host():
    assert check_node_ip("10.0.0.5", ("10.0.0.5", "fd00::5")) == "10.0.0.5"
    assert check_node_ip("fd00:0::5", ("10.0.0.5", "fd00::5")) == "fd00::5"
    for bad, why in (("10.0.0.6", "not an address of this host (it has: 10.0.0.5)"), ("nope", "not an IP"),
                     ("127.0.0.1", "loopback"), ("0.0.0.0", "unspecified"), ("224.0.0.1", "multicast")):
        with pytest.raises(UsageError, match="--node-ip") as e:
            check_node_ip(bad, ("10.0.0.5",))
        assert why in str(e.value)


@pytest.mark.parametrize("flags", [["--label", "node-role.kubernetes.io/worker="], ["--name", "Bad_Name"],
                                   ["--node-ip", "192.0.2.123"]])
def test_the_worker_stops_before_writing_anything(tmp_path, flags):
    data = tmp_path / "data"
    res = subprocess.run([sys.executable, "-m", "mke", "worker", "--data-dir", str(data), *flags, "sometoken"],
                         capture_output=True, text=True, cwd=REPO, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == UsageError.exit_code, res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("mke: error: --"), res.stderr
    assert not data.exists()
