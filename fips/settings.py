"""fips/toolchain.toml parsed into frozen dataclasses, and what each setting implies.

Used by the toolchain only (build/, nox): docker mode asks ``go_build_settings(mode)`` for
the environment, tags and ldflags to add to a Go build; the FIPS check asks ``policy()``
what to demand of every binary (build/fips_check.py); the OpenSSL provider build reads
``load().openssl`` (fips/openssl.py).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from build.errors import FipsSettingsError, UsageError, VerificationError
from build.tomlcheck import TomlChecker, join, read_toml
from mke.fips.policy import GO_MODES, Policy

TOOLCHAIN_FILE = Path(__file__).resolve().parent / "toolchain.toml"
SCHEMA = 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class GoFipsMode:
    """One way to build Go binaries for FIPS (native = GOFIPS140, boring = BoringCrypto)."""

    name: str
    module: str
    status: str
    env: tuple[tuple[str, str], ...]
    expect_tags: tuple[str, ...] = ()
    expect_godebug: str = ""
    requires_cgo: bool = False
    ldflags: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


CRATES_BASE_ENV = "MKE_CRATES_BASE"  # a mirror of static.crates.io's layout ({base}/{crate}/{crate}-{version}.crate)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OpenSSLCrate:
    """The OpenSSL tree as a crates.io crate (``openssl-src`` carries it in ``openssl/``)."""

    name: str
    version: str
    base: str  # static.crates.io's layout: {base}/{name}/{name}-{version}.crate
    subdir: str  # the OpenSSL tree inside the crate's top directory
    upstream_commit: str  # the OpenSSL git commit the crate's submodule pointer names

    def url(self, base: str | None = None) -> str:
        return f"{(base or self.base).rstrip('/')}/{self.name}/{self.name}-{self.version}.crate"


@dataclasses.dataclass(frozen=True, kw_only=True)
class OpenSSLProvider:
    version: str
    source: str
    url: str  # the canonical download URL (a crate's: on its pinned base); what provenance records
    sha256: str
    sha256_from: str  # where the pinned digest came from
    configure: tuple[str, ...]
    validated: tuple[tuple[str, str], ...]
    crate: OpenSSLCrate | None = None

    @property
    def certificate(self) -> str | None:
        """The validation of this version, or None: it is built and used, but is not a validated module."""
        return dict(self.validated).get(self.version)

    def download_url(self, environ: Mapping[str, str] | None = None) -> str:
        """Where to fetch the source now: a crate's base can be moved with MKE_CRATES_BASE (a mirror
        with static.crates.io's layout); ``--mirror``/MKE_MIRROR then rewrites it like any download."""
        env = os.environ if environ is None else environ
        if self.crate is not None and env.get(CRATES_BASE_ENV):
            return self.crate.url(env[CRATES_BASE_ENV])
        return self.url


@dataclasses.dataclass(frozen=True, kw_only=True)
class FipsToolchain:
    path: Path
    default_go_mode: str
    go_modes: tuple[GoFipsMode, ...]
    exempt: tuple[tuple[str, str], ...]
    openssl: OpenSSLProvider

    def go_mode(self, name: str | None = None) -> GoFipsMode:
        name = name or self.default_go_mode
        for m in self.go_modes:
            if m.name == name:
                return m
        raise UsageError(f"--fips-go={name}: choose one of {', '.join(m.name for m in self.go_modes)}")

    def policy(self, go_mode: str | None = None) -> Policy:
        m = self.go_mode(go_mode)
        return Policy(go_mode=m.name, go_module=m.module if m.name == "native" else "", exempt=self.exempt)


# ---------------------------------------------------------------------------- loading


