"""build/bundle.py without PyInstaller: frame plans, payload manifest and file, SBOM, join checks."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess

import pytest

from build import bundle
from build.cache import Cache
from build.errors import BundleError
from mke import payload_format as pf


def entry(name: str, size: int, roles: list[str], sha: str | None = "0" * 64) -> dict:
    return {"name": name, "component": name.split("-")[0], "version": "1.0", "license": "MIT",
            "homepage": "https://example.com", "roles": roles, "mode": "fetch", "fips": False,
            "sha256": sha, "size": size, "source": [f"https://example.com/{name}"]}


BINS = [entry("kube-apiserver", 90, ["controller"]), entry("etcd", 30, ["controller"]),
        entry("kubelet", 60, ["worker"]), entry("runc", 10, ["worker"]),
        entry("kubectl", 50, ["controller", "worker"]), entry("coredns", 40, ["image"])]


def test_plan_groups_puts_shared_binaries_first_in_the_worker_frame():
    assert bundle.plan_frames(BINS, "groups") == [
        ("controller", ["kube-apiserver", "etcd"]),
        ("worker", ["kubectl", "kubelet", "runc"]),
        ("image", ["coredns"]),
    ]


def test_plan_other_layouts():
    assert [names for _, names in bundle.plan_frames(BINS, "per-binary")] == [
        ["coredns"], ["etcd"], ["kube-apiserver"], ["kubectl"], ["kubelet"], ["runc"]]
    assert bundle.plan_frames(BINS, "solid") == [
        ("all", ["kube-apiserver", "kubelet", "kubectl", "coredns", "etcd", "runc"])]
    assert bundle.plan_frames([entry("x", 1, ["worker"], sha=None)], "groups") == []  # none mode
    with pytest.raises(BundleError, match="choose one of groups, per-binary, solid"):
        bundle.plan_frames(BINS, "tar")


@pytest.fixture
def dist(tmp_path):
    cache = Cache(tmp_path / "cache")
    entries = []
    for name, roles in (("alpha", ["controller"]), ("beta", ["worker"]), ("gamma", ["controller", "worker"])):
        f = tmp_path / name
        f.write_bytes(os.urandom(20000) + name.encode() * 5000)
        digest, size = cache.cas.put_file(f)
        entries.append(entry(name, size, roles, digest))
    manifest = tmp_path / "dist" / "linux-amd64" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"schema": 1, "platform": "linux/amd64", "mode": "fetch", "fips": False,
                                    "binaries": entries}))
    return cache, bundle.DistManifest.load(manifest), tmp_path


def test_payload_file_round_trip(dist):
    cache, dm, tmp = dist
    out = tmp / "payload"
    m = bundle.write_payload_file(cache, dm, out, jobs=1)
    p = pf.Payload.open(out)
    assert p.manifest == m and [f.members for f in m.frames] == [("alpha",), ("gamma", "beta")]
    for b in m.binaries:
        sink = io.BytesIO()
        p.decode_frame(b.frame, {b.name: sink})
        assert hashlib.sha256(sink.getvalue()).hexdigest() == b.sha256
    # Frames are cached actions: a second payload reuses them byte for byte.
    out2 = tmp / "payload2"
    bundle.write_payload_file(cache, dm, out2, jobs=2)
    assert out.read_bytes() == out2.read_bytes()


def test_corrupt_cache_blob_is_reported(dist):
    cache, dm, tmp = dist
    blob = cache.cas.path(dm.binaries[0]["sha256"])
    blob.chmod(0o644)
    blob.write_bytes(b"not it")
    with pytest.raises(BundleError, match="corrupt"):
        bundle.write_payload_file(cache, dm, tmp / "payload", jobs=1)


def test_sbom_lists_every_component(dist):
    cache, dm, tmp = dist
    m = bundle.write_payload_file(cache, dm, tmp / "payload", jobs=1)
    doc = bundle.sbom(m, artifact="mke-0.1.0-linux-amd64", digest="ab" * 32, source_date_epoch=1700000000)
    assert doc["spdxVersion"] == "SPDX-2.3" and doc["creationInfo"]["created"] == "2023-11-14T22:13:20Z"
    names = {p["name"]: p for p in doc["packages"]}
    assert {"mke", "alpha", "beta", "gamma", "cpython"} <= set(names)
    assert names["alpha"]["licenseDeclared"] == "MIT" and names["alpha"]["versionInfo"] == "1.0"
    assert {f["fileName"] for f in doc["files"]} == {"./bin/alpha", "./bin/beta", "./bin/gamma"}
    assert doc == bundle.sbom(m, artifact="mke-0.1.0-linux-amd64", digest="ab" * 32, source_date_epoch=1700000000)


@pytest.mark.skipif(shutil.which("objcopy") is None, reason="needs objcopy")
def test_join_places_payload_before_pydata(dist):
    cache, dm, tmp = dist
    bundle.write_payload_file(cache, dm, tmp / "payload", jobs=1)
    runtime = tmp / "runtime"
    (tmp / "pydata.bin").write_bytes(b"MEI" * 1000)
    shutil.copyfile(shutil.which("true"), runtime)
    subprocess.run(["objcopy", "--add-section", f"pydata={tmp / 'pydata.bin'}", str(runtime)], check=True)
    out = tmp / "joined"
    bundle.join(runtime, tmp / "payload", out)
    p = bundle.check_joined(out)
    assert p.manifest.names() == ("alpha", "beta", "gamma")
    subprocess.run([str(out)], check=True)
    wrong = tmp / "wrong"  # payload after pydata: refused
    shutil.copyfile(runtime, wrong)
    subprocess.run(["objcopy", "--add-section", f"{pf.SECTION_NAME}={tmp / 'payload'}", str(wrong)], check=True)
    with pytest.raises(BundleError, match="before pydata"):
        bundle.check_joined(wrong)
