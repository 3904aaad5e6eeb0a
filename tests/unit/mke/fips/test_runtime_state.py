"""mke/fips/runtime_state.py: the verdict on the runtime's FIPS provider (validated version, the file as built)."""

from __future__ import annotations

import hashlib
import json

import pytest

from mke.fips.runtime_state import provider_files, provider_problems, provider_validation


def _state(tmp_path, *, loaded: str, recorded: str | None = None, fips_so: bytes = b"module",
           recorded_digest: str | None = None) -> dict:
    (tmp_path / "fips.so").write_bytes(fips_so)
    (tmp_path / "provenance.json").write_text(json.dumps({
        "openssl_version": recorded or loaded,
        "fips_so_sha256": recorded_digest or hashlib.sha256(fips_so).hexdigest()}))
    return {"hashlib_openssl": {"fips": True, "fips_provider": {"name": "OpenSSL FIPS Provider", "version": loaded}},
            "provider_files": provider_files(str(tmp_path))}


def test_validated_version_passes(tmp_path):
    assert provider_validation("3.1.2") == "FIPS 140-3 certificate #4985"
    assert provider_problems(_state(tmp_path, loaded="3.1.2")) == []


@pytest.mark.parametrize("version", ["3.0.20", "3.1.3", "3.5.4", None])
def test_other_versions_are_not_validated(tmp_path, version):
    assert provider_validation(version) is None
    problems = provider_problems(_state(tmp_path, loaded=version or "?"))
    assert len(problems) == 1 and f"OpenSSL {version or '?'}, NOT a validated version" in problems[0]
    assert "3.1.2 (FIPS 140-3 certificate #4985)" in problems[0]


def test_provider_file_must_be_the_one_built(tmp_path):
    problems = provider_problems(_state(tmp_path, loaded="3.1.2", recorded_digest="ab" * 32))
    assert problems == [f"{tmp_path}/fips.so (sha256 {hashlib.sha256(b'module').hexdigest()}) is not the file the "
                        f"build recorded in provenance.json ({'ab' * 32})"]


def test_loaded_version_must_be_the_one_recorded(tmp_path):
    assert provider_problems(_state(tmp_path, loaded="3.1.2", recorded="3.0.20")) == \
        ["the loaded FIPS provider is 3.1.2 but provenance.json describes 3.0.20"]


def test_missing_provider_files(tmp_path):
    state = {"hashlib_openssl": {"fips": True, "fips_provider": {"version": "3.1.2"}},
             "provider_files": provider_files(str(tmp_path / "nowhere"))}
    [problem] = provider_problems(state)
    assert problem.startswith(f"cannot read the provider's files in {tmp_path}/nowhere")
    assert "MKE_FIPS_RUNTIME is not set" in provider_files(None)["error"]


def test_no_provider_loaded_is_reported_elsewhere():
    """runtime_problems names a missing provider; this check has nothing to add then."""
    assert provider_problems({"hashlib_openssl": {"fips": False}}) == []


def test_only_a_bundled_runtime_is_inventoried(tmp_path, monkeypatch):
    """The inventory reads <sys.prefix>, and only when the provider dir is <sys.prefix>/fips (mke/start.py)."""
    import sys

    from mke.fips.runtime_state import runtime_inventory

    elsewhere = runtime_inventory(str(tmp_path / "fips"))
    assert elsewhere["problems"] == [] and elsewhere["skipped"].startswith("not a bundled runtime")
    assert runtime_inventory(None)["skipped"]
    (tmp_path / "fips").mkdir()
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    inv = runtime_inventory(str(tmp_path / "fips"))  # an empty runtime tree: read, and found wanting
    assert inv["root"] == str(tmp_path) and f"fips/fips.so: missing from the runtime at {tmp_path}" in inv["problems"]
