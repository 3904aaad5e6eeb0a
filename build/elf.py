"""Minimal ELF inspection: is a file a static executable for a given machine?

Reads only the ELF and program headers (no third-party parser needed).
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

from build.errors import VerificationError

PT_INTERP = 3
PT_DYNAMIC = 2
ET_EXEC, ET_DYN = 2, 3
MACHINE_NAMES = {62: "x86-64", 183: "aarch64", 3: "i386", 40: "arm"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ElfInfo:
    machine: int
    elf_type: int
    has_interp: bool
    has_dynamic: bool

    @property
    def static(self) -> bool:
        return not self.has_interp

    @property
    def machine_name(self) -> str:
        return MACHINE_NAMES.get(self.machine, f"e_machine={self.machine}")


def read_elf(path: Path) -> ElfInfo | None:
    """Return header facts, or None if ``path`` is not a 64-bit little-endian ELF."""
    with open(path, "rb") as f:
        ident = f.read(64)
        if len(ident) < 64 or ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1:
            return None
        e_type, e_machine = struct.unpack_from("<HH", ident, 16)
        e_phoff = struct.unpack_from("<Q", ident, 32)[0]
        e_phentsize, e_phnum = struct.unpack_from("<HH", ident, 54)
        f.seek(e_phoff)
        table = f.read(e_phentsize * e_phnum)
    types = {struct.unpack_from("<I", table, i * e_phentsize)[0] for i in range(e_phnum) if (i + 1) * e_phentsize <= len(table)}
    return ElfInfo(machine=e_machine, elf_type=e_type, has_interp=PT_INTERP in types, has_dynamic=PT_DYNAMIC in types)


def check_static_executable(path: Path, *, elf_machine: int, what: str) -> ElfInfo:
    """Raise VerificationError unless ``path`` is a static ELF executable for ``elf_machine``."""
    info = read_elf(path)
    if info is None:
        raise VerificationError(f"{what}: not an ELF executable (is the archive member or URL right?)")
    if info.machine != elf_machine:
        raise VerificationError(
            f"{what}: built for {info.machine_name}, expected {MACHINE_NAMES.get(elf_machine, elf_machine)}"
        )
    if info.elf_type not in (ET_EXEC, ET_DYN):
        raise VerificationError(f"{what}: ELF type {info.elf_type} is not an executable")
    if info.has_interp:
        raise VerificationError(f"{what}: dynamically linked (has PT_INTERP); mke embeds static binaries only")
    return info
