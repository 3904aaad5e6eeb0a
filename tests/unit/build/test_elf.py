"""build/elf.py: what the build accepts as an output (static, right arch), on real executables."""

import subprocess
from pathlib import Path

import pytest

from build.elf import check_static_executable
from build.errors import VerificationError


@pytest.fixture(scope="module")
def binaries(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("elf")
    (d / "m.c").write_text("int main(void){return 0;}\n")
    subprocess.run(["gcc", "-static", "-o", d / "static", d / "m.c"], check=True)
    subprocess.run(["gcc", "-static-pie", "-o", d / "static-pie", d / "m.c"], check=True)
    subprocess.run(["gcc", "-o", d / "dynamic", d / "m.c"], check=True)
    subprocess.run(["gcc", "-c", "-o", d / "object.o", d / "m.c"], check=True)
    (d / "script").write_text("#!/bin/sh\n")
    return d


@pytest.mark.parametrize("name", ["static", "static-pie"])
def test_static(binaries: Path, name: str) -> None:
    info = check_static_executable(binaries / name, elf_machine=62, what="x")
    assert info.static and info.machine_name == "x86-64"


def test_dynamic_refused(binaries: Path) -> None:
    with pytest.raises(VerificationError, match="x: dynamically linked"):
        check_static_executable(binaries / "dynamic", elf_machine=62, what="x")


def test_wrong_arch_refused(binaries: Path) -> None:
    with pytest.raises(VerificationError, match="built for x86-64, expected aarch64"):
        check_static_executable(binaries / "static", elf_machine=183, what="x")


def test_object_file_refused(binaries: Path) -> None:
    with pytest.raises(VerificationError, match="ELF type 1 is not an executable"):
        check_static_executable(binaries / "object.o", elf_machine=62, what="x")


def test_not_elf(binaries: Path) -> None:
    with pytest.raises(VerificationError, match="x: not an ELF executable"):
        check_static_executable(binaries / "script", elf_machine=62, what="x")


def test_truncated_download_refused(binaries: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut"
    cut.write_bytes((binaries / "static").read_bytes()[:-300])  # the section headers are at the end
    with pytest.raises(VerificationError, match="x: not a readable ELF file .*past the end of the file"):
        check_static_executable(cut, elf_machine=62, what="x")
