"""build/recipes.py: the real recipes load, good fixtures load, bad fixtures fail with one exact line."""

from __future__ import annotations

from pathlib import Path

import pytest

from build.errors import RecipeError
from build.recipes import load_recipe, load_recipes

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "recipes"
BAD = sorted((FIXTURES / "bad").glob("*.toml"))


def test_real_recipes_cover_every_embedded_binary():
    recipes = load_recipes(REPO / "recipes")
    binaries = {b for r in recipes.values() for b in r.binary_names}
    assert {
        "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl",
        "etcd", "kine", "konnectivity-server", "konnectivity-agent", "containerd", "containerd-shim-runc-v2",
        "runc", "bridge", "host-local", "loopback", "portmap", "pause",
        # issue 12: the default network provider and the host userland it and kubelet execute
        "kube-router", "xtables-nft-multi", "xtables-legacy-multi", "ipset", "mount", "umount",
        # issue 19: what an operator runs against a worker (mke crictl)
        "crictl",
    } <= binaries
    links = {n for r in recipes.values() for b in r.binaries for n in b.links}
    assert {f"{t}-{f}{s}" for t in ("iptables", "ip6tables") for f in ("nft", "legacy") for s in ("", "-save", "-restore")} == links
    assert recipes["kubernetes"].version.startswith("1.37.")
    assert recipes["etcd"].version.startswith("3.7.")
    assert recipes["kine"].version.startswith("0.17.")
    assert recipes["konnectivity"].version.startswith("0.36.")
    assert recipes["containerd"].version.startswith("2.")
    # konnectivity has no official binaries: source-only, and it says why.
    assert recipes["konnectivity"].modes() == ("docker", "none")
    assert "container images" in recipes["konnectivity"].fetch.reason
    for r in recipes.values():
        assert r.source is not None, f"{r.name} must be buildable from source"


@pytest.mark.parametrize("path", sorted((FIXTURES / "good").glob("*.toml")), ids=lambda p: p.stem)
def test_good_fixtures_load(path: Path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    assert recipe.binaries


def test_good_fixture_fields():
    r = load_recipe(FIXTURES / "good" / "perbinary.toml")
    assert r.fetch.arch_name("amd64") == "x86_64"
    assert r.fetch.artifacts[0].per_binary
    so = load_recipe(FIXTURES / "good" / "sourceonly.toml")
    assert so.source.cgo and so.source.tags == ("netgo",)
    assert [b.name for b in so.binaries_for_role("controller")] == ["so-server"]


def _expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path} lacks an '# expect:' line"
    return first.removeprefix("# expect: ")


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_fixture_fails_with_one_line(path: Path):
    with pytest.raises(RecipeError) as exc:
        load_recipe(path)
    message = str(exc.value)
    assert "\n" not in message
    assert message == f"{path.parent}/{_expected(path)}"


def test_bad_fixtures_exist():
    assert len(BAD) >= 10


def test_duplicate_binary_across_recipes(tmp_path: Path):
    good = (FIXTURES / "good" / "hello.toml").read_text()
    (tmp_path / "hello.toml").write_text(good)
    (tmp_path / "hello2.toml").write_text(good.replace('name = "hello"\nversion', 'name = "hello2"\nversion'))
    with pytest.raises(RecipeError, match="binary 'hello' is also provided by recipe 'hello'"):
        load_recipes(tmp_path)


def test_missing_directory(tmp_path: Path):
    with pytest.raises(RecipeError, match="recipes directory not found"):
        load_recipes(tmp_path / "nope")
