"""Recipes: one TOML file per upstream project, parsed into frozen dataclasses.

Loading is strict: unknown keys (with a "did you mean" hint), wrong types, missing
fields and bad templates are one-line ``RecipeError`` messages naming file and field.
The format is documented in docs/recipes.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Any

from build.errors import RecipeError
from build.tomlcheck import TomlChecker, join, read_toml

SCHEMA_VERSION = 1
# controller/worker: staged and run by that mke role; image: only packed into an air-gap image
# (build/airgap.py), never staged on a host; test: a tool of the conformance build
# (recipes/conformance/: e2e.test, ginkgo, registry), written to dist/ but never embedded.
ROLES = ("controller", "worker", "image", "test")
ARCHIVES = ("raw", "tar.gz", "zip")
CHECKSUM_FORMATS = ("sha256sum", "bare")
SOURCE_KINDS = ("go", "kubernetes", "c", "debian")
BUILDMODES = ("exe", "pie")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
# A binary's file name may also hold dots (a test binary: e2e.test).
BINARY_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)*$")
# Debian package names and versions (Debian Policy 5.6.1, 5.6.12); the version may carry an epoch.
DEB_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
DEB_VERSION_RE = re.compile(r"^(\d+:)?[0-9][A-Za-z0-9.+~-]*$")
DEB_URL_FIELDS = frozenset({"arch"})

# Placeholders each kind of template may use.
URL_FIELDS = frozenset({"version", "os", "arch", "binary"})
MEMBER_FIELDS = frozenset({"version", "os", "arch", "binary"})
CHECKSUM_FIELDS = frozenset({"version", "os", "arch", "binary", "url", "filename"})
LDFLAG_FIELDS = frozenset({"version", "module_version", "commit", "build_date", "os", "arch", "binary"})
VERSION_FIELDS = frozenset({"version"})


# --------------------------------------------------------------------------- model


@dataclasses.dataclass(frozen=True, kw_only=True)
class Binary:
    name: str
    roles: tuple[str, ...]
    version_args: tuple[str, ...] = ()
    version_pattern: str = ""
    # Other names the same file answers to: a multi-call binary dispatching on argv[0]
    # (xtables-nft-multi is also iptables-nft, iptables-nft-save, ...). Staged as symlinks.
    links: tuple[str, ...] = ()

    def expected_version_text(self, version: str) -> str:
        return self.version_pattern.format(version=version) if self.version_pattern else ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Artifact:
    url: str
    archive: str
    checksum_url: str
    checksum_format: str
    members: tuple[tuple[str, str], ...] = ()  # (binary, member template)
    binary: str = ""  # raw archive holding one named binary
    per_binary: bool = False  # raw archive expanded once per binary ({binary} in url)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FetchSpec:
    available: bool
    reason: str = ""
    arch_map: tuple[tuple[str, str], ...] = ()
    artifacts: tuple[Artifact, ...] = ()

    def arch_name(self, arch: str) -> str:
        return dict(self.arch_map).get(arch, arch)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SourceSpec:
    kind: str
    module: str
    version: str
    packages: tuple[tuple[str, str], ...]  # (binary, import path or C source path)
    # [source.tests]: binary -> package whose tests `go test -c -o` links into that binary (e2e.test)
    tests: tuple[tuple[str, str], ...] = ()
    cgo: bool = False
    static: bool = True
    tags: tuple[str, ...] = ()
    ldflags: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    staging_version: str = ""  # kind = "kubernetes": version of the k8s.io/* staging modules
    cflags: tuple[str, ...] = ()  # kind = "c"
    commit: str = ""
    # kind = "go": published version for modules the upstream go.mod replaces with a local
    # directory (a module zip holds no such directory); kind = "kubernetes" uses staging_version.
    local_replace_version: str = ""
    replace: tuple[tuple[str, str], ...] = ()  # extra wrapper-module replaces: module -> version
    buildmode: str = ""  # go build -buildmode (e.g. "pie" for runc's static-pie); "" = Go's default
    # [[source.patch]]: changes mke makes to the upstream module, applied in order to a copy
    # of the verified module before the build (build/gomod.py apply_patches).
    patches: tuple[Patch, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Patch:
    """One ``[[source.patch]]``: a unified diff (``git apply`` format, paths relative to the
    module root) in ``file`` (relative to the recipe's directory), pinned by ``sha256``."""

    file: str
    sha256: str
    reason: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class DebianPackage:
    """One Debian source package (.dsc + the files it lists), built with configure/make/make install."""

    name: str
    version: str  # Debian version, e.g. "1.8.9-2" or "1:1.4.7-1"
    suite: str  # where `nox -s lock` asks apt for the pins (bookworm, trixie, ...)
    dsc: str  # URL of the .dsc; the files it lists are fetched from the same directory
    configure: tuple[str, ...] = ()
    make: tuple[str, ...] = ()  # make arguments/targets ("" = the default goal)
    install: tuple[str, ...] = ("install",)
    # "configure" (autotools: ./configure --prefix ... then make) or "kconfig" (busybox, the
    # kernel's style: make defconfig, then each ``kconfig`` line set in .config, then make)
    build: str = "configure"
    kconfig: tuple[str, ...] = ()  # CONFIG_X=y / CONFIG_X=n / CONFIG_X="..." over defconfig
    debian_patches: bool = True  # false: the upstream release as it is (the orig tarball only)

    @property
    def upstream_version(self) -> str:
        """The version without epoch and Debian revision (``1:1.4.7-1`` -> ``1.4.7``)."""
        v = self.version.split(":", 1)[-1]
        return v.rsplit("-", 1)[0] if "-" in v else v


@dataclasses.dataclass(frozen=True, kw_only=True)
class DebianDeb:
    """A Debian binary package unpacked into the build's sysroot (a static library and its headers)."""

    name: str
    version: str
    suite: str
    url: str  # template: {arch} is the Debian architecture (amd64, arm64)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DebianSource:
    """``[source] kind = "debian"``: C programs built from Debian source packages (docs/recipes.md)."""

    kind: str
    packages: tuple[DebianPackage, ...]  # built in this order into one install prefix
    outputs: tuple[tuple[str, str], ...]  # binary -> path under the install prefix
    debs: tuple[DebianDeb, ...] = ()
    cflags: tuple[str, ...] = ()
    ldflags: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    @property
    def version(self) -> str:
        """The main (last built) package's version: what `nox -s recipes` and the manifest show."""
        return self.packages[-1].version


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe:
    name: str
    version: str
    license: str
    homepage: str
    description: str
    binaries: tuple[Binary, ...]
    fetch: FetchSpec
    source: SourceSpec | DebianSource | None
    path: Path

    @property
    def binary_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.binaries)

    @property
    def provided_names(self) -> tuple[str, ...]:
        """Every name this recipe puts on PATH: binaries and their links."""
        return tuple(n for b in self.binaries for n in (b.name, *b.links))

    def modes(self) -> tuple[str, ...]:
        """Build modes this recipe supports (``none`` always works)."""
        out = []
        if self.fetch.available:
            out.append("fetch")
        if self.source is not None:
            out.append("docker")
        out.append("none")
        return tuple(out)

    def binaries_for_role(self, role: str) -> tuple[Binary, ...]:
        return tuple(b for b in self.binaries if role in b.roles)

    def as_dict(self) -> dict[str, Any]:
        """Every field that determines an output, as plain JSON-able data (for action keys)."""
        d = dataclasses.asdict(self)
        d.pop("path")
        return d


