"""build/fips_check.py: the build's FIPS step over a dist dir, a bundle's payload and loose files.

Real Go programs are built on the host (Go 1.24+ has the Go Cryptographic Module; the
host's Go carries the v1.0.0 snapshot in $GOROOT/lib/fips140, so no network is needed),
with and without GOFIPS140=v1.0.0, stripped with -s -w as the recipes build them.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from build.errors import VerificationError
from build.fips_check import check_bundle, check_dist, main, verify_dist
from mke.fips.policy import Policy
from tests.support.gofips import build_programs, have_go_fips
from tests.support.payloads import make_payload

pytestmark = pytest.mark.skipif(not have_go_fips(), reason="needs Go 1.24+ on the host")


@pytest.fixture(scope="module")
def gobins(tmp_path_factory) -> dict[str, Path]:
    return build_programs(tmp_path_factory.mktemp("fipsgo"))


NATIVE = Policy(go_mode="native", go_module="v1.0.0", exempt=(("pause", "C, no crypto"),))


# ---------------------------------------------------------------------------- the build step


def _dist(tmp_path: Path, files: dict[str, Path], fips_build: bool = True) -> Path:
    out = tmp_path / "dist" / "linux-amd64"
    (out / "bin").mkdir(parents=True)
    entries = []
    for name, src in files.items():
        shutil.copyfile(src, out / "bin" / name)
        entries.append({"name": name, "sha256": "0" * 64, "size": src.stat().st_size, "fips": fips_build})
    (out / "manifest.json").write_text(json.dumps({"schema": 1, "mode": "docker", "fips": fips_build,
                                                   "platform": "linux/amd64", "binaries": entries}))
    return out / "manifest.json"


def test_verify_dist_passes_and_writes_report(gobins, tmp_path):
    manifest = _dist(tmp_path, {"kube-apiserver": gobins["fips"], "kubelet": gobins["fips"]})
    reports = verify_dist(manifest, fips=True, go_mode="native", out=io.StringIO())
    assert [r.name for r in reports] == ["kube-apiserver", "kubelet"] and all(r.ok for r in reports)
    doc = json.loads((manifest.parent / "fips-report.json").read_text())
    assert doc["ok"] and doc["fips_build"] and doc["go_module"] == "v1.0.0"


def test_non_fips_binary_slipped_into_fips_dist_fails_the_build(gobins, tmp_path):
    """The negative test of issue 5: the build fails and names the binary."""
    manifest = _dist(tmp_path, {"kube-apiserver": gobins["fips"], "etcd": gobins["plain"],
                                "kubelet": gobins["fips"]})
    with pytest.raises(VerificationError, match=r"FIPS check failed for .*: etcd: built without the Go "
                                                r"Cryptographic Module") as e:
        verify_dist(manifest, fips=True, go_mode="native", out=io.StringIO())
    assert e.value.exit_code == 11
    assert not json.loads((manifest.parent / "fips-report.json").read_text())["ok"]


def test_non_fips_build_reports_without_failing(gobins, tmp_path):
    manifest = _dist(tmp_path, {"etcd": gobins["plain"]}, fips_build=False)
    reports = verify_dist(manifest, fips=False, out=io.StringIO())
    assert not reports[0].ok


def test_non_fips_binary_in_payload_is_named(gobins, tmp_path):
    """The same check on the binaries inside a bundle's payload (what `mke fips check` reads)."""
    payload = tmp_path / "payload"
    make_payload(payload, [{"kube-apiserver": gobins["fips"].read_bytes(), "etcd": gobins["plain"].read_bytes()},
                           {"kubelet": gobins["fips"].read_bytes()}])
    reports, _ = check_bundle(payload, policy=NATIVE)
    by = {r.name: r for r in reports}
    assert by["kube-apiserver"].ok and by["kubelet"].ok
    assert not by["etcd"].ok and "without the Go Cryptographic Module" in by["etcd"].problems[0]
    assert not list(tmp_path.glob("mke-fips-check-*"))


def test_cli(gobins, tmp_path, capsys):
    manifest = _dist(tmp_path, {"kube-apiserver": gobins["fips"], "etcd": gobins["plain"]})
    assert main([str(manifest.parent), "--fips-go", "native"]) == 0
    out = capsys.readouterr().out
    assert "kube-apiserver" in out and "etcd: built without" in out
    assert main([str(manifest.parent), "--require"]) == 11
    assert "FIPS check failed" in capsys.readouterr().err
    assert main([str(gobins["fips"]), "--json", "--require"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_check_dist_missing_binary(tmp_path, gobins):
    manifest = _dist(tmp_path, {"kubelet": gobins["fips"]})
    (manifest.parent / "bin" / "kubelet").unlink()
    with pytest.raises(VerificationError, match="kubelet listed but not in"):
        check_dist(manifest, policy=NATIVE)


def test_a_bundle_is_checked_by_the_mode_its_payload_records(gobins, tmp_path, capsys):
    """Issue 17 item 3: `python -m build.fips_check dist/mke-fips` of a boring bundle needs no --fips-go."""
    import shutil

    from tests.support.payloads import embed

    if "boring" not in gobins or not shutil.which("objcopy"):
        pytest.skip("needs gcc (the BoringCrypto program) and objcopy")
    payload = tmp_path / "payload"
    make_payload(payload, [{"runc": gobins["boring"].read_bytes()}], mode="docker", fips=True, fips_go="boring")
    exe = embed(gobins["nocrypto-fips"], payload, tmp_path / "mke-fips")
    reports, meta = check_bundle(exe)
    assert meta["fips_go"] == "boring" and reports[0].ok, reports[0].problems
    assert main([str(exe), "--require", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["go_mode"] == "boring" and doc["fips_go"] == "boring" and doc["ok"]
    assert main([str(exe), "--require", "--fips-go", "native"]) == 11  # asked for: native rules
    assert "runc: " in capsys.readouterr().err
