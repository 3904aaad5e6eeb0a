"""Go build info: what ``go version -m`` prints, read from a binary without running it.

The blob lives in the ``.go.buildinfo`` section or, as Go's debug/buildinfo finds it, at
the start of the first writable ``PT_LOAD`` segment; both the inline-string format of
Go 1.18+ and the pointer format of Go 1.13-1.17 are read.
"""

from __future__ import annotations

import dataclasses
import re
import struct
from typing import Any

from mke.elf import PF_W, PF_X, PT_LOAD, ElfFile

_BUILDINFO_MAGIC = b"\xff Go buildinf:"
_BUILDINFO_ALIGN = 16
_BUILDINFO_HEADER = 32
_FLAG_VERSION_INLINE = 0x2
_MODINFO_SENTINEL = 16


@dataclasses.dataclass(frozen=True, kw_only=True)
class GoBuildInfo:
    """What ``go version -m`` prints: the toolchain, the main module and the build settings."""

    go_version: str
    path: str
    main_module: str
    settings: tuple[tuple[str, str], ...]

    def setting(self, key: str) -> str | None:
        for k, v in self.settings:
            if k == key:
                return v
        return None

    @property
    def default_godebug(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in (self.setting("DefaultGODEBUG") or "").split(","):
            if "=" in part:
                k, v = part.split("=", 1)
                out[k.strip()] = v.strip()
        return out

    @property
    def experiments(self) -> tuple[str, ...]:
        return tuple(x for x in (self.setting("GOEXPERIMENT") or "").split(",") if x)


def _uvarint(buf: Any, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("bad varint in Go build info")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


_GO_ESCAPE = re.compile(r'\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|.)')
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                   "\\": "\\", '"': '"', "'": "'"}


def go_unquote(s: str) -> str:
    """Undo Go's strconv.Quote (used for build settings with spaces, e.g. -ldflags)."""
    if len(s) < 2 or s[0] != '"' or s[-1] != '"':
        return s

    def one(m: re.Match[str]) -> str:
        e = m.group(1)
        if e[0] in "xuU":
            return chr(int(e[1:], 16))
        if e[0] in "01234567" and len(e) == 3:
            return chr(int(e, 8))
        return _SIMPLE_ESCAPES.get(e, e)

    return _GO_ESCAPE.sub(one, s[1:-1])


def parse_modinfo(go_version: str, mod: str) -> GoBuildInfo:
    """Parse the module-info text of the build info (``path``, ``mod``, ``dep``, ``build`` lines)."""
    path = main = ""
    settings: list[tuple[str, str]] = []
    for line in mod.splitlines():
        kind, _, rest = line.partition("\t")
        if kind == "path":
            path = rest
        elif kind == "mod":
            main = rest.split("\t")[0]
        elif kind == "build":
            if rest.startswith('"'):  # a quoted key (contains '=' or spaces)
                m = re.match(r'"(?:[^"\\]|\\.)*"', rest)
                key = go_unquote(m.group(0)) if m else rest
                value = rest[m.end() + 1:] if m else ""
            else:
                key, _, value = rest.partition("=")
            settings.append((key, go_unquote(value)))
    return GoBuildInfo(go_version=go_version, path=path, main_module=main, settings=tuple(settings))


def _buildinfo_region(elf: ElfFile) -> tuple[int, int] | None:
    """(file offset, size) where Go's build info lives, as Go's debug/buildinfo finds it."""
    s = elf.section(".go.buildinfo")
    if s is not None and not s.nobits:
        return s.offset, s.size
    for p in elf.segments:
        if p.type == PT_LOAD and p.flags & (PF_X | PF_W) == PF_W:
            return p.offset, p.filesz
    return None


def read_go_buildinfo(elf: ElfFile) -> GoBuildInfo | None:
    """The build info of a Go binary, or None if it is not one (or is older than Go 1.13)."""
    where = _buildinfo_region(elf)
    if where is None:
        return None
    start, size = where
    buf = elf.buf
    window = min(size, 64 * 1024)
    pos = start
    end = start + window
    while True:
        i = buf.find(_BUILDINFO_MAGIC, pos, end)
        if i < 0:
            return None
        if (i - start) % _BUILDINFO_ALIGN == 0:
            break
        pos = i + 1
    header = bytes(buf[i:i + _BUILDINFO_HEADER])
    if len(header) < _BUILDINFO_HEADER:
        return None
    ptr_size, flags = header[14], header[15]
    if flags & _FLAG_VERSION_INLINE:
        n, p = _uvarint(buf, i + _BUILDINFO_HEADER)
        version = bytes(buf[p:p + n]).decode("utf-8", "replace")
        n2, p2 = _uvarint(buf, p + n)
        mod = bytes(buf[p2:p2 + n2])
    else:  # Go 1.13-1.17: pointers to Go string headers (ptr, len)
        fmt = "<Q" if ptr_size == 8 else "<I"

        def go_string(at: int) -> bytes:
            hdr = elf.read_at(at, 2 * ptr_size)
            if hdr is None:
                return b""
            sp, sl = struct.unpack_from(fmt, hdr, 0)[0], struct.unpack_from(fmt, hdr, ptr_size)[0]
            return elf.read_at(sp, sl) or b""

        (vaddr,) = struct.unpack_from(fmt, header, 16)
        (maddr,) = struct.unpack_from(fmt, header, 16 + ptr_size)
        version = go_string(vaddr).decode("utf-8", "replace")
        mod = go_string(maddr)
    if len(mod) >= 2 * _MODINFO_SENTINEL + 1 and mod[-_MODINFO_SENTINEL - 1:-_MODINFO_SENTINEL] == b"\n":
        mod = mod[_MODINFO_SENTINEL:-_MODINFO_SENTINEL]
    else:
        mod = b""
    if not version.startswith("go") and not version.startswith("devel"):
        return None
    return parse_modinfo(version, mod.decode("utf-8", "replace"))
