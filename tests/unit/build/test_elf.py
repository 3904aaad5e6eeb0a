"""build/elf.py: static/dynamic and arch detection on real executables."""

import subprocess

import pytest

from build.elf import check_static_executable, read_elf
from build.errors import VerificationError


@pytest.fixture(scope="module")
def binaries(tmp_path_factory):
    d = tmp_path_factory.mktemp("elf")
    (d / "m.c").write_text("int main(void){return 0;}\n")
    subprocess.run(["gcc", "-static", "-o", d / "static", d / "m.c"], check=True)
    subprocess.run(["gcc", "-o", d / "dynamic", d / "m.c"], check=True)
    (d / "script").write_text("#!/bin/sh\n")
    return d


def test_static(binaries):
    info = check_static_executable(binaries / "static", elf_machine=62, what="x")
    assert info.static and info.machine_name == "x86-64"


def test_dynamic_refused(binaries):
    assert read_elf(binaries / "dynamic").has_interp
    with pytest.raises(VerificationError, match="x: dynamically linked"):
        check_static_executable(binaries / "dynamic", elf_machine=62, what="x")


def test_wrong_arch_refused(binaries):
    with pytest.raises(VerificationError, match="built for x86-64, expected aarch64"):
        check_static_executable(binaries / "static", elf_machine=183, what="x")


def test_not_elf(binaries):
    assert read_elf(binaries / "script") is None
    with pytest.raises(VerificationError, match="not an ELF"):
        check_static_executable(binaries / "script", elf_machine=62, what="x")
