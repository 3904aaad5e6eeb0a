"""FIPS 140-3 evidence: what a Go binary was built with, and what this runtime's crypto is.

Two halves, both stdlib-only so ``mke fips check`` can run them on the binaries it
carries, and the toolchain (``build/fips_check.py``) can run the same code at build time:

**Go binaries.** The proof comes from the binary itself, never from a label:

- the Go *build info* blob (what ``go version -m`` prints), read from the ELF
  ``.go.buildinfo`` section (or, as Go's debug/buildinfo does, the first writable
  ``PT_LOAD`` segment): ``GOFIPS140``, ``GOEXPERIMENT``, ``CGO_ENABLED`` and
  ``DefaultGODEBUG`` (which must hold ``fips140=on``);
- the *function names* in the pclntab (``.gopclntab``), which the Go runtime needs for
  stack traces and which therefore survive ``-ldflags=-s -w`` (the ``.symtab`` does
  not). A binary built with ``GOFIPS140=v1.0.0`` has its crypto in
  ``crypto/internal/fips140/v1.0.0-<hash>/...`` (the frozen, validated module; the last
  path element appears escaped as ``v1%2e0%2e0-<hash>``); a binary built without it has
  the in-tree ``crypto/internal/fips140/sha256`` etc. instead. For BoringCrypto the
  evidence is the cgo stubs ``crypto/internal/boring._Cfunc__goboringcrypto_*``: a
  cgo-less ``GOEXPERIMENT=boringcrypto`` build still carries the label but not those;
- static: no ``PT_INTERP`` program header.

**The runtime** (``runtime_state``): which OpenSSL ``hashlib`` and ``cryptography``
use, whether the FIPS provider is loaded and is the default, and the behaviour that
follows (MD5 refused, RSA-1024 refused, CPython's built-in hash modules absent).
"""

from __future__ import annotations

import dataclasses
import json
import mmap
import os
import re
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mke.errors import FipsError

# Go Cryptographic Module versions mke knows. Keep in sync with fips/toolchain.toml
# (tests/unit/test_fips_check.py checks it).
GO_MODULES: dict[str, str] = {
    "v1.0.0": "validated: CMVP certificate #5247 (Go Cryptographic Module v1.0.0, Go 1.24+)",
    "v1.26.0": "not validated: on the CMVP Modules In Process list (Go 1.26+)",
}
DEFAULT_GO_MODULE = "v1.0.0"
GO_MODES = ("native", "boring")
#: Non-Go binaries that do no crypto (keep in sync with [exempt] in fips/toolchain.toml).
EXEMPT: dict[str, str] = {
    "pause": "C program (Kubernetes build/pause/linux/pause.c) that does no cryptography",
}

FIPS_PKG_PREFIX = b"crypto/internal/fips140/"
BORING_CGO_PREFIX = b"crypto/internal/boring._Cfunc__goboringcrypto_"
_VERSIONED = re.compile(rb"v\d+(?:\.|%2e)\d+(?:\.|%2e)\d+(?:-[0-9A-Za-z]+)?(?=[/.]|$)")
_PKG = re.compile(rb"[a-z0-9_]+(?=[/.]|$)")

_BUILDINFO_MAGIC = b"\xff Go buildinf:"
_BUILDINFO_ALIGN = 16
_BUILDINFO_HEADER = 32
_FLAG_VERSION_INLINE = 0x2
_MODINFO_SENTINEL = 16
_PCLNTAB_MAGICS = {0xFFFFFFF1: "go1.20", 0xFFFFFFF0: "go1.18", 0xFFFFFFFA: "go1.16", 0xFFFFFFFB: "go1.2"}
PT_LOAD, PT_INTERP = 1, 3
PF_X, PF_W = 1, 2


# ============================================================================ ELF


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Section:
    name: str
    addr: int
    offset: int
    size: int
    nobits: bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Segment:
    type: int
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int


