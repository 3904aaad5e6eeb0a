"""The conformance image made of pinned Debian packages alone (nginx), built from
recipes/conformance/images into two fresh caches: the same digests both times; then loaded and
run with ``docker`` (what the [Conformance] tests rely on).

The .debs come from the default cache's downloads/ when present (verified by digest like any
download), else from deb.debian.org. The images with a built binary (agnhost and its kin from Go;
busybox and nonroot from BusyBox's C source, recipes/conformance/busybox.toml) are built by
``nox -s conformance-build`` (docs/conformance.md), too slow for this run; the conformance run
(`--quick` in nox -s e2e) runs them."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from build import airgap
from build.cache import Cache, OutputFile, default_cache_dir
from build.lockfile import Lockfile
from build.modes.base import BuildContext
from build.platform import Platform
from tests.support.files import fake_binary

REPO = Path(__file__).resolve().parents[2]
CONFORMANCE = REPO / "recipes" / "conformance"
NAMES = ["nginx"]  # no binary of ours in it: this runs in `nox -s tests`
E2E = "registry.k8s.io/e2e-test-images"

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _build(tmp_path: Path, name: str) -> dict:
    shared = default_cache_dir() / "downloads"
    if shared.is_dir():
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "downloads").symlink_to(shared)
    cache = Cache(tmp_path / name)
    ctx = BuildContext(cache=cache, lock=Lockfile.load(CONFORMANCE / "recipes.lock"), platform=Platform.parse("amd64"),
                       repo_root=REPO)
    digest, size = cache.cas.put_file(fake_binary(tmp_path, "unused", b"\x7fELF unused"))
    results = [SimpleNamespace(recipe=SimpleNamespace(name="unused", version="0"), cached=False,
                               result=SimpleNamespace(outputs=(OutputFile(name="unused", sha256=digest, size=size),)))]
    listing = airgap.build_airgap(ctx, results, tmp_path / f"dist-{name}", specs_dir=CONFORMANCE / "images",
                                  names=NAMES, layout="per-image")
    return json.loads(listing.read_text())["images"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if Platform.host().arch != "amd64":
        pytest.skip("the lock pins amd64 and arm64; this test builds amd64")
    tmp = tmp_path_factory.mktemp("conformance-images")
    first, second = _build(tmp, "a"), _build(tmp, "b")
    return tmp / "dist-a", first, second


def test_two_builds_give_the_same_digests(built):
    _, first, second = built
    assert set(first) == {f"{E2E}/nginx:1.27.0-2"}
    assert {r: (i["digest"], i["sha256"]) for r, i in first.items()} == {
        r: (i["digest"], i["sha256"]) for r, i in second.items()}


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def test_the_images_run(built):
    dist, images, _ = built
    if _docker("info", check=False).returncode != 0:
        pytest.skip("no Docker engine")
    for info in images.values():
        _docker("load", "-i", str(dist / info["file"]))
    name = f"mke-test-nginx-{int(time.time())}"
    _docker("run", "-d", "--name", name, f"{E2E}/nginx:1.27.0-2")
    try:
        for _ in range(50):
            page = _docker("exec", name, "wget", "-qO-", "http://127.0.0.1/", check=False).stdout
            if "Welcome to nginx!" in page:
                break
            time.sleep(0.2)
        assert "Welcome to nginx!" in page
    finally:
        _docker("rm", "-f", name, check=False)
