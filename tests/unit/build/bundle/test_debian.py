"""build/bundle/debian.py: .deb unpacking without dpkg, Debian version order, Packages indexes."""

from __future__ import annotations

import io
import lzma
import os
import tarfile

import pytest

from build.bundle import debian
from build.errors import BundleError


def make_deb(path, files: dict[str, bytes], links: dict[str, str] | None = None) -> None:
    """A real .deb: ar archive with debian-binary, control.tar.xz and data.tar.xz."""
    def tar_xz(members: dict[str, bytes], symlinks: dict[str, str]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in members.items():
                ti = tarfile.TarInfo("./" + name)
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
            for name, target in symlinks.items():
                ti = tarfile.TarInfo("./" + name)
                ti.type, ti.linkname = tarfile.SYMTYPE, target
                tar.addfile(ti)
        return lzma.compress(buf.getvalue())

    out = bytearray(debian.AR_MAGIC)
    for name, data in (("debian-binary", b"2.0\n"), ("control.tar.xz", tar_xz({"control": b"Package: x\n"}, {})),
                       ("data.tar.xz", tar_xz(files, links or {}))):
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode() + data
        if len(data) % 2:
            out += b"\n"
    path.write_bytes(bytes(out))


def test_extract_deb_keeps_absolute_links_inside(tmp_path):
    deb = tmp_path / "x.deb"
    make_deb(deb, {"lib/x86_64-linux-gnu/libx.so.1.2": b"ELF..."},
             {"lib/x86_64-linux-gnu/libx.so.1": "libx.so.1.2", "lib64/ld.so": "/lib/x86_64-linux-gnu/libx.so.1.2"})
    names = debian.extract_deb(deb, tmp_path / "root")
    assert "lib/x86_64-linux-gnu/libx.so.1.2" in names
    root = tmp_path / "root"
    assert (root / "lib/x86_64-linux-gnu/libx.so.1").read_bytes() == b"ELF..."
    assert os.readlink(root / "lib64/ld.so") == "../lib/x86_64-linux-gnu/libx.so.1.2"
    assert (root / "lib64/ld.so").read_bytes() == b"ELF..."


def test_extract_refuses_what_is_not_a_deb(tmp_path):
    bad = tmp_path / "bad.deb"
    bad.write_bytes(b"<html>not found</html>")
    with pytest.raises(BundleError, match="not a Debian package"):
        debian.extract_deb(bad, tmp_path / "root")


@pytest.mark.parametrize("a,b,want", [
    ("1.0", "1.0", 0), ("1.0~rc1", "1.0", -1), ("2.36-9+deb12u14", "2.36-9+deb12u7", 1), ("1:1.2", "2.0", 1),
    ("3.0.22-1~deb12u2", "3.0.20-1~deb12u2", 1), ("1.0a", "1.0", 1), ("1.0-1", "1.0-1.1", -1), ("1.0.0", "1.0", 1),
    ("3.11.2-6+deb12u9", "3.11.2-6+deb12u8", 1), ("1.2.13.dfsg-1", "1.2.13-1", 1),
])
def test_compare_versions_as_dpkg_does(a, b, want):
    assert debian.compare_versions(a, b) == want
    assert debian.compare_versions(b, a) == -want


def test_newest_version_across_suites():
    main = "Package: libc6\nVersion: 2.36-9+deb12u14\nFilename: pool/main/g/glibc/a.deb\nSHA256: 11\n\n" \
           "Package: zlib1g\nVersion: 1:1.2.13.dfsg-1\nDescription: z\n more text\n"
    security = "Package: libc6\nVersion: 2.36-9+deb12u7\nFilename: pool/updates/main/g/glibc/b.deb\nSHA256: 22\n"
    stanzas = [("main", s) for s in debian.parse_packages(main)] + [("sec", s) for s in debian.parse_packages(security)]
    mirror, st = debian.newest(stanzas, "libc6")
    assert (mirror, st["Version"], st["SHA256"]) == ("main", "2.36-9+deb12u14", "11")
    assert debian.newest(stanzas, "zlib1g")[1]["Description"] == "z"
    assert debian.newest(stanzas, "nope") is None
