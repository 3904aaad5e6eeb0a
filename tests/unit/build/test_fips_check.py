"""build/fips_check.py and the binary reader it shares with the runtime (mke/fips.py).

Real Go programs are built on the host (Go 1.24+ has the Go Cryptographic Module; the
host's Go carries the v1.0.0 snapshot in $GOROOT/lib/fips140, so no network is needed),
with and without GOFIPS140=v1.0.0, stripped with -s -w as the recipes build them.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from build.errors import VerificationError
from build.fips_check import check_bundle, check_dist, main, verify_dist
from mke import fips
from tests.support.gofips import GO, build_programs, have_go_fips
from tests.support.payloads import make_payload

pytestmark = pytest.mark.skipif(not have_go_fips(), reason="needs Go 1.24+ on the host")


@pytest.fixture(scope="module")
def gobins(tmp_path_factory) -> dict[str, Path]:
    return build_programs(tmp_path_factory.mktemp("fipsgo"))


NATIVE = fips.Policy(go_mode="native", go_module="v1.0.0", exempt=(("pause", "C, no crypto"),))


def report(path: Path, policy: fips.Policy = NATIVE, name: str | None = None) -> fips.BinaryReport:
    return fips.evaluate(fips.inspect_binary(path, name), policy)


# ---------------------------------------------------------------------------- reading a binary


def test_buildinfo_matches_go_version_m(gobins):
    """Our reader and `go version -m` agree on every build setting (stripped binary)."""
    facts = fips.inspect_binary(gobins["fips"])
    out = subprocess.run([GO, "version", "-m", str(gobins["fips"])], capture_output=True, text=True, check=True).stdout
    settings = dict(line.split("\t", 2)[2].split("=", 1) for line in out.splitlines()
                    if line.startswith("\tbuild\t") and "=" in line)
    info = facts.buildinfo
    assert info is not None and out.startswith(f"{gobins['fips']}: {info.go_version}")
    for k, v in settings.items():
        assert info.setting(k) == v.strip('"') or info.setting(k) == fips._go_unquote(v), k
    assert info.setting("GOFIPS140").startswith("v1.0.0-")
    assert info.default_godebug["fips140"] == "on"
    assert info.setting("-tags") == "fips140v1.0"
    assert info.path == "example.com/fipshello"


def test_symbols_survive_strip(gobins):
    """-s -w removes .symtab; the pclntab still names the frozen module's functions."""
    stripped = fips.inspect_binary(gobins["fips"]).functions
    full = fips.inspect_binary(gobins["fips-unstripped"]).functions
    if shutil.which("readelf"):
        sections = subprocess.run(["readelf", "-S", str(gobins["fips"])], capture_output=True, check=True).stdout
        assert b".symtab" not in sections
    assert stripped.fips_module_functions > 50
    assert stripped.fips_module_versions == full.fips_module_versions
    assert stripped.fips_module_versions[0].startswith("v1.0.0-")
    assert stripped.intree_functions == 0 and stripped.boring_cgo_functions == 0


def test_plain_build_links_intree_module(gobins):
    fn = fips.inspect_binary(gobins["plain"]).functions
    assert fn.fips_module_functions == 0
    assert fn.intree_functions > 50 and "sha256" in fn.intree_packages


def test_not_go_and_not_elf(tmp_path):
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    assert not fips.inspect_binary(script).elf
    r = report(script)
    assert not r.ok and "not an ELF executable" in r.problems[0]
    if shutil.which("gcc"):
        (tmp_path / "p.c").write_text("int main(void){return 0;}\n")
        subprocess.run(["gcc", "-static", "-o", tmp_path / "pause", tmp_path / "p.c"], check=True)
        subprocess.run(["gcc", "-static", "-o", tmp_path / "other", tmp_path / "p.c"], check=True)
        assert report(tmp_path / "pause").ok and report(tmp_path / "pause").exempt == "C, no crypto"
        other = report(tmp_path / "other")
        assert not other.ok and "not a Go binary" in other.problems[0]


# ---------------------------------------------------------------------------- the policy


def test_fips_binary_passes(gobins):
    r = report(gobins["fips"])
    assert r.ok, r.problems
    assert r.gofips140.startswith("v1.0.0-") and r.fips140_default == "on" and r.static
    assert r.module.startswith("v1.0.0-") and r.module_functions > 50


def test_non_fips_binary_fails_with_reasons(gobins):
    r = report(gobins["plain"])
    assert not r.ok
    text = " | ".join(r.problems)
    assert "without the Go Cryptographic Module" in text
    assert "fips140=(unset)" in text
    assert "in-tree crypto module" in text


def test_latest_is_not_the_validated_module(gobins):
    """GOFIPS140=latest turns FIPS mode on but uses the unfrozen (unvalidated) packages."""
    r = report(gobins["latest"])
    assert r.fips140_default == "on"
    assert not r.ok
    assert any("GOFIPS140=latest" in p for p in r.problems)
    assert any("in-tree" in p for p in r.problems)


def test_boring_label_without_cgo_proves_nothing(gobins):
    boring = fips.Policy(go_mode="boring", go_module="")
    r = report(gobins["boring-nocgo"], boring)
    assert not r.ok
    assert any("CGO_ENABLED=0" in p for p in r.problems)
    assert any("no BoringCrypto" in p for p in r.problems)
    assert not report(gobins["fips"], boring).ok  # and native binaries do not pass a boring policy


def test_no_crypto_binary_passes(gobins):
    r = report(gobins["nocrypto-fips"])
    assert r.ok and r.module == "none"


def test_static_pie_external_linking(gobins):
    if "fips-static-pie" not in gobins:
        pytest.skip("needs gcc")
    r = report(gobins["fips-static-pie"])
    assert r.ok, r.problems
    assert r.cgo and r.module_functions > 50


def test_dynamic_binary_fails(gobins):
    if "fips-dynamic" not in gobins:
        pytest.skip("needs gcc")
    r = report(gobins["fips-dynamic"])
    assert not r.ok and r.problems == ("dynamically linked (has PT_INTERP)",)


def test_table_format(gobins):
    reports = fips.check_files({"kube-apiserver": gobins["fips"], "etcd": gobins["plain"]}, NATIVE)
    text = fips.format_table(reports)
    lines = text.splitlines()
    assert lines[0].split() == ["BINARY", "GO", "GOFIPS140", "FIPS140", "DEFAULT", "FIPS", "MODULE", "(FUNCTIONS)",
                                "STATIC", "FIPS"]
    assert lines[1].startswith("etcd") and lines[1].rstrip().endswith("no")
    assert lines[2].startswith("kube-apiserver") and lines[2].rstrip().endswith("yes")
    assert "  etcd: built without the Go Cryptographic Module" in text


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
