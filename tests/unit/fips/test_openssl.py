"""fips/openssl.py: the provider's source is verified before use, its configuration and its claims."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from build.errors import ComponentBuildError, VerificationError
from fips import openssl
from fips.settings import CRATES_BASE_ENV, TOOLCHAIN_FILE, load
from tests.support.mirror import MirrorServer

CRATE_PATH = "static.crates.io/crates/openssl-src/openssl-src-300.1.4+3.1.2.crate"
FIPSKEY = "f4556650ac31d35461610bac4ed81b1a181b2d8a43ea2854cbae22ca74560813"  # OpenSSL's default (Configure)


@pytest.fixture
def tampered(tmp_path) -> tuple[Path, bytes]:
    """A mirror tree whose crate is not the pinned one."""
    root = tmp_path / "mirror"
    body = b"\x1f\x8b not the openssl-src crate"
    (root / CRATE_PATH).parent.mkdir(parents=True)
    (root / CRATE_PATH).write_bytes(body)
    return root, body


def _build(tmp_path: Path, *args: str) -> int:
    return openssl.main(["build", "--cache-dir", str(tmp_path / "cache"), "--jobs", "1", *args])


def test_tampered_crate_is_refused_in_one_line(tmp_path, tampered, capsys, monkeypatch):
    root, body = tampered
    monkeypatch.delenv(CRATES_BASE_ENV, raising=False)
    with MirrorServer(root) as server:
        assert _build(tmp_path, "--mirror", server.url) == 6  # DigestMismatchError
    [err] = [ln for ln in capsys.readouterr().err.splitlines() if not ln.startswith("[openssl-fips-provider]")]
    tc = load()
    assert err.startswith(f"error: {TOOLCHAIN_FILE}: openssl.sha256: openssl-fips-provider: {tc.openssl.url} ")
    assert f"expected {tc.openssl.sha256}, got {hashlib.sha256(body).hexdigest()}" in err
    assert "nothing was built" in err and "sha256_from" in err
    downloads = tmp_path / "cache" / "downloads"
    assert not [p for p in downloads.iterdir() if p.suffix not in (".lock",)]  # the bad bytes were deleted
    assert not list((tmp_path / "cache").glob("ac/**/*.json"))  # and no action was recorded


def test_crates_base_is_configurable(tmp_path, tampered, capsys, monkeypatch):
    """MKE_CRATES_BASE moves the download to a mirror of static.crates.io's layout; the digest still decides."""
    root, _ = tampered
    with MirrorServer(root) as server:
        monkeypatch.setenv(CRATES_BASE_ENV, f"{server.url}/static.crates.io/crates")
        assert _build(tmp_path) == 6
        assert server.requests_for(f"https://{CRATE_PATH}")  # fetched from there
    assert f"(from {server.url}/{CRATE_PATH})" in capsys.readouterr().err


def test_module_mac_is_hmac_of_the_module(tmp_path):
    so = tmp_path / "fips.so"
    so.write_bytes(b"\x7fELF module bytes")
    mac = hmac.new(bytes.fromhex(FIPSKEY), so.read_bytes(), hashlib.sha256).hexdigest().upper()
    cnf = "[fips_sect]\nactivate = 1\nmodule-mac = " + ":".join(mac[i:i + 2] for i in range(0, 64, 2)) + "\n"
    assert openssl.check_module_mac(so, cnf, FIPSKEY) == mac.lower()
    so.write_bytes(b"\x7fELF module bytez")
    with pytest.raises(VerificationError, match="module-mac .* is not HMAC-SHA256 of fips.so"):
        openssl.check_module_mac(so, cnf, FIPSKEY)
    with pytest.raises(VerificationError, match="has no module-mac"):
        openssl.check_module_mac(so, "[fips_sect]\nactivate = 1\n", FIPSKEY)


def test_fips_section_runs_self_tests_on_every_load():
    cnf = "[fips_sect]\nactivate = 1\nsecurity-checks = 1\nmodule-mac = AB:CD\n"
    section = openssl._fips_section(cnf)
    assert section.endswith("module-mac = AB:CD\nmodule = ${ENV::MKE_FIPS_RUNTIME}/fips.so\n")
    with pytest.raises(ComponentBuildError, match="install-mac/install-status: the self tests would run only at install"):
        openssl._fips_section(cnf + "install-mac = 01:02\ninstall-status = INSTALL_SELF_TEST_KATS_RUN\n")


META = {"configure": ["./Configure", "enable-fips"], "module_sources_check": "the 430 files ... (fips.checksum)"}


def test_claims_for_the_validated_version_from_the_crate():
    statement, claimed, not_claimed = openssl.claims(load(), "3.1.2", META)
    assert statement.startswith("OpenSSL FIPS provider 3.1.2, a validated version (FIPS 140-3 certificate #4985), "
                                "built with ./Configure enable-fips, make, make install_fips from the crates.io crate "
                                "openssl-src 300.1.4+3.1.2 (OpenSSL commit 17a2c511; not the release tarball")
    assert "3.1.2 is a validated version: FIPS 140-3 certificate #4985" in claimed
    assert not_claimed[0].startswith("the source is not the release tarball openssl-3.1.2.tar.gz")
    assert any("outside the module boundary" in c for c in not_claimed)


def test_claims_for_another_version(tmp_path):
    p = tmp_path / "toolchain.toml"
    p.write_text(TOOLCHAIN_FILE.read_text().replace('version = "3.1.2"', 'version = "3.1.3"', 1))
    statement, claimed, not_claimed = openssl.claims(load(p), "3.1.3", META)
    assert "3.1.3 is NOT a validated version (validated: 3.0.8, 3.0.9, 3.1.2)" in statement
    assert not any("is a validated version" in c for c in claimed)
    assert not_claimed[0].startswith("3.1.3 is NOT a validated version")


def test_check_self_tests():
    ok = {"fips_loaded": True, "failed": 0, "types": ["KAT_Digest", "KAT_Integrity", "Module_Integrity"],
          "provider": {"fips_provider": {"version": "3.1.2"}}, "events": []}
    openssl.check_self_tests(ok, "3.1.2", "here")
    with pytest.raises(VerificationError, match="says version 3.1.2, expected 3.0.20"):
        openssl.check_self_tests(ok, "3.0.20", "here")
    with pytest.raises(VerificationError, match="without running its integrity check and known-answer tests"):
        openssl.check_self_tests({**ok, "types": ["KAT_Integrity"]}, "3.1.2", "here")
    failed = {**ok, "fips_loaded": False, "failed": 1, "events": [["Fail", "Module_Integrity", "HMAC"]]}
    with pytest.raises(VerificationError, match=r"did not load here: self tests failed: \[\['Fail', 'Module_Integrity'"):
        openssl.check_self_tests(failed, "3.1.2", "here")


