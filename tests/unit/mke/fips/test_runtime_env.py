"""mke/fips/runtime_env.py: what a FIPS mke's children get, and why."""

from __future__ import annotations

import json
import subprocess

from mke.fips.runtime_env import child_env, godebug_for_children, is_fips_runtime, runtime_summary


def test_child_env_restores_openssl_and_forces_fips_godebug():
    env = {"OPENSSL_CONF": "/tmp/_MEIabc/mke_fips/openssl.cnf", "MKE_FIPS_SAVED_OPENSSL_CONF": "",
           "OPENSSL_MODULES": "/tmp/_MEIabc/mke_fips", "MKE_FIPS_SAVED_OPENSSL_MODULES": "/usr/lib/ossl-modules",
           "MKE_FIPS_RUNTIME": "/tmp/_MEIabc/mke_fips", "GODEBUG": "fips140=off,x509sha1=1", "PATH": "/bin"}
    out = child_env(env, fips_payload=True)
    assert out == {"OPENSSL_MODULES": "/usr/lib/ossl-modules", "GODEBUG": "x509sha1=1,fips140=on", "PATH": "/bin"}
    assert "GODEBUG" not in child_env({"PATH": "/bin"}, fips_payload=False)
    assert godebug_for_children({"GODEBUG": "fips140=only"}) == "fips140=only"


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