class _Elf:
    """The headers of a 64-bit little-endian ELF held in a buffer (an mmap or bytes)."""

    def __init__(self, buf: Any):
        if len(buf) < 64 or buf[:4] != b"\x7fELF":
            raise ValueError("not an ELF file")
        if buf[4] != 2 or buf[5] != 1:
            raise ValueError("not a 64-bit little-endian ELF file")
        self.buf = buf
        (self.machine,) = struct.unpack_from("<H", buf, 18)
        phoff, shoff = struct.unpack_from("<QQ", buf, 32)
        phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", buf, 54)
        self.segments: list[_Segment] = []
        for i in range(phnum):
            o = phoff + i * phentsize
            if o + 56 > len(buf):
                break
            p_type, p_flags, p_offset, p_vaddr, _paddr, p_filesz, p_memsz = struct.unpack_from("<IIQQQQQ", buf, o)
            self.segments.append(_Segment(type=p_type, flags=p_flags, offset=p_offset, vaddr=p_vaddr,
                                          filesz=p_filesz, memsz=p_memsz))
        self.sections: dict[str, _Section] = {}
        if shoff and shnum and shoff + shnum * shentsize <= len(buf) and shstrndx < shnum:
            raw = [struct.unpack_from("<IIQQQQ", buf, shoff + i * shentsize) for i in range(shnum)]
            str_off = raw[shstrndx][4]
            for name_off, sh_type, _flags, addr, offset, size in raw:
                start = str_off + name_off
                end = buf.find(b"\0", start, start + 256) if start < len(buf) else -1
                if end < 0:
                    continue
                name = bytes(buf[start:end]).decode("ascii", "replace")
                self.sections.setdefault(name, _Section(name=name, addr=addr, offset=offset, size=size,
                                                        nobits=sh_type == 8))

    @property
    def static(self) -> bool:
        return not any(s.type == PT_INTERP for s in self.segments)

    def section_bytes(self, name: str) -> memoryview | None:
        s = self.sections.get(name)
        if s is None or s.nobits or s.offset + s.size > len(self.buf):
            return None
        return memoryview(self.buf)[s.offset:s.offset + s.size]

    def read_at(self, vaddr: int, n: int) -> bytes | None:
        """``n`` bytes at virtual address ``vaddr`` (through the PT_LOAD segments)."""
        for s in self.segments:
            if s.type == PT_LOAD and s.vaddr <= vaddr and vaddr + n <= s.vaddr + s.filesz:
                o = s.offset + (vaddr - s.vaddr)
                return bytes(self.buf[o:o + n])
        return None

    def data_start(self) -> tuple[int, int] | None:
        """(file offset, size) where Go's build info lives, as Go's debug/buildinfo finds it."""
        s = self.sections.get(".go.buildinfo")
        if s is not None and not s.nobits:
            return s.offset, s.size
        for p in self.segments:
            if p.type == PT_LOAD and p.flags & (PF_X | PF_W) == PF_W:
                return p.offset, p.filesz
        return None


# ============================================================================ Go build info


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


def _go_unquote(s: str) -> str:
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
                key = _go_unquote(m.group(0)) if m else rest
                value = rest[m.end() + 1:] if m else ""
            else:
                key, _, value = rest.partition("=")
            settings.append((key, _go_unquote(value)))
    return GoBuildInfo(go_version=go_version, path=path, main_module=main, settings=tuple(settings))


def read_go_buildinfo(elf: _Elf) -> GoBuildInfo | None:
    """The build info of a Go binary, or None if it is not one (or is older than Go 1.13)."""
    where = elf.data_start()
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


# ============================================================================ pclntab


def _parse_pclntab(tab: Any, at: int = 0) -> memoryview | None:
    """The function-name table of the pclntab whose header starts at ``tab[at]``, if it is one."""
    if len(tab) < at + 8 + 5 * 8:
        return None
    (magic,) = struct.unpack_from("<I", tab, at)
    kind = _PCLNTAB_MAGICS.get(magic)
    ptr = tab[at + 7]
    if kind is None or tab[at + 4] != 0 or tab[at + 5] != 0 or tab[at + 6] not in (1, 2, 4) or ptr not in (4, 8):
        return None
    fmt = "<Q" if ptr == 8 else "<I"

    def word(i: int) -> int:
        return struct.unpack_from(fmt, tab, at + 8 + i * ptr)[0]

    if kind in ("go1.20", "go1.18"):
        names, cu = word(3), word(4)
    elif kind == "go1.16":
        names, cu = word(2), word(3)
    else:  # go1.2-1.15: names live among the func table; use the rest of the region
        return memoryview(tab)[at:]
    if not (0 < names < cu <= len(tab) - at):
        return None
    return memoryview(tab)[at + names:at + cu]


_PCLNTAB_NEEDLES = tuple(struct.pack("<I", m) + b"\0\0" for m in _PCLNTAB_MAGICS)


def _funcnametab(elf: _Elf) -> memoryview | None:
    """The pclntab's function-name table: every Go function's name, NUL-separated.

    Internal linking leaves a ``.gopclntab`` section; external linking of a PIE merges the
    table into ``.data.rel.ro``, so there (or, with no section headers, in any loaded
    segment) the header is searched for and accepted only if its names hold runtime.main.
    """
    tab = elf.section_bytes(".gopclntab")
    if tab is not None:
        return _parse_pclntab(tab)
    regions = [elf.section_bytes(n) for n in (".data.rel.ro", ".rodata", ".noptrdata")]
    if not any(r is not None for r in regions):
        regions = [memoryview(elf.buf)[p.offset:p.offset + p.filesz] for p in elf.segments if p.type == PT_LOAD]
    for region in regions:
        if region is None:
            continue
        data = bytes(region)
        for needle in _PCLNTAB_NEEDLES:
            pos = 0
            while (i := data.find(needle, pos)) >= 0:
                pos = i + 1
                if i % 8:
                    continue
                names = _parse_pclntab(data, i)
                if names is not None and b"\0runtime.main\0" in names.tobytes():
                    return names
    return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class CryptoFunctions:
    """Which crypto implementation a Go binary's functions come from."""

    fips_module_versions: tuple[str, ...]  # e.g. ("v1.0.0-c2097c7c",): the frozen module
    fips_module_functions: int
    intree_packages: tuple[str, ...]  # crypto/internal/fips140/<pkg> of the unfrozen, in-tree module
    intree_functions: int
    boring_cgo_functions: int
    crypto_functions: int  # every function in a crypto/... package (any Go version)
    pclntab: bool  # False: no function table found (not Go, or an unusual layout)

    @property
    def any_crypto(self) -> bool:
        return bool(self.crypto_functions or self.boring_cgo_functions)


