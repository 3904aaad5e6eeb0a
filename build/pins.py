"""Update recipes.lock (``nox -s lock``): the one place that turns upstream's word into pins.

- fetch: for every artifact and platform, read upstream's published checksum file
  (through --mirror if given) and record the sha256 under the upstream URL.
- source: ``go mod download -json module@version`` (verified by Go against the
  checksum database) gives the go.sum lines of each recipe's Go module;
  ``kind = "debian"`` recipes get the sha256 of every .dsc, source tarball and .deb from
  apt (``--print-uris``), whose indexes apt checks against the archive's signed InRelease.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from build.cache import default_cache_dir
from build.download import Downloader
from build.errors import BuildError, LockfileError
from build.lockfile import Lockfile
from build.modes.fetch import expand_artifacts, parse_checksum
from build.platform import Platform
from build.progress import log
from build.recipes import DebianSource, Recipe

# The Go used to read module sums; modules may require a newer Go than the host has.
GO_TOOLCHAIN = "go1.26.11"


def go_sum_lines(module: str, version: str) -> tuple[str, ...]:
    try:
        proc = subprocess.run(
            ["go", "mod", "download", "-json", f"{module}@{version}"],
            capture_output=True, text=True, check=False, env={**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": GO_TOOLCHAIN},
        )
    except FileNotFoundError:
        raise BuildError("go is not installed; `nox -s lock` needs Go to read module sums") from None
    try:
        info = json.loads(proc.stdout)
    except ValueError:
        raise LockfileError(f"go mod download {module}@{version} failed: {proc.stderr.strip()[-300:]}") from None
    if proc.returncode != 0 or info.get("Error"):
        raise LockfileError(f"go mod download {module}@{version} failed: {info.get('Error') or proc.stderr.strip()}")
    return (f"{module} {version} {info['Sum']}", f"{module} {version}/go.mod {info['GoModSum']}")


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
            from build.gomod import wrapper_sum_for_lock  # docker mode: the wrapper module's whole go.sum

            lines = wrapper_sum_for_lock(r, mirror=mirror)
            lock = lock.with_source(r.name, lines)
            log(r.name, f"pinned {r.source.module}@{r.source.version}")
    lock.save()
    log("lock", f"wrote {lock_path}")
    return lock
