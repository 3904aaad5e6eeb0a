"""Run a mode over the selected recipes: action key → cache hit, or run → verify → store.

Then materialize the outputs under dist/<os>-<arch>/ with a manifest (the bundler's input).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import errno
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from build.cache import ActionResult, OutputFile
from build.elf import check_static_executable
from build.errors import BuildError, VerificationError
from build.fsutil import write_atomic
from build.modes.base import BuildContext, Mode
from build.platform import Platform
from build.progress import log
from build.recipes import DebianSource, Recipe, SourceSpec, patch_note

MANIFEST_SCHEMA = 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class ComponentResult:
    recipe: Recipe
    result: ActionResult | None  # None in none mode
    cached: bool
    seconds: float


def verify_output(recipe: Recipe, binary: str, path: Path, platform: Platform) -> None:
    """Static ELF for the target arch; ``--version`` matches when the host can run it."""
    check_static_executable(path, elf_machine=platform.elf_machine, what=f"{recipe.name}: {binary}")
    spec = next(b for b in recipe.binaries if b.name == binary)
    if not spec.version_args or platform != Platform.host():
        return
    os.chmod(path, 0o755)
    for attempt in range(20):
        try:
            proc = subprocess.run([str(path), *spec.version_args], capture_output=True, text=True, timeout=60,
                                  env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})
            break
        except OSError as e:
            # ETXTBSY: a child forked by another build thread can briefly hold the file we
            # just wrote open for writing (until its exec closes it). That passes; retry.
            if e.errno == errno.ETXTBSY and attempt < 19:
                time.sleep(0.05 * (attempt + 1))
                continue
            raise VerificationError(f"{recipe.name}: {binary} {' '.join(spec.version_args)} failed to run: {e}") from e
        except subprocess.TimeoutExpired as e:
            raise VerificationError(f"{recipe.name}: {binary} {' '.join(spec.version_args)} timed out: {e}") from e
    want = spec.expected_version_text(recipe.version)
    text = proc.stdout + proc.stderr
    if want not in text:
        first = text.strip().splitlines()[0] if text.strip() else "(no output)"
        raise VerificationError(f"{recipe.name}: {binary} {' '.join(spec.version_args)} printed {first!r}, expected {want!r}")


def build_one(ctx: BuildContext, mode: Mode, recipe: Recipe) -> ComponentResult:
    t0 = time.monotonic()
    if not mode.embeds:
        return ComponentResult(recipe=recipe, result=None, cached=False, seconds=0.0)
    action = mode.action(ctx, recipe)
    key = action.key()
    result = ctx.cache.get(key)
    if result is not None:
        log(recipe.name, f"cached ({key[:12]})")
        return ComponentResult(recipe=recipe, result=result, cached=True, seconds=time.monotonic() - t0)
    with ctx.cache.action_lock(key):
        result = ctx.cache.get(key)  # another build may have finished it while we waited
        if result is not None:
            log(recipe.name, f"cached ({key[:12]}, built by a concurrent build)")
            return ComponentResult(recipe=recipe, result=result, cached=True, seconds=time.monotonic() - t0)
        log(recipe.name, f"{mode.name} {recipe.version} for {ctx.platform} (action {key[:12]})")
        with ctx.cache.tempdir(f"{recipe.name}-") as wd:
            files, metadata = mode.run(ctx, recipe, action, Path(wd))
            missing = [b for b in recipe.binary_names if b not in files]
            if missing:
                raise BuildError(f"{recipe.name}: mode {mode.name} produced no {', '.join(missing)}")
            outputs = []
            for binary in recipe.binary_names:
                verify_output(recipe, binary, files[binary], ctx.platform)
                digest, size = ctx.cache.cas.put_file(files[binary])
                outputs.append(OutputFile(name=binary, sha256=digest, size=size))
            metadata = {**metadata, "seconds": round(time.monotonic() - t0, 3)}
            result = ctx.cache.put(action, outputs, metadata)
    log(recipe.name, f"done in {time.monotonic() - t0:.1f}s")
    return ComponentResult(recipe=recipe, result=result, cached=False, seconds=time.monotonic() - t0)


def build_all(ctx: BuildContext, mode: Mode, recipes: list[Recipe]) -> list[ComponentResult]:
    """Build every recipe, ``ctx.jobs`` at a time; the first failure cancels the rest."""
    with ctx.cache.shared():
        mode.prepare(ctx, recipes)
        results: dict[str, ComponentResult] = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, ctx.jobs)) as pool:
            futures = {pool.submit(build_one, ctx, mode, r): r for r in recipes}
            try:
                for fut in concurrent.futures.as_completed(futures):
                    res = fut.result()
                    results[res.recipe.name] = res
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    return [results[r.name] for r in recipes]


def manifest_entries(mode: str, results: list[ComponentResult], fips: bool) -> list[dict[str, Any]]:
    entries = []
    for res in results:
        r = res.recipe
        for b in r.binaries:
            out = res.result.output(b.name) if res.result else None
            # fetch: the artifact URLs; docker + kind = "debian": the .dsc and .deb URLs built from
            if mode == "fetch" or (mode == "docker" and isinstance(r.source, DebianSource)):
                source = res.result.metadata.get("source", []) if res.result else []
            elif mode == "docker" and r.source:
                source = f"{r.source.module}@{r.source.version}"
            else:
                source = "PATH"
            entries.append({
                "name": b.name,
                "component": r.name,
                "version": r.version,
                "license": r.license,
                "homepage": r.homepage,
                "roles": list(b.roles),
                "mode": mode,
                "fips": fips,
                "sha256": out.sha256 if out else None,
                "size": out.size if out else None,
                "source": source,
            })
            if b.links:  # a multi-call binary's other names; the runtime stages them as symlinks to it
                entries[-1]["links"] = list(b.links)
            if mode == "docker" and isinstance(r.source, SourceSpec) and r.source.patches:
                entries[-1]["patches"] = [patch_note(p) for p in r.source.patches]
    return sorted(entries, key=lambda e: e["name"])


def write_dist(ctx: BuildContext, mode: str, results: list[ComponentResult], dist: Path, *, flat: bool = False) -> Path:
    """Materialize the outputs as dist/<os>-<arch>/bin/* (``flat``: dist/bin/*) plus manifest.json.

    Files already present with the digest recorded in the previous manifest (same
    size and mtime as when written) are left alone, so a no-op build rewrites nothing.
    """
    outdir = dist if flat else dist / f"{ctx.platform.os}-{ctx.platform.arch}"
    bindir = outdir / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    manifest_path = outdir / "manifest.json"
    previous: dict[str, dict[str, Any]] = {}
    try:
        previous = {e["name"]: e for e in json.loads(manifest_path.read_text()).get("binaries", [])}
    except (OSError, ValueError, AttributeError):
        pass
    entries = manifest_entries(mode, results, ctx.fips)
    wanted = set()
    for e in entries:
        if not e["sha256"]:
            continue
        wanted.add(e["name"])
        target = bindir / e["name"]
        prev = previous.get(e["name"], {})
        stamp = prev.get("_stamp")
        try:
            st = target.stat()
            fresh = prev.get("sha256") == e["sha256"] and stamp == [st.st_size, st.st_mtime_ns, st.st_ino]
        except FileNotFoundError:
            fresh = False
        if not fresh:
            ctx.cache.cas.copy_out(e["sha256"], target)
            st = target.stat()
        e["_stamp"] = [st.st_size, st.st_mtime_ns, st.st_ino]
    for stale in bindir.iterdir():
        if stale.name not in wanted:
            stale.unlink()
    doc = {
        "schema": MANIFEST_SCHEMA,
        "platform": str(ctx.platform),
        "mode": mode,
        "fips": ctx.fips,
        "binaries": entries,
    }
    if ctx.fips:  # which Go FIPS mode built them (--fips-go): the bundle records it for the runtime
        from fips.settings import load as load_fips_toolchain

        doc["fips_go"] = load_fips_toolchain().go_mode(ctx.options.get("opt_fips_go")).name
    write_atomic(manifest_path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
    return manifest_path
