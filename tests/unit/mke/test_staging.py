"""mke/staging.py: by-digest staging, skip-if-present without reading the payload, tamper,
old-version cleanup, none-mode PATH fallback; plus mke/procenv.py and mke/pylib.py."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest

from mke import payload_format as pf
from mke import pylib, staging
from mke.errors import PayloadError, StagingError
from mke.procenv import clean_env
from tests.support.payloads import executable_bytes, make_payload

TRUE = executable_bytes("true")
SLEEP = executable_bytes("sleep")
BIG = os.urandom(1 << 20)


@pytest.fixture
def payload(tmp_path):
    path = tmp_path / "payload"
    make_payload(path, [{"alpha": TRUE, "big": BIG}, {"sleeper": SLEEP}],
                 roles={"alpha": ("controller",), "big": ("worker",), "sleeper": ("worker",)})
    return pf.Payload.open(path)


def quiet(_msg: str) -> None:
    pass


def test_stage_all(tmp_path, payload):
    bindir = tmp_path / "data" / "bin"
    res = staging.stage(payload, ["alpha", "big", "sleeper"], bindir, say=quiet)
    assert [r.action for r in res] == ["staged"] * 3
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700  # the data dir we created
    assert stat.S_IMODE(bindir.stat().st_mode) == 0o755
    for name, content in (("alpha", TRUE), ("big", BIG), ("sleeper", SLEEP)):
        link = bindir / name
        b = payload.manifest.binary(name)
        assert os.readlink(link) == f".store/{b.sha256}/{name}"
        assert link.read_bytes() == content
        assert stat.S_IMODE(link.stat().st_mode) == 0o755
    subprocess.run([str(bindir / "alpha")], check=True)
    assert not list((bindir / ".store").glob(".tmp-*"))


def test_present_binaries_do_not_read_the_payload(tmp_path, payload):
    bindir = tmp_path / "bin"
    staging.stage(payload, ["alpha", "big"], bindir, say=quiet)
    before = {p: p.stat().st_mtime_ns for p in (bindir / ".store").rglob("*") if p.is_file()}
    Path(payload.path).write_bytes(b"")  # any read of the payload would now fail
    res = staging.stage(payload, ["alpha", "big"], bindir, say=quiet)
    assert [r.action for r in res] == ["present", "present"]
    assert before == {p: p.stat().st_mtime_ns for p in (bindir / ".store").rglob("*") if p.is_file()}
    (bindir / "alpha").unlink()  # link lost, store file still there: relinked, no decode
    assert [r.action for r in staging.stage(payload, ["alpha"], bindir, say=quiet)] == ["present"]
    assert (bindir / "alpha").read_bytes() == TRUE


def test_only_the_needed_frame_is_decoded(tmp_path, payload):
    bindir = tmp_path / "bin"
    staging.stage(payload, ["sleeper"], bindir, say=quiet)
    assert sorted(p.name for p in bindir.iterdir() if not p.name.startswith(".")) == ["sleeper"]


def test_tampered_payload_leaves_nothing(tmp_path, payload):
    data = bytearray(Path(payload.path).read_bytes())
    frame = payload.manifest.frames[0]
    data[payload.header.data_offset + frame.offset + frame.size // 2] ^= 0x01
    Path(payload.path).write_bytes(bytes(data))
    p = pf.Payload.open(payload.path)
    bindir = tmp_path / "bin"
    with pytest.raises(PayloadError):
        staging.stage(p, ["alpha", "big"], bindir, say=quiet)
    assert not (bindir / "alpha").exists() and not (bindir / "big").exists()
    assert [p.name for p in (bindir / ".store").iterdir()] == []  # no temp, no partial


def test_killed_staging_leftovers_are_removed(tmp_path, payload):
    bindir = tmp_path / "bin"
    (bindir / ".store" / ".tmp-dead").mkdir(parents=True)
    (bindir / ".store" / ".tmp-dead" / "alpha").write_bytes(TRUE[:100])
    staging.stage(payload, ["alpha"], bindir, say=quiet)
    assert not (bindir / ".store" / ".tmp-dead").exists()


def test_concurrent_staging_in_threads(tmp_path, payload):
    bindir = tmp_path / "bin"
    results, errors = [], []

    def run():
        try:
            results.append(staging.stage(payload, ["alpha", "big", "sleeper"], bindir, say=quiet))
        except Exception as e:  # noqa: BLE001 - every failure is reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    written = sum(r.action == "staged" for res in results for r in res)
    assert written == 3  # each binary written exactly once
    assert (bindir / "big").read_bytes() == BIG


def test_old_versions_removed_when_not_running(tmp_path, payload):
    bindir = tmp_path / "bin"
    staging.stage(payload, ["alpha", "sleeper"], bindir, say=quiet)
    old_sleeper = payload.manifest.binary("sleeper")
    old_alpha = payload.manifest.binary("alpha")
    proc = subprocess.Popen([str(bindir / "sleeper"), "30"])  # an old version still running
    try:
        time.sleep(0.2)
        new_path = tmp_path / "payload2"
        make_payload(new_path, [{"alpha": TRUE + b"\0v2"}, {"sleeper": SLEEP + b"\0v2"}])
        new = pf.Payload.open(new_path)
        said: list[str] = []
        staging.stage(new, ["alpha", "sleeper"], bindir, say=said.append)
        assert not (bindir / ".store" / old_alpha.sha256).exists()  # unused: removed
        assert (bindir / ".store" / old_sleeper.sha256).exists()  # still running: kept
        assert any(old_alpha.sha256 in m for m in said)
        assert (bindir / "sleeper").read_bytes().endswith(b"\0v2")
    finally:
        proc.kill()
        proc.wait()
    staging.stage(new, ["alpha", "sleeper"], bindir, say=quiet)  # fast path notices stale entries
    assert not (bindir / ".store" / old_sleeper.sha256).exists()


def test_none_mode_falls_back_to_path(tmp_path, monkeypatch):
    path = tmp_path / "payload"
    make_payload(path, [], mode="none")
    p = pf.Payload.open(path)
    said: list[str] = []
    monkeypatch.setenv("PATH", os.path.dirname(shutil.which("true")))
    res = staging.stage(p, ["true"], tmp_path / "bin", say=said.append)
    assert res[0].action == "path" and res[0].path.name == "true"
    assert "none-mode" in said[0] and "PATH" in said[0]
    with pytest.raises(StagingError, match="kubelet is not on PATH"):
        staging.stage(None, ["kubelet"], tmp_path / "bin", say=quiet)


def test_unwritable_bin_dir(tmp_path, payload):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(StagingError, match="--bin-dir"):
        staging.stage(payload, ["alpha"], target / "bin", say=quiet)


def test_unknown_binary(tmp_path, payload):
    with pytest.raises(PayloadError, match="no binary named 'nope'"):
        staging.stage(payload, ["nope"], tmp_path / "bin", say=quiet)


# --------------------------------------------------------------------------- procenv


def test_clean_env_restores_library_path():
    env = {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/tmp/_MEI123:/opt/lib", "LD_LIBRARY_PATH_ORIG": "/opt/lib",
           "_PYI_ARCHIVE_FILE": "/usr/bin/mke", "_PYI_PARENT_PROCESS_LEVEL": "1", "LISTEN_PID": "1", "HOME": "/root"}
    out = clean_env(env, bundle_dir="/tmp/_MEI123", extra={"FOO": "1"})
    assert out == {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/lib", "HOME": "/root", "FOO": "1"}


def test_clean_env_drops_bundle_only_path():
    out = clean_env({"LD_LIBRARY_PATH": "/tmp/_MEI9", "X": "y"}, bundle_dir="/tmp/_MEI9")
    assert out == {"X": "y"}
    assert clean_env({"LD_LIBRARY_PATH": "/a"}, bundle_dir=None) == {"LD_LIBRARY_PATH": "/a"}  # not frozen


# --------------------------------------------------------------------------- pylib


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def test_pylib_stages_once(tmp_path):
    path = tmp_path / "payload"
    tar = _tar({"lazypkg/__init__.py": b"VALUE = 42\n"})
    make_payload(path, [{"alpha": TRUE}], libraries={"pylib": (tar, ("lazypkg",))})
    p = pf.Payload.open(path)
    lib = p.manifest.library_for("lazypkg")
    d = pylib.stage_library(p, lib, tmp_path / "lib")
    assert (d / "lazypkg" / "__init__.py").read_text() == "VALUE = 42\n"
    Path(path).write_bytes(b"")  # staged: never read again
    assert pylib.stage_library(p, lib, tmp_path / "lib") == d
    assert stat.S_IMODE((tmp_path / "lib").stat().st_mode) == 0o700


def test_pylib_finder_imports_from_the_payload(tmp_path, monkeypatch):
    import sys

    path = tmp_path / "payload"
    make_payload(path, [], libraries={"pylib": (_tar({"mke_lazy_probe/__init__.py": b"X = 'staged'\n"}),
                                                ("mke_lazy_probe",))})
    monkeypatch.setenv(pf.PAYLOAD_ENV, str(path))
    monkeypatch.setenv(pylib.LIB_DIR_ENV, str(tmp_path / "lib"))
    finder = pylib.LazyFinder(["mke_lazy_probe"])
    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, finder])
    monkeypatch.setattr(sys, "path", list(sys.path))
    import mke_lazy_probe

    assert mke_lazy_probe.X == "staged"
    del sys.modules["mke_lazy_probe"]


def test_is_lazy_path():
    assert pylib.is_lazy_path("cryptography/hazmat/bindings/_rust.abi3.so")
    assert pylib.is_lazy_path("_cffi_backend.cpython-311-x86_64-linux-gnu.so")
    assert pylib.is_lazy_path("cffi-2.1.1.dist-info/METADATA")
    assert not pylib.is_lazy_path("libgcc_s.so.1") and not pylib.is_lazy_path("yaml")
