"""mke/start.py: what the static entry hands over, taken back out of the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mke import start

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(start, "executable", None)
    monkeypatch.setattr(start, "payload_path", None)
    monkeypatch.delattr(sys, "frozen", raising=False)


def test_adopt_restores_the_callers_environment(fresh, tmp_path):
    exe = tmp_path / "mke"
    exe.write_bytes(b"x")
    fd = os.open(exe, os.O_RDONLY)
    os.set_inheritable(fd, True)
    try:
        env = {"PATH": "/usr/bin", "PYTHONHOME": "/rt", "PYTHONPATH": "/rt/site", "PYTHONUTF8": "1",
               "PYTHONCOERCECLOCALE": "0", "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1",
               "MKE_EXE": str(exe), "MKE_EXE_FD": str(fd), "MKE_ENTRY_SAVED_PYTHONPATH": "/home/u/py",
               "MKE_ENTRY_SAVED_LD_PRELOAD": "/lib/libfoo.so"}
        start.adopt(env)
        assert env == {"PATH": "/usr/bin", "PYTHONPATH": "/home/u/py", "LD_PRELOAD": "/lib/libfoo.so"}
        assert start.executable == str(exe) and start.payload_path == f"/proc/self/fd/{fd}"
        assert os.get_inheritable(fd) is False  # children of mke never get it
        assert getattr(sys, "frozen", False) is True
        assert Path(start.payload_path).read_bytes() == b"x"
    finally:
        os.close(fd)


def test_adopt_without_the_entry_changes_nothing(fresh):
    env = {"PATH": "/usr/bin", "PYTHONPATH": "/src"}
    start.adopt(env)
    assert env == {"PATH": "/usr/bin", "PYTHONPATH": "/src"}
    assert start.executable is None and start.payload_path is None


def test_running_payload_reads_the_entrys_fd(fresh, tmp_path, monkeypatch):
    from mke import payload_format as pf
    from tests.support.payloads import make_payload

    path = tmp_path / "payload"
    make_payload(path, [{"alpha": b"A" * 100}])
    fd = os.open(path, os.O_RDONLY)
    try:
        monkeypatch.delenv(pf.PAYLOAD_ENV, raising=False)
        start.adopt({"MKE_EXE": "/usr/local/bin/mke", "MKE_EXE_FD": str(fd)})
        path.unlink()  # replaced by an upgrade: the running mke still reads the file it started from
        p = pf.running_payload()
        assert p is not None and p.label == "/usr/local/bin/mke" and p.manifest.names() == ("alpha",)
    finally:
        os.close(fd)


def test_self_command_runs_this_mke_again(fresh, tmp_path):
    """One answer to "the command that runs this mke": a service unit gets dist/mke's path,
    resolved; a child that must be this very version (the PKI helper) gets the entry's open fd
    of the file it started from; from source, ``python -m mke``."""
    exe = tmp_path / "mke-1.0"
    exe.write_bytes(b"x")
    (tmp_path / "mke").symlink_to(exe.name)
    assert start.self_command() == start.self_command(running_file=True) == \
        [os.path.abspath(sys.executable), "-m", "mke"]
    start.executable, start.payload_path = str(tmp_path / "mke"), "/proc/self/fd/7"
    assert start.self_command() == [str(exe)]
    assert start.self_command(running_file=True) == [f"/proc/{os.getpid()}/fd/7"]
    start.payload_path = str(tmp_path / "mke")  # the entry gave no fd
    assert start.self_command(running_file=True) == [str(tmp_path / "mke")]


def test_fips_runtime_setup_blocks_builtin_hashes_and_keeps_callers_openssl_settings(tmp_path):
    code = ("import os, sys, json; from mke import start; start._fips_runtime(sys.argv[1]); import hashlib; "
            "out = {k: v for k, v in os.environ.items() if 'OPENSSL' in k or 'MKE_FIPS' in k}; "
            "out['md5_builtin'] = sys.modules.get('_md5', 'absent') is None; print(json.dumps(out))")
    env = {"PATH": "/usr/bin", "PYTHONPATH": str(REPO), "OPENSSL_MODULES": "/usr/lib/ossl"}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True,
                         check=True).stdout
    import json

    doc = json.loads(out)
    assert doc.pop("md5_builtin") is True
    assert doc == {"OPENSSL_CONF": str(tmp_path / "openssl.cnf"), "MKE_FIPS_RUNTIME": str(tmp_path),
                   "OPENSSL_MODULES": str(tmp_path),
                   "CRYPTOGRAPHY_OPENSSL_NO_LEGACY": "1", "MKE_FIPS_SAVED_OPENSSL_CONF": "",
                   "MKE_FIPS_SAVED_OPENSSL_MODULES": "/usr/lib/ossl", "MKE_FIPS_SAVED_CRYPTOGRAPHY_OPENSSL_NO_LEGACY": ""}


def test_builtin_hash_list_and_names_match_mke_fips():
    from mke.fips import runtime_env, runtime_state

    assert set(start.BUILTIN_HASH_MODULES) == set(runtime_state.BUILTIN_HASH_MODULES)
    assert start.FIPS_SAVED_PREFIX == runtime_env.SAVED_PREFIX
