"""fips/toolchain.toml parsed into frozen dataclasses, and what each setting implies.

Used by the toolchain only (build/, nox): docker mode asks ``go_build_settings(mode)`` for
the environment, tags and ldflags to add to a Go build; the FIPS check asks ``policy()``
what to demand of every binary (build/fips_check.py); the OpenSSL provider build reads
``load().openssl`` (fips/openssl.py).
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any

from build.errors import FipsSettingsError, UsageError, VerificationError
from mke.fips.policy import GO_MODES, Policy

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

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


@dataclasses.dataclass(frozen=True, kw_only=True)
class OpenSSLProvider:
    version: str
    source: str
    url: str
    sha256: str
    configure: tuple[str, ...]
    validated: tuple[tuple[str, str], ...]

    @property
    def certificate(self) -> str | None:
        """The validation of this version, or None: it is built and used, but is not a validated module."""
        return dict(self.validated).get(self.version)


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


def _check_keys(table: dict[str, Any], allowed: set[str], where: str, path: Path) -> None:
    for k in table:
        if k not in allowed:
            hint = difflib.get_close_matches(k, sorted(allowed), n=1)
            raise FipsSettingsError(f"{path}: {where}{k}: unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else ""))


def _strs(value: Any, where: str, path: Path) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise FipsSettingsError(f"{path}: {where}: expected a list of strings")
    return tuple(value)


def _str_table(value: Any, where: str, path: Path) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise FipsSettingsError(f"{path}: {where}: expected a table of strings")
    return tuple(sorted(value.items()))


def _req(table: dict[str, Any], key: str, where: str, path: Path, kind: type = str) -> Any:
    if key not in table:
        raise FipsSettingsError(f"{path}: {where}{key}: missing")
    if not isinstance(table[key], kind):
        raise FipsSettingsError(f"{path}: {where}{key}: expected {kind.__name__}")
    return table[key]


def load(path: Path = TOOLCHAIN_FILE) -> FipsToolchain:
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise FipsSettingsError(f"{path}: {e}") from e
    _check_keys(doc, {"schema", "go", "exempt", "openssl"}, "", path)
    if doc.get("schema") != SCHEMA:
        raise FipsSettingsError(f"{path}: schema: expected {SCHEMA}")
    go = _req(doc, "go", "", path, dict)
    _check_keys(go, {"default", *GO_MODES}, "go.", path)
    modes = []
    for name in GO_MODES:
        t = _req(go, name, "go.", path, dict)
        w = f"go.{name}."
        _check_keys(t, {"module", "status", "env", "expect_tags", "expect_godebug", "requires_cgo", "ldflags", "tags"},
                    w, path)
        modes.append(GoFipsMode(
            name=name,
            module=_req(t, "module", w, path),
            status=_req(t, "status", w, path),
            env=_str_table(t.get("env", {}), w + "env", path),
            expect_tags=_strs(t.get("expect_tags", []), w + "expect_tags", path),
            expect_godebug=str(t.get("expect_godebug", "")),
            requires_cgo=bool(t.get("requires_cgo", False)),
            ldflags=_strs(t.get("ldflags", []), w + "ldflags", path),
            tags=_strs(t.get("tags", []), w + "tags", path),
        ))
    default = _req(go, "default", "go.", path)
    if default not in GO_MODES:
        raise FipsSettingsError(f"{path}: go.default: {default!r} is not one of {', '.join(GO_MODES)}")
    o = _req(doc, "openssl", "", path, dict)
    _check_keys(o, {"version", "source", "url", "sha256", "configure", "validated"}, "openssl.", path)
    openssl = OpenSSLProvider(
        version=_req(o, "version", "openssl.", path),
        source=_req(o, "source", "openssl.", path),
        url=_req(o, "url", "openssl.", path),
        sha256=_req(o, "sha256", "openssl.", path),
        configure=_strs(o.get("configure", []), "openssl.configure", path),
        validated=_str_table(o.get("validated", {}), "openssl.validated", path),
    )
    if "enable-fips" not in openssl.configure:
        raise FipsSettingsError(f"{path}: openssl.configure: must contain enable-fips")
    return FipsToolchain(path=path, default_go_mode=default, go_modes=tuple(modes),
                         exempt=_str_table(doc.get("exempt", {}), "exempt", path), openssl=openssl)


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
