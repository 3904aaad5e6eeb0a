"""dist/mke needs nothing from the host but a Linux kernel (issue 11): the real file, run in
other root filesystems.

- ``readelf``: no INTERP, no NEEDED; the running runtime maps no file from outside itself;
- ``version``, ``extract`` (and ``fips check`` of dist/mke-fips) in: (a) an empty root with
  only the file, /proc, /dev and a writable data dir; (b) Debian 11 minbase (glibc 2.31,
  debootstrap bullseye, cached under the build cache); (c) a root with /tmp mounted noexec;
  (d) a read-only root with only the data dir writable; a non-root user gets a per-user
  cache dir;
- ``mke server`` to a healthy /readyz in (a) and (b), with the docker-mode binaries
  (tests/support/binaries.py), and its components get the caller's environment;
- the runtime is staged once per digest, atomically: a second start rewrites nothing, a
  killed staging publishes nothing, a damaged runtime part is refused before any staging.

Roots are entered with chroot in a mount namespace of the test's own (tests/support/rootfs.py):
their mounts vanish with their processes. The bundles come from the toolchain with the
shared cache (tests/support/bundles.py). Needs root and a Docker engine; fails (never skips)
when the bundle cannot be built.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from mke import payload_format as pf
from tests.support import rootfs
from tests.support.binaries import real_bin_dir
from tests.support.bundles import fetch_bundle, fips_bundle
from tests.support.ports import free_ports

pytestmark = [pytest.mark.root, pytest.mark.docker, pytest.mark.slow]

DATA = "/var/lib/mke"
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C"}
KINDS = ("empty", "debian11", "noexec-tmp", "readonly")


@pytest.fixture(scope="module", autouse=True)
def _needs_root():
    if os.geteuid() != 0:
        pytest.fail("tests/integration/test_static.py needs root (chroot and mounts); CI runs it as root")


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    return fetch_bundle(tmp_path_factory.mktemp("static-dist"))


@pytest.fixture(scope="module")
def fips_exe(tmp_path_factory) -> Path:
    return fips_bundle(tmp_path_factory.mktemp("static-fips")).exe


@pytest.fixture(scope="module")
def debian11() -> Path:
    return rootfs.debian_root("bullseye")


def runtime_id(exe: Path) -> str:
    """The runtime's directory name, from the payload manifest (build/entry/payload.go's formula)."""
    p = pf.Payload.open(exe)
    assert p is not None
    h = hashlib.sha256(b"mke-runtime 1\n")
    for lib in p.manifest.libraries:
        h.update(f"{lib.name} {lib.sha256} {lib.size}\n".encode())
    return h.hexdigest()


def make_root(kind: str, tmp: Path, exe: Path, debian11: Path | None = None, *, extra: tuple[rootfs.Mount, ...] = ()
              ) -> tuple[rootfs.RootSpec, Path]:
    """(root spec with /<exe.name>, /proc, /dev and the data dir; the data dir on the host)."""
    data = tmp / "data"
    data.mkdir(mode=0o700, exist_ok=True)
    mounts = (rootfs.proc(), rootfs.dev(), rootfs.bind(data, DATA), *extra)
    if kind == "noexec-tmp":
        mounts += (rootfs.tmpfs("/tmp", noexec=True),)
    if kind == "debian11":
        assert debian11 is not None
        spec = rootfs.RootSpec(path=tmp / "root", mounts=mounts, overlay_lower=debian11)
    else:
        spec = rootfs.RootSpec(path=tmp / "root", mounts=mounts, readonly=kind == "readonly")
    files = spec.upper if spec.overlay_lower else spec.path
    files.mkdir(parents=True, exist_ok=True)
    files.chmod(0o755)
    shutil.copyfile(exe, files / exe.name)
    (files / exe.name).chmod(0o755)
    return spec, data


def in_root(spec: rootfs.RootSpec, *argv: str, env: dict[str, str] | None = None, **kw: Any
            ) -> subprocess.CompletedProcess[str]:
    return rootfs.run(spec, list(argv), env={**ENV, **(env or {})}, **kw)


def test_dist_mke_is_a_static_executable(dist):
    exe = dist / "mke"
    program = subprocess.run(["readelf", "-lW", str(exe)], capture_output=True, text=True, check=True).stdout
    dynamic = subprocess.run(["readelf", "-d", str(exe)], capture_output=True, text=True, check=True).stdout
    assert "INTERP" not in program and "DYNAMIC" not in program
    assert "NEEDED" not in dynamic and "There is no dynamic section" in dynamic
    kind = subprocess.run(["file", "-b", str(exe)], capture_output=True, text=True, check=True).stdout
    assert "statically linked" in kind, kind


@pytest.mark.parametrize("kind", KINDS)
def test_version_and_extract(kind, dist, tmp_path, debian11):
    spec, data = make_root(kind, tmp_path, dist / "mke", debian11 if kind == "debian11" else None)
    r = in_root(spec, "/mke", "version", "--json", env={"TMPDIR": "/tmp"})
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["mode"] == "fetch" and doc["embedded"] and {c["component"] for c in doc["components"]} == {"alpha", "omega"}
    rid = runtime_id(dist / "mke")
    assert (data / "runtime" / rid / ".mke-runtime").is_file()  # staged into the data dir (root), not /tmp
    r = in_root(spec, "/mke", "extract")
    assert r.returncode == 0 and "3 written" in r.stderr, r.stderr
    r = in_root(spec, f"{DATA}/bin/omega", "--version")
    assert r.returncode == 0 and r.stdout.startswith("omega"), r.stderr
    if kind == "readonly":
        assert sorted(p.name for p in spec.path.iterdir()) == ["dev", "mke", "proc", "var"]
    if kind == "debian11":
        assert rootfs.glibc_version(debian11) == "2.31"


def test_noexec_runtime_dir_is_one_clear_line(dist, tmp_path):
    spec, _ = make_root("noexec-tmp", tmp_path, dist / "mke")
    r = in_root(spec, "/mke", "version", env={"MKE_RUNTIME_DIR": "/tmp/mke-runtime"})
    assert r.returncode == 5, r.stderr  # StagingError
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mke: error:"), r.stderr
    assert "/tmp/mke-runtime" in lines[0] and "noexec" in lines[0] and "MKE_RUNTIME_DIR" in lines[0]


def test_non_root_user_gets_a_per_user_cache_dir(dist, tmp_path):
    spec, data = make_root("empty", tmp_path, dist / "mke")
    home = spec.path / "home" / "u"
    home.mkdir(parents=True)
    os.chown(home, 65534, 65534)
    r = in_root(spec, "/mke", "version", env={"HOME": "/home/u"}, uid=65534, gid=65534)
    assert r.returncode == 0 and r.stdout.startswith("mke 0.1.0 (linux/amd64, mode fetch"), r.stderr
    staged = home / ".cache" / "mke" / "runtime" / runtime_id(dist / "mke")
    assert (staged / ".mke-runtime").is_file() and staged.stat().st_uid == 65534
    assert not (data / "runtime").exists()
    r = in_root(spec, "/mke", "version", env={}, uid=65534, gid=65534)  # no HOME: says what to set
    assert r.returncode == 5 and "MKE_RUNTIME_DIR" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["empty", "debian11"])
def test_fips_bundle_runtime_crypto(kind, fips_exe, tmp_path, debian11):
    spec, _ = make_root(kind, tmp_path, fips_exe, debian11 if kind == "debian11" else None)
    r = in_root(spec, "/mke-fips", "fips", "check", "--runtime-only", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"], doc["problems"]
    s = doc["runtime"]
    assert s["hashlib_md5_refused"] and s["evp_rsa1024_refused"] and s["cryptography"]["fips_enabled"]
    assert s["hashlib_openssl"]["fips"] and not s["hashlib_openssl"]["default"]
    r = in_root(spec, "/mke-fips", "version", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["runtime"]["fips"] is True, r.stderr


# --------------------------------------------------------------------------- staging the runtime


def run_mke(exe: Path, *args: str, runtime: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, check=False,
                          env={**ENV, "MKE_RUNTIME_DIR": str(runtime)})


def test_runtime_is_staged_once(dist, tmp_path):
    rt = tmp_path / "rt"
    assert run_mke(dist / "mke", "version", runtime=rt).returncode == 0
    rid = runtime_id(dist / "mke")
    assert sorted(p.name for p in rt.iterdir()) == [".lock", rid]
    files = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in (rt / rid).rglob("*")}
    assert (rt / rid / "bin" / "mke").is_file() and (rt / rid / "lib" / "libc.so.6").is_file()
    for _ in range(3):
        assert run_mke(dist / "mke", "version", runtime=rt).returncode == 0
    assert files == {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in (rt / rid).rglob("*")}
    (rt / rid / ".mke-runtime").unlink()  # an incomplete runtime (no marker) is staged again, whole
    assert run_mke(dist / "mke", "version", runtime=rt).returncode == 0
    assert (rt / rid / ".mke-runtime").is_file() and sorted(p.name for p in rt.iterdir()) == [".lock", rid]


def test_killed_staging_publishes_nothing(dist, tmp_path):
    rt = tmp_path / "rt"
    rid = runtime_id(dist / "mke")
    killed = False
    for _attempt in range(10):
        shutil.rmtree(rt, ignore_errors=True)
        proc = subprocess.Popen([str(dist / "mke"), "version"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**ENV, "MKE_RUNTIME_DIR": str(rt)})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if any(any(d.iterdir()) for d in rt.glob(".tmp-*")) if rt.exists() else False:
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
        proc.wait()
        if killed:
            break
    assert killed, "staging finished before it could be killed"
    assert not (rt / rid).exists()  # nothing at the final name
    r = run_mke(dist / "mke", "version", runtime=rt)  # the next start cleans up and stages it
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in rt.iterdir()) == [".lock", rid]


def test_damaged_runtime_part_is_refused_before_staging(dist, tmp_path):
    exe = tmp_path / "mke"
    shutil.copyfile(dist / "mke", exe)
    exe.chmod(0o755)
    p = pf.Payload.open(exe)
    assert p is not None
    lib = p.manifest.libraries[1]
    frame = p.manifest.frames[lib.frame]
    data = bytearray(exe.read_bytes())
    data[p.base + p.header.data_offset + frame.offset + frame.size // 2] ^= 0x10
    exe.write_bytes(bytes(data))
    rt = tmp_path / "rt"
    r = run_mke(exe, "version", runtime=rt)
    assert r.returncode == 4, r.stderr  # PayloadError
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mke: error:") and "download it again" in lines[0], r.stderr
    assert sorted(p.name for p in rt.iterdir()) == [".lock"]  # no runtime, no temp dir


def test_other_versions_are_removed_when_unused(dist, tmp_path):
    rt = tmp_path / "rt"
    old = rt / ("0" * 64)
    (old / "bin").mkdir(parents=True)
    (old / "bin" / "mke").write_bytes(b"an older runtime")
    (old / ".mke-runtime").write_text("old\n")
    assert run_mke(dist / "mke", "version", runtime=rt).returncode == 0
    assert not old.exists() and (rt / runtime_id(dist / "mke")).is_dir()


def test_install_writes_the_mke_file_not_the_runtime(dist, tmp_path):
    """The unit names the mke file itself, not the staged runtime (a stand-in root with systemd's
    mark and a fake systemctl: tests/support/initsystems.py; no service manager runs here)."""
    from tests.support.initsystems import Host, exec_start_argv

    host = Host.make(tmp_path, "systemd")
    r = subprocess.run([str(dist / "mke"), "install", "controller", "--data-dir", str(tmp_path / "data")],
                       capture_output=True, text=True,
                       env={**ENV, **host.env(), "MKE_RUNTIME_DIR": str(tmp_path / "rt")}, check=False)
    assert r.returncode == 0, r.stderr
    unit = (host.root / "etc/systemd/system/mke-controller.service").read_text()
    assert exec_start_argv(unit)[:2] == [os.path.realpath(dist / "mke"), "server"]


def _readyz(pki: Path, port: int) -> bool:
    return subprocess.run(["curl", "-sf", "--max-time", "2", "--cacert", str(pki / "ca.crt"), "--cert",
                           str(pki / "admin.crt"), "--key", str(pki / "admin.key"), f"https://127.0.0.1:{port}/readyz"],
                          capture_output=True, check=False).returncode == 0


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)


def _mapped_inodes(pid: int) -> dict[tuple[int, int], str]:
    """(st_dev, st_ino) -> path of every file mapped by ``pid`` (paths as the kernel prints them)."""
    out = {}
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and int(parts[4]) != 0:
            major, minor = (int(x, 16) for x in parts[3].split(":"))
            out[(os.makedev(major, minor), int(parts[4]))] = parts[5]
    return out


@pytest.mark.parametrize("kind", ["empty", "debian11"])
def test_server_is_ready(kind, dist, tmp_path, debian11):
    bins, why = real_bin_dir()
    if bins is None:
        pytest.fail(f"no docker-mode binaries: {why}")
    spec, data = make_root(kind, tmp_path, dist / "mke", debian11 if kind == "debian11" else None,
                           extra=(rootfs.bind(bins, "/opt/mke-bin", readonly=True),))
    api, mke_api, client, peer, agent, admin, health = free_ports(7, host="127.0.0.1")
    config = {"api": {"port": api, "mkeAPIPort": mke_api},
              "storage": {"etcd": {"clientPort": client, "peerPort": peer}},
              "konnectivity": {"agentPort": agent, "adminPort": admin, "healthPort": health}
              if (bins / "konnectivity-server").exists() else {"enabled": False}}
    (data / "mke.yaml").write_text(yaml.safe_dump(config))
    log = open(tmp_path / "mke.log", "wb")  # closed in the finally below
    proc = rootfs.popen(spec, ["/mke", "server", "--config", f"{DATA}/mke.yaml", "--data-dir", f"{DATA}/server",
                               "--bin-dir", "/opt/mke-bin"], env=dict(ENV), stdout=log, stderr=subprocess.STDOUT)
    state = data / "server"
    try:
        deadline = time.monotonic() + 180
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "mke.log").read_text()[-3000:]
            try:
                status = json.loads((state / "run" / "status.json").read_text())
            except (OSError, ValueError):
                status = {}
            if status.get("phase") == "running" and _readyz(state / "pki", api):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no healthy /readyz within 180s:\n{(tmp_path / 'mke.log').read_text()[-3000:]}")
        # The runtime maps only its own files: no library of the host (or of the Debian root).
        rt = data / "runtime" / runtime_id(dist / "mke")
        ours = {(st.st_dev, st.st_ino) for st in (p.stat() for p in rt.rglob("*") if p.is_file())}
        mapped = _mapped_inodes(proc.pid)
        assert mapped and not {k: v for k, v in mapped.items() if k not in ours}, mapped
        exe = os.stat(f"/proc/{proc.pid}/exe")
        assert (exe.st_dev, exe.st_ino) == ((rt / "bin" / "mke").stat().st_dev, (rt / "bin" / "mke").stat().st_ino)
        # Components get the caller's environment: nothing of the entry, the loader or Python.
        for c in status["components"]:
            if c.get("pid"):
                leaked = [k for k in _environ(c["pid"]) if k.startswith(("PYTHON", "MKE_EXE", "MKE_ENTRY", "LD_"))]
                assert not leaked, (c["name"], leaked)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        left = rootfs.processes_in(spec.path)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 0, (tmp_path / "mke.log").read_text()[-3000:]
    assert not left, f"processes left in {spec.path}: {left}"


def test_runtime_is_reproducible(tmp_path):
    """The runtime made in a fresh cache is byte for byte the one in the shared cache (which the
    bundles above used): pinned inputs, its own interpreter compiling, sorted deterministic tars."""
    from build.bundle import runtime
    from build.bundle.release import default_epoch
    from build.cache import Cache, default_cache_dir

    spec = runtime.load_spec()
    shared = runtime.build_runtime(Cache(default_cache_dir()), spec, "linux/amd64", source_date_epoch=default_epoch())
    fresh = runtime.build_runtime(Cache(tmp_path / "cache"), spec, "linux/amd64", source_date_epoch=default_epoch())
    assert [p.sha256 for p in fresh.parts] == [p.sha256 for p in shared.parts]


def test_non_root_gets_one_line_with_the_sudo_hint(dist, tmp_path):
    """Issue 19: as another user, commands that change the host are refused up front, and commands
    that only read a root-owned data dir say so; before, `server` and friends ended in a PermissionError
    traceback and `mke status` said mke was not running."""
    spec, data = make_root("empty", tmp_path, dist / "mke")
    home = spec.path / "home" / "u"
    home.mkdir(parents=True)
    os.chown(home, 65534, 65534)
    (data / "run").mkdir(parents=True, exist_ok=True)
    (data / "run" / "mke.lock").write_text("1\n")
    os.chmod(data, 0o700)
    before = sorted(p.name for p in data.rglob("*"))
    cases = {
        ("server",): (13, "mke server needs root"),
        ("worker", "sometoken"): (13, "mke worker needs root"),
        ("reset",): (13, "mke reset needs root"),
        ("install", "controller"): (13, "mke install needs root"),
        ("status",): (13, "Permission denied; run it as root"),
        ("token", "create", "--role=worker"): (13, "Permission denied; run it as root"),
        ("kubeconfig", "admin"): (13, "Permission denied; run it as root"),
    }
    from mke.errors import HostError

    for argv, (code, says) in cases.items():
        r = in_root(spec, "/mke", *argv, "--data-dir", DATA, env={"HOME": "/home/u"}, uid=65534, gid=65534)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == HostError.exit_code == code, (argv, r.stderr)
        assert len(lines) == 1 and lines[0].startswith("mke: error:") and says in lines[0], (argv, r.stderr)
        assert "sudo" in lines[0]
    assert sorted(p.name for p in data.rglob("*")) == before
