"""build/bundle.py without PyInstaller: frame plans, payload manifest and file, SBOM, join checks."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

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


# --------------------------------------------------------------------------- FIPS bundle


@pytest.fixture
def fips_opts(tmp_path):
    """fips.runtime.bundle_options over stand-in provider files (the real ones: tests/integration)."""
    from fips.runtime import bundle_options

    prov = tmp_path / "provider"
    prov.mkdir()
    (prov / "fips.so").write_bytes(b"\x7fELF module")
    (prov / "openssl.cnf").write_text("[fips_sect]\n")
    (prov / "provenance.json").write_text(json.dumps({
        "openssl_version": "3.0.20", "validated": False, "fips_so_sha256": "cd" * 32, "configure": ["enable-fips"],
        "url": "http://deb.debian.org/x.tar.gz", "source": "debian",
        "statement": "OpenSSL 3.0.20 FIPS provider; 3.0.20 is NOT a validated version"}))
    return bundle_options({n: prov / n for n in ("fips.so", "openssl.cnf", "provenance.json")})


def test_fips_spec_merges_the_runtime_options(fips_opts):
    plain = bundle.RuntimeSpec()
    spec = plain.with_fips(fips_opts)
    cfg = spec.config()
    assert spec.name == "mke-fips"
    assert {"_md5", "_sha1", "_blake2"} <= set(cfg["excludes"]) and set(plain.excludes) <= set(cfg["excludes"])
    assert [d for _, d in cfg["datas"]] == ["mke_fips"] * 3
    assert cfg["exact"] == [[fips_opts["exact"][0][0], "mke_fips"]]
    assert cfg["runtime_hooks"] and cfg["runtime_hooks"][0].endswith("pyi_rth_mke_fips.py")
    # The plain runtime's config has none of these keys (its cache key is unchanged).
    assert not {"binaries", "datas", "exact", "runtime_hooks"} & set(plain.config())


def test_fips_runtime_key_covers_file_contents_not_paths(fips_opts, tmp_path):
    spec = bundle.RuntimeSpec().with_fips(fips_opts)
    key = bundle.runtime_action("linux/amd64", 1, spec).key()
    assert key != bundle.runtime_action("linux/amd64", 1, bundle.RuntimeSpec()).key()
    # Same bytes elsewhere: same key.
    moved = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "provider", moved)
    opts2 = {**fips_opts, "datas": [(str(moved / Path(s).name), d) for s, d in fips_opts["datas"]],
             "exact": [(str(moved / "fips.so"), "mke_fips")]}
    assert bundle.runtime_action("linux/amd64", 1, bundle.RuntimeSpec().with_fips(opts2)).key() == key
    # Another fips.so, or another runtime hook: another key.
    (moved / "fips.so").write_bytes(b"\x7fELF other module")
    assert bundle.runtime_action("linux/amd64", 1, bundle.RuntimeSpec().with_fips(opts2)).key() != key
    hook = tmp_path / "pyi_rth_mke_fips.py"
    hook.write_text(Path(fips_opts["runtime_hooks"][0]).read_text() + "\n# changed\n")
    opts3 = {**fips_opts, "runtime_hooks": [str(hook)]}
    assert bundle.runtime_action("linux/amd64", 1, bundle.RuntimeSpec().with_fips(opts3)).key() != key


def test_fips_sbom_carries_the_provider_statement(dist, fips_opts):
    cache, dm, tmp = dist
    m = bundle.write_payload_file(cache, dm, tmp / "payload", jobs=1)
    name, artifact = bundle.bundle_names("0.1.0", "linux/amd64", fips=True)
    assert (name, artifact) == ("mke-fips", "mke-fips-0.1.0-linux-amd64")
    assert bundle.bundle_names("0.1.0", "linux/amd64", fips=False) == ("mke", "mke-0.1.0-linux-amd64")
    prov = fips_opts["provenance"]
    doc = bundle.sbom(m, artifact=artifact, digest="ab" * 32, source_date_epoch=1, fips_provenance=prov)
    pkgs = {p["name"]: p for p in doc["packages"]}
    assert prov["statement"] in pkgs["mke"]["comment"] and prov["statement"] in doc["comment"]
    ossl = pkgs["openssl-fips-provider"]
    assert ossl["versionInfo"] == "3.0.20" and ossl["checksums"][0]["checksumValue"] == "cd" * 32
    assert "validated: false" in ossl["comment"]
    if "cryptography" in pkgs:
        assert "system libcrypto.so.3" in pkgs["cryptography"]["sourceInfo"]
    assert "comment" not in bundle.sbom(m, artifact="mke-0.1.0-linux-amd64", digest="ab" * 32, source_date_epoch=1)


def test_sha256sums_is_shared_by_both_bundles(tmp_path):
    sums = tmp_path / "SHA256SUMS"
    for n in ("mke", "mke-0.1.0-linux-amd64", "mke-fips", "mke-fips-0.1.0-linux-amd64"):
        (tmp_path / n).write_bytes(b"x")
    bundle._update_sums(sums, {"mke": "a" * 64, "mke-0.1.0-linux-amd64": "a" * 64})
    bundle._update_sums(sums, {"mke-fips": "b" * 64, "mke-fips-0.1.0-linux-amd64": "b" * 64})
    lines = sums.read_text().splitlines()
    assert lines == [f"{'a' * 64}  mke", f"{'a' * 64}  mke-0.1.0-linux-amd64",
                     f"{'b' * 64}  mke-fips", f"{'b' * 64}  mke-fips-0.1.0-linux-amd64"]
    (tmp_path / "mke-0.1.0-linux-amd64").unlink()  # a file no longer in dist/ loses its line
    bundle._update_sums(sums, {"mke": "c" * 64})
    assert sums.read_text().splitlines()[:2] == [f"{'c' * 64}  mke", f"{'b' * 64}  mke-fips"]


def test_fips_bundle_refuses_a_non_fips_go_binary_naming_it(tmp_path):
    """The check write_bundle runs on dist/mke-fips before publishing it (a payload file reads the same)."""
    from build.errors import VerificationError
    from tests.support.gofips import build, have_go_fips

    if not have_go_fips():
        pytest.skip("needs Go 1.24+ on the host")
    src = tmp_path / "src"
    src.mkdir()
    (src / "go.mod").write_text("module example.com/fipshello\n\ngo 1.24\n")
    (src / "main.go").write_text('package main\n\nimport (\n\t"crypto/sha256"\n\t"fmt"\n)\n\n'
                                 'func main() { fmt.Printf("%x\\n", sha256.Sum256([]byte("mke"))) }\n')
    bins = {"kubelet": build(src, tmp_path / "fips", env={"GOFIPS140": "v1.0.0"}),
            "etcd": build(src, tmp_path / "plain", env={})}
    cache = Cache(tmp_path / "cache")
    entries = []
    for name, path in bins.items():
        digest, size = cache.cas.put_file(path)
        entries.append(entry(name, size, ["controller"], digest) | {"fips": True})
    manifest = tmp_path / "linux-amd64" / "manifest.json"
    manifest.parent.mkdir()
    for names, error in ((["kubelet"], None), (["kubelet", "etcd"], "etcd: built without the Go Cryptographic Module")):
        manifest.write_text(json.dumps({"schema": 1, "platform": "linux/amd64", "mode": "docker", "fips": True,
                                        "binaries": [e for e in entries if e["name"] in names]}))
        payload = tmp_path / "payload"
        bundle.write_payload_file(cache, bundle.DistManifest.load(manifest), payload, jobs=1)
        if error is None:
            bundle._verify_fips_bundle(payload, tmp_path / "mke-fips", None)
        else:
            with pytest.raises(VerificationError, match=f"FIPS check failed for .*mke-fips: {error}"):
                bundle._verify_fips_bundle(payload, tmp_path / "mke-fips", None)
