"""What "FIPS" means for the binaries of a build, and the verdict on each one.

The toolchain's policy comes from fips/toolchain.toml (``fips.settings``); ``mke fips
check`` uses ``runtime_policy()``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mke.fips.binary import BinaryFacts, inspect_binary
from mke.fips.goinfo import GoBuildInfo
from mke.fips.pclntab import CryptoFunctions
from mke.payload_format import FIPS_GO_DEFAULT, FIPS_GO_MODES

# Go Cryptographic Module versions mke knows. Keep in sync with fips/toolchain.toml
# (tests/unit/fips/test_settings.py checks it).
GO_MODULES: dict[str, str] = {
    "v1.0.0": "validated: CMVP certificate #5247 (Go Cryptographic Module v1.0.0, Go 1.24+)",
    "v1.26.0": "not validated: on the CMVP Modules In Process list (Go 1.26+)",
}
DEFAULT_GO_MODULE = "v1.0.0"
#: OpenSSL FIPS provider versions that hold a CMVP certificate. Keep in sync with fips/toolchain.toml
#: [openssl] validated (tests/unit/fips/test_settings.py checks it). Any other version is NOT validated.
OPENSSL_FIPS_PROVIDERS: dict[str, str] = {
    "3.0.8": "FIPS 140-2 certificate #4282 (historical since September 2026)",
    "3.0.9": "FIPS 140-2 certificate #4282 (historical since September 2026)",
    "3.1.2": "FIPS 140-3 certificate #4985",
}
GO_MODES = FIPS_GO_MODES  # --fips-go; a FIPS payload records its own (Manifest.go_fips)
#: Non-Go binaries that do no crypto (keep in sync with [exempt] in fips/toolchain.toml).
EXEMPT: dict[str, str] = {
    "pause": "C program (Kubernetes build/pause/linux/pause.c) that does no cryptography",
    "ipset": "C program (ipset 7.17, static, libmnl): sends IP set commands to the kernel over netlink; links no crypto library",
    "mount": "C program (util-linux 2.38.1 mount, static, libmount+libblkid, --without-cryptsetup): no dm-verity or crypto library; blkid only recognises LUKS superblocks by name",
    "umount": "C program (util-linux 2.38.1 umount, static, libmount+libblkid, --without-cryptsetup): links no crypto library",
    "xtables-legacy-multi": "C program (iptables 1.8.9 legacy, static): writes netfilter rules to the kernel; HMARK/random are kernel-side; links no crypto library",
    "xtables-nft-multi": "C program (iptables 1.8.9 nf_tables, static, libnftnl+libmnl): writes netfilter rules to the kernel; links no crypto library",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Policy:
    """What "FIPS" means for the Go binaries of one build.

    ``go_mode`` native: GOFIPS140 names ``go_module`` (``v1.0.0`` accepts ``v1.0.0-<hash>``),
    DefaultGODEBUG has fips140=on|only, the crypto functions come from that frozen module
    and none from the in-tree one. boring: GOEXPERIMENT=boringcrypto with cgo and the
    BoringCrypto cgo functions linked. ``exempt``: non-Go binaries that do no crypto
    (name -> reason); they must still be static and must not be Go binaries.
    """

    go_mode: str = "native"
    go_module: str = DEFAULT_GO_MODULE
    require_static: bool = True
    exempt: tuple[tuple[str, str], ...] = ()

    def exemption(self, name: str) -> str | None:
        return dict(self.exempt).get(name)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BinaryReport:
    """One row of the FIPS table."""

    name: str
    go_version: str | None
    gofips140: str | None
    goexperiment: str | None
    cgo: bool | None
    fips140_default: str | None
    module: str  # what the function names show: "v1.0.0-c2097c7c", "boringcrypto", "in-tree", "none", "-"
    module_functions: int
    static: bool
    exempt: str | None
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_document(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ok"] = self.ok
        return d


def _go_before(info: GoBuildInfo, major: int, minor: int) -> bool:
    m = re.match(r"go(\d+)\.(\d+)", info.go_version)
    return bool(m) and (int(m.group(1)), int(m.group(2))) < (major, minor)


def _module_matches(gofips: str, wanted: str) -> bool:
    return gofips == wanted or gofips.startswith(wanted + "-")


def _foreign_crypto(f: BinaryFacts, allowed: frozenset[str] = frozenset()) -> list[str]:
    """A C crypto library linked in (through cgo, or into a C program): its code is outside the module."""
    marks = [(name, text) for name, text in f.crypto_marks if name not in allowed]
    if not marks:
        return []
    return [f"embeds the code of {', '.join(f'{n} ({t!r})' for n, t in marks)}: a crypto library outside "
            "the FIPS module"]


def _native_problems(f: BinaryFacts, info: GoBuildInfo, fn: CryptoFunctions, policy: Policy) -> list[str]:
    problems = _foreign_crypto(f)
    gofips = info.setting("GOFIPS140") or ""
    if not gofips or gofips == "off":
        problems.append("built without the Go Cryptographic Module (no GOFIPS140 in its build info); "
                        f"rebuild with GOFIPS140={policy.go_module}")
    elif not _module_matches(gofips, policy.go_module):
        problems.append(f"GOFIPS140={gofips}, expected {policy.go_module} "
                        f"({GO_MODULES.get(policy.go_module, 'the module this build selects')})")
    godebug = info.default_godebug.get("fips140")
    if godebug not in ("on", "only"):
        problems.append(f"DefaultGODEBUG has fips140={godebug or '(unset)'}, expected fips140=on")
    if "boringcrypto" in info.experiments:
        problems.append("GOEXPERIMENT=boringcrypto is set; it cannot be combined with GOFIPS140")
    if not fn.pclntab:
        problems.append("no Go function table (.gopclntab) found: cannot see which crypto it links")
    if fn.intree_functions:
        problems.append(f"links the unvalidated in-tree crypto module ({fn.intree_functions} functions in "
                        f"crypto/internal/fips140/{{{','.join(fn.intree_packages[:6])}{',...' if len(fn.intree_packages) > 6 else ''}}})")
    if fn.crypto_functions and not (fn.fips_module_functions or fn.intree_functions) and _go_before(info, 1, 24):
        problems.append(f"built with {info.go_version}, which has no Go Cryptographic Module (Go 1.24+ needed)")
    found = fn.fips_module_versions
    if fn.fips_module_functions and gofips and gofips != "off" and not any(_module_matches(v, gofips) for v in found):
        problems.append(f"its crypto functions come from module {','.join(found)}, "
                        f"not the GOFIPS140={gofips} its build info names")
    elif fn.fips_module_functions and not all(_module_matches(v, policy.go_module) for v in found):
        problems.append(f"its crypto comes from module {','.join(found)}, expected {policy.go_module}")
    return problems


def _boring_problems(f: BinaryFacts, info: GoBuildInfo, fn: CryptoFunctions, policy: Policy) -> list[str]:
    problems = _foreign_crypto(f, frozenset({"boringssl"}))
    if "boringcrypto" not in info.experiments:
        problems.append("built without GOEXPERIMENT=boringcrypto")
    if info.setting("CGO_ENABLED") != "1":
        problems.append("built with CGO_ENABLED=0: a boringcrypto label without cgo links no BoringCrypto")
    if (info.setting("GOFIPS140") or "off") != "off":
        problems.append(f"GOFIPS140={info.setting('GOFIPS140')} is set with boringcrypto")
    if not fn.pclntab:
        problems.append("no Go function table (.gopclntab) found: cannot see which crypto it links")
    elif fn.intree_functions and not fn.boring_cgo_functions:
        problems.append("links Go's in-tree crypto but no BoringCrypto (no _goboringcrypto_ cgo functions)")
    return problems


def evaluate(f: BinaryFacts, policy: Policy) -> BinaryReport:
    """Apply ``policy`` to one binary's facts: a table row with its problems (empty = compliant)."""
    problems: list[str] = []
    notes: list[str] = []
    info, fn = f.buildinfo, f.functions
    exempt = policy.exemption(f.name)
    if not f.elf:
        problems.append("not an ELF executable")
    elif policy.require_static and not f.static:
        problems.append("dynamically linked (has PT_INTERP)")
    module, n = "-", 0
    if info is None or fn is None:
        problems += _foreign_crypto(f)
        if exempt is None and f.elf:
            problems.append("not a Go binary (no Go build info), so its crypto cannot be verified; "
                            "build it with the FIPS Go toolchain or list it under [exempt] in fips/toolchain.toml "
                            "with the reason it does no cryptography")
    else:
        if fn.fips_module_functions:
            module, n = ",".join(fn.fips_module_versions), fn.fips_module_functions
        elif fn.boring_cgo_functions:
            module, n = "boringcrypto", fn.boring_cgo_functions
        elif fn.intree_functions:
            module, n = "in-tree", fn.intree_functions
        elif fn.crypto_functions:
            module, n = "pre-Go-1.24 crypto", fn.crypto_functions
        elif fn.pclntab:
            module = "none"
            notes.append("links no crypto/... package (does no cryptography)")
        if exempt is not None:
            problems.append(f"listed as exempt ({exempt}) but is a Go binary; Go binaries must pass the check")
            exempt = None
        check = _boring_problems if policy.go_mode == "boring" else _native_problems
        problems += check(f, info, fn, policy)
    return BinaryReport(
        name=f.name,
        go_version=info.go_version if info else None,
        gofips140=(info.setting("GOFIPS140") if info else None),
        goexperiment=(info.setting("GOEXPERIMENT") if info else None),
        cgo=(info.setting("CGO_ENABLED") == "1") if info else None,
        fips140_default=(info.default_godebug.get("fips140") if info else None),
        module=module,
        module_functions=n,
        static=f.static,
        exempt=exempt,
        problems=tuple(problems),
        notes=tuple(notes),
    )


def runtime_policy(go_mode: str | None = None) -> Policy:
    """What ``mke fips check`` demands: the rules of the Go FIPS mode the payload records
    (``Manifest.go_fips``: native | boring; a FIPS payload from before the field is native),
    never either one. ``None`` (no FIPS payload): native."""
    mode = go_mode or FIPS_GO_DEFAULT
    if mode not in GO_MODES:
        raise ValueError(f"unknown Go FIPS mode {mode!r} ({' | '.join(GO_MODES)})")
    return Policy(go_mode=mode, go_module=DEFAULT_GO_MODULE if mode == "native" else "",
                  exempt=tuple(sorted(EXEMPT.items())))


def check_files(files: Mapping[str, Path | str], policy: Policy) -> list[BinaryReport]:
    """Inspect and evaluate each ``name -> path``; sorted by name."""
    return [evaluate(inspect_binary(files[n], n), policy) for n in sorted(files)]
