"""recipes/bench/: the tools the benchmarks build from source (not embedded in dist/mke):
kwok for the scale benchmark (issue 18), pinned like every other recipe."""

from __future__ import annotations

from pathlib import Path

from build.lockfile import Lockfile
from build.recipes import load_recipes

BENCH = Path(__file__).resolve().parents[3] / "recipes" / "bench"


def test_kwok_is_built_from_its_pinned_module():
    recipes = load_recipes(BENCH)
    kwok = recipes["kwok"]
    assert kwok.source.module == "sigs.k8s.io/kwok" and kwok.source.version == f"v{kwok.version}"
    assert kwok.modes() == ("docker", "none") and [b.roles for b in kwok.binaries] == [("test",)]
    lines = Lockfile.load(BENCH / "recipes.lock").gosum("kwok")
    assert f"sigs.k8s.io/kwok v{kwok.version}/go.mod h1:" in "\n".join(lines)