# --------------------------------------------------------------------------- sections


def _parse_binary(ctx: TomlChecker, where: str, t: Any) -> Binary:
    if not isinstance(t, dict):
        raise ctx.fail(where, "expected a table ([[binary]])")
    ctx.keys(where, t, {"name", "roles", "version_args", "version_pattern", "links"}, {"name", "roles"})
    name = ctx.get(where, t, "name", str)
    if not BINARY_NAME_RE.match(name):
        raise ctx.fail(join(where, "name"), f"{name!r} is not a valid binary name (lowercase letters, digits, '-', inner '.')")
    roles = ctx.str_list(where, t, "roles")
    if not roles:
        raise ctx.fail(join(where, "roles"), f"must name at least one of {', '.join(ROLES)}")
    for i, r in enumerate(roles):
        ctx.choice(join(join(where, "roles"), i), r, ROLES)
    pattern = ctx.get(where, t, "version_pattern", str, "")
    if pattern:
        ctx.template(join(where, "version_pattern"), pattern, VERSION_FIELDS)
    args = ctx.str_list(where, t, "version_args", ())
    if bool(args) != bool(pattern):
        raise ctx.fail(where, "version_args and version_pattern go together: give both or neither")
    links = ctx.str_list(where, t, "links", ())
    for i, link in enumerate(links):
        if not NAME_RE.match(link) and not re.match(r"^[a-z0-9][a-z0-9.+-]*$", link):
            raise ctx.fail(join(join(where, "links"), i), f"{link!r} is not a valid file name (lowercase letters, digits, '-', '.', '+')")
        if link == name or link in links[:i]:
            raise ctx.fail(join(join(where, "links"), i), f"{link!r} is listed twice (or is the binary's own name)")
    return Binary(name=name, roles=roles, version_args=args, version_pattern=pattern, links=links)


