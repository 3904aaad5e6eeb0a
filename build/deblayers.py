"""Air-gap image layers from Debian packages (``[[deb]]`` in recipes/images/*.toml).

The OCI writer itself is ``mke.images.oci`` (the runtime builds each node's system images
with it too); this module only turns a verified ``.deb`` into layer entries.
"""

from __future__ import annotations

import gzip
import io
import lzma
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from build.errors import ImageError
from mke import errors as mke_errors
from mke.images.oci import Entry, normalise


def _ar_members(f: IO[bytes]) -> Iterator[tuple[str, bytes]]:
    if f.read(8) != b"!<arch>\n":
        raise ImageError("not an ar archive")
    while True:
        header = f.read(60)
        if not header:
            return
        if len(header) < 60 or header[58:60] != b"`\n":
            raise ImageError("truncated ar archive")
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        data = f.read(size)
        if size % 2:
            f.read(1)
        yield name, data


def deb_entries(deb: Path, *, exclude: Iterable[str] = (), what: str = "") -> list[Entry]:
    try:
        return _deb_entries(deb, exclude=exclude, what=what)
    except mke_errors.ImageError as e:  # a bad path inside the package (normalise)
        raise ImageError(f"{what or deb.name}: {e}") from e


def _deb_entries(deb: Path, *, exclude: Iterable[str], what: str) -> list[Entry]:
    """The files of a Debian package (its data.tar), as layer entries; ``exclude`` are path prefixes."""
    prefixes = tuple(normalise(p) for p in exclude)
    label = what or deb.name
    data_tar = None
    with open(deb, "rb") as f:
        for name, data in _ar_members(f):
            if name.startswith("data.tar"):
                data_tar = (name, data)
    if data_tar is None:
        raise ImageError(f"{label}: no data.tar in the package")
    name, data = data_tar
    if name.endswith(".xz"):
        data = lzma.decompress(data)
    elif name.endswith(".gz"):
        data = gzip.decompress(data)
    elif name.endswith(".zst"):
        import zstandard

        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    elif name != "data.tar":
        raise ImageError(f"{label}: unsupported member {name}")
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as t:
        for m in t.getmembers():
            if m.name in (".", "./"):
                continue
            p = normalise(m.name)
            if any(p == x or p.startswith(x + "/") for x in prefixes):
                continue
            if m.isdir():
                out.append(Entry(path=p, kind="dir", mode=m.mode & 0o7777, uid=m.uid, gid=m.gid))
            elif m.issym():
                out.append(Entry(path=p, kind="symlink", target=m.linkname, mode=0o777))
            elif m.islnk():
                src = t.extractfile(m)  # a hard link: tarfile reads its target's bytes; the layer gets a copy
                out.append(Entry(path=p, data=src.read() if src else b"", mode=m.mode & 0o7777, uid=m.uid, gid=m.gid))
            elif m.isfile():
                fh = t.extractfile(m)
                assert fh is not None
                out.append(Entry(path=p, data=fh.read(), mode=m.mode & 0o7777, uid=m.uid, gid=m.gid))
    return out
