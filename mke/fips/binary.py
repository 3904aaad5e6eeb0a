"""The FIPS facts of one file: ELF, static, Go build info and the crypto its functions come from."""

from __future__ import annotations

import dataclasses
import mmap
import os
import struct
from pathlib import Path
from typing import Any

from mke.elf import ElfFile
from mke.fips.goinfo import GoBuildInfo, read_go_buildinfo
from mke.fips.inventory import find_marks
from mke.fips.pclntab import CryptoFunctions, scan_functions


@dataclasses.dataclass(frozen=True, kw_only=True)
class BinaryFacts:
    """Everything the FIPS check looks at, read from one file."""

    name: str
    path: str
    elf: bool
    static: bool
    machine: int | None
    buildinfo: GoBuildInfo | None
    functions: CryptoFunctions | None
    #: C crypto libraries whose code is in the file (mke.fips.inventory marks): name -> text found
    crypto_marks: tuple[tuple[str, str], ...] = ()

    @property
    def is_go(self) -> bool:
        return self.buildinfo is not None


def inspect_binary(path: Path | str, name: str | None = None) -> BinaryFacts:
    """Read the facts of one executable without running it (works on stripped binaries)."""
    path = Path(path)
    label = name or path.name
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return BinaryFacts(name=label, path=str(path), elf=False, static=False, machine=None,
                               buildinfo=None, functions=None)
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return inspect_buffer(mm, name=label, path=str(path))


def inspect_buffer(buf: Any, *, name: str, path: str = "") -> BinaryFacts:
    """The facts of the file held in ``buf`` (bytes or an mmap); a damaged ELF counts as no ELF."""
    try:
        elf = ElfFile.parse(buf)
    except ValueError:
        elf = None
    if elf is None or elf.bits != 64 or not elf.little_endian:  # mke runs on amd64 and arm64 only
        return BinaryFacts(name=name, path=path, elf=False, static=False, machine=None, buildinfo=None,
                           functions=None)
    try:
        info = read_go_buildinfo(elf)
    except (ValueError, struct.error):
        info = None
    functions = scan_functions(elf) if info is not None else None
    return BinaryFacts(name=name, path=path, elf=True, static=elf.static, machine=elf.machine, buildinfo=info,
                       functions=functions, crypto_marks=tuple(sorted(find_marks(buf).items())))