def _parse_artifact(ctx: TomlChecker, where: str, t: Any, binaries: tuple[str, ...]) -> Artifact:
    if not isinstance(t, dict):
        raise ctx.fail(where, "expected a table ([[fetch.artifact]])")
    ctx.keys(
        where, t,
        {"url", "archive", "members", "binary", "per_binary", "checksum_url", "checksum_format"},
        {"url", "archive", "checksum_url", "checksum_format"},
    )
    archive = ctx.choice(join(where, "archive"), ctx.get(where, t, "archive", str), ARCHIVES)
    per_binary = ctx.get(where, t, "per_binary", bool, False)
    url_fields = URL_FIELDS if per_binary else URL_FIELDS - {"binary"}
    url = ctx.template(join(where, "url"), ctx.get(where, t, "url", str), url_fields)
    if not url.startswith(("https://", "http://")):
        raise ctx.fail(join(where, "url"), f"must be an http(s) URL, got {url!r}")
    checksum_url = ctx.template(join(where, "checksum_url"), ctx.get(where, t, "checksum_url", str), CHECKSUM_FIELDS)
    fmt = ctx.choice(join(where, "checksum_format"), ctx.get(where, t, "checksum_format", str), CHECKSUM_FORMATS)
    members = ctx.str_table(where, t, "members", ())
    binary = ctx.get(where, t, "binary", str, "")
    if archive == "raw":
        if members:
            raise ctx.fail(join(where, "members"), "a raw artifact is the binary itself; use binary or per_binary instead")
        if per_binary == bool(binary):
            raise ctx.fail(where, "a raw artifact needs exactly one of binary = \"NAME\" or per_binary = true")
        if per_binary and "{binary}" not in url:
            raise ctx.fail(join(where, "url"), "per_binary = true needs {binary} in the url")
    else:
        if per_binary or binary:
            raise ctx.fail(where, f"per_binary/binary apply to raw artifacts only; an {archive} artifact lists members")
        if not members:
            raise ctx.fail(join(where, "members"), f"an {archive} artifact must map each binary to its archive member")
        for b, m in members:
            ctx.template(join(join(where, "members"), b), m, MEMBER_FIELDS)
    for b in [b for b, _ in members] + ([binary] if binary else []):
        if b not in binaries:
            raise ctx.fail(where, f"names binary {b!r}, which is not declared in [[binary]] ({', '.join(binaries)})")
    return Artifact(url=url, archive=archive, checksum_url=checksum_url, checksum_format=fmt,
                    members=members, binary=binary, per_binary=per_binary)


def _parse_fetch(ctx: TomlChecker, t: Any, binaries: tuple[str, ...]) -> FetchSpec:
    where = "fetch"
    if not isinstance(t, dict):
        raise ctx.fail(where, "expected a table ([fetch])")
    ctx.keys(where, t, {"available", "reason", "arch_map", "artifact"}, {"available"})
    available = ctx.get(where, t, "available", bool)
    if not available:
        reason = ctx.get(where, t, "reason", str)
        if "artifact" in t:
            raise ctx.fail(join(where, "artifact"), "available = false, so no artifacts may be listed")
        return FetchSpec(available=False, reason=reason)
    arch_map = ctx.str_table(where, t, "arch_map", ())
    raw = ctx.get(where, t, "artifact", list)
    if not raw:
        raise ctx.fail(join(where, "artifact"), "list at least one [[fetch.artifact]]")
    artifacts = tuple(_parse_artifact(ctx, join(join(where, "artifact"), i), a, binaries) for i, a in enumerate(raw))
    covered = set()
    for a in artifacts:
        covered |= set(binaries) if a.per_binary else ({a.binary} if a.binary else {b for b, _ in a.members})
    missing = [b for b in binaries if b not in covered]
    if missing:
        raise ctx.fail(where, f"no artifact provides binary {', '.join(missing)}; add a member or artifact for it")
    return FetchSpec(available=True, arch_map=arch_map, artifacts=artifacts)


