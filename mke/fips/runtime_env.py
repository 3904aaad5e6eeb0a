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


def child_env(env: Mapping[str, str], *, go_fips: str | None) -> dict[str, str]:
    """The environment for a child process of a FIPS mke (procenv.clean_env calls this last).

    Gives back the caller's OPENSSL_* values that mke/start.py replaced (children must
    not load the bundle's temp-dir provider), and sets GODEBUG's fips140 by the Go FIPS
    mode of the payload's binaries (``go_fips``, the manifest's ``Manifest.go_fips``):

    - ``native`` (Go's own module): fips140=on is forced, so that ``GODEBUG=fips140=off``
      in mke's environment cannot turn the module's FIPS mode off (``only`` is kept);
    - ``boring`` (GOEXPERIMENT=boringcrypto): every fips140 setting is removed, the caller's
      too. A BoringCrypto binary panics at start with fips140=on or only ("FIPS 140-3 mode is
      incompatible with GOEXPERIMENT=boringcrypto"), and fips140=off does not turn
      BoringCrypto off (nothing does), so none can serve; a caller's on/only is named once
      on stderr;
    - ``None`` (not a FIPS payload): GODEBUG is left as it is.
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
    if go_fips is not None:
        godebug = godebug_for_children(out, go_fips)
        if godebug:
            out["GODEBUG"] = godebug
        else:
            out.pop("GODEBUG", None)
    return out


def _fips140(env: Mapping[str, str]) -> str | None:
    """The fips140 value of GODEBUG (the last one wins, as in Go), or None."""
    values = [p.split("=", 1)[1] for p in env.get("GODEBUG", "").split(",") if p.startswith("fips140=")]
    return values[-1] if values else None


_warned_boring_godebug = False


def godebug_for_children(env: Mapping[str, str], go_fips: str = "native") -> str:
    """The GODEBUG a FIPS mke passes to its Go children ("" = none), by the payload's Go FIPS mode.

    native: the caller's, with fips140 forced on. A FIPS binary's fips140=on is only a
    *default*: ``GODEBUG=fips140=off`` in the environment would turn the module's FIPS mode
    off. ``only`` (stricter) is kept. boring: the caller's without any fips140 setting
    (see child_env).
    """
    from mke.payload_format import FIPS_GO_MODES

    global _warned_boring_godebug
    if go_fips not in FIPS_GO_MODES:
        raise ValueError(f"unknown Go FIPS mode {go_fips!r} ({' | '.join(FIPS_GO_MODES)})")
    parts = [p for p in env.get("GODEBUG", "").split(",") if p and not p.startswith("fips140=")]
    current = _fips140(env)
    if go_fips == "boring":
        if current in ("on", "only") and not _warned_boring_godebug:
            _warned_boring_godebug = True
            from mke.cli import warn

            warn(f"GODEBUG fips140={current} is not passed to the programs mke starts: they are built with "
                 "BoringCrypto (--fips-go=boring), which is always on and panics at start with fips140=on or only "
                 "(docs/fips.md)")
        return ",".join(parts)
    return ",".join(parts + ["fips140=" + ("only" if current == "only" else "on")])


def payload_go_fips() -> str:
    """The Go FIPS mode of the running mke's payload: native | boring (mke.payload_format.Manifest.go_fips).

    A FIPS runtime without a payload (run from source) or with a non-FIPS payload gets
    ``native`` (fips140=on harms no Go binary but a BoringCrypto one, and only a FIPS payload
    carries those). Read once per process and payload location (a few small reads).
    """
    from mke import start
    from mke.payload_format import FIPS_GO_DEFAULT, PAYLOAD_ENV, running_payload

    key = (os.environ.get(PAYLOAD_ENV), start.payload_path)
    if key not in _payload_go_fips:
        payload = running_payload()
        _payload_go_fips[key] = (payload.manifest.go_fips if payload else None) or FIPS_GO_DEFAULT
    return _payload_go_fips[key]


_payload_go_fips: dict[tuple[str | None, str | None], str] = {}


#: TLS 1.2 suites approved in FIPS 140-3 mode (TLS 1.3: only the AES-GCM suites, which Go
#: restricts itself). For components' --tls-cipher-suites in a FIPS build.
APPROVED_TLS12_CIPHER_SUITES = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
)
