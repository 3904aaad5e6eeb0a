"""mke/fips/runtime_env.py: what a FIPS mke's children get, and why."""

from __future__ import annotations

import json
import subprocess

import pytest

from mke import payload_format as pf
from mke.fips import runtime_env
from mke.fips.runtime_env import child_env, godebug_for_children, is_fips_runtime, payload_go_fips, runtime_summary
from tests.support.payloads import make_payload


def test_child_env_restores_openssl_and_forces_fips_godebug():
    env = {"OPENSSL_CONF": "/tmp/_MEIabc/mke_fips/openssl.cnf", "MKE_FIPS_SAVED_OPENSSL_CONF": "",
           "OPENSSL_MODULES": "/tmp/_MEIabc/mke_fips", "MKE_FIPS_SAVED_OPENSSL_MODULES": "/usr/lib/ossl-modules",
           "MKE_FIPS_RUNTIME": "/tmp/_MEIabc/mke_fips", "GODEBUG": "fips140=off,x509sha1=1", "PATH": "/bin"}
    out = child_env(env, go_fips="native")
    assert out == {"OPENSSL_MODULES": "/usr/lib/ossl-modules", "GODEBUG": "x509sha1=1,fips140=on", "PATH": "/bin"}
    assert "GODEBUG" not in child_env({"PATH": "/bin"}, go_fips=None)
    assert godebug_for_children({"GODEBUG": "fips140=only"}) == "fips140=only"
    assert godebug_for_children({"GODEBUG": "fips140=only,fips140=off"}) == "fips140=on"  # the last one counts, as in Go


def test_child_env_of_a_boring_payload_has_no_fips140(monkeypatch, capsys):
    """Issue 17 item 3: BoringCrypto binaries panic with fips140=on|only; off does not turn BoringCrypto off."""
    monkeypatch.setattr(runtime_env, "_warned_boring_godebug", False)
    env = {"MKE_FIPS_RUNTIME": "/rt/fips", "MKE_FIPS_SAVED_OPENSSL_CONF": "", "OPENSSL_CONF": "/rt/fips/openssl.cnf",
           "PATH": "/bin"}
    assert child_env(env, go_fips="boring") == {"PATH": "/bin"}
    assert child_env(env | {"GODEBUG": "x509sha1=1,fips140=off"}, go_fips="boring")["GODEBUG"] == "x509sha1=1"
    assert capsys.readouterr().err == ""  # off (or nothing) is dropped silently
    assert child_env(env | {"GODEBUG": "fips140=only,x509sha1=1"}, go_fips="boring")["GODEBUG"] == "x509sha1=1"
    assert child_env(env | {"GODEBUG": "fips140=on"}, go_fips="boring") == {"PATH": "/bin"}
    err = capsys.readouterr().err
    assert err.startswith("mke: warning: GODEBUG fips140=only is not passed") and err.count("warning") == 1
    with pytest.raises(ValueError, match="unknown Go FIPS mode"):
        godebug_for_children({}, "both")


def test_boring_binary_panics_with_fips140_on_and_runs_in_child_env(gobins):
    """The measurement behind it, on the host's real GOEXPERIMENT=boringcrypto build (tests/support/gofips.py)."""
    if "boring" not in gobins:
        pytest.skip("needs gcc; tests/integration/test_fips_boring.py fails instead")
    on = subprocess.run([gobins["boring"]], capture_output=True, text=True, env={"GODEBUG": "fips140=on"}, check=False)
    assert on.returncode == 2
    assert "panic: fips140: FIPS 140-3 mode is incompatible with GOEXPERIMENT=boringcrypto" in on.stderr
    env = child_env({"GODEBUG": "fips140=on", "MKE_FIPS_RUNTIME": "/rt/fips"}, go_fips="boring")
    ok = subprocess.run([gobins["boring"]], capture_output=True, text=True, env=env, check=False)
    assert ok.returncode == 0 and ok.stdout.startswith("fips140=false boring=true"), ok.stderr


def test_payload_go_fips_reads_the_manifest(tmp_path, monkeypatch):
    monkeypatch.delenv(pf.PAYLOAD_ENV, raising=False)
    assert payload_go_fips() == "native"  # no payload (run from source): as before
    for name, fips, fips_go, want in (("boring", True, "boring", "boring"), ("native", True, "native", "native"),
                                      ("old", True, None, "native"), ("plain", False, None, "native")):
        path = tmp_path / name
        make_payload(path, [{"kubelet": b"x"}], fips=fips, fips_go=fips_go)
        monkeypatch.setenv(pf.PAYLOAD_ENV, str(path))
        assert payload_go_fips() == want, name


def test_fips_godebug_really_matters(gobins):
    """Why child_env forces it: fips140=on is only a default, GODEBUG=fips140=off turns it off."""
    on = subprocess.run([gobins["fips"]], capture_output=True, text=True, env={}, check=False).stdout
    off = subprocess.run([gobins["fips"]], capture_output=True, text=True, env={"GODEBUG": "fips140=off"}, check=False).stdout
    assert on.startswith("fips140=true") and off.startswith("fips140=false")


def test_runtime_summary(tmp_path, monkeypatch):
    monkeypatch.delenv("MKE_FIPS_RUNTIME", raising=False)
    assert not is_fips_runtime() and runtime_summary() == {"fips": False}
    monkeypatch.setenv("MKE_FIPS_RUNTIME", str(tmp_path))
    assert is_fips_runtime() and runtime_summary()["openssl_fips_provider"] is None  # no provenance.json: unknown
    (tmp_path / "provenance.json").write_text(json.dumps({"openssl_version": "3.0.20", "validated": False}))
    assert runtime_summary() == {"fips": True, "openssl_fips_provider": "3.0.20", "validated": False,
                                 "certificate": None, "statement": None, "not_claimed": None}