def _rel_path(ctx: TomlChecker, where: str, value: str) -> str:
    parts = value.split("/")
    if value.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ctx.fail(where, f"{value!r} must be a relative path inside the install prefix (no '..', no leading '/')")
    return value


def _parse_debian_package(ctx: TomlChecker, where: str, t: Any) -> DebianPackage:
    if not isinstance(t, dict):
        raise ctx.fail(where, "expected a table ([[source.package]])")
    ctx.keys(where, t, {"name", "version", "suite", "dsc", "configure", "make", "install", "build", "kconfig",
                        "debian_patches"},
             {"name", "version", "suite", "dsc"})
    name = ctx.get(where, t, "name", str)
    if not DEB_NAME_RE.match(name):
        raise ctx.fail(join(where, "name"), f"{name!r} is not a Debian source package name")
    version = ctx.get(where, t, "version", str)
    if not DEB_VERSION_RE.match(version):
        raise ctx.fail(join(where, "version"), f"{version!r} is not a Debian version (like 1.8.9-2 or 1:1.4.7-1)")
    dsc = ctx.get(where, t, "dsc", str)
    filename = f"{name}_{version.split(':', 1)[-1]}.dsc"
    if not dsc.startswith(("https://", "http://")) or dsc.rsplit("/", 1)[-1].replace("%2b", "+").replace("%2B", "+") != filename:
        raise ctx.fail(join(where, "dsc"), f"must be the http(s) URL of {filename}, got {dsc!r}")
    return DebianPackage(
        name=name, version=version, suite=ctx.get(where, t, "suite", str), dsc=dsc,
        configure=ctx.str_list(where, t, "configure", ()),
        make=ctx.str_list(where, t, "make", ()),
        install=ctx.str_list(where, t, "install", ("install",)),
        build=_debian_build(ctx, where, t),
        kconfig=_kconfig_lines(ctx, where, t),
        debian_patches=ctx.get(where, t, "debian_patches", bool, True),
    )


_KCONFIG_RE = re.compile(r'CONFIG_[A-Z0-9_]+=(y|n|m|-?[0-9]+|"[^"\\]*")')


def _debian_build(ctx: TomlChecker, where: str, t: dict) -> str:
    build = ctx.get(where, t, "build", str, "configure")
    if build not in ("configure", "kconfig"):
        raise ctx.fail(join(where, "build"), f"{build!r}: expected configure or kconfig")
    if build == "kconfig" and "configure" in t:
        raise ctx.fail(join(where, "configure"), "a kconfig build has no ./configure: set options in kconfig")
    if build == "configure" and "kconfig" in t:
        raise ctx.fail(join(where, "kconfig"), "kconfig lines need build = \"kconfig\"")
    return build


def _kconfig_lines(ctx: TomlChecker, where: str, t: dict) -> tuple[str, ...]:
    lines = ctx.str_list(where, t, "kconfig", ())
    for i, line in enumerate(lines):
        if not _KCONFIG_RE.fullmatch(line):
            raise ctx.fail(f"{join(where, 'kconfig')}[{i}]", f"{line!r}: expected CONFIG_NAME=y|n|m|number|\"string\"")
    return lines


