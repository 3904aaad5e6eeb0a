"""The real dist/mke: built by `build.cli build --bundle` from small test recipes, then run.

tests/recipes/bundle/ holds two small recipes whose upstream-shaped artifacts (real
static binaries) are served by a real local HTTP mirror; the fetch build puts them in
the cache and the bundler makes dist/mke (the static entry + the payload: the Python
runtime's parts and the binaries' frames; tests/support/bundles.py). A second bundle
embeds one large binary, for the SIGKILL-mid-staging test. The bundles use the shared
build cache (the runtime, the entry and the frames are cached actions). What the static
entry itself promises (no host library, other roots) is tests/integration/test_static.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from build.cache import Cache, default_cache_dir
from mke import payload_format as pf
from tests.support.artifacts import static_binary
from tests.support.bundles import RECIPES_DIR, build_cli
from tests.support.bundles import fetch_bundle as make_fetch_bundle

REPO = Path(__file__).resolve().parents[2]
ALL = {"alpha-server", "alpha-agent", "omega"}

pytestmark = [pytest.mark.docker,
              pytest.mark.skipif(shutil.which("objcopy") is None or shutil.which("gcc") is None,
                                 reason="needs objcopy and gcc (scripts/bootstrap.sh installs them)")]


@pytest.fixture(scope="session")
def runtime_dir(tmp_path_factory) -> Path:
    """Where these tests' mke stage their Python runtime (never the host's /var/lib/mke)."""
    return tmp_path_factory.mktemp("mke-runtime")


@pytest.fixture(autouse=True)
def _runtime_dir_env(runtime_dir, monkeypatch):
    monkeypatch.setenv("MKE_RUNTIME_DIR", str(runtime_dir))


def mke(exe: Path, *args: str, bin_dir: Path | None = None, env: dict | None = None, timeout: float = 120
        ) -> subprocess.CompletedProcess:
    argv = [str(exe), *args] + ([f"--bin-dir={bin_dir}"] if bin_dir else [])
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
                          check=False)


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """The shared build cache: the runtime, the entry and the frames are built once, ever."""
    return default_cache_dir()


@pytest.fixture(scope="session")
def fetch_bundle(tmp_path_factory) -> Path:
    return make_fetch_bundle(tmp_path_factory.mktemp("bundle-fetch"))


@pytest.fixture(scope="session")
def big_bundle(tmp_path_factory, cache_dir) -> Path:
    """dist/mke embedding 'huge' (a real executable padded to 64 MiB) and a small one."""
    from build import bundle

    root = tmp_path_factory.mktemp("bundle-big")
    cache = Cache(cache_dir)
    huge = static_binary(root / "huge", "huge 1.0", cache=root / "cbins")
    block = random.Random(1).randbytes(1 << 20)  # the same bytes every run: its frame is cached
    with open(huge, "ab") as f:
        f.writelines(block for _ in range(64))
    small = static_binary(root / "small", "small 1.0", cache=root / "cbins")
    entries = []
    for path, roles in ((huge, ["worker"]), (small, ["controller"])):
        digest, size = cache.cas.put_file(path)
        entries.append({"name": path.name, "component": path.name, "version": "1.0", "license": "MIT",
                        "homepage": "https://example.com", "roles": roles, "mode": "fetch", "fips": False,
                        "sha256": digest, "size": size, "source": [f"https://example.com/{path.name}"]})
    manifest = root / "dist" / "linux-amd64" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"schema": 1, "platform": "linux/amd64", "mode": "fetch", "fips": False,
                                    "binaries": entries}))
    bundle.write_bundle(cache=cache, manifest_path=manifest, dist=root / "dist", source_date_epoch=1700000000)
    return root / "dist"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_exe(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    dst.chmod(0o755)
    return dst


# --------------------------------------------------------------------------- the release files


def test_release_files(fetch_bundle):
    exe = fetch_bundle / "mke"
    versioned = fetch_bundle / "mke-0.1.0-linux-amd64"
    assert exe.stat().st_ino == versioned.stat().st_ino
    digest = sha256(exe)
    sums = (fetch_bundle / "SHA256SUMS").read_text()
    assert f"{digest}  mke-0.1.0-linux-amd64" in sums
    sbom = json.loads((fetch_bundle / "mke-0.1.0-linux-amd64.spdx.json").read_text())
    assert sbom["spdxVersion"] == "SPDX-2.3"
    pkgs = {p["name"]: p for p in sbom["packages"]}
    assert pkgs["alpha"]["versionInfo"] == "1.2.3" and pkgs["alpha"]["licenseDeclared"] == "Apache-2.0"
    assert pkgs["omega"]["downloadLocation"].startswith("https://example.com/omega/releases/v0.9.0/")
    assert pkgs["mke"]["checksums"][0]["checksumValue"] == digest
    dist_manifest = json.loads((fetch_bundle / "linux-amd64" / "manifest.json").read_text())
    files = {f["fileName"]: f["checksums"][0]["checksumValue"] for f in sbom["files"]}
    assert files == {f"./bin/{b['name']}": b["sha256"] for b in dist_manifest["binaries"]}


def test_version(fetch_bundle):
    r = mke(fetch_bundle / "mke", "version", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["mode"] == "fetch" and doc["fips"] is False and doc["embedded"] is True
    comps = {c["component"]: c for c in doc["components"]}
    assert comps["alpha"]["version"] == "1.2.3" and comps["omega"]["version"] == "0.9.0"
    dist_manifest = json.loads((fetch_bundle / "linux-amd64" / "manifest.json").read_text())
    want = {b["name"]: b["sha256"] for b in dist_manifest["binaries"]}
    assert {b["name"]: b["sha256"] for c in doc["components"] for b in c["binaries"]} == want
    human = mke(fetch_bundle / "mke", "version")
    assert human.stdout.startswith("mke 0.1.0 (linux/amd64, mode fetch, fips no)")


def test_extract_then_skip(fetch_bundle, tmp_path):
    exe = copy_exe(fetch_bundle / "mke", tmp_path / "mke")
    bindir = tmp_path / "data" / "bin"
    first = mke(exe, "extract", bin_dir=bindir)
    assert first.returncode == 0, first.stderr
    assert "3 written, 0 already present" in first.stderr
    for name in ALL:
        out = subprocess.run([bindir / name, "--version"], capture_output=True, text=True, check=True).stdout
        assert out.strip().startswith(name)
    mtimes = {p: p.stat().st_mtime_ns for p in (bindir / ".store").rglob("*") if p.is_file()}
    p = pf.Payload.open(exe)  # damage every frame: a second run must not even read them
    data = bytearray(exe.read_bytes())
    for frame in p.manifest.frames:
        data[p.base + p.header.data_offset + frame.offset + frame.size // 2] ^= 0xFF
    exe.write_bytes(bytes(data))
    second = mke(exe, "extract", bin_dir=bindir)
    assert second.returncode == 0 and "0 written, 3 already present" in second.stderr
    assert mtimes == {p: p.stat().st_mtime_ns for p in (bindir / ".store").rglob("*") if p.is_file()}


def test_extract_one_role(fetch_bundle, tmp_path):
    bindir = tmp_path / "bin"
    r = mke(fetch_bundle / "mke", "extract", "--role=worker", bin_dir=bindir)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in bindir.iterdir() if not p.name.startswith(".")) == ["alpha-agent", "omega"]


def test_tampered_payload_is_refused(fetch_bundle, tmp_path):
    exe = copy_exe(fetch_bundle / "mke", tmp_path / "mke")
    p = pf.Payload.open(exe)
    frame = p.manifest.frames[-1]
    at = p.base + p.header.data_offset + frame.offset + frame.size // 2
    data = bytearray(exe.read_bytes())
    data[at] ^= 0x40
    exe.write_bytes(bytes(data))
    bindir = tmp_path / "bin"
    r = mke(exe, "extract", bin_dir=bindir)
    assert r.returncode == 4, r.stderr  # PayloadError
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("mke: error:") and "download" in line
    assert staged_files(bindir) == []


def staged_files(bindir: Path) -> list[Path]:
    """Everything under the bin dir but its lock and store directories."""
    if not bindir.exists():
        return []
    return sorted(p for p in bindir.rglob("*") if p.name != ".lock" and not p.is_dir())


def test_truncated_executable_is_refused(fetch_bundle, tmp_path):
    exe = copy_exe(fetch_bundle / "mke", tmp_path / "mke")
    data = exe.read_bytes()
    for keep in (len(data) - 4096, len(data) // 2):
        exe.write_bytes(data[:keep])
        bindir = tmp_path / f"bin-{keep}"
        r = mke(exe, "extract", bin_dir=bindir)
        assert r.returncode != 0
        assert r.stderr.strip(), "a clear error"
        assert staged_files(bindir) == []


def test_strip_keeps_it_working(fetch_bundle, tmp_path):
    stripped = tmp_path / "mke"
    subprocess.run(["strip", "-o", str(stripped), str(fetch_bundle / "mke")], check=True)
    assert mke(stripped, "version", "--json").stdout == mke(fetch_bundle / "mke", "version", "--json").stdout
    r = mke(stripped, "extract", bin_dir=tmp_path / "bin")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "bin" / "omega").exists()


def test_runtime_packages_work(fetch_bundle, tmp_path):
    """kubeconfig imports mke.pki (cryptography, from the runtime's wheels) before it finds no PKI."""
    r = mke(fetch_bundle / "mke", "kubeconfig", "admin", "--data-dir", str(tmp_path / "nodata"))
    assert "cryptography" not in r.stderr and "No module named" not in r.stderr, r.stderr
    assert r.returncode == 8, r.stderr  # PKIError: the import worked


def test_sigkill_mid_staging_leaves_no_partial_binary(big_bundle, tmp_path):
    exe = copy_exe(big_bundle / "mke", tmp_path / "mke")
    bindir = tmp_path / "bin"
    killed_mid_way = False
    for _attempt in range(5):
        shutil.rmtree(bindir, ignore_errors=True)
        proc = subprocess.Popen([str(exe), "extract", f"--bin-dir={bindir}", "huge"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=dict(os.environ))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            tmps = list((bindir / ".store").glob(".tmp-*/*/huge")) if (bindir / ".store").exists() else []
            if tmps and tmps[0].stat().st_size > 0:
                proc.send_signal(signal.SIGKILL)
                killed_mid_way = True
                break
            time.sleep(0.001)
        proc.wait()
        if killed_mid_way:
            break
    assert killed_mid_way, "staging finished before it could be killed"
    assert not (bindir / "huge").exists()  # no link to a partial file
    assert not list((bindir / ".store").glob("[0-9a-f]*/huge"))  # nothing published
    r = mke(exe, "extract", "huge", bin_dir=bindir)  # the next run cleans up and completes
    assert r.returncode == 0, r.stderr
    assert not list((bindir / ".store").glob(".tmp-*"))
    want = json.loads((big_bundle / "linux-amd64" / "manifest.json").read_text())["binaries"]
    assert sha256(bindir / "huge") == next(b["sha256"] for b in want if b["name"] == "huge")
    assert subprocess.run([bindir / "huge"], capture_output=True, text=True, check=False).stdout.strip() == "huge 1.0"


def test_two_concurrent_extracts(big_bundle, tmp_path):
    exe = copy_exe(big_bundle / "mke", tmp_path / "mke")
    bindir = tmp_path / "bin"
    env = dict(os.environ)
    procs = [subprocess.Popen([str(exe), "extract", f"--bin-dir={bindir}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    written = sum(int(err.split("(")[1].split(" written")[0]) for _, err in outs)
    assert written == 2  # each binary written once, by one of them
    want = json.loads((big_bundle / "linux-amd64" / "manifest.json").read_text())["binaries"]
    for b in want:
        assert sha256(bindir / b["name"]) == b["sha256"]


def test_none_mode_bundle_has_no_binaries(tmp_path, cache_dir):
    r = build_cli("build", "--mode=none", "--bundle", "--arch=amd64", f"--recipes-dir={RECIPES_DIR}",
                  f"--cache-dir={cache_dir}", f"--dist={tmp_path / 'dist'}")
    assert r.returncode == 0, r.stderr
    exe = tmp_path / "dist" / "mke"
    doc = json.loads(mke(exe, "version", "--json").stdout)
    assert doc["mode"] == "none" and doc["embedded"] is False
    assert {c["component"] for c in doc["components"]} == {"alpha", "omega"}
    r = mke(exe, "extract", bin_dir=tmp_path / "bin")
    assert r.returncode == 0 and "none mode" in r.stderr and "PATH" in r.stderr


def test_rebundle_is_a_noop_and_identical(fetch_bundle, cache_dir, tmp_path):
    from build import bundle

    before = sha256(fetch_bundle / "mke")
    stat = (fetch_bundle / "mke").stat()
    t0 = time.monotonic()
    b = bundle.write_bundle(cache=Cache(cache_dir), manifest_path=fetch_bundle / "linux-amd64" / "manifest.json",
                            dist=fetch_bundle, source_date_epoch=1700000000)
    assert b.cached and time.monotonic() - t0 < 2
    assert (fetch_bundle / "mke").stat().st_mtime_ns == stat.st_mtime_ns
    # A second bundle from the same cache into another dist dir: byte-identical.
    other = tmp_path / "dist"
    shutil.copytree(fetch_bundle / "linux-amd64", other / "linux-amd64")
    b2 = bundle.write_bundle(cache=Cache(cache_dir), manifest_path=other / "linux-amd64" / "manifest.json",
                             dist=other, source_date_epoch=1700000000)
    assert not b2.cached and b2.sha256 == before
    assert (other / "mke-0.1.0-linux-amd64.spdx.json").read_bytes() == \
        (fetch_bundle / "mke-0.1.0-linux-amd64.spdx.json").read_bytes()
