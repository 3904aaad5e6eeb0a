"""mke/elf.py: the one ELF reader, checked against binutils' readelf on real files.

Real executables come from gcc and ld (64-bit static and dynamic, a 32-bit i386 program
from ``as --32`` + ``ld -m elf_i386``); big-endian files from ``objcopy -O elf64-big``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mke.elf import PT_INTERP, PT_LOAD, ElfFile

needs_binutils = pytest.mark.skipif(not all(shutil.which(t) for t in ("gcc", "as", "ld", "objcopy", "readelf")),
                                    reason="needs gcc and binutils (as, ld, objcopy, readelf)")

I386_PROGRAM = """\
.globl _start
_start:
    movl $1, %eax
    xorl %ebx, %ebx
    int $0x80
.data
msg: .ascii "hello"
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("elf")
    (d / "m.c").write_text("int main(void){return 0;}\n")
    subprocess.run(["gcc", "-static", "-o", d / "static", d / "m.c"], check=True)
    subprocess.run(["gcc", "-o", d / "dynamic", d / "m.c"], check=True)
    (d / "s.S").write_text(I386_PROGRAM)
    subprocess.run(["as", "--32", "-o", d / "s.o", d / "s.S"], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-o", d / "i386", d / "s.o"], check=True)
    (d / "payload.bin").write_bytes(b"payload bytes\n")
    for target in ("elf64-big", "elf32-big", "elf32-i386"):
        subprocess.run(["objcopy", "-I", "binary", "-O", target, "--rename-section", ".data=mkepayload",
                        d / "payload.bin", d / f"{target}.o"], check=True)
    return d


def readelf_sections(path: Path) -> dict[str, tuple[str, int, int]]:
    """name -> (type, offset, size), from ``readelf -SW``."""
    out = subprocess.run(["readelf", "-SW", str(path)], capture_output=True, text=True, check=True).stdout
    found = {}
    row = re.compile(r"^\s*\[\s*[1-9]\d*\]\s+(\S+)\s+(\S+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)", re.MULTILINE)
    for m in row.finditer(out):
        found.setdefault(m.group(1), (m.group(2), int(m.group(3), 16), int(m.group(4), 16)))
    return found


def readelf_segments(path: Path) -> list[tuple[str, int, int, int, int]]:
    """(type, offset, vaddr, filesz, memsz) per program header, from ``readelf -lW``."""
    out = subprocess.run(["readelf", "-lW", str(path)], capture_output=True, text=True, check=True).stdout
    rows = re.findall(r"^\s+(\w+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)",
                      out, re.MULTILINE)
    return [(t, *(int(x, 16) for x in rest)) for t, *rest in rows]


SEGMENT_TYPES = {"LOAD": PT_LOAD, "INTERP": PT_INTERP, "DYNAMIC": 2, "NOTE": 4, "PHDR": 6, "TLS": 7,
                 "GNU_EH_FRAME": 0x6474E550, "GNU_STACK": 0x6474E551, "GNU_RELRO": 0x6474E552,
                 "GNU_PROPERTY": 0x6474E553}


@needs_binutils
@pytest.mark.parametrize("name", ["static", "dynamic", "i386"])
def test_headers_match_readelf(files: Path, name: str) -> None:
    path = files / name
    elf = ElfFile.open(path)
    assert elf is not None
    want_sections = readelf_sections(path)
    assert want_sections and {n: (s.offset, s.size) for n, s in elf.sections.items() if n} == {
        n: (off, size) for n, (_t, off, size) in want_sections.items()}
    want_segments = readelf_segments(path)
    assert want_segments and [(s.type, s.offset, s.vaddr, s.filesz, s.memsz) for s in elf.segments] == [
        (SEGMENT_TYPES[t], *rest) for t, *rest in want_segments]
    # the same headers from a buffer holding the whole file
    parsed = ElfFile.parse(path.read_bytes())
    assert parsed is not None
    assert [(s.name, s.offset, s.size) for s in parsed.sections.values()] == [
        (s.name, s.offset, s.size) for s in elf.sections.values()]


@needs_binutils
def test_facts(files: Path) -> None:
    static, dynamic, i386 = (ElfFile.open(files / n) for n in ("static", "dynamic", "i386"))
    assert static.static and static.executable and static.bits == 64 and static.machine_name == "x86-64"
    assert not dynamic.static and dynamic.dynamic
    assert i386.bits == 32 and i386.little_endian and i386.machine_name == "i386" and i386.static
    # read_at goes through the PT_LOAD segments: the i386 program's .data holds "hello"
    data = ElfFile.parse((files / "i386").read_bytes())
    assert data.read_at(data.section(".data").addr, 5) == b"hello"
    assert bytes(data.section_bytes(".data")) == b"hello"
    assert data.read_at(0x10, 4) is None  # not mapped
    interp = ElfFile.parse((files / "dynamic").read_bytes()).section_bytes(".interp")
    assert bytes(interp).startswith(b"/lib") and bytes(interp).endswith(b".so.2\0")


@needs_binutils
@pytest.mark.parametrize("target", ["elf64-big", "elf32-big", "elf32-i386"])
def test_other_classes_and_byte_orders(files: Path, target: str) -> None:
    path = files / f"{target}.o"
    with open(path, "rb") as f:
        elf = ElfFile.read(f)
        assert elf is not None
        assert elf.little_endian == (target == "elf32-i386") and elf.bits == (64 if "64" in target else 32)
        offset, size = elf.section_span("mkepayload")
        f.seek(offset)
        assert f.read(size) == b"payload bytes\n"
    assert (offset, size) == readelf_sections(path)["mkepayload"][1:]


@needs_binutils
def test_truncated_and_not_elf(files: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut"
    cut.write_bytes((files / "static").read_bytes()[:-200])  # the section header table is at the end
    with pytest.raises(ValueError, match="section header table lies past the end of the file"):
        ElfFile.open(cut)
    (tmp_path / "short").write_bytes(b"\x7fELF\x02\x01")
    with pytest.raises(ValueError, match="not an ELF file|cut off"):
        ElfFile.open(tmp_path / "short")
    (tmp_path / "script").write_text("#!/bin/sh\n")
    assert ElfFile.open(tmp_path / "script") is None
    assert ElfFile.parse(b"") is None


@needs_binutils
def test_file_reader_keeps_no_bytes(files: Path) -> None:
    elf = ElfFile.open(files / "static")
    with pytest.raises(TypeError, match="use ElfFile.parse"):
        elf.section_bytes(".text")
