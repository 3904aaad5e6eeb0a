"""The runtime half of issue 5: the OpenSSL FIPS provider built by fips/openssl.py, used by hashlib.

Builds (or takes from the build cache) the provider from the pinned tarball (first run:
download from Debian's archive, ~2 minutes of compiling), then runs Python with the
generated openssl.cnf and CPython's built-in hash modules blocked, as the FIPS bundle does.
The cryptography part runs only when cryptography is linked to the system libcrypto.so.3
(`python -m fips.runtime prepare --install` does that in the build venv); PyPI's wheel
carries its own OpenSSL and cannot share the provider (docs/fips.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from build.cache import Cache, default_cache_dir
from fips.openssl import build_provider
from fips.runtime import cryptography_links_system_openssl
from fips.settings import load

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
for m in ("_md5", "_sha1", "_sha256", "_sha512", "_sha3", "_blake2", "_sha2"):
    sys.modules[m] = None  # as mke/start.py blocks them in a FIPS runtime
import logging
logging.disable(logging.CRITICAL)  # hashlib's "code for hash md5 was not found" (mke/start.py filters it)
from mke.fips.libcrypto import generate_private_key
from mke.fips.runtime_state import runtime_problems, runtime_state
state = runtime_state()
state["builtin_hash_modules"] = []
keys = {}
if "--keys" in sys.argv:
    from mke.errors import FipsError
    k = generate_private_key("EC", curve="P-256")
    keys["p256"] = type(k).__name__ + ":" + k.curve.name
    try:
        generate_private_key("RSA", bits=1024)
        keys["rsa1024"] = "created"
    except FipsError as e:
        keys["rsa1024"] = "refused: " + str(e)
print(json.dumps({"state": state, "problems": runtime_problems(state), "keys": keys}, default=str))
"""


@pytest.fixture(scope="module")
def provider() -> dict[str, Path]:
    return build_provider(load(), Cache(default_cache_dir()))


def _probe(provider: dict[str, Path], *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENSSL")}
    env.update(OPENSSL_CONF=str(provider["openssl.cnf"]), MKE_FIPS_RUNTIME=str(provider["fips.so"].parent),
               CRYPTOGRAPHY_OPENSSL_NO_LEGACY="1", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_provenance_states_version_and_validation(provider):
    prov = json.loads(provider["provenance.json"].read_text())
    tc = load()
    assert prov["openssl_version"] == tc.openssl.version
    assert prov["validated"] is (tc.openssl.certificate is not None)
    assert ("NOT a validated version" in prov["statement"]) is (not prov["validated"])
    assert prov["smoke_test"]["md5_refused"]
    cnf = provider["openssl.cnf"].read_text()
    assert "module-mac" in cnf and "install-mac" not in cnf and "default_properties = fips=yes" in cnf
    assert "${ENV::MKE_FIPS_RUNTIME}/fips.so" in cnf


def test_provider_is_312_from_the_crate_built_per_the_policy(provider):
    """Issue 17: the validated version, how it was built, and what is and is not claimed."""
    prov = json.loads(provider["provenance.json"].read_text())
    assert prov["openssl_version"] == "3.1.2" and prov["certificate"] == "FIPS 140-3 certificate #4985"
    assert prov["crate"]["name"] == "openssl-src" and prov["crate"]["version"] == "300.1.4+3.1.2"
    assert prov["crate"]["openssl_commit"] == "17a2c5111864d8e016c5f2d29c40a3746b559e9d"
    assert prov["crate"]["vcs_commit"] == "6ebeda9e7ec3fa3d4bf3aecebf9798f686ba11d3"  # from the crate itself
    assert prov["configure"] == ["./Configure", "enable-fips"] and prov["target"] == "linux-x86_64"
    assert prov["fipsmodule_cnf_from"] == "make install_fips"
    assert prov["fips_module_sources_checksum"] == "89f749c416427df81cbc7fed9e9bfebb65bb201ae4a383b647cc5d774ced0129"
    assert "all among the 614 files of providers/fips.module.sources" in prov["module_sources_check"]
    assert prov["fips_so_sha256"] == hashlib.sha256(provider["fips.so"].read_bytes()).hexdigest()
    assert prov["not_claimed"][0].startswith("the source is not the release tarball openssl-3.1.2.tar.gz")
    # the module-mac the provider checks at load is the HMAC of these exact bytes
    assert prov["module_mac"].upper() in provider["openssl.cnf"].read_text().replace(":", "")


def test_self_tests_run_when_the_provider_loads(provider):
    """Loaded into this Python's libcrypto (the host's OpenSSL 3.0.x): integrity check and KATs, all passed."""
    r = _self_tests(provider["fips.so"].parent)
    assert r["fips_loaded"] and r["failed"] == 0 and r["passed"] >= 20
    assert r["provider"]["version"].startswith("OpenSSL 3.0.")  # a 3.1 provider under a 3.0 libcrypto
    assert r["provider"]["fips_provider"]["version"] == "3.1.2"
    assert {"Module_Integrity", "KAT_Digest", "KAT_Cipher", "KAT_Signature", "KAT_KDF", "DRBG"} <= set(r["types"])


def test_a_changed_module_does_not_load(provider, tmp_path):
    """The integrity self test at load: one byte changed in fips.so (outside its code) and it refuses."""
    data = bytearray(provider["fips.so"].read_bytes())
    from mke.elf import ElfFile

    comment = ElfFile.parse(bytes(data)).section(".comment")
    data[comment.offset + 1] ^= 0x20
    (tmp_path / "fips.so").write_bytes(bytes(data))
    shutil.copyfile(provider["openssl.cnf"], tmp_path / "openssl.cnf")
    r = _self_tests(tmp_path)
    assert not r["fips_loaded"] and ["Fail", "Module_Integrity", "HMAC"] in r["events"]


def _self_tests(fips_dir: Path) -> dict:
    from fips.openssl import self_test_probe

    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENSSL")}
    env.update(OPENSSL_CONF=str(fips_dir / "openssl.cnf"), MKE_FIPS_RUNTIME=str(fips_dir), PYTHONPATH=str(REPO))
    return self_test_probe([sys.executable], env)


def test_hashlib_and_evp_run_in_the_provider(provider):
    r = _probe(provider)
    s = r["state"]
    o = s["hashlib_openssl"]
    assert o["fips"] and o["base"] and not o["default"] and o["default_properties_fips"]
    assert o["fips_provider"]["version"] == load().openssl.version
    assert s["hashlib_md5_refused"] and "md5" in s["hashlib_md5"]
    assert s["hashlib_new_md5_refused"]
    assert s["hashlib_sha256_works"]
    assert s["evp_rsa1024_refused"] and s["evp_p256_works"]


def test_cryptography_in_fips_mode(provider):
    if not cryptography_links_system_openssl():
        pytest.skip("this cryptography carries its own OpenSSL (PyPI wheel); see docs/fips.md")
    r = _probe(provider, "--keys")
    c = r["state"]["cryptography"]
    assert c["fips_enabled"] and c["md5_refused"] and c["rsa1024_sign_refused"] and c["p256_works"]
    assert r["problems"] == []
    # mke's keys go through the provider's key generation (EVP), which refuses RSA-1024
    assert r["keys"]["p256"].endswith(":secp256r1")
    assert r["keys"]["rsa1024"].startswith("refused: RSA-1024 key generation refused by OpenSSL")