def scan_functions(elf: _Elf) -> CryptoFunctions:
    tab = _funcnametab(elf)
    if tab is None:
        return CryptoFunctions(fips_module_versions=(), fips_module_functions=0, intree_packages=(),
                               intree_functions=0, boring_cgo_functions=0, crypto_functions=0, pclntab=False)
    data = bytes(tab)  # a few MiB even for kube-apiserver; bytes.find is fast
    versions: set[str] = set()
    intree: set[str] = set()
    n_fips = n_intree = 0
    pos = 0
    plen = len(FIPS_PKG_PREFIX)
    while True:
        i = data.find(FIPS_PKG_PREFIX, pos)
        if i < 0:
            break
        pos = i + plen
        if i > 0 and data[i - 1] != 0:
            continue  # not at the start of a name (e.g. inside a generic's type argument)
        rest = data[pos:data.find(b"\0", pos, pos + 512)]
        m = _VERSIONED.match(rest)
        if m:
            versions.add(m.group(0).replace(b"%2e", b".").decode())
            n_fips += 1
            continue
        m = _PKG.match(rest)
        if m:
            intree.add(m.group(0).decode())
            n_intree += 1
    n_boring = 0
    pos = 0
    while True:
        i = data.find(BORING_CGO_PREFIX, pos)
        if i < 0:
            break
        n_boring += 1
        pos = i + len(BORING_CGO_PREFIX)
    n_crypto = data.count(b"\0crypto/") + data.startswith(b"crypto/")
    return CryptoFunctions(fips_module_versions=tuple(sorted(versions)), fips_module_functions=n_fips,
                           intree_packages=tuple(sorted(intree)), intree_functions=n_intree,
                           boring_cgo_functions=n_boring, crypto_functions=n_crypto, pclntab=True)


# ============================================================================ one binary


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
    try:
        elf = _Elf(buf)
    except ValueError:
        return BinaryFacts(name=name, path=path, elf=False, static=False, machine=None, buildinfo=None,
                           functions=None)
    try:
        info = read_go_buildinfo(elf)
    except (ValueError, struct.error):
        info = None
    functions = scan_functions(elf) if info is not None else None
    return BinaryFacts(name=name, path=path, elf=True, static=elf.static, machine=elf.machine, buildinfo=info,
                       functions=functions)


# ============================================================================ policy


