"""mke/staging.py: by-digest staging, skip-if-present without reading the payload, tamper,
old-version cleanup, none-mode PATH fallback; plus mke/procenv.py."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from mke import payload_format as pf
from mke import staging
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


def test_clean_env_drops_what_the_entry_set_and_gives_back_what_it_kept():
    env = {"PATH": "/usr/bin", "HOME": "/root", "MKE_EXE": "/usr/local/bin/mke", "MKE_EXE_FD": "3",
           "MKE_ENTRY_SAVED_PYTHONPATH": "/opt/py", "MKE_ENTRY_SAVED_LD_PRELOAD": "/lib/x.so", "LISTEN_PID": "1",
           "LD_LIBRARY_PATH": "/opt/lib"}
    out = clean_env(env, extra={"FOO": "1"})
    assert out == {"PATH": "/usr/bin", "HOME": "/root", "PYTHONPATH": "/opt/py", "LD_PRELOAD": "/lib/x.so",
                   "LD_LIBRARY_PATH": "/opt/lib", "FOO": "1"}


def test_clean_env_of_a_fips_runtime_restores_openssl_settings():
    env = {"MKE_FIPS_RUNTIME": "/rt/fips", "OPENSSL_CONF": "/rt/fips/openssl.cnf", "MKE_FIPS_SAVED_OPENSSL_CONF": "",
           "MKE_FIPS_SAVED_OPENSSL_MODULES": "/usr/lib/ossl", "X": "y"}
    out = clean_env(env)
    assert "OPENSSL_CONF" not in out and out["OPENSSL_MODULES"] == "/usr/lib/ossl" and out["X"] == "y"
    assert "MKE_FIPS_RUNTIME" not in out and "fips140=on" in out["GODEBUG"]


def test_a_multi_call_binary_is_staged_once_with_its_links(tmp_path):
    path = tmp_path / "payload"
    make_payload(path, [{"multi": TRUE, "other": BIG}], links={"multi": ("multi-a", "multi-b")})
    p = pf.Payload.open(path)
    assert p.manifest.binary("multi").links == ("multi-a", "multi-b")
    bindir = tmp_path / "bin"
    staging.stage(p, ["multi"], bindir, say=quiet)
    target = os.readlink(bindir / "multi")
    assert os.readlink(bindir / "multi-a") == os.readlink(bindir / "multi-b") == target
    assert subprocess.run([bindir / "multi-a"], check=False).returncode == 0  # runs under its other name
    (bindir / "multi-b").unlink()  # a lost link is put back without decoding anything
    staging.stage(p, ["multi"], bindir, say=quiet)
    assert os.readlink(bindir / "multi-b") == target


def test_a_link_may_not_shadow_a_binary_or_leave_the_bin_dir(tmp_path):
    for bad in ("other", "../x"):
        make_payload(tmp_path / "bad", [{"multi": TRUE, "other": BIG}], links={"multi": (bad,)})
        with pytest.raises(PayloadError, match=f"bad link name {bad!r}"):
            pf.Payload.open(tmp_path / "bad")
