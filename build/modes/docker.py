"""docker mode: build every embedded binary from source, statically, in a container.

Per recipe (see docs/build.md, "docker mode"):

1. host: ``go mod download`` of the recipe's module into ``<cache>/gomod``, checked against
   the go.sum lines pinned in recipes.lock; a generated wrapper module (build/gomod.py)
   builds the upstream main packages as dependencies;
2. container (the builder image from recipes/builders/go-builder.toml, by image ID):
   ``--network=none``, module cache and wrapper mounted read-only, a persistent Go build
   cache volume (outside the action key: it only makes rebuilds fast),
   ``GOPROXY=off GOFLAGS=-mod=mod GOTOOLCHAIN=local``, ``-trimpath -buildvcs=false``,
   all of a recipe's packages in one ``go build`` so shared packages compile once;
   ``[source.tests]`` binaries (e2e.test) with ``go test -c -o``, their dependencies first
   compiled by ``go build -v`` (progress lines); C sources (pause) with the builder's gcc,
   ``-static``, stripped;
3. outputs are copied out with the SDK's ``get_archive``; the pipeline checks them
   (static ELF for the target arch, ``--version``) and stores them in the CAS.

The build log streams with the component's name and is written to
``<cache>/logs/<component>-<key>.log``; a failure prints its last lines and that path.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import shlex
import threading
import time
from pathlib import Path
from typing import Any

from build.action import Action
from build.builder_image import BuilderImage, BuilderSpec, ensure_builder, host_go, load_builder_spec
from build.docker_engine import DockerEngine
from build.errors import ComponentBuildError, LockfileError, UsageError
from build.gomod import (
    TEST_DEPS_TEMPLATE,
    WRAPPER_SCHEMA,
    HostGo,
    cached_module_time,
    container_path,
    download_module,
    download_wrapper_deps,
    write_wrapper,
)
from build.modes.base import BuildContext
from build.platform import Platform
from build.progress import log
from build.recipes import DebianSource, Recipe, patch_note, render

# Bump when the container command or environment below changes shape (enters action keys).
DOCKER_MODE_SCHEMA = 1
DEFAULT_GO_CACHE_VOLUME = "mke-go-build-cache"
BUILDER_SPEC = Path("recipes") / "builders" / "go-builder.toml"
MODCACHE_MOUNT = "/gomod"
SOURCE_MOUNT = "/src"
GOCACHE_MOUNT = "/gocache"
OUT_DIR = "/out"
FAILURE_TAIL_LINES = 30
_PACKAGE_LINE = re.compile(r"^[A-Za-z0-9_.~/-]+$")


def go_exec_name(import_path: str) -> str:
    """The file name ``go build -o dir/`` gives a main package (``.../server/v3`` -> ``server``)."""
    parts = import_path.rstrip("/").split("/")
    if len(parts) > 1 and re.fullmatch(r"v[2-9]\d*|v[1-9]\d+", parts[-1]):
        return parts[-2]
    return parts[-1]


def build_date(epoch: int | None, module_time: str | None) -> str:
    """RFC 3339 UTC seconds, as Kubernetes' ``buildDate``: SOURCE_DATE_EPOCH, else the module's commit time."""
    if epoch:
        t = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    elif module_time:
        t = datetime.datetime.fromisoformat(module_time.replace("Z", "+00:00")).astimezone(datetime.UTC)
    else:
        t = datetime.datetime.fromtimestamp(0, tz=datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def source_key(src: Any) -> dict[str, Any]:
    """A Go recipe's whole ``[source]`` for its action key.

    ``tests`` (``[source.tests]``) and ``patches`` (``[[source.patch]]``, by file, digest
    and reason) enter only when set, so the keys of recipes without them stayed what they
    were before the fields existed (no needless rebuild).
    """
    d = dataclasses.asdict(src)
    for optional in ("tests", "patches"):
        if not d.get(optional):
            d.pop(optional, None)
    return d


@dataclasses.dataclass(frozen=True, kw_only=True)
class GoBuildEnv:
    """Everything about one container build besides the sources and the builder image.

    ``fips`` is the hook for the FIPS toolchain (fips/): today docker mode refuses
    ``--fips``; the FIPS work sets its compiler settings from this field and must keep it
    in this dataclass so that it stays part of every action key.
    """

    goos: str
    goarch: str
    cgo: bool
    cc: str
    tags: tuple[str, ...]
    ldflags: str
    buildmode: str
    extra_env: tuple[tuple[str, str], ...]
    build_date: str
    fips: bool = False

    def container_env(self) -> dict[str, str]:
        env = {
            "GOOS": self.goos,
            "GOARCH": self.goarch,
            "CGO_ENABLED": "1" if self.cgo else "0",
            "GOMODCACHE": MODCACHE_MOUNT,
            "GOCACHE": GOCACHE_MOUNT,
            "GOFLAGS": "-mod=mod",
            "GOPROXY": "off",
            "GOSUMDB": "off",
            "GOTOOLCHAIN": "local",
            "GOTELEMETRY": "off",
            "GOWORK": "off",
            "HOME": "/tmp",
            "SOURCE_DATE_EPOCH": str(int(datetime.datetime.strptime(self.build_date, "%Y-%m-%dT%H:%M:%SZ")
                                         .replace(tzinfo=datetime.UTC).timestamp())),
        }
        if self.cgo:
            env["CC"] = self.cc
            triple = self.cc.rsplit("-gcc", 1)[0]
            # pkg-config finds the target's .pc files (static libseccomp for arm64 lives there)
            env["PKG_CONFIG_LIBDIR"] = f"/usr/lib/{triple}/pkgconfig:/usr/share/pkgconfig"
        env.update(dict(self.extra_env))
        return env

    def as_key(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _LogSink:
    """One build's log: every line to the log file; to the console, tagged, with compile progress throttled."""

    def __init__(self, component: str, path: Path, console_every: float = 20.0):
        self.component = component
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "w", encoding="utf-8")
        self._tail: list[str] = []
        self._packages = 0
        self._last = 0.0
        self._every = console_every

    def __call__(self, line: str) -> None:
        self._f.write(line + "\n")
        self._tail = (self._tail + [line])[-FAILURE_TAIL_LINES:]
        if _PACKAGE_LINE.match(line):
            self._packages += 1  # `go build -v` names each package it compiles
            now = time.monotonic()
            if now - self._last >= self._every:
                self._last = now
                log(self.component, f"compiling ({self._packages} packages so far): {line}")
            return
        log(self.component, line)

    def note(self, line: str) -> None:
        self._f.write(f"# {line}\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def tail(self) -> list[str]:
        return list(self._tail)

    @property
    def packages(self) -> int:
        return self._packages


class DockerMode:
    name = "docker"
    embeds = True

    def __init__(self) -> None:
        self._engine: DockerEngine | None = None
        self._builder: BuilderImage | None = None
        self._spec: BuilderSpec | None = None
        self._host: HostGo | None = None
        self._volume = DEFAULT_GO_CACHE_VOLUME
        self._lock = threading.Lock()
        self._fips: Any = None  # fips.settings.GoBuildChanges when ctx.fips

    # ------------------------------------------------------------------ setup
    def prepare(self, ctx: BuildContext, recipes: list[Recipe]) -> None:
        for r in recipes:
            if r.source is None:
                raise UsageError(f"{r.name} has no [source] section, so it cannot be built with --mode=docker; "
                                 "use --mode=fetch for it or leave it out")
            if isinstance(r.source, DebianSource) and ctx.platform.arch != Platform.host().arch:
                raise UsageError(f"{r.name}: Debian-source (C userland) recipes are built natively only; "
                                 f"build --arch {ctx.platform.arch} on a {ctx.platform.arch} host, or leave {r.name} out")
        if ctx.fips:  # the FIPS toolchain: fips/toolchain.toml, --fips-go=native|boring
            from fips.settings import go_build_settings

            self._fips = go_build_settings(ctx.options.get("opt_fips_go"))
            log("docker", f"FIPS build: --fips-go={self._fips.mode}, Go builds get {dict(self._fips.env)}")
        spec_path = Path(ctx.options.get("opt_builder_spec") or ctx.repo_root / BUILDER_SPEC)
        self._spec = load_builder_spec(spec_path)
        self._engine = DockerEngine.connect()
        self._builder = ensure_builder(self._engine, self._spec, ctx.cache, mirror=ctx.mirror)
        if all(isinstance(r.source, DebianSource) for r in recipes):  # C userland only: no Go on the host
            log("docker", f"engine {self._engine.server_version()}, builder {self._builder.tag} "
                          f"({self._builder.image_id[:19]})")
            return
        self._host = HostGo(go=host_go(self._spec, ctx.cache, ctx.mirror), modcache=ctx.cache.root / "gomod")
        if self._fips is not None:  # GOFIPS140's module goes into the (read-only in the container) module cache
            from fips.settings import unpack_go_module

            unpack_go_module(self._fips, self._host)
        self._volume = ctx.options.get("opt_go_cache_volume") or DEFAULT_GO_CACHE_VOLUME
        self._engine.ensure_volume(self._volume)
        log("docker", f"engine {self._engine.server_version()}, builder {self._builder.tag} "
                      f"({self._builder.image_id[:19]}), Go build cache volume {self._volume}")

    @property
    def builder(self) -> BuilderImage:
        assert self._builder is not None, "prepare() first"
        return self._builder

    # ------------------------------------------------------------------ action
    def _pins(self, ctx: BuildContext, recipe: Recipe) -> tuple[str, ...]:
        if isinstance(recipe.source, DebianSource):
            from build.debsrc import pinned_urls

            return tuple(f"{u} {d}" for u, d in pinned_urls(recipe, ctx.platform.arch, ctx.lock.debian_pins(recipe.name)).items())
        pins = ctx.lock.gosum(recipe.name)
        if not pins:
            raise LockfileError(f"{recipe.name}: no go.sum lines in {ctx.lock.path}; run `nox -s lock -- --component {recipe.name}`")
        return pins

    def _module_time(self, ctx: BuildContext, recipe: Recipe) -> str | None:
        src = recipe.source
        assert src is not None and self._host is not None
        t = cached_module_time(self._host.modcache, src.module, src.version)
        if t is None:  # first build on this cache: fetch the module (verified) to learn its commit time
            t = download_module(self._host, src.module, src.version, self._pins(ctx, recipe), component=recipe.name).time
        return t

    def build_env(self, ctx: BuildContext, recipe: Recipe) -> GoBuildEnv:
        src = recipe.source
        assert src is not None
        date = build_date(ctx.source_date_epoch, None if ctx.source_date_epoch else self._module_time(ctx, recipe))
        values = {"version": recipe.version, "module_version": src.version, "commit": src.commit,
                  "build_date": date, "os": ctx.platform.os, "arch": ctx.platform.arch, "binary": ""}
        flags = [render(f, **values) for f in (src.cflags if src.kind == "c" else src.ldflags)]
        env = GoBuildEnv(
            goos=ctx.platform.os,
            goarch=ctx.platform.goarch,
            cgo=src.cgo or src.kind == "c",
            cc=f"{ctx.platform.gnu_triple}-gcc",
            tags=src.tags,
            ldflags=" ".join(flags),
            buildmode=src.buildmode,
            extra_env=src.env,
            build_date=date,
            fips=ctx.fips,
        )
        if ctx.fips and src.kind != "c":  # C sources (pause) have no Go crypto to switch
            from fips.settings import go_build_settings

            env = (self._fips or go_build_settings(ctx.options.get("opt_fips_go"))).apply(env)
        return env

    def _debian_env(self, ctx: BuildContext, recipe: Recipe) -> Any:
        """The C build's settings; every source mtime is set to SOURCE_DATE_EPOCH (default 1980-01-01)."""
        from build.debsrc import DEFAULT_EPOCH
        from build.debsrc import build_env as debian_build_env

        assert isinstance(recipe.source, DebianSource)
        return debian_build_env(recipe.source, triple=ctx.platform.gnu_triple, epoch=ctx.source_date_epoch or DEFAULT_EPOCH)

    def action(self, ctx: BuildContext, recipe: Recipe) -> Action:
        src = recipe.source
        assert src is not None
        if isinstance(src, DebianSource):
            from build.debsrc import DEBIAN_MODE_SCHEMA

            return Action(
                mode=self.name,
                component=recipe.name,
                platform=str(ctx.platform),
                inputs={
                    "schema": DOCKER_MODE_SCHEMA,
                    "debian_schema": DEBIAN_MODE_SCHEMA,
                    "version": recipe.version,
                    "binaries": [[b.name, *b.links] for b in recipe.binaries],
                    "source": dataclasses.asdict(src),
                    "pins": sorted(self._pins(ctx, recipe)),
                    "builder": self.builder.identity(),
                    "build": self._debian_env(ctx, recipe).as_key(),
                    "fips": ctx.fips,
                },
            )
        return Action(
            mode=self.name,
            component=recipe.name,
            platform=str(ctx.platform),
            inputs={
                "schema": DOCKER_MODE_SCHEMA,
                "wrapper_schema": WRAPPER_SCHEMA,
                "version": recipe.version,
                "binaries": list(recipe.binary_names),
                "source": source_key(src),
                "gosum": sorted(self._pins(ctx, recipe)),
                "builder": self.builder.identity(),
                "build": self.build_env(ctx, recipe).as_key(),
            },
        )

    # ------------------------------------------------------------------ run
    def command(self, recipe: Recipe, env: GoBuildEnv, c_sources: dict[str, str] | None = None) -> list[str]:
        """The container's command line for ``recipe``."""
        src = recipe.source
        assert src is not None
        if src.kind == "c":
            triple = env.cc.rsplit("-gcc", 1)[0]
            steps = [["mkdir", "-p", OUT_DIR]]
            for binary, path in (c_sources or {}).items():
                srcdir = path.rsplit("/", 1)[0]
                steps.append([env.cc, *shlex.split(env.ldflags), f"-ffile-prefix-map={srcdir}=.",
                              "-o", f"{OUT_DIR}/{binary}", path])
                steps.append([f"{triple}-strip", f"{OUT_DIR}/{binary}"])
            script = " && ".join(shlex.join(s) for s in steps)
            return ["/bin/sh", "-ec", script]
        flags = ["-trimpath", "-buildvcs=false"]
        if env.buildmode:
            flags.append(f"-buildmode={env.buildmode}")
        if env.tags:
            flags.append("-tags=" + ",".join(env.tags))
        pkgs = sorted({pkg for _, pkg in src.packages})
        names = [go_exec_name(p) for p in pkgs]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise ComponentBuildError(f"{recipe.path}: source.packages: two packages would both be written as {clash[0]!r} "
                                      "by one `go build -o dir/`; split the recipe")
        build = ["go", "build", "-v", *flags, f"-ldflags={env.ldflags}", "-o", f"{OUT_DIR}/", *pkgs]
        if not src.tests:
            return build
        # [source.tests]: `go test -c` links one package's tests per invocation. Before it, the
        # test's dependencies are compiled with `go build -v` (same flags, so `go test -c` finds
        # them in the Go build cache): that prints each package, the build's progress lines.
        steps = [shlex.join(["mkdir", "-p", OUT_DIR])]
        if pkgs:
            steps.append(shlex.join(build))
        for binary, pkg in sorted(src.tests):
            deps = f"/tmp/{binary}.deps"
            steps.append(shlex.join(["go", "list", "-test", "-deps", *flags[2:],
                                     "-f", TEST_DEPS_TEMPLATE, pkg]) + f" > {deps}")
            steps.append(f"xargs go build -v {shlex.join(flags)} < {deps}")
            steps.append(shlex.join(["go", "test", "-c", *flags, f"-ldflags={env.ldflags}",
                                     "-o", f"{OUT_DIR}/{binary}", pkg]))
        return ["/bin/sh", "-ec", " && ".join(steps)]

    def _run_debian(self, ctx: BuildContext, recipe: Recipe, action: Action, workdir: Path) -> tuple[dict[str, Path], dict[str, Any]]:
        """Build a ``kind = "debian"`` recipe (build/debsrc.py) in the builder image."""
        from build.debsrc import container_script, deb_url, prepare_inputs
        from build.download import Downloader

        src = recipe.source
        assert isinstance(src, DebianSource) and self._engine is not None
        t0 = time.monotonic()
        env = self._debian_env(ctx, recipe)
        if env.as_key() != action.inputs["build"]:
            raise ComponentBuildError(f"{recipe.name}: build settings changed while building; run the build again")
        downloader = Downloader(ctx.cache.root / "downloads", mirror=ctx.mirror)
        inputs = prepare_inputs(recipe, ctx.platform.arch, ctx.lock.debian_pins(recipe.name), downloader, workdir / "in")
        script = container_script(recipe, env, inputs.packages)
        sink = _LogSink(recipe.name, ctx.cache.root / "logs" / f"{recipe.name}-{action.key()}.log", console_every=1e9)
        try:
            sink.note("script:\n# " + script.replace("\n", "\n# "))
            sink.note("builder: " + self.builder.tag + " " + self.builder.image_id)
            t_sources = time.monotonic() - t0
            binds = {str(inputs.dir.resolve()): {"bind": "/in", "mode": "ro"}}
            name = f"mke-{recipe.name}-{action.key()[:12]}"
            with self._engine.container(image=self.builder.image_id, command=["/bin/sh", "-ec", script], name=name,
                                        env=env.container_env(), binds=binds, workdir="/") as container:
                rc = container.run(sink)
                if rc != 0:
                    sink.close()
                    for line in sink.tail():
                        log(recipe.name, f"| {line}")
                    raise ComponentBuildError(f"{recipe.name}: build failed (exit {rc}); full log: {sink.path}")
                copied = container.copy_out("/out", workdir / "out")
        finally:
            sink.close()
        files = {}
        for binary, path in src.outputs:
            if binary not in copied:
                raise ComponentBuildError(f"{recipe.name}: the build produced no {binary} ({path}); full log: {sink.path}")
            files[binary] = copied[binary]
        return files, {
            "builder": self.builder.tag,
            "builder_image": self.builder.image_id,
            "debian": [f"{p.name} {p.version}" for p in src.packages] + [f"{d.name} {d.version} (binary)" for d in src.debs],
            "source": [p.dsc for p in src.packages] + [deb_url(d, ctx.platform.arch) for d in src.debs],
            "log": str(sink.path),
            "source_seconds": round(t_sources, 3),
            "build_seconds": round(time.monotonic() - t0 - t_sources, 3),
        }

    def run(self, ctx: BuildContext, recipe: Recipe, action: Action, workdir: Path) -> tuple[dict[str, Path], dict[str, Any]]:
        if isinstance(recipe.source, DebianSource):
            return self._run_debian(ctx, recipe, action, workdir)
        src = recipe.source
        assert src is not None and self._engine is not None and self._host is not None
        t0 = time.monotonic()
        pins = self._pins(ctx, recipe)
        env = self.build_env(ctx, recipe)
        if env.as_key() != action.inputs["build"]:
            raise ComponentBuildError(f"{recipe.name}: build settings changed while building; run the build again")
        sink = _LogSink(recipe.name, ctx.cache.root / "logs" / f"{recipe.name}-{action.key()}.log")
        try:
            binds: dict[str, dict[str, str]] = {
                str(self._host.modcache.resolve()): {"bind": MODCACHE_MOUNT, "mode": "ro"},
                self._volume: {"bind": GOCACHE_MOUNT, "mode": "rw"},
            }
            c_sources: dict[str, str] = {}
            if src.kind == "c":
                info = download_module(self._host, src.module, src.version, pins, component=recipe.name)
                for binary, rel in src.packages:
                    host_file = info.dir / rel
                    if not host_file.is_file():
                        raise ComponentBuildError(f"{recipe.path}: source.packages.{binary}: {rel} is not a file in {src.module}@{src.version}")
                    c_sources[binary] = container_path(self._host.modcache, host_file, MODCACHE_MOUNT)
                workdir_in = MODCACHE_MOUNT
            else:
                prepared = write_wrapper(recipe, self._host, pins, workdir / "src")
                sink.note("wrapper go.mod:\n# " + prepared.gomod.replace("\n", "\n# "))
                download_wrapper_deps(recipe, self._host, prepared, goos=env.goos, goarch=env.goarch,
                                      tags=env.tags, cgo=env.cgo)
                binds[str(prepared.dir.resolve())] = {"bind": SOURCE_MOUNT, "mode": "ro"}
                workdir_in = SOURCE_MOUNT
            cmd = self.command(recipe, env, c_sources)
            sink.note("command: " + shlex.join(cmd))
            sink.note("builder: " + self.builder.tag + " " + self.builder.image_id)
            t_sources = time.monotonic() - t0
            name = f"mke-{recipe.name}-{action.key()[:12]}"
            with self._engine.container(image=self.builder.image_id, command=cmd, name=name, env=env.container_env(),
                                        binds=binds, workdir=workdir_in) as container:
                rc = container.run(sink)
                if rc != 0:
                    sink.close()
                    for line in sink.tail():
                        log(recipe.name, f"| {line}")
                    raise ComponentBuildError(f"{recipe.name}: build failed (exit {rc}); full log: {sink.path}")
                copied = container.copy_out(OUT_DIR, workdir / "out")
        finally:
            sink.close()
        files: dict[str, Path] = {}
        for binary, pkg in (*src.packages, *((b, "") for b, _ in src.tests)):
            produced = binary if src.kind == "c" or not pkg else go_exec_name(pkg)
            if produced not in copied:
                raise ComponentBuildError(f"{recipe.name}: the build produced no {produced} for {binary} "
                                          f"(got {', '.join(sorted(copied)) or 'nothing'}); full log: {sink.path}")
            files[binary] = copied[produced]
        return files, {
            "builder": self.builder.tag,
            "builder_image": self.builder.image_id,
            "go": self.builder.go_version,
            "log": str(sink.path),
            "source_seconds": round(t_sources, 3),
            "build_seconds": round(time.monotonic() - t0 - t_sources, 3),
            "packages_compiled": sink.packages,
            **({"patches": [patch_note(p) for p in src.patches]} if src.patches else {}),
        }
