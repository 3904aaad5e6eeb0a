"""``--check-reproducible``: build the same recipes again from clean state and compare digests.

The second build gets a fresh cache root (empty action cache and CAS) and, in docker
mode, a fresh Go build cache volume, so every binary is compiled again from nothing.
Pinned inputs that are not build outputs are shared with the first build rather than
downloaded again: the Go module cache (every module is verified against go.sum) and the
host Go toolchain (verified against its pins). The builder image is the same image.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from build.cache import Cache
from build.errors import VerificationError
from build.modes import get_mode
from build.modes.base import BuildContext
from build.pipeline import ComponentResult, build_all
from build.progress import log
from build.recipes import Recipe

SHARED_INPUTS = ("gomod", "toolchains", "debootstrap")


def check_reproducible(ctx: BuildContext, mode_name: str, recipes: list[Recipe],
                       first: list[ComponentResult]) -> list[tuple[str, str, str]]:
    """Rebuild ``recipes`` from clean state; print the table; raise if any binary differs.

    Returns rows (binary, first sha256, second sha256).
    """
    mode = get_mode(mode_name)
    if not mode.embeds:
        return []
    tmp_root = Path(tempfile.mkdtemp(prefix="repro-", dir=ctx.cache.root / "tmp"))
    volume = f"mke-go-build-cache-repro-{uuid.uuid4().hex[:12]}"
    try:
        for name in SHARED_INPUTS:
            src = ctx.cache.root / name
            if src.exists():
                os.symlink(src.resolve(), tmp_root / name)
        ctx2 = dataclasses.replace(ctx, cache=Cache(tmp_root), options={**ctx.options, "opt_go_cache_volume": volume})
        log("reproducible", f"second clean build in {tmp_root} (Go build cache volume {volume})")
        second = build_all(ctx2, mode, recipes)
    finally:
        if mode_name == "docker":
            from build.docker_engine import DockerEngine

            with contextlib.suppress(Exception):
                DockerEngine.connect().remove_volume(volume)
        for name in SHARED_INPUTS:
            with contextlib.suppress(FileNotFoundError):
                (tmp_root / name).unlink()
        shutil.rmtree(tmp_root, ignore_errors=True)
    rows: list[tuple[str, str, str]] = []
    by_name = {r.recipe.name: r for r in second}
    for res in first:
        if res.result is None:
            continue
        other = by_name[res.recipe.name].result
        assert other is not None
        for out in res.result.outputs:
            rows.append((out.name, out.sha256, other.output(out.name).sha256))
    width = max((len(r[0]) for r in rows), default=6)
    print(f"{'BINARY'.ljust(width)}  {'FIRST BUILD SHA256'.ljust(64)}  SAME", file=sys.stderr)
    for name, a, b in rows:
        print(f"{name.ljust(width)}  {a}  {'yes' if a == b else 'NO: ' + b}", file=sys.stderr)
    differ = [name for name, a, b in rows if a != b]
    if differ:
        raise VerificationError(f"not reproducible: {len(differ)} of {len(rows)} binaries differ in a clean rebuild "
                                f"({', '.join(differ)})")
    log("reproducible", f"all {len(rows)} binaries identical in a clean rebuild")
    return rows
