"""Go module sources for docker mode, prepared on the host.

- The module cache (``GOMODCACHE``) belongs to the toolchain: ``<cache>/gomod``, never
  ``~/go/pkg/mod``. Containers mount it read-only.
- A recipe's main package lives in an upstream module that is built as a *dependency* of
  a generated **wrapper module** (``mke.build/<component>``). The wrapper copies what only
  a main module's go.mod can say — ``replace`` and ``godebug`` lines — and maps replaces
  onto local directories (not part of a module zip) to the published modules:
  Kubernetes' ``k8s.io/<staging> => ./staging/src/...`` become ``=> k8s.io/<staging> v0.X.Y``.
- Downloads are verified against the go.sum lines pinned in recipes.lock: the build
  writes them as the wrapper's go.sum, turns the checksum database off, and fails if Go
  had to add a line (the pins are incomplete) or a hash differs (Go refuses the module).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import zipfile
from pathlib import Path
from typing import Any

from build.errors import ComponentBuildError, GoModuleError, LockfileError, RecipeError
from build.recipes import Recipe

WRAPPER_SCHEMA = 1  # bump when the generated wrapper changes shape (it enters action keys)
WRAPPER_PREFIX = "mke.build"


# --------------------------------------------------------------------------- hashes


def module_zip_h1(path: Path) -> str:
    """The go.sum hash (``h1:``, dirhash.Hash1) of a module zip: what the checksum database signs."""
    summary = hashlib.sha256()
    with zipfile.ZipFile(path) as z:
        names = sorted(i.filename for i in z.infolist() if not i.is_dir())
        for name in names:
            h = hashlib.sha256()
            with z.open(name) as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            summary.update(f"{h.hexdigest()}  {name}\n".encode())
    return "h1:" + base64.b64encode(summary.digest()).decode()


def escape_path(module_path: str) -> str:
    """Module path as stored in the module cache (``Azure`` -> ``!azure``)."""
    return re.sub(r"[A-Z]", lambda m: "!" + m.group(0).lower(), module_path)


# --------------------------------------------------------------------------- the host's go


@dataclasses.dataclass(frozen=True, kw_only=True)
class HostGo:
    """The Go command used on the host to download and verify modules (the builder's Go version)."""

    go: Path  # .../bin/go
    modcache: Path
    proxy: str = ""  # GOPROXY for downloads; "" = the environment's or Go's default

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GO", "CGO_"))}
        env.update(
            GOMODCACHE=str(self.modcache),
            GOTOOLCHAIN="local",
            GOFLAGS="-mod=mod -modcacherw",
            GOTELEMETRY="off",
            GOWORK="off",
            CGO_ENABLED="0",
            PATH=f"{self.go.parent}:{env.get('PATH', '/usr/bin:/bin')}",
        )
        proxy = self.proxy or os.environ.get("GOPROXY", "")
        if proxy:
            env["GOPROXY"] = proxy
        for key in ("GONOSUMDB", "GONOSUMCHECK", "GOPRIVATE", "GOINSECURE"):
            if key in os.environ:
                env[key] = os.environ[key]
        env.update(extra)
        return env

    def run(self, args: list[str], *, cwd: Path | None = None, what: str, **extra_env: str) -> str:
        try:
            proc = subprocess.run([str(self.go), *args], cwd=cwd, env=self.env(**extra_env),
                                  capture_output=True, text=True, check=False)
        except OSError as e:
            raise GoModuleError(f"{what}: cannot run {self.go}: {e}") from e
        if proc.returncode != 0:
            tail = " | ".join(proc.stderr.strip().splitlines()[-6:])
            raise GoModuleError(f"{what}: `go {' '.join(args[:3])}` failed: {tail}")
        return proc.stdout


# --------------------------------------------------------------------------- upstream module


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModuleInfo:
    path: str
    version: str
    sum: str
    gomod_sum: str
    dir: Path
    gomod_file: Path
    time: str  # commit time from the proxy's .info (RFC 3339), "" if unknown


def pinned_sums(lines: tuple[str, ...], module: str, version: str) -> tuple[str | None, str | None]:
    """(zip h1, go.mod h1) of ``module@version`` in go.sum lines."""
    zip_sum = mod_sum = None
    for line in lines:
        parts = line.split()
        if len(parts) != 3 or parts[0] != module:
            continue
        if parts[1] == version:
            zip_sum = parts[2]
        elif parts[1] == f"{version}/go.mod":
            mod_sum = parts[2]
    return zip_sum, mod_sum


def download_module(host: HostGo, module: str, version: str, pins: tuple[str, ...], *, component: str) -> ModuleInfo:
    """``go mod download -json module@version`` into the toolchain's cache, checked against the pins."""
    want_zip, want_mod = pinned_sums(pins, module, version)
    if want_zip is None or want_mod is None:
        raise LockfileError(
            f"{component}: recipes.lock has no go.sum lines for {module}@{version}; run `nox -s lock -- --component {component}`"
        )
    out = host.run(["mod", "download", "-json", f"{module}@{version}"], what=f"{component}: {module}@{version}",
                   GOFLAGS="-modcacherw", GOSUMDB="off")
    try:
        info = json.loads(out)
    except ValueError as e:
        raise GoModuleError(f"{component}: go mod download {module}@{version}: unreadable output") from e
    if info.get("Error"):
        raise GoModuleError(f"{component}: go mod download {module}@{version}: {info['Error']}")
    for label, got, want in (("zip", info.get("Sum"), want_zip), ("go.mod", info.get("GoModSum"), want_mod)):
        if got != want:
            raise GoModuleError(
                f"{component}: {module}@{version} {label} hash is {got}, recipes.lock pins {want}; "
                "the download does not match the pin (corrupt module cache? run `nox -s cache -- gc`)"
            )
    time = ""
    if info.get("Info"):
        try:
            time = json.loads(Path(info["Info"]).read_text()).get("Time", "")
        except (OSError, ValueError):
            time = ""
    return ModuleInfo(path=module, version=version, sum=want_zip, gomod_sum=want_mod, dir=Path(info["Dir"]),
                      gomod_file=Path(info["GoMod"]), time=time)


def cached_module_time(modcache: Path, module: str, version: str) -> str | None:
    """The commit time of ``module@version`` from the module cache's .info, if it is there (no network)."""
    p = modcache / "cache" / "download" / escape_path(module) / "@v" / f"{version}.info"
    try:
        return json.loads(p.read_text()).get("Time") or None
    except (OSError, ValueError):
        return None


def parse_gomod(host: HostGo, gomod_file: Path, *, component: str) -> dict[str, Any]:
    """The upstream go.mod as ``go mod edit -json`` sees it, plus its ``godebug`` lines."""
    doc = json.loads(host.run(["mod", "edit", "-json", str(gomod_file)], what=f"{component}: read {gomod_file.name}"))
    godebug = []
    for line in gomod_file.read_text().splitlines():
        if line.startswith("godebug "):
            godebug.append(line.strip())
    doc["_godebug"] = godebug
    return doc


# --------------------------------------------------------------------------- wrapper module


def local_replace_version(recipe: Recipe) -> str:
    src = recipe.source
    assert src is not None
    return src.staging_version or src.local_replace_version


def wrapper_gomod(recipe: Recipe, upstream: dict[str, Any], patched_dir: str = "") -> str:
    """The wrapper module's go.mod text for ``recipe`` given the upstream go.mod (``go mod edit -json``).

    ``patched_dir``: the wrapper-relative directory holding the patched copy of the upstream
    module (``[[source.patch]]``), which replaces the module.
    """
    src = recipe.source
    assert src is not None
    required = {r["Path"] for r in upstream.get("Require") or []}
    local_version = local_replace_version(recipe)
    replaces: list[str] = []
    for r in upstream.get("Replace") or []:
        old, new = r["Old"], r["New"]
        lhs = f"{old['Path']} {old['Version']}" if old.get("Version") else old["Path"]
        if new.get("Version"):
            replaces.append(f"{lhs} => {new['Path']} {new['Version']}")
            continue
        if old["Path"] not in required:
            continue  # a guard such as `go.etcd.io/etcd => ./FORBIDDEN_DEPENDENCY`: never in the build
        if not local_version:
            field = "staging_version" if src.kind == "kubernetes" else "local_replace_version"
            raise RecipeError(
                f"{recipe.path}: source.{field}: {src.module} replaces {old['Path']} with the directory {new['Path']}, "
                "which a module zip does not contain; set the published version to use instead"
            )
        replaces.append(f"{lhs} => {old['Path']} {local_version}")
    for mod, ver in src.replace:
        replaces.append(f"{mod} => {mod} {ver}")
    if patched_dir:
        replaces.append(f"{src.module} {src.version} => ./{patched_dir}")
    lines = [
        f"// Generated by mke's toolchain (build/gomod.py): builds {src.module} {src.version} as a dependency.",
        f"module {WRAPPER_PREFIX}/{recipe.name}",
        "",
        f"go {upstream.get('Go') or '1.22'}",
        "",
    ]
    if upstream.get("_godebug"):
        lines += [*upstream["_godebug"], ""]
    lines += [f"require {src.module} {src.version}", ""]
    if replaces:
        lines += ["replace (", *[f"\t{r}" for r in replaces], ")", ""]
    tools = sorted({pkg for _, pkg in (*src.packages, *src.tests)})  # a tool line keeps a test package's module required
    lines += ["tool (", *[f"\t{t}" for t in tools], ")", ""]
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreparedSource:
    """A wrapper module on the host whose every dependency is in the module cache, verified."""

    dir: Path
    module: ModuleInfo
    gomod: str


PATCHED_DIR = "patched"  # inside the wrapper module: the patched copy of the upstream module


def apply_patches(recipe: Recipe, module_dir: Path, dest: Path) -> None:
    """Copy the (verified) upstream module from ``module_dir`` to ``dest`` and apply the
    recipe's ``[[source.patch]]`` files in order, each checked against its pinned digest.

    ``git apply`` (strict: no fuzz, every context line must match) rather than a hand-written
    diff applier; a patch that no longer applies (a new upstream version) is a one-line
    error naming the recipe's field. Repository discovery is stopped at ``dest``'s parent so
    that a cache inside a git work tree does not make git apply paths to that repository.
    """
    import shutil

    from build.recipes import read_patch

    src = recipe.source
    assert src is not None
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(module_dir, dest, symlinks=True)
    for root, dirs, files in os.walk(dest):  # the module cache's files are read-only
        for name in (*dirs, *files):
            p = Path(root) / name
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | 0o200)
    dest.chmod(dest.stat().st_mode | 0o200)
    git = shutil.which("git")
    if git is None:
        raise ComponentBuildError(f"{recipe.path}: source.patch: applying patches needs git on the build host "
                                  "(apt-get install git)")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
           "GIT_CEILING_DIRECTORIES": str(dest.resolve().parent)}
    for i, patch in enumerate(src.patches):
        data = read_patch(recipe.path, patch, where=f"source.patch[{i}]")
        proc = subprocess.run([git, "apply", "--whitespace=nowarn", "-"], cwd=dest, env=env, input=data,
                              capture_output=True, check=False)
        if proc.returncode != 0:
            why = " | ".join(proc.stderr.decode(errors="replace").strip().splitlines()[:3]) or f"exit {proc.returncode}"
            raise ComponentBuildError(f"{recipe.path}: source.patch[{i}]: {patch.file} does not apply to "
                                      f"{src.module}@{src.version}: {why}; update the patch for this version")


