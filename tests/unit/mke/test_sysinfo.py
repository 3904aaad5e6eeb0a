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


def _limited_host(tmp_path: Path, *, v1: bool) -> Path:
    """A /proc whose process sits in a cgroup two levels down, its parent limited to 2 GiB, on a
    host of 8 GB: cgroup v2 (memory.max) or v1's memory controller (memory.limit_in_bytes)."""
    proc, mnt = tmp_path / "proc", tmp_path / ("cg v1" if v1 else "cg")  # a space: mountinfo escapes it
    leaf = mnt / "system.slice" / "mke.service"
    leaf.mkdir(parents=True)
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text("MemTotal:       8000000 kB\n")
    name = "memory.limit_in_bytes" if v1 else "memory.max"
    (leaf / name).write_text("9223372036854771712\n" if v1 else "max\n")  # no limit of its own
    (leaf.parent / name).write_text("2147483648\n")
    (mnt / name).write_text("max\n")
    escaped = str(mnt).replace(" ", "\\040")
    if v1:
        (proc / "self" / "cgroup").write_text("5:memory:/system.slice/mke.service\n1:cpu,cpuacct:/\n0::/\n")
        (proc / "self" / "mountinfo").write_text(
            f"30 25 0:26 / {escaped} rw,nosuid shared:9 - cgroup cgroup rw,memory\n"
            "31 25 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu,cpuacct\n")
    else:
        (proc / "self" / "cgroup").write_text("0::/system.slice/mke.service\n")
        (proc / "self" / "mountinfo").write_text(
            "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
            f"26 22 0:23 / {escaped} rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n")
    return proc


@pytest.mark.parametrize("v1", [False, True], ids=["cgroup-v2", "cgroup-v1"])
def test_usable_memory_is_the_cgroups_limit_when_it_is_lower(tmp_path, v1):
    proc = _limited_host(tmp_path, v1=v1)
    assert sysinfo.usable_memory(proc) == 2 << 30
    (proc / "meminfo").write_text("MemTotal:       1000000 kB\n")  # a host smaller than the limit
    assert sysinfo.usable_memory(proc) == 1000000 * 1024


def test_usable_memory_without_a_limit_or_cgroups_is_the_hosts(tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text("MemTotal:       8000000 kB\n")
    assert sysinfo.usable_memory(proc) == 8000000 * 1024  # no /proc/self/cgroup
    (proc / "self").mkdir()
    (proc / "self" / "cgroup").write_text("0::/\n")
    (proc / "self" / "mountinfo").write_text("26 22 0:23 / /nonexistent/cgroup rw - cgroup2 cgroup2 rw\n")
    assert sysinfo.usable_memory(proc) == 8000000 * 1024


def test_usable_memory_of_a_process_in_a_real_memory_cgroup():
    """The kernel's own files: a child moved into a new memory cgroup limited to 1.5 GiB reads it
    (the cgroup bench_server's small controller runs in), and the cgroup is gone after."""
    from tests.support.cgroups import CgroupUnavailable, memory_cgroup

    try:
        with memory_cgroup(3 << 29) as procs:
            code = ("import os, sys; open(sys.argv[1], 'w').write(str(os.getpid()));"
                    "from mke.node.sysinfo import usable_memory; print(usable_memory())")
            out = subprocess.run([sys.executable, "-c", code, str(procs)], capture_output=True, text=True,
                                 env={**os.environ, "PYTHONPATH": str(REPO)}, check=True).stdout
            assert int(out) == 3 << 29
    except CgroupUnavailable as e:
        pytest.skip(str(e))
    assert not procs.parent.exists()


def test_the_memory_check_reads_the_cgroups_limit(tmp_path):
    info = host(tmp_path)
    info.roles = ("controller",)
    limited = _limited_host(tmp_path / "limited", v1=False)
    info.proc = limited
    got = by_name(info.run())["memory"]
    assert got.verdict == PASS and got.detail == "2.0 GiB (its cgroup's limit; the host has 7.6)"
    (limited.parent / "cg" / "system.slice" / "memory.max").write_text("536870912\n")
    got = by_name(info.run())["memory"]
    assert got.verdict == WARN and got.detail.startswith("0.5 GiB (its cgroup's limit")