@dataclasses.dataclass(frozen=True, kw_only=True)
class Policy:
    """What "FIPS" means for the Go binaries of one build.

    ``go_mode`` native: GOFIPS140 names ``go_module`` (``v1.0.0`` accepts ``v1.0.0-<hash>``),
    DefaultGODEBUG has fips140=on|only, the crypto functions come from that frozen module
    and none from the in-tree one. boring: GOEXPERIMENT=boringcrypto with cgo and the
    BoringCrypto cgo functions linked. ``exempt``: non-Go binaries that do no crypto
    (name -> reason); they must still be static and must not be Go binaries.
    """

    go_mode: str = "native"
    go_module: str = DEFAULT_GO_MODULE
    require_static: bool = True
    exempt: tuple[tuple[str, str], ...] = ()
    accept_modes: tuple[str, ...] = ()  # runtime: accept either mode (the payload does not record which)

    def exemption(self, name: str) -> str | None:
        return dict(self.exempt).get(name)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BinaryReport:
    """One row of the FIPS table."""

    name: str
    go_version: str | None
    gofips140: str | None
    goexperiment: str | None
    cgo: bool | None
    fips140_default: str | None
    module: str  # what the function names show: "v1.0.0-c2097c7c", "boringcrypto", "in-tree", "none", "-"
    module_functions: int
    static: bool
    exempt: str | None
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_document(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ok"] = self.ok
        return d


def _go_before(info: GoBuildInfo, major: int, minor: int) -> bool:
    m = re.match(r"go(\d+)\.(\d+)", info.go_version)
    return bool(m) and (int(m.group(1)), int(m.group(2))) < (major, minor)


def _module_matches(gofips: str, wanted: str) -> bool:
    return gofips == wanted or gofips.startswith(wanted + "-")


def _native_problems(f: BinaryFacts, info: GoBuildInfo, fn: CryptoFunctions, policy: Policy) -> list[str]:
    problems = []
    gofips = info.setting("GOFIPS140") or ""
    if not gofips or gofips == "off":
        problems.append("built without the Go Cryptographic Module (no GOFIPS140 in its build info); "
                        f"rebuild with GOFIPS140={policy.go_module}")
    elif not _module_matches(gofips, policy.go_module):
        problems.append(f"GOFIPS140={gofips}, expected {policy.go_module} "
                        f"({GO_MODULES.get(policy.go_module, 'the module this build selects')})")
    godebug = info.default_godebug.get("fips140")
    if godebug not in ("on", "only"):
        problems.append(f"DefaultGODEBUG has fips140={godebug or '(unset)'}, expected fips140=on")
    if "boringcrypto" in info.experiments:
        problems.append("GOEXPERIMENT=boringcrypto is set; it cannot be combined with GOFIPS140")
    if not fn.pclntab:
        problems.append("no Go function table (.gopclntab) found: cannot see which crypto it links")
    if fn.intree_functions:
        problems.append(f"links the unvalidated in-tree crypto module ({fn.intree_functions} functions in "
                        f"crypto/internal/fips140/{{{','.join(fn.intree_packages[:6])}{',...' if len(fn.intree_packages) > 6 else ''}}})")
    if fn.crypto_functions and not (fn.fips_module_functions or fn.intree_functions) and _go_before(info, 1, 24):
        problems.append(f"built with {info.go_version}, which has no Go Cryptographic Module (Go 1.24+ needed)")
    found = fn.fips_module_versions
    if fn.fips_module_functions and gofips and gofips != "off" and not any(_module_matches(v, gofips) for v in found):
        problems.append(f"its crypto functions come from module {','.join(found)}, "
                        f"not the GOFIPS140={gofips} its build info names")
    elif fn.fips_module_functions and not all(_module_matches(v, policy.go_module) for v in found):
        problems.append(f"its crypto comes from module {','.join(found)}, expected {policy.go_module}")
    return problems


def _boring_problems(f: BinaryFacts, info: GoBuildInfo, fn: CryptoFunctions, policy: Policy) -> list[str]:
    problems = []
    if "boringcrypto" not in info.experiments:
        problems.append("built without GOEXPERIMENT=boringcrypto")
    if info.setting("CGO_ENABLED") != "1":
        problems.append("built with CGO_ENABLED=0: a boringcrypto label without cgo links no BoringCrypto")
    if (info.setting("GOFIPS140") or "off") != "off":
        problems.append(f"GOFIPS140={info.setting('GOFIPS140')} is set with boringcrypto")
    if not fn.pclntab:
        problems.append("no Go function table (.gopclntab) found: cannot see which crypto it links")
    elif fn.intree_functions and not fn.boring_cgo_functions:
        problems.append("links Go's in-tree crypto but no BoringCrypto (no _goboringcrypto_ cgo functions)")
    return problems


def evaluate(f: BinaryFacts, policy: Policy) -> BinaryReport:
    """Apply ``policy`` to one binary's facts: a table row with its problems (empty = compliant)."""
    problems: list[str] = []
    notes: list[str] = []
    info, fn = f.buildinfo, f.functions
    exempt = policy.exemption(f.name)
    if not f.elf:
        problems.append("not an ELF executable")
    elif policy.require_static and not f.static:
        problems.append("dynamically linked (has PT_INTERP)")
    module, n = "-", 0
    if info is None or fn is None:
        if exempt is None and f.elf:
            problems.append("not a Go binary (no Go build info), so its crypto cannot be verified; "
                            "build it with the FIPS Go toolchain or list it under [exempt] in fips/toolchain.toml "
                            "with the reason it does no cryptography")
    else:
        if fn.fips_module_functions:
            module, n = ",".join(fn.fips_module_versions), fn.fips_module_functions
        elif fn.boring_cgo_functions:
            module, n = "boringcrypto", fn.boring_cgo_functions
        elif fn.intree_functions:
            module, n = "in-tree", fn.intree_functions
        elif fn.crypto_functions:
            module, n = "pre-Go-1.24 crypto", fn.crypto_functions
        elif fn.pclntab:
            module = "none"
            notes.append("links no crypto/... package (does no cryptography)")
        if exempt is not None:
            problems.append(f"listed as exempt ({exempt}) but is a Go binary; Go binaries must pass the check")
            exempt = None
        modes = policy.accept_modes or (policy.go_mode,)
        results = []
        for mode in modes:
            check = _boring_problems if mode == "boring" else _native_problems
            results.append(check(f, info, fn, policy))
        if not any(not r for r in results):
            problems += min(results, key=len)
    return BinaryReport(
        name=f.name,
        go_version=info.go_version if info else None,
        gofips140=(info.setting("GOFIPS140") if info else None),
        goexperiment=(info.setting("GOEXPERIMENT") if info else None),
        cgo=(info.setting("CGO_ENABLED") == "1") if info else None,
        fips140_default=(info.default_godebug.get("fips140") if info else None),
        module=module,
        module_functions=n,
        static=f.static,
        exempt=exempt,
        problems=tuple(problems),
        notes=tuple(notes),
    )


# ============================================================================ the table


TABLE_COLUMNS = ("BINARY", "GO", "GOFIPS140", "FIPS140 DEFAULT", "FIPS MODULE (FUNCTIONS)", "STATIC", "FIPS")


def _yes(b: bool) -> str:
    return "yes" if b else "no"


def table_rows(reports: Iterable[BinaryReport]) -> list[tuple[str, ...]]:
    rows = [TABLE_COLUMNS]
    for r in reports:
        if r.exempt:
            module = "exempt (not Go, no crypto)"
        elif r.go_version is None:
            module = "-"
        else:
            module = f"{r.module} ({r.module_functions})" if r.module_functions else r.module
        rows.append((
            r.name,
            r.go_version or "not Go",
            r.gofips140 or ("boringcrypto" if r.goexperiment and "boringcrypto" in r.goexperiment else "-"),
            r.fips140_default or "-",
            module,
            _yes(r.static),
            _yes(r.ok),
        ))
    return rows


def format_table(reports: Iterable[BinaryReport]) -> str:
    """The per-binary table, then one line per problem."""
    reports = list(reports)
    rows = table_rows(reports)
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in rows]
    for r in reports:
        lines += [f"  {r.name}: {p}" for p in r.problems]
    return "\n".join(lines)


