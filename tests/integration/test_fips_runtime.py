"""The runtime half of issue 5: the OpenSSL FIPS provider built by fips/openssl.py, used by hashlib.

Builds (or takes from the build cache) the provider from the pinned tarball (first run:
download from Debian's archive, ~2 minutes of compiling), then runs Python with the
generated openssl.cnf and CPython's built-in hash modules blocked, as the FIPS bundle does.
The cryptography part runs only when cryptography is linked to the system libcrypto.so.3
(`python -m fips.runtime prepare --install` does that in the build venv); PyPI's wheel
carries its own OpenSSL and cannot share the provider (docs/fips.md).
"""

from __future__ import annotations

import json
import os
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
