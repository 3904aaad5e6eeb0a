"""Which crypto a Go binary links, from the function names in its pclntab.

The Go runtime keeps the name of every function for stack traces (the pclntab), so the
names survive ``-ldflags=-s -w``. The frozen Go Cryptographic Module's functions are
named ``crypto/internal/fips140/v1.0.0-<hash>/...``, the in-tree module's
``crypto/internal/fips140/<pkg>...``, BoringCrypto's cgo stubs
``crypto/internal/boring._Cfunc__goboringcrypto_*``.
"""

from __future__ import annotations

import dataclasses
import re
import struct
from typing import Any

from mke.elf import PT_LOAD, ElfFile

FIPS_PKG_PREFIX = b"crypto/internal/fips140/"
BORING_CGO_PREFIX = b"crypto/internal/boring._Cfunc__goboringcrypto_"
_VERSIONED = re.compile(rb"v\d+(?:\.|%2e)\d+(?:\.|%2e)\d+(?:-[0-9A-Za-z]+)?(?=[/.]|$)")
_PKG = re.compile(rb"[a-z0-9_]+(?=[/.]|$)")
_PCLNTAB_MAGICS = {0xFFFFFFF1: "go1.20", 0xFFFFFFF0: "go1.18", 0xFFFFFFFA: "go1.16", 0xFFFFFFFB: "go1.2"}


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


def _funcnametab(elf: ElfFile) -> memoryview | None:
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


def scan_functions(elf: ElfFile) -> CryptoFunctions:
    """Count the functions of each crypto implementation in ``elf``'s pclntab (a Go binary held in a buffer)."""
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