def _parse_debian_deb(ctx: TomlChecker, where: str, t: Any) -> DebianDeb:
    if not isinstance(t, dict):
        raise ctx.fail(where, "expected a table ([[source.deb]])")
    ctx.keys(where, t, {"name", "version", "suite", "url"}, {"name", "version", "suite", "url"})
    name = ctx.get(where, t, "name", str)
    if not DEB_NAME_RE.match(name):
        raise ctx.fail(join(where, "name"), f"{name!r} is not a Debian package name")
    version = ctx.get(where, t, "version", str)
    if not DEB_VERSION_RE.match(version):
        raise ctx.fail(join(where, "version"), f"{version!r} is not a Debian version (like 1.0.5-3)")
    url = ctx.template(join(where, "url"), ctx.get(where, t, "url", str), DEB_URL_FIELDS)
    filename = f"{name}_{version.split(':', 1)[-1]}_{{arch}}.deb"
    if not url.startswith(("https://", "http://")) or url.rsplit("/", 1)[-1].replace("%2b", "+").replace("%2B", "+") != filename:
        raise ctx.fail(join(where, "url"), f"must be the http(s) URL of {filename}, got {url!r}")
    return DebianDeb(name=name, version=version, suite=ctx.get(where, t, "suite", str), url=url)


def _parse_debian_source(ctx: TomlChecker, t: dict, binaries: tuple[str, ...]) -> DebianSource:
    where = "source"
    ctx.keys(where, t, {"kind", "package", "deb", "outputs", "cflags", "ldflags", "env"},
                {"kind", "package", "outputs"})
    raw = ctx.get(where, t, "package", list)
    if not raw:
        raise ctx.fail(join(where, "package"), "list at least one [[source.package]]")
    packages = tuple(_parse_debian_package(ctx, join(join(where, "package"), i), p) for i, p in enumerate(raw))
    names = [p.name for p in packages]
    if len(set(names)) != len(names):
        raise ctx.fail(join(where, "package"), "a source package is listed twice")
    debs = tuple(_parse_debian_deb(ctx, join(join(where, "deb"), i), d) for i, d in enumerate(ctx.get(where, t, "deb", list, [])))
    outputs = ctx.str_table(where, t, "outputs")
    for b, path in outputs:
        if b not in binaries:
            raise ctx.fail(join(join(where, "outputs"), b), f"is not declared in [[binary]] ({', '.join(binaries)})")
        _rel_path(ctx, join(join(where, "outputs"), b), path)
    missing = [b for b in binaries if b not in dict(outputs)]
    if missing:
        raise ctx.fail(join(where, "outputs"), f"no output path for binary {', '.join(missing)}")
    return DebianSource(
        kind="debian", packages=packages, debs=debs, outputs=outputs,
        cflags=ctx.str_list(where, t, "cflags", ()),
        ldflags=ctx.str_list(where, t, "ldflags", ()),
        env=ctx.str_table(where, t, "env", ()),
    )