def patched_copy(recipe: Recipe, module_dir: Path, wrapper_dir: Path) -> str:
    """With ``[[source.patch]]``: the patched copy of the module in ``wrapper_dir``/PATCHED_DIR,
    returned as the wrapper-relative directory ``wrapper_gomod`` replaces the module with;
    "" without patches (nothing copied)."""
    src = recipe.source
    assert src is not None
    if not src.patches:
        return ""
    apply_patches(recipe, module_dir, wrapper_dir / PATCHED_DIR)
    return PATCHED_DIR


def write_wrapper(recipe: Recipe, host: HostGo, pins: tuple[str, ...], dest: Path) -> PreparedSource:
    """Download the upstream module (checked against its pins) and write the wrapper go.mod + go.sum.

    With ``[[source.patch]]`` the wrapper holds a patched copy of the module in
    ``PATCHED_DIR`` and replaces the module with it.
    """
    src = recipe.source
    assert src is not None
    info = download_module(host, src.module, src.version, pins, component=recipe.name)
    patched = patched_copy(recipe, info.dir, dest)
    gomod = wrapper_gomod(recipe, parse_gomod(host, info.gomod_file, component=recipe.name), patched)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "go.mod").write_text(gomod)
    (dest / "go.sum").write_text("".join(f"{line}\n" for line in sorted(pins)))
    return PreparedSource(dir=dest, module=info, gomod=gomod)


