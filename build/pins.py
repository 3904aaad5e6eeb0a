"""Update recipes.lock (``nox -s lock``): the one place that turns upstream's word into pins.

- fetch: for every artifact and platform, read upstream's published checksum file
  (through --mirror if given) and record the sha256 under the upstream URL.
- source: the go.sum of the recipe's generated wrapper module (build/gomod.py), resolved
  by the builder's Go with the Go checksum database on: every module the build needs.
  ``kind = "debian"`` recipes get the sha256 of every .dsc, source tarball and .deb from
  apt (``--print-uris``), whose indexes apt checks against the archive's signed InRelease.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from build.cache import Cache, default_cache_dir
from build.download import Downloader
from build.lockfile import Lockfile
from build.modes.fetch import expand_artifacts, parse_checksum
from build.platform import Platform
from build.progress import log
from build.recipes import DebianSource, Recipe

BUILDER_SPEC = Path(__file__).resolve().parent.parent / "recipes" / "builders" / "go-builder.toml"


def wrapper_sum(recipe: Recipe, *, cache_root: Path | None = None, mirror: str | None = None) -> tuple[str, ...]:
    """The go.sum lines pinned for ``recipe``: the wrapper module's whole go.sum.

    Runs with the builder's Go (unpacked under the cache) and the Go checksum database,
    in a scratch directory under the cache.
    """
    from build.builder_image import host_go, load_builder_spec  # docker mode's pieces: only for source pins
    from build.gomod import HostGo, resolve_wrapper_sum

    cache = Cache(cache_root or default_cache_dir())
    spec = load_builder_spec(BUILDER_SPEC)
    host = HostGo(go=host_go(spec, cache, mirror), modcache=cache.root / "gomod")
    with tempfile.TemporaryDirectory(prefix=f"lock-{recipe.name}-", dir=cache.root / "tmp") as d:
        return resolve_wrapper_sum(recipe, host, Path(d) / "wrapper")


def update_lock(
    lock_path: Path,
    recipes: list[Recipe],
    platforms: list[Platform],
    *,
    mirror: str | None,
    fetch: bool = True,
    source: bool = True,
) -> Lockfile:
    lock = Lockfile.load(lock_path) if lock_path.exists() else Lockfile.empty(lock_path)
    downloader = Downloader(default_cache_dir() / "downloads", mirror=mirror)
    for r in recipes:
        if fetch and r.fetch.available:
            for plat in platforms:
                for art in expand_artifacts(r, plat.os, plat.arch):
                    text = downloader.fetch_text(art.checksum_url, r.name)
                    digest = parse_checksum(text, art.checksum_format, art.url.rsplit("/", 1)[-1], source=art.checksum_url)
                    lock = lock.with_artifact(r.name, str(plat), art.url, digest)
                    log(r.name, f"pinned {art.url} sha256:{digest[:12]}…")
        if source and isinstance(r.source, DebianSource):
            from build.debsrc import resolve_pins  # Debian packages: digests from apt's signed indexes

            pins = resolve_pins(r, sorted({p.arch for p in platforms}))
            lock = lock.with_debian(r.name, pins)
            log(r.name, f"pinned {len(pins)} Debian files ({', '.join(f'{p.name} {p.version}' for p in r.source.packages)})")
        elif source and r.source is not None:
            lines = wrapper_sum(r, mirror=mirror)
            lock = lock.with_source(r.name, lines)
            log(r.name, f"pinned {r.source.module}@{r.source.version}")
    lock.save()
    log("lock", f"wrote {lock_path}")
    return lock


def update_image_pins(lock_path: Path, images_dir: Path, arches: list[str], *, names: list[str]) -> Lockfile:
    """Pin the ``[debian]`` packages of image specs: apt's dependency closure, URL -> sha256 per arch."""
    from build.airgap import load_image_specs
    from build.debsrc import resolve_closures
    from build.errors import UsageError

    specs = load_image_specs(images_dir)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise UsageError(f"unknown image {unknown[0]!r}: choose from {', '.join(specs)}")
    lock = Lockfile.load(lock_path) if lock_path.exists() else Lockfile.empty(lock_path)
    chosen = [s for s in specs.values() if s.debian is not None and (not names or s.name in names)]
    sets = {s.lock_key: (s.debian.suite, s.debian.packages) for s in chosen}  # type: ignore[union-attr]
    for key, pins in resolve_closures(sets, arches).items():
        lock = lock.with_debian(key, pins)
        log(key, f"pinned {len(pins)} Debian packages ({' '.join(sets[key][1])}, {sets[key][0]})")
    lock.save()
    log("lock", f"wrote {lock_path}")
    return lock
