"""fetch mode end to end: the real recipes against a real local HTTP mirror.

Upstream (dl.k8s.io, GitHub releases) is unreachable here, so tests/support/artifacts.py
publishes upstream-shaped artifacts made of small real static binaries, and a real HTTP
server (tests/support/mirror.py) serves them under the paths --mirror rewrites to.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from build.lockfile import Lockfile
from build.recipes import load_recipes
from tests.support.artifacts import publish_all
from tests.support.mirror import MirrorServer

REPO = Path(__file__).resolve().parents[2]
RECIPES = load_recipes(REPO / "recipes")
FETCHABLE = [r for r in RECIPES.values() if r.fetch.available]


def run_build(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "build.cli", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO), "MKE_FETCH_BACKOFF": "0.05", **(env or {})},
    )


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """An upstream-shaped tree for every fetchable recipe, plus the pins for it."""
    root = tmp_path_factory.mktemp("upstream")
    bins = tmp_path_factory.mktemp("cbins")
    # one file per URL: etcd and etcdutl share the etcd release tarball, as upstream
    return root, publish_all(list(FETCHABLE), root, cache=bins)


@pytest.fixture
def mirror(upstream):
    with MirrorServer(upstream[0]) as m:
        yield m


@pytest.fixture
def lock(tmp_path, upstream) -> Path:
    lf = Lockfile.empty(tmp_path / "recipes.lock")
    for comp, urls in upstream[1].items():
        for url, digest in urls.items():
            lf = lf.with_artifact(comp, "linux/amd64", url, digest)
    lf.save()
    return lf.path


def build_args(tmp_path: Path, mirror: MirrorServer, lock: Path, *extra: str) -> list[str]:
    return ["build", "--mode=fetch", f"--mirror={mirror.url}", f"--cache-dir={tmp_path / 'cache'}",
            f"--dist={tmp_path / 'dist'}", f"--lock={lock}", *extra]


def components(*names: str) -> list[str]:
    return [f"--component={n}" for n in names]


def ac_entries(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "cache" / "ac").glob("*.json"))


def test_lock_session_pins_from_upstream_checksum_files(tmp_path, mirror, upstream):
    lock_path = tmp_path / "recipes.lock"
    r = run_build("lock", "--fetch-only", "--arch=amd64", f"--mirror={mirror.url}", f"--lock={lock_path}")
    assert r.returncode == 0, r.stderr
    lf = Lockfile.load(lock_path)
    for comp, urls in upstream[1].items():
        for url, digest in urls.items():
            assert lf.artifact_digest(comp, "linux/amd64", url) == digest


def test_full_fetch_build_then_noop(tmp_path, mirror, lock):
    names = [r.name for r in FETCHABLE]
    t0 = time.monotonic()
    first = run_build(*build_args(tmp_path, mirror, lock, *components(*names)))
    cold = time.monotonic() - t0
    assert first.returncode == 0, first.stderr
    manifest = json.loads((tmp_path / "dist" / "linux-amd64" / "manifest.json").read_text())
    got = {e["name"]: e for e in manifest["binaries"]}
    expected = {b for r in FETCHABLE for b in r.binary_names}
    assert set(got) == expected
    for name, e in got.items():
        exe = tmp_path / "dist" / "linux-amd64" / "bin" / name
        assert e["mode"] == "fetch" and e["sha256"] and e["size"] == exe.stat().st_size
        assert os.access(exe, os.X_OK)
    out = subprocess.run([tmp_path / "dist/linux-amd64/bin/kube-apiserver", "--version"], capture_output=True, text=True)
    assert out.stdout.strip() == f"Kubernetes v{RECIPES['kubernetes'].version}"
    requests_after_first = len(mirror.faults.requests)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "dist/linux-amd64/bin").iterdir()}

    t0 = time.monotonic()
    second = run_build(*build_args(tmp_path, mirror, lock, *components(*names)))
    warm = time.monotonic() - t0
    assert second.returncode == 0, second.stderr
    assert f"built=0 cached={len(names)}" in second.stderr
    assert len(mirror.faults.requests) == requests_after_first, "a no-op build must not download"
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "dist/linux-amd64/bin").iterdir()}
    print(f"\nfetch build of {len(names)} components: cold {cold:.2f}s, no-op {warm:.2f}s")


def test_source_only_component_is_refused_in_fetch_mode(tmp_path, mirror, lock):
    r = run_build(*build_args(tmp_path, mirror, lock, "--component=konnectivity"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: konnectivity cannot be fetched: upstream publishes")


def test_unpinned_artifact_refused_unless_allowed(tmp_path, mirror):
    empty = tmp_path / "empty.lock"
    Lockfile.empty(empty).save()
    r = run_build(*build_args(tmp_path, mirror, empty, "--component=etcd"))
    assert r.returncode == 7, r.stderr
    assert "has no pinned sha256" in r.stderr and "--allow-unpinned" in r.stderr
    assert not ac_entries(tmp_path)
    r = run_build(*build_args(tmp_path, mirror, empty, "--component=etcd", "--allow-unpinned"))
    assert r.returncode == 0, r.stderr
    assert "is not pinned; trusting" in r.stderr


def test_digest_mismatch_is_refused_and_leaves_nothing(tmp_path, mirror, upstream):
    url = next(iter(upstream[1]["etcd"]))
    bad = Lockfile.empty(tmp_path / "bad.lock").with_artifact("etcd", "linux/amd64", url, "0" * 64)
    bad.save()
    r = run_build(*build_args(tmp_path, mirror, bad.path, "--component=etcd"))
    assert r.returncode == 6, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert url in line and "expected " + "0" * 64 in line and "got " + upstream[1]["etcd"][url] in line
    assert not ac_entries(tmp_path)
    assert not [p for p in (tmp_path / "cache" / "downloads").iterdir() if p.suffix == ".part"]


def test_404_fails_at_once_without_retry(tmp_path, mirror, lock, upstream):
    url = next(iter(upstream[1]["runc"]))
    mirror.fail(url, 404)
    r = run_build(*build_args(tmp_path, mirror, lock, "--component=runc"))
    assert r.returncode == 5, r.stderr
    assert "HTTP 404" in r.stderr and url.split("://")[1] in r.stderr
    assert len(mirror.requests_for(url)) == 1
    assert not ac_entries(tmp_path)


def test_500_then_success_retries(tmp_path, mirror, lock, upstream):
    url = next(iter(upstream[1]["runc"]))
    mirror.fail(url, 500, 503)
    r = run_build(*build_args(tmp_path, mirror, lock, "--component=runc"))
    assert r.returncode == 0, r.stderr
    assert len(mirror.requests_for(url)) == 3
    assert "HTTP 500" in r.stderr and "retry 1/5" in r.stderr


def test_persistent_500_gives_up(tmp_path, mirror, lock, upstream):
    url = next(iter(upstream[1]["runc"]))
    mirror.fail(url, *[500] * 10)
    r = run_build(*build_args(tmp_path, mirror, lock, "--component=runc"))
    assert r.returncode == 5
    assert "failed after 6 attempts: HTTP 500" in r.stderr
    assert len(mirror.requests_for(url)) == 6


def test_truncated_body_is_resumed(tmp_path, mirror, lock, upstream):
    url = next(iter(upstream[1]["etcd"]))
    mirror.truncate(url, 1000)
    r = run_build(*build_args(tmp_path, mirror, lock, "--component=etcd"))
    assert r.returncode == 0, r.stderr
    assert mirror.requests_for(url) == [None, "bytes=1000-"]
    assert "resuming" in r.stderr


def test_sigkill_mid_download_leaves_no_entry_and_next_build_resumes(tmp_path, mirror, lock, upstream):
    url = next(iter(upstream[1]["etcd"]))
    mirror.stall(url, 2000, 30)
    args = [sys.executable, "-m", "build.cli", *build_args(tmp_path, mirror, lock, "--component=etcd")]
    proc = subprocess.Popen(args, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    part = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        parts = list((tmp_path / "cache" / "downloads").glob("*.part"))
        if parts and parts[0].stat().st_size >= 2000:
            part = parts[0]
            break
        time.sleep(0.05)
    assert part is not None, "download never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not ac_entries(tmp_path)
    assert not list((tmp_path / "cache" / "cas" / "sha256").rglob("*")), "no blob may be stored"
    mirror.faults.stall.clear()
    r = run_build(*build_args(tmp_path, mirror, lock, "--component=etcd"))
    assert r.returncode == 0, r.stderr
    assert mirror.requests_for(url)[-1] == "bytes=2000-"
    v = run_build("cache", "verify", f"--cache-dir={tmp_path / 'cache'}")
    assert v.returncode == 0, v.stdout


def test_two_parallel_builds_share_one_cache(tmp_path, mirror, lock):
    names = components("kubernetes", "etcd", "containerd", "cni-plugins", "runc", "kine")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MKE_FETCH_BACKOFF": "0.05"}
    procs = [
        subprocess.Popen([sys.executable, "-m", "build.cli", "build", "--mode=fetch", f"--mirror={mirror.url}",
                          f"--cache-dir={tmp_path / 'cache'}", f"--dist={tmp_path / f'dist{i}'}", f"--lock={lock}",
                          *names], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    m0 = json.loads((tmp_path / "dist0/linux-amd64/manifest.json").read_text())["binaries"]
    m1 = json.loads((tmp_path / "dist1/linux-amd64/manifest.json").read_text())["binaries"]
    assert [(e["name"], e["sha256"]) for e in m0] == [(e["name"], e["sha256"]) for e in m1]
    v = run_build("cache", "verify", f"--cache-dir={tmp_path / 'cache'}")
    assert v.returncode == 0 and "0 problem(s)" in v.stdout, v.stdout
    assert len(ac_entries(tmp_path)) == 6


def test_wrong_arch_is_refused(tmp_path, mirror, upstream):
    # amd64 binaries published under the arm64 URL: the ELF check must catch them.
    lf = Lockfile.empty(tmp_path / "arm.lock")
    for url, digest in upstream[1]["runc"].items():
        lf = lf.with_artifact("runc", "linux/arm64", url.replace("amd64", "arm64"), digest)
    lf.save()
    root = upstream[0]
    src = next(root.rglob("runc.amd64"))
    dst = src.with_name("runc.arm64")
    dst.write_bytes(src.read_bytes())
    r = run_build(*build_args(tmp_path, mirror, lf.path, "--component=runc", "--arch=arm64"))
    assert r.returncode == 11, r.stderr
    assert "runc: runc: built for x86-64, expected aarch64" in r.stderr
    assert not ac_entries(tmp_path)


def test_cache_corruption_is_detected_and_repaired(tmp_path, mirror, lock):
    assert run_build(*build_args(tmp_path, mirror, lock, "--component=runc")).returncode == 0
    blob = next(p for p in (tmp_path / "cache/cas/sha256").rglob("*") if p.is_file())
    blob.chmod(0o644)
    blob.write_bytes(b"corrupt")
    v = run_build("cache", "verify", f"--cache-dir={tmp_path / 'cache'}")
    assert v.returncode == 1 and "does not match its name" in v.stdout
    r = run_build(*build_args(tmp_path, mirror, lock, "--component=runc"))
    assert r.returncode == 0 and "built=1" in r.stderr, r.stderr