def load(path: Path = TOOLCHAIN_FILE) -> FipsToolchain:
    check = TomlChecker(path, error=FipsSettingsError)
    doc = read_toml(path, "FIPS toolchain file", FipsSettingsError)
    check.keys("", doc, {"schema", "go", "exempt", "openssl"}, {"schema", "go", "openssl"})
    if check.get("", doc, "schema", int) != SCHEMA:
        raise check.fail("schema", f"expected {SCHEMA}")
    go = check.get("", doc, "go", dict)
    check.keys("go", go, {"default", *GO_MODES}, {"default", *GO_MODES})
    modes = []
    for name in GO_MODES:
        w = join("go", name)
        t = check.get("go", go, name, dict)
        check.keys(w, t, {"module", "status", "env", "expect_tags", "expect_godebug", "requires_cgo", "ldflags", "tags"},
                   {"module", "status"})
        modes.append(GoFipsMode(
            name=name,
            module=check.get(w, t, "module", str),
            status=check.get(w, t, "status", str),
            env=check.str_table(w, t, "env", ()),
            expect_tags=check.str_list(w, t, "expect_tags", ()),
            expect_godebug=check.get(w, t, "expect_godebug", str, ""),
            requires_cgo=check.get(w, t, "requires_cgo", bool, False),
            ldflags=check.str_list(w, t, "ldflags", ()),
            tags=check.str_list(w, t, "tags", ()),
        ))
    default = check.choice("go.default", check.get("go", go, "default", str), GO_MODES)
    o = check.get("", doc, "openssl", dict)
    check.keys("openssl", o, {"version", "source", "url", "crate", "sha256", "sha256_from", "configure", "validated"},
               {"version", "source", "sha256", "sha256_from"})
    if ("url" in o) == ("crate" in o):
        raise check.fail("openssl", "give exactly one of url (a release tarball) and crate (a crates.io crate)")
    crate = None
    if "crate" in o:
        c = check.get("openssl", o, "crate", dict)
        check.keys("openssl.crate", c, {"name", "version", "base", "subdir", "upstream_commit"},
                   {"name", "version", "base", "subdir", "upstream_commit"})
        crate = OpenSSLCrate(name=check.get("openssl.crate", c, "name", str),
                             version=check.get("openssl.crate", c, "version", str),
                             base=check.get("openssl.crate", c, "base", str),
                             subdir=check.get("openssl.crate", c, "subdir", str),
                             upstream_commit=check.get("openssl.crate", c, "upstream_commit", str))
        if not crate.base.startswith(("https://", "http://")):
            raise check.fail("openssl.crate.base", f"{crate.base!r} is not an http(s) URL")
        if not crate.subdir or crate.subdir.startswith("/") or ".." in crate.subdir.split("/"):
            raise check.fail("openssl.crate.subdir", f"{crate.subdir!r} must be a relative path inside the crate")
    sha256 = check.get("openssl", o, "sha256", str)
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise check.fail("openssl.sha256", f"{sha256!r} is not 64 lowercase hex digits; pin the source's sha256")
    openssl = OpenSSLProvider(
        version=check.get("openssl", o, "version", str),
        source=check.get("openssl", o, "source", str),
        url=crate.url() if crate is not None else check.get("openssl", o, "url", str),
        sha256=sha256,
        sha256_from=check.get("openssl", o, "sha256_from", str),
        configure=check.str_list("openssl", o, "configure", ()),
        validated=check.str_table("openssl", o, "validated", ()),
        crate=crate,
    )
    if "enable-fips" not in openssl.configure:
        raise check.fail("openssl.configure", "must contain enable-fips")
    return FipsToolchain(path=path, default_go_mode=default, go_modes=tuple(modes),
                         exempt=check.str_table("", doc, "exempt", ()), openssl=openssl)


# ---------------------------------------------------------------------------- Go builds


@dataclasses.dataclass(frozen=True, kw_only=True)
class GoBuildChanges:
    """What a FIPS build adds to one Go build (docker mode merges this into GoBuildEnv)."""

    mode: str
    env: tuple[tuple[str, str], ...]
    cgo: bool | None  # True: force cgo on; None: leave the recipe's choice
    ldflags: tuple[str, ...]  # appended to the recipe's ldflags (skipped when it already links externally)
    tags: tuple[str, ...] = ()  # added to the recipe's build tags

    def apply_ldflags(self, ldflags: str) -> str:
        out = ldflags
        for flag in self.ldflags:
            key = flag.split("=", 1)[0].split(" ", 1)[0]
            if key in out:  # the recipe already chose (e.g. runc: -extldflags -static-pie)
                continue
            out = f"{out} {flag}".strip()
        return out

    def as_key(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def apply(self, env: Any) -> Any:
        """``env`` (docker mode's GoBuildEnv, or any dataclass with extra_env/cgo/ldflags/fips) for a FIPS build.

        The changes land in fields that are part of the action key (extra_env, cgo, ldflags),
        so FIPS and non-FIPS builds never share a cache entry; a recipe env value for the
        same variable is overridden (GOEXPERIMENT values are joined).
        """
        extra = dict(env.extra_env)
        for k, v in self.env:
            extra[k] = f"{extra[k]},{v}" if k == "GOEXPERIMENT" and extra.get(k) else v
        return dataclasses.replace(
            env,
            extra_env=tuple(sorted(extra.items())),
            cgo=True if self.cgo else env.cgo,
            ldflags=self.apply_ldflags(env.ldflags),
            tags=tuple(env.tags) + tuple(t for t in self.tags if t not in env.tags),
            fips=True,
        )


def unpack_go_module(changes: GoBuildChanges, host: Any) -> None:
    """Unpack the frozen Go Cryptographic Module into the host's module cache.

    With GOFIPS140=v1.0.0 the go command unpacks $GOROOT/lib/fips140/v1.0.0-<hash>.zip into
    GOMODCACHE (golang.org/fips140@v1.0.0-<hash>) before anything else; docker mode mounts
    the module cache read-only, so this runs once on the host with the builder's Go
    (``host``: build.gomod.HostGo). The zip ships inside the Go distribution: no network.
    """
    import subprocess

    gofips = dict(changes.env).get("GOFIPS140")
    if not gofips:
        return
    proc = subprocess.run([str(host.go), "env", "GOFIPS140"], env=host.env(GOFIPS140=gofips),
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise VerificationError(f"GOFIPS140={gofips}: the builder's Go ({host.go}) cannot unpack its FIPS module: "
                                f"{(proc.stderr or proc.stdout).strip()[-300:]}")


def go_build_settings(mode: str | None = None, toolchain: FipsToolchain | None = None) -> GoBuildChanges:
    """The environment and flags a FIPS Go build adds, for ``--fips-go=mode`` (default native).

    native: GOFIPS140=v1.0.0; nothing else (cgo stays as the recipe has it).
    boring: GOEXPERIMENT=boringcrypto, cgo on, external static linking, tags netgo,osusergo.
    """
    tc = toolchain or load()
    m = tc.go_mode(mode)
    return GoBuildChanges(mode=m.name, env=m.env, cgo=True if m.requires_cgo else None, ldflags=m.ldflags, tags=m.tags)
