"""build/fsutil.py's tar extraction: the "data" filter's checks on every Python 3.11 (Debian 12's
python3 is 3.11.2, without PEP 706's filters; issue 19.8)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from build import fsutil


def archive(tmp_path: Path, *members: tuple[str, str, dict]) -> Path:
    """members: (name, kind, attrs) with kind file|dir|sym|lnk|chr|fifo."""
    path = tmp_path / "a.tar"
    with tarfile.open(path, "w") as t:
        for name, kind, attrs in members:
            ti = tarfile.TarInfo(name)
            ti.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
                       "lnk": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            ti.mode = attrs.get("mode", 0o755 if kind == "dir" else 0o644)
            ti.linkname = attrs.get("link", "")
            ti.uid = attrs.get("uid", 0)
            data = attrs.get("data", b"x") if kind == "file" else b""
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data) if data else None)
    return path


@pytest.fixture(params=["native", "fallback"])
def mode(request, monkeypatch):
    if request.param == "fallback":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    elif not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile.data_filter (3.11.4+)")
    return request.param


def extract(path: Path, dest: Path, **kw) -> None:
    with tarfile.open(path) as t:
        fsutil.extract_all(t, dest, **kw)


def test_plain_files_dirs_and_inner_links_are_extracted_and_cleaned(tmp_path, mode):
    a = archive(tmp_path, ("d", "dir", {}), ("d/f", "file", {"mode": 0o4777, "uid": 1234}),
                ("d/l", "sym", {"link": "f"}), ("d/h", "lnk", {"link": "d/f"}), ("d/ro", "file", {"mode": 0o400}))
    dest = tmp_path / "out"
    dest.mkdir()
    extract(a, dest)
    f = dest / "d" / "f"
    assert f.read_bytes() == b"x" and os.readlink(dest / "d" / "l") == "f" and (dest / "d" / "h").exists()
    m = stat.S_IMODE(f.stat().st_mode)
    assert not m & (stat.S_ISUID | stat.S_IWGRP | stat.S_IWOTH), oct(m)  # setuid and group/other write gone
    assert stat.S_IMODE((dest / "d" / "ro").stat().st_mode) & stat.S_IWUSR  # owner may write
    assert f.stat().st_uid == os.getuid()


def test_a_leading_slash_is_stripped(tmp_path, mode):
    dest = tmp_path / "out"
    dest.mkdir()
    extract(archive(tmp_path, ("/etc/evil", "file", {})), dest)
    assert (dest / "etc" / "evil").read_bytes() == b"x"


@pytest.mark.parametrize("member", [
    ("../evil", "file", {}),
    ("d/../../evil", "file", {}),
    ("l", "sym", {"link": "/etc/passwd"}),
    ("l", "sym", {"link": "../../etc"}),
    ("h", "lnk", {"link": "../outside"}),
    ("dev", "chr", {}),
    ("pipe", "fifo", {}),
])
def test_what_the_data_filter_refuses(tmp_path, mode, member):
    a = archive(tmp_path, member)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(tarfile.TarError):
        extract(a, dest)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "outside").exists()
