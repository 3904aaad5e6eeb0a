"""Debian packages for the Python runtime: unpack a .deb, compare versions, read a Packages index.

No dpkg needed: a .deb is an ``ar`` archive whose ``data.tar.{xz,zst,gz}`` member holds the
files; the bundler takes them from pinned, sha256-verified .deb files (recipes/runtime/
python.toml), so it needs neither root (debootstrap) nor a Debian host. The Packages index
and version order are for ``python -m build.bundle.pins``, which picks the newest version
of each package across the suites and pins its URL and sha256.
"""

from __future__ import annotations

import copy
import io
import lzma
import re
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from build.errors import BundleError
from build.fsutil import data_filter, extract_all

AR_MAGIC = b"!<arch>\n"


def ar_members(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, data) of every member of the ``ar`` archive ``path`` (a .deb)."""
    data = path.read_bytes()
    if not data.startswith(AR_MAGIC):
        raise BundleError(f"{path}: not a Debian package (no ar header)")
    pos = len(AR_MAGIC)
    while pos + 60 <= len(data):
        head = data[pos:pos + 60]
        name = head[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(head[48:58].decode("ascii").strip())
        except ValueError:
            raise BundleError(f"{path}: damaged ar member header at offset {pos}") from None
        pos += 60
        if pos + size > len(data):
            raise BundleError(f"{path}: truncated ar member {name}")
        yield name, data[pos:pos + size]
        pos += size + (size & 1)


def _data_tar(path: Path) -> tarfile.TarFile:
    for name, blob in ar_members(path):
        if name == "data.tar.xz":
            return tarfile.open(fileobj=io.BytesIO(lzma.decompress(blob)), mode="r:")
        if name == "data.tar.gz":
            return tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz")
        if name == "data.tar.zst":
            import zstandard

            return tarfile.open(fileobj=io.BytesIO(zstandard.ZstdDecompressor().decompressobj().decompress(blob)),
                                mode="r:")
        if name == "data.tar":
            return tarfile.open(fileobj=io.BytesIO(blob), mode="r:")
    raise BundleError(f"{path}: no data.tar member")


def extract_deb(path: Path, dest: Path) -> list[str]:
    """Unpack the files of ``path`` under ``dest`` (as ``dpkg-deb -x`` would); returns their names.

    Regular files, directories and symlinks only; nothing may point outside ``dest``.
    """
    names = []
    with _data_tar(path) as tar:
        for m in tar:
            if not (m.isfile() or m.isdir() or m.issym()):
                continue
            name = m.name.removeprefix("./")
            if not name or name == ".":
                continue
            names.append(name)
        extract_all(tar, dest, filter=_deb_filter)
    return names


def _deb_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    if not (member.isfile() or member.isdir() or member.issym()):
        return None
    if member.issym() and member.linkname.startswith("/"):
        # Absolute links inside a rootfs (e.g. /lib64/ld-linux-x86-64.so.2): keep them relative to dest.
        depth = member.name.removeprefix("./").count("/")
        member = copy.copy(member)  # (TarInfo.replace is 3.11.4+)
        member.linkname = "../" * depth + member.linkname.lstrip("/")
    return data_filter(member, dest)


# --------------------------------------------------------------------------- versions


def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    """dpkg's comparison of one upstream_version or debian_revision string."""
    ia = ib = 0
    while ia < len(a) or ib < len(b):
        first_diff = 0
        while (ia < len(a) and not a[ia].isdigit()) or (ib < len(b) and not b[ib].isdigit()):
            ac = _order(a[ia]) if ia < len(a) and not a[ia].isdigit() else 0
            bc = _order(b[ib]) if ib < len(b) and not b[ib].isdigit() else 0
            if ac != bc:
                return -1 if ac < bc else 1
            ia += 1
            ib += 1
        while ia < len(a) and a[ia] == "0":
            ia += 1
        while ib < len(b) and b[ib] == "0":
            ib += 1
        while ia < len(a) and a[ia].isdigit() and ib < len(b) and b[ib].isdigit():
            if not first_diff:
                first_diff = ord(a[ia]) - ord(b[ib])
            ia += 1
            ib += 1
        if ia < len(a) and a[ia].isdigit():
            return 1
        if ib < len(b) and b[ib].isdigit():
            return -1
        if first_diff:
            return -1 if first_diff < 0 else 1
    return 0


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as Debian version ``a`` sorts before, equal to or after ``b`` (epoch:upstream-revision)."""
    def split(v: str) -> tuple[int, str, str]:
        epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
        upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "0")
        return int(epoch or 0), upstream, revision

    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


# --------------------------------------------------------------------------- Packages index


_FIELD = re.compile(r"^([A-Za-z0-9-]+):\s*(.*)$")


def parse_packages(text: str) -> Iterator[dict[str, str]]:
    """The stanzas of a Packages index (continuation lines dropped: no field we read has them)."""
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            m = _FIELD.match(line)
            if m:
                fields[m.group(1)] = m.group(2)
        if "Package" in fields:
            yield fields


def newest(stanzas: Iterable[tuple[str, dict[str, str]]], package: str) -> tuple[str, dict[str, str]] | None:
    """(mirror, stanza) of the newest version of ``package`` among (mirror, stanza) pairs."""
    best: tuple[str, dict[str, str]] | None = None
    for mirror, st in stanzas:
        if st["Package"] != package:
            continue
        if best is None or compare_versions(st["Version"], best[1]["Version"]) > 0:
            best = (mirror, st)
    return best
