"""build/bundle/release.py: names, the shared SHA256SUMS, the FIPS check before publishing."""

from __future__ import annotations

import json

import pytest

from build.bundle import release
from build.bundle.payload import DistManifest, write_payload_file
from build.cache import Cache
from tests.unit.build.bundle.conftest import entry


def test_bundle_names():
    assert release.bundle_names("0.1.0", "linux/amd64", fips=True) == ("mke-fips", "mke-fips-0.1.0-linux-amd64")
    assert release.bundle_names("0.1.0", "linux/arm64", fips=False) == ("mke", "mke-0.1.0-linux-arm64")


def test_sha256sums_is_shared_by_both_bundles(tmp_path):
    sums = tmp_path / "SHA256SUMS"
    for n in ("mke", "mke-0.1.0-linux-amd64", "mke-fips", "mke-fips-0.1.0-linux-amd64"):
        (tmp_path / n).write_bytes(b"x")
    release.update_sums(sums, {"mke": "a" * 64, "mke-0.1.0-linux-amd64": "a" * 64})
    release.update_sums(sums, {"mke-fips": "b" * 64, "mke-fips-0.1.0-linux-amd64": "b" * 64})
    lines = sums.read_text().splitlines()
    assert lines == [f"{'a' * 64}  mke", f"{'a' * 64}  mke-0.1.0-linux-amd64",
                     f"{'b' * 64}  mke-fips", f"{'b' * 64}  mke-fips-0.1.0-linux-amd64"]
    (tmp_path / "mke-0.1.0-linux-amd64").unlink()  # a file no longer in dist/ loses its line
    release.update_sums(sums, {"mke": "c" * 64})
    assert sums.read_text().splitlines()[:2] == [f"{'c' * 64}  mke", f"{'b' * 64}  mke-fips"]


def test_default_epoch_is_never_now(monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert release.default_epoch() == release.DEFAULT_EPOCH
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert release.default_epoch() == 1700000000


def test_fips_bundle_refuses_a_non_fips_go_binary_naming_it(tmp_path, dist):
    """The check write_bundle runs on dist/mke-fips before publishing it (a payload file reads the same)."""
    from build.errors import VerificationError
    from tests.support.gofips import build, have_go_fips

    if not have_go_fips():
        pytest.skip("needs Go 1.24+ on the host")
    _, _, parts, _ = dist
    src = tmp_path / "src"
    src.mkdir()
    (src / "go.mod").write_text("module example.com/fipshello\n\ngo 1.24\n")
    (src / "main.go").write_text('package main\n\nimport (\n\t"crypto/sha256"\n\t"fmt"\n)\n\n'
                                 'func main() { fmt.Printf("%x\\n", sha256.Sum256([]byte("mke"))) }\n')
    bins = {"kubelet": build(src, tmp_path / "fips", env={"GOFIPS140": "v1.0.0"}),
            "etcd": build(src, tmp_path / "plain", env={})}
    cache = Cache(tmp_path / "cache")
    for p in parts:  # the runtime parts of the fixture live in another cache
        cache.cas.put_file(dist[0].cas.path(p.sha256))
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
        write_payload_file(cache, DistManifest.load(manifest), payload, runtime=parts, jobs=1)
        if error is None:
            release.verify_fips_bundle(payload, tmp_path / "mke-fips", None)
        else:
            with pytest.raises(VerificationError, match=f"FIPS check failed for .*mke-fips: {error}"):
                release.verify_fips_bundle(payload, tmp_path / "mke-fips", None)
