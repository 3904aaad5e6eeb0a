"""mke/commands/version.py: the "runtime" key, and no mke.fips import in a non-FIPS mke."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mke import payload_format as pf
from mke.commands import version

REPO = Path(__file__).resolve().parents[4]


def _manifest(fips: bool) -> pf.Manifest:
    return pf.Manifest(mke_version="0.1.0", platform="linux/amd64", mode="docker", fips=fips, frames=(),
                       binaries=(), libraries=())


def test_non_fips_runtime_is_reported_without_importing_mke_fips():
    code = ("import sys, json; from mke.commands import version; from mke import payload_format as pf; "
            "m = pf.Manifest(mke_version='0.1.0', platform='linux/amd64', mode='docker', fips=False, frames=(), "
            "binaries=(), libraries=()); "
            "print(json.dumps([version.describe(None)['runtime'], version.describe(m)['runtime'], "
            "'mke.fips' in sys.modules]))")
    env = {k: v for k, v in os.environ.items() if k != "MKE_FIPS_RUNTIME"} | {"PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [{"fips": False}, {"fips": False}, False]


def test_fips_runtime_reports_the_provider(tmp_path, monkeypatch):
    (tmp_path / "provenance.json").write_text(json.dumps({
        "openssl_version": "3.0.20", "validated": False, "certificate": None,
        "statement": "OpenSSL 3.0.20 FIPS provider ...; 3.0.20 is NOT a validated version"}))
    monkeypatch.setenv("MKE_FIPS_RUNTIME", str(tmp_path))
    rt = version.describe(_manifest(True))["runtime"]
    assert rt["fips"] is True and rt["openssl_fips_provider"] == "3.0.20" and rt["validated"] is False
    assert "NOT a validated version" in rt["statement"]


def test_fips_payload_without_the_runtime_hook_says_so(monkeypatch, capsys):
    monkeypatch.delenv("MKE_FIPS_RUNTIME", raising=False)
    assert version.describe(_manifest(True))["runtime"] == {"fips": False}
    monkeypatch.setattr(version, "running_payload", lambda: type("P", (), {"manifest": _manifest(True)})())
    version.run(type("A", (), {"json": False})())
    assert "NOT through a FIPS provider" in capsys.readouterr().out


def test_text_says_validated_with_the_certificate_and_the_statement(tmp_path, monkeypatch, capsys):
    """Issue 17: `mke version` names the certificate of a validated provider and prints what the build claims."""
    statement = ("OpenSSL FIPS provider 3.1.2, a validated version (FIPS 140-3 certificate #4985), built ... from the "
                 "crates.io crate openssl-src 300.1.4+3.1.2 (...; not the release tarball the security policy names)")
    (tmp_path / "provenance.json").write_text(json.dumps({
        "openssl_version": "3.1.2", "validated": True, "certificate": "FIPS 140-3 certificate #4985",
        "statement": statement, "not_claimed": ["the source is not the release tarball"]}))
    monkeypatch.setenv("MKE_FIPS_RUNTIME", str(tmp_path))
    monkeypatch.setattr(version, "running_payload", lambda: type("P", (), {"manifest": _manifest(True)})())
    version.run(type("A", (), {"json": False})())
    out = capsys.readouterr().out.splitlines()
    i = out.index("runtime crypto: OpenSSL FIPS provider 3.1.2 (validated version: FIPS 140-3 certificate #4985)")
    assert out[i + 1] == f"  {statement}"
    (tmp_path / "provenance.json").write_text(json.dumps({"openssl_version": "3.0.20", "validated": False}))
    version.run(type("A", (), {"json": False})())
    assert "runtime crypto: OpenSSL FIPS provider 3.0.20 (not a validated version)" in capsys.readouterr().out


def test_go_fips_mode_is_reported(monkeypatch, capsys):
    """Issue 17 item 3: a FIPS payload says which --fips-go built its binaries (what its children get)."""
    monkeypatch.delenv("MKE_FIPS_RUNTIME", raising=False)
    boring = _manifest(True)._replace(fips_go="boring")
    assert version.describe(boring)["fips_go"] == "boring"
    assert version.describe(_manifest(True))["fips_go"] == "native"  # a FIPS payload from before the field
    assert version.describe(_manifest(False))["fips_go"] is None and version.describe(None)["fips_go"] is None
    monkeypatch.setattr(version, "running_payload", lambda: type("P", (), {"manifest": boring})())
    version.run(type("A", (), {"json": False})())
    out = capsys.readouterr().out
    assert "go crypto: boring (BoringCrypto, GOEXPERIMENT=boringcrypto; its programs run without any GODEBUG fips140)" in out
    version.run(type("A", (), {"json": True})())
    assert json.loads(capsys.readouterr().out)["fips_go"] == "boring"