def download_wrapper_deps(recipe: Recipe, host: HostGo, prepared: PreparedSource, *, goos: str, goarch: str,
                          tags: tuple[str, ...], cgo: bool) -> None:
    """Put every module the build needs into the cache, verified by the pinned go.sum.

    ``go list -deps`` loads exactly the packages the container will compile (same
    GOOS/GOARCH/tags/cgo), so the offline build cannot miss a module. The checksum
    database is off: the pins are the only authority, and a go.sum Go had to extend
    means the pins are incomplete.
    """
    before = (prepared.dir / "go.sum").read_text()
    src = recipe.source
    assert src is not None
    for test, pkgs in list_groups(src):
        args = ["list", "-deps", *(["-test"] if test else []), "-f", "{{if .Module}}{{.Module.Path}}{{end}}"]
        if tags:
            args.append("-tags=" + ",".join(tags))
        host.run(args + pkgs, cwd=prepared.dir, what=f"{recipe.name}: download dependencies",
                 GOOS=goos, GOARCH=goarch, CGO_ENABLED="1" if cgo else "0", GOSUMDB="off", GOFLAGS="-mod=mod -modcacherw")
    if src.tests:
        load_test_deps(host, prepared.dir, src, what=f"{recipe.name}: download test dependencies",
                       GOOS=goos, GOARCH=goarch, CGO_ENABLED="1" if cgo else "0", GOSUMDB="off",
                       GOFLAGS="-mod=mod -modcacherw")
    after = (prepared.dir / "go.sum").read_text()
    if after != before:
        added = sorted(set(after.splitlines()) - set(before.splitlines()))
        raise LockfileError(
            f"{recipe.name}: recipes.lock lacks {len(added)} go.sum line(s) the build needs (first: {added[0] if added else '?'}); "
            f"run `nox -s lock -- --component {recipe.name}`"
        )


