"""The one ELF reader: headers, program headers (segments) and named sections.

Used by the payload reader (``mke/payload_format.py``: find the ``mkepayload`` section of
mke's own executable on every start), the FIPS evidence readers (``mke/fips/``: Go build
info, pclntab, static) and the toolchain's output checks (``build/elf.py``: static, arch).

Stdlib only and cheap to import (no dataclasses, no NamedTuple: ``mke version`` pays for
every import on its path). An ``ElfFile`` is read either from an open file with a few
small reads (``ElfFile.read``: ELF header, program headers, section headers, section
names; the bytes of the sections are not read) or from a buffer that holds the whole
file (``ElfFile.parse`` over ``bytes`` or an ``mmap``), which also gives
``section_bytes`` and ``read_at``. Both ELF classes (32/64-bit) and both byte orders are
read; callers that need one of them check ``bits``/``little_endian``.

Malformed files raise ``ValueError`` naming what is wrong (a header table past the end
of the file: a truncated download); a file that is not an ELF at all gives ``None``.
Callers turn the ValueError into their own error class.
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs milliseconds on mke's start-up path
    import os
    from collections.abc import Callable
    from typing import Any, BinaryIO

MAGIC = b"\x7fELF"
ET_EXEC, ET_DYN = 2, 3
PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
PF_X, PF_W = 1, 2
SHT_NOBITS = 8
MACHINE_NAMES = {62: "x86-64", 183: "aarch64", 3: "i386", 40: "arm"}

# (ELF header size, program header, section header) per ELF class; the formats list only
# the fields read. 64-bit: p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz;
# 32-bit: p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags (flags move).
# Sections: sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size (both classes).
_LAYOUT = {
    2: (64, "IIQQQQQ", "IIQQQQ", "QQ", 0x20, 0x36),
    1: (52, "IIIIIII", "IIIIII", "II", 0x1C, 0x2A),
}


class Segment:
    """One program header."""

    __slots__ = ("filesz", "flags", "memsz", "offset", "type", "vaddr")

    def __init__(self, type: int, flags: int, offset: int, vaddr: int, filesz: int, memsz: int):
        self.type, self.flags, self.offset, self.vaddr, self.filesz, self.memsz = (
            type, flags, offset, vaddr, filesz, memsz)

    def __repr__(self) -> str:
        return (f"Segment(type={self.type}, flags={self.flags}, offset={self.offset}, vaddr={self.vaddr:#x}, "
                f"filesz={self.filesz}, memsz={self.memsz})")


class Section:
    """One section header, by name."""

    __slots__ = ("addr", "name", "offset", "size", "type")

    def __init__(self, name: str, type: int, addr: int, offset: int, size: int):
        self.name, self.type, self.addr, self.offset, self.size = name, type, addr, offset, size

    @property
    def nobits(self) -> bool:
        """Occupies no bytes in the file (``.bss``)."""
        return self.type == SHT_NOBITS

    def __repr__(self) -> str:
        return f"Section({self.name!r}, type={self.type}, offset={self.offset}, size={self.size})"


class ElfFile:
    """The headers of one ELF file. Build it with ``ElfFile.read`` (file) or ``ElfFile.parse`` (buffer)."""

    __slots__ = ("_names", "_ph_rows", "_sections", "_segments", "_sh_rows", "bits", "buf", "file_size",
                 "little_endian", "machine", "type")

    def __init__(self, read: Callable[[int, int], bytes], file_size: int, buf: Any = None):
        """``read(offset, n)`` gives the file's bytes; ``buf`` is the whole file when it is in memory.

        Every header table is read here (and checked against the file size); turning them
        into ``Segment``/``Section`` objects waits for the first use, so that finding one
        section on mke's start-up path costs little more than the reads.
        """
        self.file_size = file_size
        self.buf = buf
        ident = read(0, 64)
        if len(ident) < 16 or ident[:4] != MAGIC:
            raise ValueError("not an ELF file")
        if ident[4] not in _LAYOUT or ident[5] not in (1, 2):
            raise ValueError(f"unknown ELF class {ident[4]} or byte order {ident[5]}")
        self.bits = 64 if ident[4] == 2 else 32
        self.little_endian = ident[5] == 1
        ehsize, ph_fmt, sh_fmt, off_fmt, off_at, sizes_at = _LAYOUT[ident[4]]
        if len(ident) < ehsize:
            raise ValueError("the ELF header is cut off")
        e = "<" if self.little_endian else ">"
        self.type, self.machine = struct.unpack_from(e + "HH", ident, 16)
        phoff, shoff = struct.unpack_from(e + off_fmt, ident, off_at)
        phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from(e + "HHHHH", ident, sizes_at)

        self._ph_rows: list[tuple[int, ...]] = []
        ph = struct.Struct(e + ph_fmt)
        if phnum:
            if phentsize < ph.size or phoff + phnum * phentsize > file_size:
                raise ValueError("the program header table lies past the end of the file")
            table = read(phoff, phnum * phentsize)
            self._ph_rows = [ph.unpack_from(table, i * phentsize) for i in range(phnum)]

        self._sh_rows: list[tuple[int, ...]] = []
        self._names = b""
        sh = struct.Struct(e + sh_fmt)
        if shoff and shnum:
            if shentsize < sh.size or shoff + shnum * shentsize > file_size or shstrndx >= shnum:
                raise ValueError("the section header table lies past the end of the file")
            table = read(shoff, shnum * shentsize)
            self._sh_rows = [sh.unpack_from(table, i * shentsize) for i in range(shnum)]
            str_off, str_size = self._sh_rows[shstrndx][4], self._sh_rows[shstrndx][5]
            if str_off + str_size > file_size:
                raise ValueError("the section name table lies past the end of the file")
            self._names = read(str_off, str_size)
        self._segments: tuple[Segment, ...] | None = None
        self._sections: dict[str, Section] | None = None

    @property
    def segments(self) -> tuple[Segment, ...]:
        """The program headers, in file order."""
        if self._segments is None:
            if self.bits == 64:
                self._segments = tuple(Segment(t, fl, o, v, fs, ms) for t, fl, o, v, _p, fs, ms in self._ph_rows)
            else:
                self._segments = tuple(Segment(t, fl, o, v, fs, ms) for t, o, v, _p, fs, ms, fl in self._ph_rows)
        return self._segments

    @property
    def sections(self) -> dict[str, Section]:
        """The sections by name (the first of a name wins), in file order."""
        if self._sections is None:
            names, found = self._names, {}
            for name_off, sh_type, _flags, addr, offset, size in self._sh_rows:
                end = names.find(b"\0", name_off)
                if end < 0:
                    continue
                name = names[name_off:end].decode("ascii", "replace")
                if name not in found:
                    found[name] = Section(name, sh_type, addr, offset, size)
            self._sections = found
        return self._sections

    # ------------------------------------------------------------------ constructors

    @classmethod
    def read(cls, f: BinaryIO) -> ElfFile | None:
        """The headers of the ELF file ``f`` (a few small reads), or None if it is not an ELF file."""
        f.seek(0)
        if f.read(4) != MAGIC:
            return None
        size = f.seek(0, 2)

        def read(offset: int, n: int) -> bytes:
            f.seek(offset)
            data = f.read(n)
            if len(data) != n and offset + n <= size:
                raise ValueError("the file changed while it was read")
            return data

        return cls(read, size)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ElfFile | None:
        """``read`` on the file at ``path`` (OSError propagates)."""
        with open(path, "rb") as f:
            return cls.read(f)

    @classmethod
    def parse(cls, buf: Any) -> ElfFile | None:
        """The headers of the ELF file held in ``buf`` (bytes, memoryview or mmap), or None if it is not one."""
        if buf[:4] != MAGIC:
            return None
        return cls(lambda offset, n: bytes(buf[offset:offset + n]), len(buf), buf)

    # ------------------------------------------------------------------ facts

    @property
    def static(self) -> bool:
        """No program interpreter (PT_INTERP): the kernel runs it without a dynamic loader."""
        return not any(s.type == PT_INTERP for s in self.segments)

    @property
    def dynamic(self) -> bool:
        """Has a PT_DYNAMIC segment (a static PIE has one too)."""
        return any(s.type == PT_DYNAMIC for s in self.segments)

    @property
    def executable(self) -> bool:
        return self.type in (ET_EXEC, ET_DYN)

    @property
    def machine_name(self) -> str:
        return machine_name(self.machine)

    def section(self, name: str) -> Section | None:
        """The first section called ``name``, or None."""
        if self._sections is not None:
            return self._sections.get(name)
        want, names = name.encode() + b"\0", self._names
        for name_off, sh_type, _flags, addr, offset, size in self._sh_rows:
            if names[name_off:name_off + len(want)] == want:
                return Section(name, sh_type, addr, offset, size)
        return None

    def section_span(self, name: str) -> tuple[int, int] | None:
        """(file offset, size) of the section ``name``; None if there is none.

        Raises ValueError when its bytes lie past the end of the file (truncated).
        """
        s = self.section(name)
        if s is None:
            return None
        if not s.nobits and s.offset + s.size > self.file_size:
            raise ValueError(f"section {name} lies past the end of the file")
        return s.offset, s.size

    # ------------------------------------------------------------------ bytes (parse() only)

    def section_bytes(self, name: str) -> memoryview | None:
        """The bytes of section ``name`` (a view into the buffer); None if absent, NOBITS or cut off."""
        s = self.section(name)
        if s is None or s.nobits or s.offset + s.size > self.file_size:
            return None
        return memoryview(self._buffer())[s.offset:s.offset + s.size]

    def read_at(self, vaddr: int, n: int) -> bytes | None:
        """``n`` bytes at virtual address ``vaddr`` (through the PT_LOAD segments); None if unmapped."""
        for s in self.segments:
            if s.type == PT_LOAD and s.vaddr <= vaddr and vaddr + n <= s.vaddr + s.filesz:
                o = s.offset + (vaddr - s.vaddr)
                return bytes(self._buffer()[o:o + n])
        return None

    def _buffer(self) -> Any:
        if self.buf is None:
            raise TypeError("ElfFile.read() keeps no bytes; use ElfFile.parse() on the whole file")
        return self.buf


def machine_name(machine: int) -> str:
    """``x86-64`` for e_machine 62, and so on."""
    return MACHINE_NAMES.get(machine, f"e_machine={machine}")