def reports_document(reports: Iterable[BinaryReport], **extra: Any) -> dict[str, Any]:
    reports = list(reports)
    return {**extra, "ok": all(r.ok for r in reports), "binaries": [r.to_document() for r in reports]}


def check_files(files: Mapping[str, Path | str], policy: Policy) -> list[BinaryReport]:
    """Inspect and evaluate each ``name -> path``; sorted by name."""
    return [evaluate(inspect_binary(files[n], n), policy) for n in sorted(files)]


# ============================================================================ child processes

#: TLS 1.2 suites approved in FIPS 140-3 mode (TLS 1.3: only the AES-GCM suites, which Go
#: restricts itself). For components' --tls-cipher-suites in a FIPS build.
APPROVED_TLS12_CIPHER_SUITES = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
)


def runtime_policy() -> Policy:
    """What ``mke fips check`` demands: the payload does not record --fips-go, so either mode passes."""
    return Policy(go_mode="native", go_module=DEFAULT_GO_MODULE, exempt=tuple(sorted(EXEMPT.items())),
                  accept_modes=GO_MODES)


def godebug_for_children(env: Mapping[str, str]) -> str:
    """The GODEBUG a FIPS mke passes to its Go children: the caller's, with fips140 forced on.

    A FIPS binary's fips140=on is only a *default*: ``GODEBUG=fips140=off`` in the
    environment would turn the module's FIPS mode off. ``only`` (stricter) is kept.
    """
    parts = [p for p in env.get("GODEBUG", "").split(",") if p and not p.startswith("fips140=")]
    current = next((p.split("=", 1)[1] for p in env.get("GODEBUG", "").split(",") if p.startswith("fips140=")), "")
    return ",".join(parts + ["fips140=" + ("only" if current == "only" else "on")])


# ============================================================================ the runtime's crypto

#: CPython's own hash implementations, which hashlib falls back to when OpenSSL refuses
#: an algorithm. A FIPS bundle leaves them out (PyInstaller excludes), so a refused
#: algorithm stays refused. (_sha2 is 3.12+; _sha256/_sha512 are 3.11.)
BUILTIN_HASH_MODULES = ("_md5", "_sha1", "_sha256", "_sha512", "_sha2", "_sha3", "_blake2")

#: Environment the FIPS bundle's runtime hook sets (fips/runtime.py); never inherited by children.
OPENSSL_ENV = ("OPENSSL_CONF", "OPENSSL_MODULES", "MKE_FIPS_RUNTIME", "CRYPTOGRAPHY_OPENSSL_NO_LEGACY")


SAVED_PREFIX = "MKE_FIPS_SAVED_"
RUNTIME_ENV = "MKE_FIPS_RUNTIME"  # set by the FIPS bundle's runtime hook to its provider dir


def is_fips_runtime() -> bool:
    """True in a FIPS bundle (its runtime hook ran); cheap: no OpenSSL is loaded."""
    return bool(os.environ.get(RUNTIME_ENV))


def runtime_summary() -> dict[str, Any]:
    """For ``mke version --json``: is this runtime FIPS, and with which OpenSSL FIPS provider (cheap)."""
    d = os.environ.get(RUNTIME_ENV)
    if not d:
        return {"fips": False}
    try:
        prov = json.loads(Path(d, "provenance.json").read_text())
    except (OSError, ValueError):
        prov = {}
    return {"fips": True, "openssl_fips_provider": prov.get("openssl_version"), "validated": prov.get("validated"),
            "certificate": prov.get("certificate"), "statement": prov.get("statement")}


