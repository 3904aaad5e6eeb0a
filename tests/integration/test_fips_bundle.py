"""A real FIPS bundle (dist/mke-fips) made by build/bundle.py, then run: its runtime's crypto.

The bundler's FIPS path on a manifest without embedded Go binaries (those are proven by
tests/integration/test_fips_build.py and, in the bundle, by `mke fips check`): the OpenSSL
FIPS provider, cryptography linked to the system libcrypto.so.3 and the runtime hook go
into the PyInstaller build; the bundle is run and must refuse MD5 and RSA-1024 and report
its provider. Uses the shared build cache (the provider and the cryptography wheel are
built once, minutes; later runs take a few seconds, plus ~12 s of PyInstaller after a change in mke/).

Needs a Python whose cryptography is linked to libcrypto.so.3 (the bundler installs the
wheel with ``fips.runtime.prepare(install=True)``; this test does not change the Python it
runs in): `python -m fips.runtime prepare --install`, or run it in .nox/build-fips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from build import bundle
from build.cache import Cache, default_cache_dir

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("objcopy") is None, reason="needs objcopy")]


@pytest.fixture(scope="module")
def fips_bundle(tmp_path_factory) -> bundle.Bundle:
    pytest.importorskip("PyInstaller")
    from fips.runtime import cryptography_links_system_openssl

    if not cryptography_links_system_openssl():
        pytest.skip("this Python's cryptography carries its own OpenSSL: `python -m fips.runtime prepare --install` "
                    "(or run in .nox/build-fips)")
    root = tmp_path_factory.mktemp("fips-bundle")
    manifest = root / "linux-amd64" / "manifest.json"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"schema": 1, "platform": "linux/amd64", "mode": "none", "fips": True, "binaries": [
        {"name": "kubectl", "component": "kubernetes", "version": "1.36.5", "license": "Apache-2.0", "homepage": "",
         "roles": ["controller", "worker"], "mode": "none", "fips": True, "source": None, "sha256": None,
         "size": None}]}))
    dist = root / "dist"
    (dist).mkdir()
    (dist / "mke").write_bytes(b"the non-FIPS bundle")  # its SHA256SUMS line must survive
    (dist / "SHA256SUMS").write_text(f"{'a' * 64}  mke\n")
    return bundle.write_bundle(cache=Cache(default_cache_dir()), manifest_path=manifest, dist=dist, jobs=2,
                               source_date_epoch=1700000000)


def _run(b: bundle.Bundle, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENSSL", "MKE_FIPS"))}
    env["MKE_LIB_DIR"] = str(b.exe.parent / "lib")
    proc = subprocess.run([str(b.exe), *args], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_release_files(fips_bundle):
    b = fips_bundle
    assert b.exe.name == "mke-fips" and b.versioned.name.startswith("mke-fips-") and b.versioned.name.endswith("-linux-amd64")
    assert b.versioned.stat().st_ino == b.exe.stat().st_ino
    sums = dict(reversed(line.split("  ", 1)) for line in b.sums.read_text().splitlines())
    assert sums == {"mke": "a" * 64, "mke-fips": b.sha256, b.versioned.name: b.sha256}
    doc = json.loads(b.sbom.read_text())
    pkgs = {p["name"]: p for p in doc["packages"]}
    assert "fips true" in pkgs["mke"]["comment"] and "FIPS provider" in doc["comment"]
    assert "openssl-fips-provider" in pkgs


def test_version_reports_the_fips_runtime(fips_bundle):
    doc = _run(fips_bundle, "version", "--json")
    rt = doc["runtime"]
    assert doc["fips"] is True and rt["fips"] is True and rt["openssl_fips_provider"]
    assert rt["validated"] is (rt["certificate"] is not None) and rt["statement"]


def test_runtime_crypto_is_fips(fips_bundle):
    doc = _run(fips_bundle, "fips", "check", "--runtime-only", "--json")
    s = doc["runtime"]
    assert doc["ok"], doc["problems"]
    assert s["hashlib_md5_refused"] and s["hashlib_new_md5_refused"] and s["hashlib_sha256_works"]
    assert s["evp_rsa1024_refused"] and s["evp_p256_works"]
    c = s["cryptography"]
    assert c["fips_enabled"] and c["md5_refused"] and c["rsa1024_sign_refused"] and c["p256_works"]
    o = s["hashlib_openssl"]
    assert o["fips"] and not o["default"] and o["default_properties_fips"]


def test_fips_module_is_carried_byte_for_byte(fips_bundle):
    """PyInstaller would strip fips.so (a binary) and break its integrity MAC: the spec keeps it exact."""
    import hashlib

    from PyInstaller.archive.readers import CArchiveReader

    from fips.runtime import BUNDLE_DIR

    archive = CArchiveReader(str(fips_bundle.exe))
    prov = json.loads(archive.extract(f"{BUNDLE_DIR}/provenance.json"))
    assert hashlib.sha256(archive.extract(f"{BUNDLE_DIR}/fips.so")).hexdigest() == prov["fips_so_sha256"]
    names = set(archive.toc)
    assert not any(n.split("/")[-1].startswith(("_md5", "_sha1", "_sha2", "_sha3", "_blake2")) for n in names)
    assert "pyi_rth_mke_fips" in names
