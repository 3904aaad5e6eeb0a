"""build/deblayers.py: a Debian package's data.tar as image layer entries."""

from __future__ import annotations

import io
import lzma
import tarfile
from pathlib import Path

import pytest

from build.deblayers import deb_entries
from build.errors import ImageError
from mke.images import oci


def _tar_xz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for ti, data in members:
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return lzma.compress(buf.getvalue())


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode() + data
        if len(data) % 2:
            out += b"\n"
    return out


def make_deb(path: Path) -> Path:
    def ti(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = "", mode: int = 0o755) -> tarfile.TarInfo:
        t = tarfile.TarInfo(name)
        t.type, t.size, t.linkname, t.mode, t.mtime = kind, size, link, mode, 1234567
        return t

    data = _tar_xz([
        (ti("./", tarfile.DIRTYPE), None),
        (ti("./usr/", tarfile.DIRTYPE), None),
        (ti("./usr/sbin/", tarfile.DIRTYPE), None),
        (ti("./usr/sbin/xtables-nft-multi", size=5), b"ELF!!"),
        (ti("./usr/sbin/iptables-nft", tarfile.SYMTYPE, link="xtables-nft-multi"), None),
        (ti("./usr/share/", tarfile.DIRTYPE), None),
        (ti("./usr/share/doc/", tarfile.DIRTYPE), None),
        (ti("./usr/share/doc/copyright", size=3, mode=0o644), b"GPL"),
    ])
    path.write_bytes(_ar([("debian-binary", b"2.0\n"), ("control.tar.xz", _tar_xz([])), ("data.tar.xz", data)]))
    return path


def test_deb_entries_unpack_the_data_tar_with_excludes(tmp_path):
    deb = make_deb(tmp_path / "iptables.deb")
    entries = {e.name: e for e in deb_entries(deb, exclude=["/usr/share"])}
    assert set(entries) == {"usr", "usr/sbin", "usr/sbin/xtables-nft-multi", "usr/sbin/iptables-nft"}
    assert entries["usr/sbin/xtables-nft-multi"].data == b"ELF!!"
    assert entries["usr/sbin/iptables-nft"].target == "xtables-nft-multi"
    layer = oci.build_layer(list(entries.values()), tmp_path / "l")
    with tarfile.open(layer.blob.path, "r:gz") as t:
        assert t.getmember("usr/sbin/iptables-nft").issym()
        assert t.getmember("usr/sbin/xtables-nft-multi").mtime == 0  # the package's mtimes are not kept
    (tmp_path / "bad.deb").write_bytes(b"not an ar")
    with pytest.raises(ImageError, match="not an ar archive"):
        deb_entries(tmp_path / "bad.deb")