def child_env(env: Mapping[str, str], *, fips_payload: bool) -> dict[str, str]:
    """The environment for a child process of a FIPS mke (procenv.clean_env can call this last).

    Gives back the caller's OPENSSL_* values that the runtime hook replaced (children must
    not load the bundle's temp-dir provider), and for a FIPS payload forces GODEBUG
    fips140=on so that ``GODEBUG=fips140=off`` in mke's environment cannot turn the Go
    module's FIPS mode off.
    """
    out = dict(env)
    for name in list(out):
        if name.startswith(SAVED_PREFIX):
            real = name[len(SAVED_PREFIX):]
            saved = out.pop(name)
            if saved:
                out[real] = saved
            else:
                out.pop(real, None)
    out.pop(RUNTIME_ENV, None)
    if fips_payload:
        out["GODEBUG"] = godebug_for_children(out)
    return out


def _libcrypto_providers() -> dict[str, Any]:
    """Ask the libcrypto that ``_hashlib`` uses which providers are loaded (via ctypes)."""
    import ctypes
    import ctypes.util

    try:
        import _hashlib  # noqa: F401  (loads libcrypto into the process)
    except ImportError as e:
        return {"error": f"no _hashlib: {e}"}
    lib = None
    for cand in ("libcrypto.so.3", ctypes.util.find_library("crypto")):
        if not cand:
            continue
        try:
            lib = ctypes.CDLL(cand)
            break
        except OSError:
            continue
    if lib is None:
        return {"error": "libcrypto.so.3 not found"}
    out: dict[str, Any] = {}
    try:
        lib.OpenSSL_version.restype = ctypes.c_char_p
        lib.OpenSSL_version.argtypes = [ctypes.c_int]
        out["version"] = lib.OpenSSL_version(0).decode()
        lib.OSSL_PROVIDER_available.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        for name in ("fips", "base", "default", "legacy"):
            out[name] = bool(lib.OSSL_PROVIDER_available(None, name.encode()))
        lib.EVP_default_properties_is_fips_enabled.argtypes = [ctypes.c_void_p]
        out["default_properties_fips"] = bool(lib.EVP_default_properties_is_fips_enabled(None))
        if out["fips"]:
            lib.OSSL_PROVIDER_load.restype = ctypes.c_void_p
            lib.OSSL_PROVIDER_load.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            prov = lib.OSSL_PROVIDER_load(None, b"fips")  # already loaded: takes a reference
            if prov:
                # OSSL_PROVIDER_get_params with {"version", "buildinfo"} (utf8 ptr params)
                class _Param(ctypes.Structure):
                    _fields_ = [("key", ctypes.c_char_p), ("data_type", ctypes.c_uint),
                                ("data", ctypes.c_void_p), ("data_size", ctypes.c_size_t),
                                ("return_size", ctypes.c_size_t)]
                OSSL_PARAM_UTF8_PTR = 6
                vals = {k: ctypes.c_char_p() for k in ("name", "version", "buildinfo")}
                params = (_Param * 4)(*[_Param(k.encode(), OSSL_PARAM_UTF8_PTR, ctypes.cast(ctypes.byref(v), ctypes.c_void_p),
                                               ctypes.sizeof(v), 0) for k, v in vals.items()], _Param(None, 0, None, 0, 0))
                lib.OSSL_PROVIDER_get_params.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
                if lib.OSSL_PROVIDER_get_params(ctypes.c_void_p(prov), params):
                    out["fips_provider"] = {k: (v.value.decode() if v.value else None) for k, v in vals.items()}
                lib.OSSL_PROVIDER_unload.argtypes = [ctypes.c_void_p]
                lib.OSSL_PROVIDER_unload(ctypes.c_void_p(prov))
    except AttributeError as e:  # OpenSSL 1.1 has no providers
        out["error"] = f"libcrypto has no provider API: {e}"
    return out


# ---------------------------------------------------------------------------- key generation


class _LibCrypto:
    """The process's libcrypto (the one ``_hashlib`` and a system-linked ``cryptography`` use)."""

    _lib: Any = None

    @classmethod
    def get(cls) -> Any:
        if cls._lib is None:
            import ctypes

            try:
                import _hashlib  # noqa: F401  (loads libcrypto.so.3, and with it OPENSSL_CONF)
            except ImportError as e:
                raise FipsError(f"hashlib has no OpenSSL (_hashlib: {e}); this Python cannot do FIPS crypto") from e
            try:
                lib = ctypes.CDLL("libcrypto.so.3")
            except OSError as e:
                raise FipsError(f"libcrypto.so.3 cannot be loaded: {e}") from e
            vp, cp, ci = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
            for name, res, args in (
                ("EVP_PKEY_CTX_new_from_name", vp, [vp, cp, cp]),
                ("EVP_PKEY_keygen_init", ci, [vp]),
                ("EVP_PKEY_CTX_set_group_name", ci, [vp, cp]),
                ("EVP_PKEY_CTX_set_rsa_keygen_bits", ci, [vp, ci]),
                ("EVP_PKEY_generate", ci, [vp, ctypes.POINTER(vp)]),
                ("EVP_PKEY_CTX_free", None, [vp]),
                ("EVP_PKEY_free", None, [vp]),
                ("BIO_s_mem", vp, []),
                ("BIO_new", vp, [vp]),
                ("BIO_ctrl", ctypes.c_long, [vp, ci, ctypes.c_long, vp]),
                ("BIO_free", ci, [vp]),
                ("PEM_write_bio_PrivateKey", ci, [vp, vp, vp, vp, ci, vp, vp]),
                ("ERR_get_error", ctypes.c_ulong, []),
                ("ERR_error_string_n", None, [ctypes.c_ulong, cp, ctypes.c_size_t]),
            ):
                fn = getattr(lib, name)
                fn.restype, fn.argtypes = res, args
            cls._lib = lib
        return cls._lib


