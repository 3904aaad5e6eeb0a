"""``mke sysinfo`` of the real ``dist/mke`` (issue 19.3): on this machine, and on a host that
lacks the needed kernel modules and has a port taken (the acceptance's second case).

The second host is a network namespace of its own (a port taken there is taken only
there) with a kernel-only root (``/mke``, ``/proc``, ``/sys``, ``/dev``, the data dir). Its
missing modules are a stand-in: modules belong to the one kernel every namespace shares,
and this VM's kernel has overlay and br_netfilter built in (CONFIG_MODULES unset), so they
cannot be unloaded. The root hides the signs of them instead: ``/proc/filesystems``
without overlay, an empty ``/sys/module``, a kernel config without OVERLAY_FS and
BRIDGE_NETFILTER, and an empty ``/proc/sys/net`` (br_netfilter's sysctls live there); the
kernel itself stays real. The taken port is real: a process listening on 6443 in the
namespace, which sysinfo must name. ``mke server`` there must stop on the same FAILs
before it writes anything. Needs root and a Docker engine (the bundle's static entry).
"""

from __future__ import annotations

import ctypes
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import rootfs
from tests.support.bundles import fetch_bundle

pytestmark = [pytest.mark.root, pytest.mark.docker, pytest.mark.slow]

CLONE_NEWNET = 0x40000000
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C"}
PREFLIGHT_EXIT = 16  # PreflightError (mke/errors.py)


@pytest.fixture(scope="module", autouse=True)
def _needs_root():
    if os.geteuid() != 0:
        pytest.fail("tests/integration/test_sysinfo.py needs root (namespaces, mounts); CI runs it as root")


@pytest.fixture(scope="module")
def exe(tmp_path_factory) -> Path:
    return fetch_bundle(tmp_path_factory.mktemp("sysinfo-dist")) / "mke"


def checks(stdout: str) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in json.loads(stdout)["checks"]}


def test_this_machine_can_run_a_controller_and_a_worker(exe, tmp_path):
    data = tmp_path / "data"
    r = subprocess.run([str(exe), "sysinfo", "--json", "--data-dir", str(data)], capture_output=True, text=True,
                       timeout=120, env=ENV, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    got = checks(r.stdout)
    assert doc["verdict"] in ("PASS", "WARN") and doc["roles"] == ["controller", "worker"]
    fails = [c for c in got.values() if c["verdict"] == "FAIL"]
    assert not fails, fails
    for name in ("kernel", "module overlay", "module br_netfilter", "cgroup controller memory"):
        assert got[name]["verdict"] == "PASS", got[name]
    assert got["cgroups"]["verdict"] in ("PASS", "WARN"), got["cgroups"]  # v1 (this VM) is a WARN
    assert got["module overlay"]["detail"] in ("loaded", "built in")
    assert not data.exists(), "sysinfo wrote the data dir"


def _kernel_without(tmp: Path) -> tuple[Path, Path]:
    """This kernel's config and /proc/filesystems with overlay and br_netfilter taken out."""
    try:
        text = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
    except OSError:
        text = "CONFIG_NAMESPACES=y\n"
    config = tmp / "config.gz"
    config.write_bytes(gzip.compress("".join(
        line + "\n" for line in text.splitlines()
        if not line.startswith(("CONFIG_OVERLAY_FS=", "CONFIG_BRIDGE_NETFILTER="))).encode()))
    filesystems = tmp / "filesystems"
    filesystems.write_text("".join(line + "\n" for line in Path("/proc/filesystems").read_text().splitlines()
                                   if line.split()[-1] != "overlay"))
    return config, filesystems


def test_a_host_without_the_modules_and_with_the_api_port_taken(exe, tmp_path):
    config, filesystems = _kernel_without(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    mounts = (rootfs.proc(),
              rootfs.bind(config, "/proc/config.gz", readonly=True),
              rootfs.bind(filesystems, "/proc/filesystems", readonly=True),
              rootfs.tmpfs("/proc/sys/net"),
              rootfs.Mount(target="/sys", source="sysfs", fstype="sysfs", flags=rootfs.MS_NOSUID | rootfs.MS_NODEV),
              rootfs.bind(empty, "/sys/module", readonly=True),
              rootfs.Mount(target="/sys/fs/cgroup", source="/sys/fs/cgroup", flags=rootfs.MS_BIND | rootfs.MS_REC),
              rootfs.dev(),
              rootfs.bind(data, "/var/lib/mke"))
    spec = rootfs.RootSpec(path=tmp_path / "root", mounts=mounts)
    (tmp_path / "root").mkdir()
    shutil.copyfile(exe, tmp_path / "root" / "mke")
    (tmp_path / "root" / "mke").chmod(0o755)
    rootfs.prepare(spec)
    libc = ctypes.CDLL(None, use_errno=True)

    # the namespace, held by a listener on 6443 (the API port) that the test can name
    listener = subprocess.Popen(
        [sys.executable, "-c", "import socket, sys, time\n"
         "s = socket.socket(); s.bind(('0.0.0.0', 6443)); s.listen(); print('up', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True, preexec_fn=lambda: libc.unshare(CLONE_NEWNET) == 0 or os._exit(99))
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "up"
        netns = os.open(f"/proc/{listener.pid}/ns/net", os.O_RDONLY)

        def enter() -> None:
            if libc.setns(netns, CLONE_NEWNET) != 0:
                os._exit(98)
            rootfs._enter(spec, None, None)

        def mke(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["/mke", *args], capture_output=True, text=True, timeout=180, env=ENV,
                                  preexec_fn=enter, pass_fds=(netns,), check=False)

        r = mke("sysinfo", "--json", "--data-dir", "/var/lib/mke")
        assert r.returncode == PREFLIGHT_EXIT, r.stdout + r.stderr
        got = checks(r.stdout)
        assert json.loads(r.stdout)["verdict"] == "FAIL"
        assert got["module overlay"]["verdict"] == "FAIL", got["module overlay"]
        assert got["module br_netfilter"]["verdict"] == "FAIL", got["module br_netfilter"]
        assert "neither loaded, built in, nor in" in got["module overlay"]["detail"]
        port = next(c for n, c in got.items() if n.startswith("port 6443"))
        assert port["verdict"] == "FAIL" and f"pid {listener.pid}" in port["detail"], port
        assert got["kernel"]["verdict"] == "PASS" and got["cgroups"]["verdict"] != "FAIL"

        # mke server (a controller: the kernel options and its ports; modules are a worker's) stops on
        # its FAILs, one line each, the last one the error, before it writes anything
        r = mke("server", "--data-dir", "/var/lib/mke")
        assert r.returncode == PREFLIGHT_EXIT, r.stderr
        lines = r.stderr.strip().splitlines()
        assert "Traceback" not in r.stderr and lines[-1].startswith("mke: error: sysinfo: "), r.stderr
        for needle in ("CONFIG_OVERLAY_FS: FAIL", "CONFIG_BRIDGE_NETFILTER: FAIL", f"port 6443: FAIL (in use by pid "
                                                                                    f"{listener.pid}"):
            assert sum(needle in line for line in lines) == 1, r.stderr
        # nothing of a node: at most runtime/, mke's own program staged to run at all (as sysinfo staged it)
        assert [p.name for p in data.iterdir()] in ([], ["runtime"]), "mke server wrote into the data dir"
        os.close(netns)
    finally:
        listener.kill()
        listener.wait(timeout=10)