# The non-test packages a test binary links (its dependencies and the package itself): the
# container compiles them with `go build -v` before `go test -c` (progress lines, shared cache).
TEST_DEPS_TEMPLATE = "{{if and (not .Standard) (not .ForTest) (ne .Name \"main\")}}{{.ImportPath}}{{end}}"


def load_test_deps(host: HostGo, workdir: Path, src: Any, *, what: str, **env: str) -> None:
    """Load what the container's steps for ``[source.tests]`` load, so ``go.mod``/``go.sum`` need no update there.

    ``go list -test -deps`` loads the tests' imports; naming those dependency packages on a
    command line (the container's ``go build -v``) makes Go want each providing module
    required by the wrapper, which ``go list -deps <them>`` with ``-mod=mod`` records here.
    """
    tags = ["-tags=" + ",".join(src.tags)] if src.tags else []
    tests = sorted({pkg for _, pkg in src.tests})
    out = host.run(["list", "-test", "-deps", *tags, "-f", TEST_DEPS_TEMPLATE, *tests], cwd=workdir, what=what, **env)
    deps = sorted({line.strip() for line in out.splitlines() if line.strip()})
    host.run(["list", "-deps", *tags, "-f", "{{if .Module}}{{.Module.Path}}{{end}}", *deps], cwd=workdir, what=what, **env)


def list_groups(src: Any) -> list[tuple[bool, list[str]]]:
    """The ``go list -deps`` calls that load what a build compiles: (with -test?, packages)."""
    groups = []
    if src.packages:
        groups.append((False, sorted({pkg for _, pkg in src.packages})))
    if src.tests:  # [source.tests]: the packages' tests and what they import
        groups.append((True, sorted({pkg for _, pkg in src.tests})))
    return groups


def resolve_wrapper_sum(recipe: Recipe, host: HostGo, workdir: Path) -> tuple[str, ...]:
    """For ``nox -s lock``: the complete go.sum of the recipe's wrapper module (``go mod tidy``).

    Uses the Go checksum database (the environment's GOSUMDB), i.e. upstream's word.
    """
    src = recipe.source
    assert src is not None
    out = host.run(["mod", "download", "-json", f"{src.module}@{src.version}"], what=f"{recipe.name}: {src.module}@{src.version}",
                   GOFLAGS="-modcacherw")
    info = json.loads(out)
    if info.get("Error"):
        raise GoModuleError(f"{recipe.name}: go mod download {src.module}@{src.version}: {info['Error']}")
    top = (f"{src.module} {src.version} {info['Sum']}", f"{src.module} {src.version}/go.mod {info['GoModSum']}")
    if src.kind == "c":
        return top
    patched = patched_copy(recipe, Path(info["Dir"]), workdir)  # a patch may import what upstream does not
    gomod = wrapper_gomod(recipe, parse_gomod(host, Path(info["GoMod"]), component=recipe.name), patched)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "go.mod").write_text(gomod)
    (workdir / "go.sum").write_text("")
    host.run(["mod", "tidy"], cwd=workdir, what=f"{recipe.name}: go mod tidy", GOFLAGS="-mod=mod -modcacherw")
    if src.tests:
        # tidy's go.sum covers the tools' imports, not the imports of a dependency's tests:
        # load exactly what `go test -c` will compile, per target platform (checksum database on).
        for goarch in ("amd64", "arm64"):
            load_test_deps(host, workdir, src, what=f"{recipe.name}: go list -test", GOOS="linux", GOARCH=goarch,
                           CGO_ENABLED="1" if src.cgo else "0", GOFLAGS="-mod=mod -modcacherw")
    lines = {line.strip() for line in (workdir / "go.sum").read_text().splitlines() if line.strip()}
    return tuple(sorted(lines | set(top)))


def container_path(modcache: Path, host_path: Path, mount: str) -> str:
    """Where ``host_path`` (inside the module cache) appears in a container that mounts the cache at ``mount``."""
    try:
        rel = host_path.resolve().relative_to(modcache.resolve())
    except ValueError:
        raise ComponentBuildError(f"{host_path} is not inside the module cache {modcache}") from None
    return f"{mount.rstrip('/')}/{rel.as_posix()}"
