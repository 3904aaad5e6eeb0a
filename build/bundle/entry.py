"""The static entry program (build/entry/, Go): built in docker mode, like every embedded binary.

Go with CGO_ENABLED=0 gives a static executable (no PT_INTERP, no DT_NEEDED) from the
standard library alone plus one module, github.com/klauspost/compress (zstd), pinned by
build/entry/go.sum. The build is the docker mode's (build/modes/docker.py): the module is
downloaded on the host into the toolchain's module cache and checked against go.sum
(``-mod=readonly``: a missing or different hash fails), then ``go build -trimpath`` runs in
the Go builder image (recipes/builders/go-builder.toml) with ``--network=none``, the module
cache mounted read-only. It is a cached action keyed by the digest of every source file,
the builder image's identity and the build settings; the output is checked to be a static
ELF executable for the target. Why Go and not C against musl: docs/payload.md.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from build.action import Action
from build.cache import Cache, OutputFile
from build.elf import check_static_executable
from build.errors import BundleError
from build.fsutil import sha256_file
from build.platform import Platform
from build.progress import log

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "build" / "entry"
ENTRY_SCHEMA = 1
NAME = "mke-entry"
LDFLAGS = "-s -w -buildid="


def sources() -> dict[str, Path]:
    """The entry's source files by name (go.mod, go.sum, *.go; no tests)."""
    files = {p.name: p for p in sorted(SOURCE.iterdir())
             if p.is_file() and (p.name in ("go.mod", "go.sum") or (p.suffix == ".go" and not p.name.endswith("_test.go")))}
    if "go.mod" not in files or "go.sum" not in files:
        raise BundleError(f"{SOURCE}: go.mod and go.sum are missing")
    return files


def build_entry(cache: Cache, platform: Platform, *, mirror: str | None = None,
                go_cache_volume: str | None = None) -> OutputFile:
    """The entry executable for ``platform``, from the cache or built now (needs a Docker engine)."""
    from build.builder_image import ensure_builder, host_go, load_builder_spec
    from build.docker_engine import DockerEngine
    from build.errors import DockerError
    from build.gomod import HostGo
    from build.modes.docker import (
        BUILDER_SPEC,
        DEFAULT_GO_CACHE_VOLUME,
        DOCKER_MODE_SCHEMA,
        GOCACHE_MOUNT,
        MODCACHE_MOUNT,
        OUT_DIR,
        SOURCE_MOUNT,
        GoBuildEnv,
    )

    spec = load_builder_spec(REPO / BUILDER_SPEC)
    try:
        engine = DockerEngine.connect()
    except DockerError as e:
        raise BundleError(f"dist/mke's static entry is built in the Go builder image, which needs a Docker engine "
                          f"({str(e).split(';')[0]}); start one (scripts/bootstrap.sh does), or pass --no-bundle") from e
    builder = ensure_builder(engine, spec, cache, mirror=mirror)
    files = sources()
    env = GoBuildEnv(goos=platform.os, goarch=platform.goarch, cgo=False, cc="", tags=(), ldflags=LDFLAGS,
                     buildmode="", extra_env=(("GOFLAGS", "-mod=readonly"),), build_date="1970-01-01T00:00:00Z")
    action = Action(mode="bundle-entry", component=NAME, platform=str(platform), inputs={
        "schema": ENTRY_SCHEMA, "docker_mode": DOCKER_MODE_SCHEMA,
        "sources": {name: sha256_file(p) for name, p in files.items()},
        "builder": builder.identity(), "build": env.as_key(),
    })
    key = action.key()
    hit = cache.get(key)
    if hit is not None:
        return hit.outputs[0]
    with cache.action_lock(key):
        hit = cache.get(key)
        if hit is not None:
            return hit.outputs[0]
        t0 = time.monotonic()
        log("entry", f"go build {NAME} for {platform} in {builder.tag} (action {key[:12]})")
        host = HostGo(go=host_go(spec, cache, mirror), modcache=cache.root / "gomod")
        volume = go_cache_volume or DEFAULT_GO_CACHE_VOLUME
        engine.ensure_volume(volume)
        with cache.tempdir("entry-") as wd:
            src = Path(wd) / "src"
            src.mkdir()
            for name, p in files.items():
                shutil.copyfile(p, src / name)
            # Every module the build needs, into the module cache, checked against go.sum.
            host.run(["list", "-deps", "./..."], cwd=src, what=f"{NAME}: download its modules",
                     GOOS=platform.os, GOARCH=platform.goarch, CGO_ENABLED="0", GOSUMDB="off",
                     GOFLAGS="-mod=readonly -modcacherw")
            cmd = ["go", "build", "-trimpath", "-buildvcs=false", f"-ldflags={LDFLAGS}", "-o", f"{OUT_DIR}/{NAME}", "."]
            binds = {str(host.modcache.resolve()): {"bind": MODCACHE_MOUNT, "mode": "ro"},
                     str(src.resolve()): {"bind": SOURCE_MOUNT, "mode": "ro"},
                     volume: {"bind": GOCACHE_MOUNT, "mode": "rw"}}
            lines: list[str] = []
            with engine.container(image=builder.image_id, command=cmd, name=f"mke-entry-{key[:12]}",
                                  env=env.container_env(), binds=binds, workdir=SOURCE_MOUNT) as container:
                rc = container.run(lines.append)
                if rc != 0:
                    tail = " | ".join(lines[-8:])
                    raise BundleError(f"{NAME}: go build failed (exit {rc}): {tail}")
                copied = container.copy_out(OUT_DIR, Path(wd) / "out")
            if NAME not in copied:
                raise BundleError(f"{NAME}: the build produced no {NAME}")
            check_static_executable(copied[NAME], elf_machine=platform.elf_machine, what=NAME)
            digest, size = cache.cas.put_file(copied[NAME])
        result = cache.put(action, [OutputFile(name=NAME, sha256=digest, size=size)],
                           {"seconds": round(time.monotonic() - t0, 3), "builder": builder.tag, "go": builder.go_version})
        log("entry", f"  {size / 2**20:.1f} MiB in {time.monotonic() - t0:.1f}s")
        return result.outputs[0]
