"""The FIPS bundle's runtime environment: is this a FIPS mke, its provider, and what children get.

A FIPS runtime's start (mke/start.py) points OpenSSL at the runtime's FIPS provider and
sets ``MKE_FIPS_RUNTIME``; everything here is cheap (no OpenSSL is loaded),
so ``mke version`` and ``mke/procenv.py`` can use it on every start.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RUNTIME_ENV = "MKE_FIPS_RUNTIME"  # set by a FIPS runtime's start (mke/start.py) to its provider dir
SAVED_PREFIX = "MKE_FIPS_SAVED_"  # mke/start.py keeps the caller's value of each variable it sets here
#: Environment a FIPS runtime's start sets (mke/start.py); never inherited by children.
OPENSSL_ENV = ("OPENSSL_CONF", "OPENSSL_MODULES", RUNTIME_ENV, "CRYPTOGRAPHY_OPENSSL_NO_LEGACY")


def is_fips_runtime() -> bool:
    """True in a FIPS runtime (mke/start.py set it up); cheap: no OpenSSL is loaded."""
    return bool(os.environ.get(RUNTIME_ENV))


def runtime_summary() -> dict[str, Any]:
    """For ``mke version --json``: is this runtime FIPS, and with which OpenSSL FIPS provider (cheap)."""
    d = os.environ.get(RUNTIME_ENV)
    if not d:
        return {"fips": False}
    try:
        prov = json.loads(Path(d, "provenance.json").read_text())
    except (OSError, ValueError):
        prov = {}
    return {"fips": True, "openssl_fips_provider": prov.get("openssl_version"), "validated": prov.get("validated"),
            "certificate": prov.get("certificate"), "statement": prov.get("statement"),
            "not_claimed": prov.get("not_claimed")}


def child_env(env: Mapping[str, str], *, fips_payload: bool) -> dict[str, str]:
    """The environment for a child process of a FIPS mke (procenv.clean_env can call this last).

    Gives back the caller's OPENSSL_* values that mke/start.py replaced (children must
    not load the bundle's temp-dir provider), and for a FIPS payload forces GODEBUG
    fips140=on so that ``GODEBUG=fips140=off`` in mke's environment cannot turn the Go
    module's FIPS mode off.
    """
    out = dict(env)
    for name in list(out):
        if name.startswith(SAVED_PREFIX):
            real = name[len(SAVED_PREFIX):]
            saved = out.pop(name)
            if saved:
                out[real] = saved
            else:
                out.pop(real, None)
    out.pop(RUNTIME_ENV, None)
    if fips_payload:
        out["GODEBUG"] = godebug_for_children(out)
    return out


def godebug_for_children(env: Mapping[str, str]) -> str:
    """The GODEBUG a FIPS mke passes to its Go children: the caller's, with fips140 forced on.

    A FIPS binary's fips140=on is only a *default*: ``GODEBUG=fips140=off`` in the
    environment would turn the module's FIPS mode off. ``only`` (stricter) is kept.
    """
    parts = [p for p in env.get("GODEBUG", "").split(",") if p and not p.startswith("fips140=")]
    current = next((p.split("=", 1)[1] for p in env.get("GODEBUG", "").split(",") if p.startswith("fips140=")), "")
    return ",".join(parts + ["fips140=" + ("only" if current == "only" else "on")])


#: TLS 1.2 suites approved in FIPS 140-3 mode (TLS 1.3: only the AES-GCM suites, which Go
#: restricts itself). For components' --tls-cipher-suites in a FIPS build.
APPROVED_TLS12_CIPHER_SUITES = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
)