def _openssl_errors(lib: Any) -> str:
    import ctypes

    out = []
    while code := lib.ERR_get_error():
        buf = ctypes.create_string_buffer(256)
        lib.ERR_error_string_n(code, buf, len(buf))
        out.append(buf.value.decode(errors="replace"))
    return "; ".join(out[-3:]) or "no OpenSSL error recorded"


def fips_provider_active() -> bool:
    try:
        state = _libcrypto_providers()
    except Exception:  # noqa: BLE001 - any failure means: not active
        return False
    return bool(state.get("fips") and state.get("default_properties_fips"))


def generate_private_key_pem(kind: str = "EC", *, curve: str = "P-256", bits: int = 2048) -> bytes:
    """A new private key (PKCS#8 PEM) generated by OpenSSL's EVP API, i.e. by the FIPS provider.

    ``cryptography``'s ``rsa.generate_private_key``/``ec.generate_private_key`` call
    OpenSSL's low-level RSA_generate_key_ex/EC_KEY_generate_key, which run libcrypto's own
    code outside the FIPS provider even when the provider is the default (measured: RSA-1024
    keys are created). This goes through EVP_PKEY_generate, so the provider's keygen and
    its checks apply (RSA < 2048 bits, non-approved curves: refused).
    """
    import ctypes

    lib = _LibCrypto.get()
    ctx = lib.EVP_PKEY_CTX_new_from_name(None, kind.encode(), None)
    if not ctx:
        raise FipsError(f"OpenSSL has no {kind} key generation here: {_openssl_errors(lib)}")
    pkey = ctypes.c_void_p()
    bio = None
    try:
        if lib.EVP_PKEY_keygen_init(ctx) <= 0:
            raise FipsError(f"{kind} key generation refused: {_openssl_errors(lib)}")
        if kind == "EC" and lib.EVP_PKEY_CTX_set_group_name(ctx, curve.encode()) <= 0:
            raise FipsError(f"curve {curve} refused: {_openssl_errors(lib)}")
        if kind == "RSA" and lib.EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, bits) <= 0:
            raise FipsError(f"RSA-{bits} refused: {_openssl_errors(lib)}")
        what = f"RSA-{bits}" if kind == "RSA" else f"{kind} {curve}"
        if lib.EVP_PKEY_generate(ctx, ctypes.byref(pkey)) <= 0 or not pkey.value:
            raise FipsError(f"{what} key generation refused by OpenSSL: {_openssl_errors(lib)}")
        bio = lib.BIO_new(lib.BIO_s_mem())
        if not bio or lib.PEM_write_bio_PrivateKey(bio, pkey, None, None, 0, None, None) != 1:
            raise FipsError(f"cannot encode the {what} key: {_openssl_errors(lib)}")
        data = ctypes.c_char_p()
        n = lib.BIO_ctrl(bio, 3, 0, ctypes.byref(data))  # BIO_CTRL_INFO = BIO_get_mem_data
        return ctypes.string_at(data, n)
    finally:
        if bio:
            lib.BIO_free(bio)
        if pkey.value:
            lib.EVP_PKEY_free(pkey)
        lib.EVP_PKEY_CTX_free(ctx)


def generate_private_key(kind: str = "EC", *, curve: str = "P-256", bits: int = 2048) -> Any:
    """A ``cryptography`` private key: made by the FIPS provider when it is active, else by cryptography.

    For mke/pki.py: in a FIPS bundle every key mke creates goes through the validated
    module's key generation; elsewhere nothing changes.
    """
    from cryptography.hazmat.primitives import serialization

    if fips_provider_active():
        return serialization.load_pem_private_key(generate_private_key_pem(kind, curve=curve, bits=bits), None)
    if is_fips_runtime():  # fail closed: a FIPS mke never makes keys outside the provider
        raise FipsError("this FIPS mke has no active OpenSSL FIPS provider, so it makes no keys; "
                        "run `mke fips check` to see why")
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if kind == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    curves = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
    if curve not in curves:
        raise FipsError(f"unknown curve {curve!r}: choose one of {', '.join(curves)}")
    return ec.generate_private_key(curves[curve])


def _refuses(fn: Any) -> tuple[bool, str]:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - what matters is that it fails, and how
        text = str(e)
        m = re.search(r"error:[0-9A-F]{8}:[^:]*:[^:]*:([^:(,]+)", text)  # OpenSSL's reason, if cryptography wrapped it
        detail = f"OpenSSL: {m.group(1).strip()}" if m and "Unknown OpenSSL error" in text else text.splitlines()[0]
        return True, f"{type(e).__name__}: {detail}".strip()[:160]
    return False, "accepted"


