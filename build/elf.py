"""The toolchain's check of each output: a static ELF executable for the target machine.

The headers are read by ``mke.elf`` (the runtime's one ELF reader, which the payload and
FIPS readers use too); this module only decides what the build accepts.
"""

from __future__ import annotations

from pathlib import Path

from build.errors import VerificationError
from mke.elf import ElfFile, machine_name


def check_static_executable(path: Path, *, elf_machine: int, what: str) -> ElfFile:
    """Raise VerificationError unless ``path`` is a static ELF executable for ``elf_machine``."""
    try:
        info = ElfFile.open(path)
    except ValueError as e:
        raise VerificationError(f"{what}: not a readable ELF file ({e}); is the archive member or URL right?") from e
    if info is None:
        raise VerificationError(f"{what}: not an ELF executable (is the archive member or URL right?)")
    if info.machine != elf_machine:
        raise VerificationError(f"{what}: built for {info.machine_name}, expected {machine_name(elf_machine)}")
    if not info.executable:
        raise VerificationError(f"{what}: ELF type {info.type} is not an executable")
    if not info.static:
        raise VerificationError(f"{what}: dynamically linked (has PT_INTERP); mke embeds static binaries only")
    return info
