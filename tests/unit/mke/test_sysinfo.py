"""mke/node/sysinfo.py and `mke sysinfo`: host checks from files (a host built in tmp_path),
real sockets for the port checks, and the preflight that server and worker run first."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mke.errors import PreflightError
from mke.node import sysinfo
from mke.node.sysinfo import FAIL, PASS, WARN, SysInfo

REPO = Path(__file__).resolve().parents[3]
GOOD_CONFIG = "\n".join(f"CONFIG_{o}=y" for o in (*sysinfo.KERNEL_REQUIRED, *sysinfo.KERNEL_OPTIONAL))


def host(tmp_path: Path, *, config: str | None = GOOD_CONFIG, cgroup2: str | None = "cpuset cpu io memory hugetlb pids",
         proc_cgroups: str = "", modules: tuple[str, ...] = ("overlay", "br_netfilter"), sysctls: dict | None = None
         ) -> SysInfo:
    proc, sys_, boot = tmp_path / "proc", tmp_path / "sys", tmp_path / "boot"
    for d in (proc / "sys" / "net" / "ipv4", sys_ / "fs" / "cgroup", sys_ / "module", boot):
        d.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (proc / "config.gz").write_bytes(gzip.compress(config.encode()))
    if cgroup2 is not None:
        (sys_ / "fs" / "cgroup" / "cgroup.controllers").write_text(cgroup2 + "\n")
    (proc / "cgroups").write_text("#subsys_name\thierarchy\tnum_cgroups\tenabled\n" + proc_cgroups)
    for m in modules:
        (sys_ / "module" / m).mkdir()
    for key, value in (sysctls or {"net.ipv4.ip_forward": "1"}).items():
        path = proc / "sys" / key.replace(".", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    (proc / "meminfo").write_text("MemTotal:       8000000 kB\nSwapTotal:             0 kB\n")
    (proc / "net").mkdir()
    return SysInfo(proc=proc, sys=sys_, boot=boot, release="6.1.0-13-amd64", data_dir=tmp_path / "data")


def by_name(results):
    return {r.name: r for r in results}


def test_a_good_host_passes(tmp_path):
    got = by_name(host(tmp_path).run())
    assert got["kernel"].verdict == PASS and got["CONFIG_MEMCG"].verdict == PASS
    assert got["cgroups"].detail == "v2 (unified)" and got["cgroup controller memory"].verdict == PASS
    assert got["module overlay"].verdict == PASS
    assert got["sysctl net.ipv4.ip_forward"].verdict == PASS
    assert got["memory"].verdict == PASS
    assert not [r for r in got.values() if r.verdict == FAIL and not r.name.startswith(("clock", "open files"))]


def test_a_missing_kernel_option_fails_and_an_optional_one_warns(tmp_path):
    cfg = GOOD_CONFIG.replace("CONFIG_MEMCG=y", "# CONFIG_MEMCG is not set").replace("CONFIG_IP_VS=y", "")
    got = by_name(host(tmp_path, config=cfg).kernel_options())
    assert got["CONFIG_MEMCG"].verdict == FAIL and "not set in" in got["CONFIG_MEMCG"].detail
    assert got["CONFIG_IP_VS"].verdict == WARN


def test_no_kernel_config_is_a_warning_not_a_failure(tmp_path):
    got = host(tmp_path, config=None).kernel_options()
    assert [r.verdict for r in got] == [WARN] and "not found" in got[0].detail


def test_old_kernel_warns(tmp_path):
    s = host(tmp_path)
    s.release = "4.14.1"
    assert s.kernel().verdict == WARN


def test_cgroup_v2_without_memory_fails(tmp_path):
    got = by_name(host(tmp_path, cgroup2="cpuset cpu pids").cgroups())
    assert got["cgroup controller memory"].verdict == FAIL and got["cgroup controller io"].verdict == WARN


def test_cgroup_v1_warns_and_checks_v1_controllers(tmp_path):
    rows = "".join(f"{c}\t1\t1\t1\n" for c in ("cpu", "cpuacct", "cpuset", "memory", "pids", "devices")) + "freezer\t0\t1\t0\n"
    got = by_name(host(tmp_path, cgroup2=None, proc_cgroups=rows).cgroups())
    assert got["cgroups"].verdict == WARN and "v1" in got["cgroups"].detail
    assert got["cgroup controller devices"].verdict == PASS and got["cgroup controller freezer"].verdict == FAIL


def test_modules_required_fail_others_warn_and_built_in_ones_pass(tmp_path):
    s = host(tmp_path, modules=())
    s.modules = ("overlay", "br_netfilter", "ipip", "xt_set")
    cfg = GOOD_CONFIG.replace("CONFIG_OVERLAY_FS=y", "CONFIG_OVERLAY_FS=m").replace("CONFIG_BRIDGE_NETFILTER=y",
                                                                                    "CONFIG_BRIDGE_NETFILTER=m")
    (tmp_path / "proc" / "config.gz").write_bytes(gzip.compress(cfg.encode()))
    got = by_name(s.kernel_modules())
    assert got["module overlay"].verdict == FAIL and got["module br_netfilter"].verdict == FAIL
    assert got["module ipip"].verdict == WARN
    assert got["module xt_set"].verdict == PASS and got["module xt_set"].detail == "built in"  # CONFIG_NETFILTER_XT_SET=y


def test_a_sysctl_mke_sets_warns(tmp_path):
    got = by_name(host(tmp_path, sysctls={"net.ipv4.ip_forward": "0"}).sysctls())
    assert got["sysctl net.ipv4.ip_forward"].verdict == WARN and "mke sets it to 1" in got["sysctl net.ipv4.ip_forward"].detail


def test_a_port_in_use_fails_naming_its_owner(tmp_path):
    s = host(tmp_path)
    s.proc = Path("/proc")  # the real sockets and processes
    with socket.socket() as ls:
        ls.bind(("0.0.0.0", 0))
        ls.listen()
        port = ls.getsockname()[1]
        s.ports = {port: "kube-apiserver (api.port)"}
        [r] = s.port_results()
        assert r.verdict == FAIL and f"pid {os.getpid()}" in r.detail and "kube-apiserver" in r.detail
        s.own_pids = frozenset({os.getpid()})  # a component a killed mke left: mke stops it first
        [r] = s.port_results()
        assert r.verdict == PASS and "stopped mke left" in r.detail
    [r] = s.port_results()
    assert r.verdict == PASS and r.detail.startswith("free")


def test_low_disk_fails(tmp_path, monkeypatch):
    s = host(tmp_path)
    real = os.statvfs(tmp_path)

    class Tiny:
        f_bavail, f_frsize, f_blocks = 100, real.f_frsize, 10**7

    monkeypatch.setattr(sysinfo.os, "statvfs", lambda p: Tiny)
    got = by_name(s.disk_and_memory())
    assert got["disk"].verdict == FAIL


def test_statfs_and_clock_read_the_real_host():
    assert sysinfo.statfs_type(Path("/proc")) == 0x9FA0  # PROC_SUPER_MAGIC
    assert sysinfo.clock_state() in {0, 1, 2, 3, 4, 5}


def test_sysinfo_command_json_and_exit_code():
    res = subprocess.run([sys.executable, "-m", "mke", "sysinfo", "--json", "--data-dir", "/var/lib/mke-sysinfo-test"],
                         capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    doc = json.loads(res.stdout)
    assert doc["verdict"] in (PASS, WARN, FAIL) and doc["checks"]
    assert res.returncode == (PreflightError.exit_code if doc["verdict"] == FAIL else 0), res.stderr
    assert not Path("/var/lib/mke-sysinfo-test").exists()  # sysinfo writes nothing


def test_server_stops_on_a_port_in_use_before_writing_anything(tmp_path):
    with socket.socket() as ls:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("0.0.0.0", 0))
        ls.listen()
        port = ls.getsockname()[1]
        cfg = tmp_path / "mke.yaml"
        cfg.write_text(f"api:\n  port: {port}\n")
        data = tmp_path / "data"
        res = subprocess.run([sys.executable, "-m", "mke", "server", "--config", str(cfg), "--data-dir", str(data)],
                             capture_output=True, text=True, cwd=REPO, timeout=60,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    if os.geteuid() != 0:
        pytest.skip("mke server needs root")
    assert res.returncode == PreflightError.exit_code, res.stderr
    lines = res.stderr.strip().splitlines()
    # every FAIL is listed, the first in the error (a server on the default ports, if the machine
    # runs one, adds its own); no WARN before a refused start
    assert any(f"sysinfo: port {port}: FAIL (in use by pid {os.getpid()} (" in line for line in lines), lines
    assert lines[-1].startswith("mke: error: sysinfo: port ") and "--ignore-sysinfo" in lines[-1]
    assert not [line for line in lines if ": WARN (" in line]
    assert not data.exists()