def runtime_state() -> dict[str, Any]:
    """The crypto state of this process: OpenSSL providers, hashlib and cryptography behaviour."""
    import importlib.util
    import sys

    state: dict[str, Any] = {"frozen": bool(getattr(sys, "frozen", False)),
                             "env": {k: os.environ.get(k) for k in OPENSSL_ENV}}
    state["hashlib_openssl"] = _libcrypto_providers()
    import hashlib

    state["builtin_hash_modules"] = sorted(m for m in BUILTIN_HASH_MODULES if importlib.util.find_spec(m) is not None)
    refused, how = _refuses(lambda: hashlib.md5(b"mke"))
    state["hashlib_md5_refused"], state["hashlib_md5"] = refused, how
    refused, how = _refuses(lambda: hashlib.new("md5", b"mke"))
    state["hashlib_new_md5_refused"], state["hashlib_new_md5"] = refused, how
    state["hashlib_sha256_works"] = not _refuses(lambda: hashlib.sha256(b"mke").hexdigest())[0]
    state["evp_rsa1024_refused"], state["evp_rsa1024"] = _refuses(lambda: generate_private_key_pem("RSA", bits=1024))
    state["evp_p256_works"] = not _refuses(lambda: generate_private_key_pem("EC", curve="P-256"))[0]
    try:
        from cryptography.hazmat.backends.openssl.backend import backend
        from cryptography.hazmat.bindings._rust import openssl as rust_openssl
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        c: dict[str, Any] = {"openssl": backend.openssl_version_text(), "fips_enabled": bool(rust_openssl.is_fips_enabled())}
        c["md5_refused"], c["md5"] = _refuses(lambda: hashes.Hash(hashes.MD5()).finalize())
        # cryptography's own keygen runs outside the provider (see generate_private_key_pem)
        c["rsa1024_refused"], c["rsa1024"] = _refuses(lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024))
        from cryptography.hazmat.primitives.asymmetric import padding

        def sign_with_rsa1024() -> None:
            k = rsa.generate_private_key(public_exponent=65537, key_size=1024)
            k.sign(b"mke", padding.PKCS1v15(), hashes.SHA256())

        c["rsa1024_sign_refused"], c["rsa1024_sign"] = _refuses(sign_with_rsa1024)
        c["rsa2048_works"] = not _refuses(lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048))[0]
        c["p256_works"] = not _refuses(lambda: ec.generate_private_key(ec.SECP256R1()))[0]
        state["cryptography"] = c
    except ImportError as e:
        state["cryptography"] = {"error": f"cryptography not importable: {e}"}
    return state


def runtime_problems(state: Mapping[str, Any]) -> list[str]:
    """What keeps this runtime's own crypto from being FIPS (empty: every check passed)."""
    problems = []
    o = state.get("hashlib_openssl", {})
    if o.get("error"):
        problems.append(f"hashlib's OpenSSL: {o['error']}")
    else:
        if not o.get("fips"):
            problems.append(f"hashlib's OpenSSL ({o.get('version')}) has no FIPS provider loaded "
                            f"(OPENSSL_CONF={state.get('env', {}).get('OPENSSL_CONF')})")
        if not o.get("default_properties_fips"):
            problems.append("hashlib's OpenSSL does not default to fips=yes")
        if o.get("default"):
            problems.append("hashlib's OpenSSL has the non-FIPS default provider loaded")
    if state.get("builtin_hash_modules"):
        problems.append(f"CPython's built-in hash modules are present ({', '.join(state['builtin_hash_modules'])}): "
                        "hashlib falls back to them when OpenSSL refuses")
    if not state.get("hashlib_md5_refused"):
        problems.append("hashlib.md5() works")
    c = state.get("cryptography", {})
    if c.get("error"):
        problems.append(c["error"])
    else:
        if o.get("version") and c.get("openssl") != o.get("version"):
            problems.append(f"cryptography carries its own OpenSSL ({c.get('openssl')}), not the libcrypto.so.3 "
                            f"hashlib uses ({o.get('version')}); one FIPS provider cannot serve both "
                            "(build it against the system OpenSSL: python -m fips.runtime prepare)")
        if not c.get("fips_enabled"):
            problems.append(f"cryptography ({c.get('openssl')}) is not in FIPS mode")
        if not c.get("md5_refused"):
            problems.append("cryptography computes MD5")
        if not c.get("rsa1024_sign_refused"):
            problems.append("cryptography signs with RSA-1024 keys")
    if not state.get("evp_rsa1024_refused"):
        problems.append("OpenSSL's EVP key generation creates RSA-1024 keys")
    if not state.get("evp_p256_works"):
        problems.append("OpenSSL's EVP key generation cannot create P-256 keys")
    return problems


def dumps(doc: Any) -> str:
    return json.dumps(doc, indent=2, sort_keys=True)
