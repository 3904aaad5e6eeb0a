"""build/cache.py: CAS + action cache: atomic, verified on read, locked, gc, verify."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from pathlib import Path

import pytest

from build.action import Action
from build.cache import Cache, OutputFile, default_cache_dir
from build.errors import CacheError


def _action(**inputs) -> Action:
    return Action(mode="fetch", component="x", platform="linux/amd64", inputs=inputs)


def _blob(tmp_path: Path, data: bytes, name: str = "f") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_put_get_roundtrip(tmp_path):
    cache = Cache(tmp_path / "c")
    digest, size = cache.cas.put_file(_blob(tmp_path, b"hello"))
    assert digest == hashlib.sha256(b"hello").hexdigest() and size == 5
    path = cache.cas.path(digest)
    assert path == tmp_path / "c" / "cas" / "sha256" / digest[:2] / digest
    assert oct(path.stat().st_mode & 0o777) == "0o444"
    a = _action(v=1)
    assert cache.get(a.key()) is None
    cache.put(a, [OutputFile(name="x", sha256=digest, size=size)], {"why": "test"})
    got = cache.get(a.key(), verify=True)
    assert got is not None and got.output("x").sha256 == digest and got.metadata == {"why": "test"}


def test_put_refuses_result_whose_blob_is_missing(tmp_path):
    cache = Cache(tmp_path / "c")
    with pytest.raises(CacheError, match="is not in the CAS"):
        cache.put(_action(), [OutputFile(name="x", sha256="a" * 64, size=1)], {})
    assert not list((tmp_path / "c" / "ac").iterdir())


def test_corrupt_blob_is_a_miss_and_is_removed(tmp_path):
    cache = Cache(tmp_path / "c")
    digest, size = cache.cas.put_file(_blob(tmp_path, b"data"))
    a = _action()
    cache.put(a, [OutputFile(name="x", sha256=digest, size=size)], {})
    p = cache.cas.path(digest)
    p.chmod(0o644)
    p.write_bytes(b"evil")
    assert cache.get(a.key(), verify=True) is None
    assert not p.exists()
    assert cache.get(a.key()) is None  # the entry pointing at it is gone too


def test_copy_out_verifies_and_never_leaves_partial(tmp_path):
    cache = Cache(tmp_path / "c")
    digest, _ = cache.cas.put_file(_blob(tmp_path, b"abc" * 1000))
    dest = tmp_path / "out" / "bin"
    cache.cas.copy_out(digest, dest)
    assert dest.read_bytes() == b"abc" * 1000 and os.access(dest, os.X_OK)
    p = cache.cas.path(digest)
    p.chmod(0o644)
    p.write_bytes(b"tampered")
    dest2 = tmp_path / "out" / "bin2"
    with pytest.raises(CacheError, match="is corrupt"):
        cache.cas.copy_out(digest, dest2)
    assert not dest2.exists()
    assert not [x for x in (tmp_path / "out").iterdir() if x.name.startswith(".tmp-")]


def test_unreadable_result_is_dropped(tmp_path):
    cache = Cache(tmp_path / "c")
    a = _action()
    (tmp_path / "c" / "ac" / f"{a.key()}.json").write_text("{not json")
    assert cache.get(a.key()) is None
    assert not (tmp_path / "c" / "ac" / f"{a.key()}.json").exists()


def test_verify_all_and_gc(tmp_path):
    cache = Cache(tmp_path / "c")
    d1, s1 = cache.cas.put_file(_blob(tmp_path, b"one", "1"))
    d2, _ = cache.cas.put_file(_blob(tmp_path, b"two", "2"))  # unreferenced
    cache.put(_action(k=1), [OutputFile(name="x", sha256=d1, size=s1)], {})
    assert cache.verify_all() == []
    (tmp_path / "c" / "tmp" / "leftover").write_text("x")
    (tmp_path / "c" / "downloads" / "abc.part").write_text("x")
    removed = cache.gc()
    assert removed == {"results": 0, "blobs": 1, "temp": 1, "downloads": 1}
    assert cache.cas.has(d1) and not cache.cas.has(d2)
    stats = cache.stats()
    assert stats["actions"] == 1 and stats["blobs"] == 1 and stats["blob_bytes"] == 3


def test_verify_all_reports_corruption(tmp_path):
    cache = Cache(tmp_path / "c")
    d, s = cache.cas.put_file(_blob(tmp_path, b"x"))
    cache.put(_action(), [OutputFile(name="x", sha256=d, size=s)], {})
    cache.cas.path(d).unlink()
    problems = cache.verify_all()
    assert len(problems) == 1 and "missing" in problems[0]


def test_bad_digest_rejected(tmp_path):
    with pytest.raises(CacheError, match="not a sha256 digest"):
        Cache(tmp_path).cas.path("../../etc/passwd")


def test_unusable_cache_dir(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(CacheError, match="is not usable.*--cache-dir"):
        Cache(f)


def test_default_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MKE_CACHE_DIR", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("MKE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "mke"


def _store_many(root: str, n: int) -> None:
    cache = Cache(Path(root))
    for i in range(n):
        src = Path(root) / f"src-{os.getpid()}-{i}"
        src.write_bytes(f"blob {i % 5}".encode())
        d, s = cache.cas.put_file(src)
        with cache.action_lock("k"):
            cache.put(_action(i=i % 5), [OutputFile(name="x", sha256=d, size=s)], {})


def test_concurrent_writers_leave_a_consistent_cache(tmp_path):
    procs = [multiprocessing.Process(target=_store_many, args=(str(tmp_path / "c"), 50)) for _ in range(3)]
    Cache(tmp_path / "c")
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    cache = Cache(tmp_path / "c")
    assert cache.verify_all() == []
    assert cache.stats()["blobs"] == 5 and cache.stats()["actions"] == 5
