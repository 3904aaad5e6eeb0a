"""The crypto state of this process: which OpenSSL hashlib and cryptography use, and what they refuse.

For ``mke fips check``: every problem that keeps this runtime's own crypto from being FIPS.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from mke.fips.libcrypto import generate_private_key_pem, provider_state
from mke.fips.policy import OPENSSL_FIPS_PROVIDERS
from mke.fips.runtime_env import OPENSSL_ENV, RUNTIME_ENV

#: CPython's own hash implementations, which hashlib falls back to when OpenSSL refuses
#: an algorithm. They are built into the runtime's python3.11; a FIPS runtime blocks them at
#: start (mke/start.py), so a refused algorithm stays refused. (_sha2 is 3.12+; _sha256/_sha512 are 3.11.)
BUILTIN_HASH_MODULES = ("_md5", "_sha1", "_sha256", "_sha512", "_sha2", "_sha3", "_blake2")


def _refuses(fn: Any) -> tuple[bool, str]:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - what matters is that it fails, and how
        text = str(e)
        m = re.search(r"error:[0-9A-F]{8}:[^:]*:[^:]*:([^:(,]+)", text)  # OpenSSL's reason, if cryptography wrapped it
        detail = f"OpenSSL: {m.group(1).strip()}" if m and "Unknown OpenSSL error" in text else text.splitlines()[0]
        return True, f"{type(e).__name__}: {detail}".strip()[:160]
    return False, "accepted"


def provider_files(fips_dir: str | None) -> dict[str, Any]:
    """The staged provider's files: fips.so's digest and what the build recorded for it (provenance.json)."""
    import hashlib
    import json
    from pathlib import Path

    if not fips_dir:
        return {"error": f"{RUNTIME_ENV} is not set: this runtime carries no FIPS provider"}
    out: dict[str, Any] = {"dir": fips_dir}
    try:
        out["fips_so_sha256"] = hashlib.sha256(Path(fips_dir, "fips.so").read_bytes()).hexdigest()
        prov = json.loads(Path(fips_dir, "provenance.json").read_text())
    except (OSError, ValueError) as e:
        out["error"] = f"cannot read the provider's files in {fips_dir}: {e}"
        return out
    out["provenance"] = {k: prov.get(k) for k in ("openssl_version", "fips_so_sha256", "validated", "certificate",
                                                   "source", "url", "source_sha256")}
    return out


def runtime_inventory(fips_dir: str | None) -> dict[str, Any]:
    """The crypto inventory of the running bundled runtime (mke.fips.inventory), read from its staged files.

    Only a bundled runtime is inventoried: mke/start.py points MKE_FIPS_RUNTIME at ``<sys.prefix>/fips``;
    a Python run from source with a provider elsewhere (the build's tests) has no runtime tree to read.
    """
    import sys
    from pathlib import Path

    if not fips_dir or Path(fips_dir).resolve() != (Path(sys.prefix) / "fips").resolve():
        return {"skipped": f"not a bundled runtime ({RUNTIME_ENV}={fips_dir}, sys.prefix={sys.prefix})",
                "problems": []}
    from mke.fips.inventory import crypto_inventory

    return crypto_inventory(Path(sys.prefix))


def provider_validation(version: str | None) -> str | None:
    """The certificate of the OpenSSL FIPS provider ``version``, or None: not a validated version."""
    return OPENSSL_FIPS_PROVIDERS.get(version or "")


def runtime_state() -> dict[str, Any]:
    """The crypto state of this process: OpenSSL providers, hashlib and cryptography behaviour."""
    import importlib.util
    import sys

    state: dict[str, Any] = {"frozen": bool(getattr(sys, "frozen", False)),
                             "env": {k: os.environ.get(k) for k in OPENSSL_ENV}}
    state["hashlib_openssl"] = provider_state()
    loaded = (state["hashlib_openssl"].get("fips_provider") or {}).get("version")
    state["provider_certificate"] = provider_validation(loaded)
    state["provider_files"] = provider_files(os.environ.get(RUNTIME_ENV))
    state["crypto_inventory"] = runtime_inventory(os.environ.get(RUNTIME_ENV))
    import hashlib

    state["builtin_hash_modules"] = sorted(m for m in BUILTIN_HASH_MODULES if importlib.util.find_spec(m) is not None)
    refused, how = _refuses(lambda: hashlib.md5(b"mke"))
    state["hashlib_md5_refused"], state["hashlib_md5"] = refused, how
    refused, how = _refuses(lambda: hashlib.new("md5", b"mke"))
    state["hashlib_new_md5_refused"], state["hashlib_new_md5"] = refused, how
    state["hashlib_sha256_works"] = not _refuses(lambda: hashlib.sha256(b"mke").hexdigest())[0]
    state["evp_rsa1024_refused"], state["evp_rsa1024"] = _refuses(lambda: generate_private_key_pem("RSA", bits=1024))
    state["evp_p256_works"] = not _refuses(lambda: generate_private_key_pem("EC", curve="P-256"))[0]
    try:
        from cryptography.hazmat.backends.openssl.backend import backend
        from cryptography.hazmat.bindings._rust import openssl as rust_openssl
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        c: dict[str, Any] = {"openssl": backend.openssl_version_text(), "fips_enabled": bool(rust_openssl.is_fips_enabled())}
        c["md5_refused"], c["md5"] = _refuses(lambda: hashes.Hash(hashes.MD5()).finalize())
        # cryptography's own keygen runs outside the provider (see generate_private_key_pem)
        c["rsa1024_refused"], c["rsa1024"] = _refuses(lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024))
        from cryptography.hazmat.primitives.asymmetric import padding

        def sign_with_rsa1024() -> None:
            k = rsa.generate_private_key(public_exponent=65537, key_size=1024)
            k.sign(b"mke", padding.PKCS1v15(), hashes.SHA256())

        c["rsa1024_sign_refused"], c["rsa1024_sign"] = _refuses(sign_with_rsa1024)
        c["rsa2048_works"] = not _refuses(lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048))[0]
        c["p256_works"] = not _refuses(lambda: ec.generate_private_key(ec.SECP256R1()))[0]
        state["cryptography"] = c
    except ImportError as e:
        state["cryptography"] = {"error": f"cryptography not importable: {e}"}
    return state


def runtime_problems(state: Mapping[str, Any]) -> list[str]:
    """What keeps this runtime's own crypto from being FIPS (empty: every check passed)."""
    problems = []
    o = state.get("hashlib_openssl", {})
    if o.get("error"):
        problems.append(f"hashlib's OpenSSL: {o['error']}")
    else:
        if not o.get("fips"):
            problems.append(f"hashlib's OpenSSL ({o.get('version')}) has no FIPS provider loaded "
                            f"(OPENSSL_CONF={state.get('env', {}).get('OPENSSL_CONF')})")
        if not o.get("default_properties_fips"):
            problems.append("hashlib's OpenSSL does not default to fips=yes")
        if o.get("default"):
            problems.append("hashlib's OpenSSL has the non-FIPS default provider loaded")
        problems += provider_problems(state)
    problems += [f"crypto inventory: {p}" for p in state.get("crypto_inventory", {}).get("problems", [])]
    if state.get("builtin_hash_modules"):
        problems.append(f"CPython's built-in hash modules are present ({', '.join(state['builtin_hash_modules'])}): "
                        "hashlib falls back to them when OpenSSL refuses")
    if not state.get("hashlib_md5_refused"):
        problems.append("hashlib.md5() works")
    c = state.get("cryptography", {})
    if c.get("error"):
        problems.append(c["error"])
    else:
        if o.get("version") and c.get("openssl") != o.get("version"):
            problems.append(f"cryptography carries its own OpenSSL ({c.get('openssl')}), not the libcrypto.so.3 "
                            f"hashlib uses ({o.get('version')}); one FIPS provider cannot serve both "
                            "(build it against the system OpenSSL: python -m fips.runtime prepare)")
        if not c.get("fips_enabled"):
            problems.append(f"cryptography ({c.get('openssl')}) is not in FIPS mode")
        if not c.get("md5_refused"):
            problems.append("cryptography computes MD5")
        if not c.get("rsa1024_sign_refused"):
            problems.append("cryptography signs with RSA-1024 keys")
    if not state.get("evp_rsa1024_refused"):
        problems.append("OpenSSL's EVP key generation creates RSA-1024 keys")
    if not state.get("evp_p256_works"):
        problems.append("OpenSSL's EVP key generation cannot create P-256 keys")
    return problems


def provider_problems(state: Mapping[str, Any]) -> list[str]:
    """The loaded FIPS provider is a validated version, and is the file the build made (provenance.json)."""
    o = state.get("hashlib_openssl", {})
    if not o.get("fips"):
        return []
    loaded = (o.get("fips_provider") or {}).get("version")
    problems = []
    if provider_validation(loaded) is None:
        problems.append(f"the FIPS provider is OpenSSL {loaded}, NOT a validated version "
                        f"(validated: {', '.join(f'{v} ({c})' for v, c in OPENSSL_FIPS_PROVIDERS.items())})")
    files = state.get("provider_files", {})
    if files.get("error"):
        problems.append(files["error"])
        return problems
    prov = files.get("provenance", {})
    if prov.get("openssl_version") != loaded:
        problems.append(f"the loaded FIPS provider is {loaded} but provenance.json describes {prov.get('openssl_version')}")
    if prov.get("fips_so_sha256") != files.get("fips_so_sha256"):
        problems.append(f"{files.get('dir')}/fips.so (sha256 {files.get('fips_so_sha256')}) is not the file the build "
                        f"recorded in provenance.json ({prov.get('fips_so_sha256')})")
    return problems