def _parse_source(ctx: TomlChecker, t: Any, binaries: tuple[str, ...]) -> SourceSpec | DebianSource:
    where = "source"
    if not isinstance(t, dict):
        raise ctx.fail(where, "expected a table ([source])")
    if t.get("kind") == "debian":
        return _parse_debian_source(ctx, t, binaries)
    ctx.keys(
        where, t,
        {"kind", "module", "version", "packages", "tests", "cgo", "static", "tags", "ldflags", "env",
         "staging_version", "cflags", "commit", "local_replace_version", "replace", "buildmode", "patch"},
        {"kind", "module", "version"},
    )
    kind = ctx.choice(join(where, "kind"), ctx.get(where, t, "kind", str), SOURCE_KINDS)
    version = ctx.get(where, t, "version", str)
    if not version.startswith("v"):
        raise ctx.fail(join(where, "version"), f"a Go module version starts with 'v', got {version!r}")
    if "packages" not in t and "tests" not in t:
        raise ctx.fail(join(where, "packages"), "missing required key (or [source.tests] for test binaries)")
    packages = ctx.str_table(where, t, "packages", ())
    tests = ctx.str_table(where, t, "tests", ())
    if tests and kind == "c":
        raise ctx.fail(join(where, "tests"), "only allowed for Go sources (kind = \"go\" or \"kubernetes\")")
    for field, table in (("packages", packages), ("tests", tests)):
        for b, pkg in table:
            if b not in binaries:
                raise ctx.fail(join(join(where, field), b), f"is not declared in [[binary]] ({', '.join(binaries)})")
            if field == "tests" and (not pkg or pkg.startswith(("/", ".")) or " " in pkg or pkg.endswith("...")):
                raise ctx.fail(join(join(where, field), b), f"expected one Go import path, got {pkg!r}")
    both = sorted(set(dict(packages)) & set(dict(tests)))
    if both:
        raise ctx.fail(join(join(where, "tests"), both[0]), "is also built by source.packages; a binary comes from one of them")
    missing = [b for b in binaries if b not in dict(packages) and b not in dict(tests)]
    if missing:
        raise ctx.fail(join(where, "packages"), f"no package builds binary {', '.join(missing)}")
    ldflags = ctx.str_list(where, t, "ldflags", ())
    for i, flag in enumerate(ldflags):
        ctx.template(join(join(where, "ldflags"), i), flag, LDFLAG_FIELDS)
    staging = ctx.get(where, t, "staging_version", str, "")
    if (kind == "kubernetes") != bool(staging):
        raise ctx.fail(join(where, "staging_version"), "required for kind = \"kubernetes\" and only allowed there")
    cflags = ctx.str_list(where, t, "cflags", ())
    if cflags and kind != "c":
        raise ctx.fail(join(where, "cflags"), "only allowed for kind = \"c\"")
    for i, flag in enumerate(cflags):
        ctx.template(join(join(where, "cflags"), i), flag, LDFLAG_FIELDS)
    local_replace = ctx.get(where, t, "local_replace_version", str, "")
    if local_replace and kind != "go":
        raise ctx.fail(join(where, "local_replace_version"), "only allowed for kind = \"go\" (kubernetes: staging_version)")
    replace = ctx.str_table(where, t, "replace", ())
    if replace and kind == "c":
        raise ctx.fail(join(where, "replace"), "not allowed for kind = \"c\"")
    for label, v in [("local_replace_version", local_replace), *((f"replace.{m}", v) for m, v in replace)]:
        if v and not v.startswith("v"):
            raise ctx.fail(join(where, label), f"a Go module version starts with 'v', got {v!r}")
    buildmode = ctx.get(where, t, "buildmode", str, "")
    if buildmode:
        ctx.choice(join(where, "buildmode"), buildmode, BUILDMODES)
        if kind == "c":
            raise ctx.fail(join(where, "buildmode"), "not allowed for kind = \"c\"")
    patches = _parse_patches(ctx, where, t, kind)
    return SourceSpec(
        kind=kind,
        module=ctx.get(where, t, "module", str),
        version=version,
        packages=packages,
        tests=tests,
        cgo=ctx.get(where, t, "cgo", bool, False),
        static=ctx.get(where, t, "static", bool, True),
        tags=ctx.str_list(where, t, "tags", ()),
        ldflags=ldflags,
        env=ctx.str_table(where, t, "env", ()),
        staging_version=staging,
        cflags=cflags,
        commit=ctx.get(where, t, "commit", str, ""),
        local_replace_version=local_replace,
        replace=replace,
        buildmode=buildmode,
        patches=patches,
    )


_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def _parse_patches(ctx: TomlChecker, where: str, t: dict, kind: str) -> tuple[Patch, ...]:
    raw = ctx.get(where, t, "patch", list, [])
    if raw and kind == "c":
        raise ctx.fail(join(where, "patch"), "only allowed for Go sources (kind = \"go\" or \"kubernetes\")")
    patches = []
    for i, p in enumerate(raw):
        at = f"{where}.patch[{i}]"
        if not isinstance(p, dict):
            raise ctx.fail(at, "expected a table ([[source.patch]] with file, sha256, reason)")
        ctx.keys(at, p, {"file", "sha256", "reason"}, {"file", "sha256", "reason"})
        file = _rel_path(ctx, join(at, "file"), ctx.get(at, p, "file", str))
        sha = ctx.get(at, p, "sha256", str)
        if not _SHA256_RE.match(sha):
            raise ctx.fail(join(at, "sha256"), f"expected 64 lowercase hex digits, got {sha!r}")
        reason = ctx.get(at, p, "reason", str).strip()  # why mke changes upstream: shown in the SBOM and `mke version`
        patch = Patch(file=file, sha256=sha, reason=reason)
        read_patch(ctx.path, patch, where=at, error=ctx.fail)
        patches.append(patch)
    files = [p.file for p in patches]
    dupes = sorted({f for f in files if files.count(f) > 1})
    if dupes:
        raise ctx.fail(join(where, "patch"), f"{dupes[0]} is listed twice")
    return tuple(patches)


