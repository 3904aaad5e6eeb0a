"""mke/fips/binary.py, goinfo.py, pclntab.py: the FIPS facts read from real Go binaries.

Real Go programs are built on the host (Go 1.24+ has the Go Cryptographic Module; the
host's Go carries the v1.0.0 snapshot in $GOROOT/lib/fips140, so no network is needed),
with and without GOFIPS140=v1.0.0, stripped with -s -w as the recipes build them.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from mke.fips.binary import inspect_binary
from mke.fips.goinfo import go_unquote, parse_modinfo
from tests.support.gofips import GO


def test_buildinfo_matches_go_version_m(gobins):
    """Our reader and `go version -m` agree on every build setting (stripped binary)."""
    facts = inspect_binary(gobins["fips"])
    out = subprocess.run([GO, "version", "-m", str(gobins["fips"])], capture_output=True, text=True, check=True).stdout
    settings = dict(line.split("\t", 2)[2].split("=", 1) for line in out.splitlines()
                    if line.startswith("\tbuild\t") and "=" in line)
    info = facts.buildinfo
    assert info is not None and out.startswith(f"{gobins['fips']}: {info.go_version}")
    for k, v in settings.items():
        assert info.setting(k) == v.strip('"') or info.setting(k) == go_unquote(v), k
    assert info.setting("GOFIPS140").startswith("v1.0.0-")
    assert info.default_godebug["fips140"] == "on"
    assert info.setting("-tags") == "fips140v1.0"
    assert info.path == "example.com/fipshello"


def test_symbols_survive_strip(gobins):
    """-s -w removes .symtab; the pclntab still names the frozen module's functions."""
    stripped = inspect_binary(gobins["fips"]).functions
    full = inspect_binary(gobins["fips-unstripped"]).functions
    if shutil.which("readelf"):
        sections = subprocess.run(["readelf", "-S", str(gobins["fips"])], capture_output=True, check=True).stdout
        assert b".symtab" not in sections
    assert stripped.fips_module_functions > 50
    assert stripped.fips_module_versions == full.fips_module_versions
    assert stripped.fips_module_versions[0].startswith("v1.0.0-")
    assert stripped.intree_functions == 0 and stripped.boring_cgo_functions == 0


def test_plain_build_links_intree_module(gobins):
    fn = inspect_binary(gobins["plain"]).functions
    assert fn.fips_module_functions == 0
    assert fn.intree_functions > 50 and "sha256" in fn.intree_packages


def test_static_pie_pclntab_in_data_rel_ro(gobins):
    """External linking of a PIE (runc) merges the pclntab into .data.rel.ro: it is found there."""
    if "fips-static-pie" not in gobins:
        pytest.skip("needs gcc")
    facts = inspect_binary(gobins["fips-static-pie"])
    assert facts.static and facts.buildinfo.setting("CGO_ENABLED") == "1"
    assert facts.functions.pclntab and facts.functions.fips_module_functions > 50


def test_not_elf_and_not_go(tmp_path):
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    facts = inspect_binary(script)
    assert not facts.elf and facts.buildinfo is None
    (tmp_path / "empty").write_bytes(b"")
    assert not inspect_binary(tmp_path / "empty").elf
    if shutil.which("gcc"):
        (tmp_path / "p.c").write_text("int main(void){return 0;}\n")
        subprocess.run(["gcc", "-static", "-o", tmp_path / "c", tmp_path / "p.c"], check=True)
        facts = inspect_binary(tmp_path / "c")
        assert facts.elf and facts.static and not facts.is_go and facts.functions is None


def test_parse_modinfo_quoted_settings():
    """Build settings with spaces are quoted the way Go's strconv.Quote does."""
    info = parse_modinfo("go1.26.1", 'path\texample.com/x\nmod\texample.com/x\t(devel)\t\n'
                                     'build\t-ldflags="-s -w -X \\"main.v=1\\""\nbuild\tGOFIPS140=v1.0.0\n'
                                     'build\tDefaultGODEBUG=fips140=on,x509sha1=1\n')
    assert info.path == "example.com/x" and info.main_module == "example.com/x"
    assert info.setting("-ldflags") == '-s -w -X "main.v=1"'
    assert info.default_godebug == {"fips140": "on", "x509sha1": "1"}
    assert go_unquote('"a\\tb\\x41"') == "a\tbA"