def patch_note(patch: Patch) -> str:
    """How the manifest, the SBOM and ``mke version`` name a patch."""
    return f"{patch.file} (sha256 {patch.sha256}): {patch.reason}"


def read_patch(recipe_path: Path, patch: Patch, *, where: str = "source.patch", error: Any = None) -> bytes:
    """The bytes of ``patch``, checked against the digest the recipe pins (at load and again
    at build time, so what is applied is exactly what was reviewed)."""
    path = recipe_path.parent / patch.file
    fail = error or (lambda w, msg: RecipeError(f"{recipe_path}: {w}: {msg}"))
    try:
        data = path.read_bytes()
    except OSError as e:
        raise fail(join(where, "file"), f"cannot read {path}: {e.strerror or e}") from None
    got = hashlib.sha256(data).hexdigest()
    if got != patch.sha256:
        raise fail(join(where, "sha256"), f"{patch.file} has sha256 {got}, the recipe pins {patch.sha256}; "
                   "review the patch, then pin its new digest")
    return data


# --------------------------------------------------------------------------- loading


def parse_recipe(path: Path, data: dict) -> Recipe:
    ctx = TomlChecker(path)
    top = {"schema", "name", "version", "license", "homepage", "description", "binary", "fetch", "source"}
    schema = ctx.get("", data, "schema", int)
    if schema != SCHEMA_VERSION:
        raise ctx.fail("schema", f"unsupported recipe schema {schema}; this toolchain reads schema {SCHEMA_VERSION}")
    ctx.keys("", data, top, {"schema", "name", "version", "license", "homepage", "binary", "fetch"})
    name = ctx.get("", data, "name", str)
    if not NAME_RE.match(name):
        raise ctx.fail("name", f"{name!r} is not a valid component name (lowercase letters, digits, '-')")
    if path.suffix == ".toml" and path.stem != name:
        raise ctx.fail("name", f"{name!r} does not match the file name; rename the file to {name}.toml")
    version = ctx.get("", data, "version", str)
    if version.startswith("v") or not re.match(r"^\d+(\.\d+)*([-+][0-9A-Za-z.-]+)?$", version):
        raise ctx.fail("version", f"expected a plain version like 1.2.3, got {version!r}")
    homepage = ctx.get("", data, "homepage", str)
    if not homepage.startswith("https://"):
        raise ctx.fail("homepage", f"must be an https URL, got {homepage!r}")
    raw_bins = ctx.get("", data, "binary", list)
    if not raw_bins:
        raise ctx.fail("binary", "declare at least one [[binary]]")
    binaries = tuple(_parse_binary(ctx, f"binary[{i}]", b) for i, b in enumerate(raw_bins))
    names = [b.name for b in binaries]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ctx.fail("binary", f"binary {dupes[0]!r} is declared twice")
    fetch = _parse_fetch(ctx, data["fetch"], tuple(names))
    source = _parse_source(ctx, data["source"], tuple(names)) if "source" in data else None
    if not fetch.available and source is None:
        raise ctx.fail("source", "fetch.available = false, so a [source] section is required")
    return Recipe(
        name=name,
        version=version,
        license=ctx.get("", data, "license", str),
        homepage=homepage,
        description=ctx.get("", data, "description", str, ""),
        binaries=binaries,
        fetch=fetch,
        source=source,
        path=path,
    )


def load_recipe(path: Path) -> Recipe:
    return parse_recipe(path, read_toml(path, "recipe file"))


def load_recipes(directory: Path) -> dict[str, Recipe]:
    """Load every ``*.toml`` directly in ``directory``, sorted by name."""
    if not directory.is_dir():
        raise RecipeError(f"{directory}: recipes directory not found")
    recipes: dict[str, Recipe] = {}
    for path in sorted(directory.glob("*.toml")):
        recipe = load_recipe(path)
        recipes[recipe.name] = recipe
    if not recipes:
        raise RecipeError(f"{directory}: no recipes (*.toml) found")
    owners: dict[str, str] = {}
    for r in recipes.values():
        for b in r.provided_names:
            if b in owners:
                raise RecipeError(f"{r.path}: binary {b!r} is also provided by recipe {owners[b]!r}")
            owners[b] = r.name
    return recipes


def render(template: str, **values: str) -> str:
    """Fill a template that ``TomlChecker.template`` accepted."""
    return template.format(**values)

