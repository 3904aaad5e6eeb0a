"""build/gomod.py: go.sum hashes, pins, and the generated wrapper module."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from build.errors import RecipeError
from build.gomod import container_path, escape_path, module_zip_h1, pinned_sums, wrapper_gomod
from build.recipes import parse_recipe
from tests.support.goproxy import gomod_h1

# Reference values computed by `go mod download -json` (go1.26.11) for this exact module.
TINY_GOMOD = b"module example.com/tiny\n\ngo 1.22\n"
TINY_GO = b"package tiny\n\nconst X = 1\n"
TINY_H1 = "h1:QWHDPA8YZGg3XqBLnrNjEOw21hXdMqI+Lcf9gCHRvlE="
TINY_GOMOD_H1 = "h1:FCW/ymmRpSL5oj32CDIpKtNZQS+uw14S4wI+IXg34zs="


def test_module_zip_h1_matches_go(tmp_path: Path) -> None:
    z = tmp_path / "v1.0.0.zip"
    with zipfile.ZipFile(z, "w") as f:
        # order and zip metadata do not matter: h1 hashes sorted names and contents
        f.writestr("example.com/tiny@v1.0.0/tiny.go", TINY_GO)
        f.writestr("example.com/tiny@v1.0.0/go.mod", TINY_GOMOD)
    assert module_zip_h1(z) == TINY_H1


def test_module_zip_h1_changes_with_content(tmp_path: Path) -> None:
    z = tmp_path / "v1.0.0.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("example.com/tiny@v1.0.0/go.mod", TINY_GOMOD)
        f.writestr("example.com/tiny@v1.0.0/tiny.go", TINY_GO.replace(b"1", b"2"))
    assert module_zip_h1(z) != TINY_H1


def test_gomod_h1_matches_go() -> None:
    assert gomod_h1(TINY_GOMOD) == TINY_GOMOD_H1


@pytest.mark.parametrize("path, escaped", [
    ("github.com/Azure/go-autorest", "github.com/!azure/go-autorest"),
    ("k8s.io/kubernetes", "k8s.io/kubernetes"),
    ("github.com/BurntSushi/TOML", "github.com/!burnt!sushi/!t!o!m!l"),
])
def test_escape_path(path: str, escaped: str) -> None:
    assert escape_path(path) == escaped


def test_pinned_sums() -> None:
    lines = (
        f"example.com/tiny v1.0.0 {TINY_H1}",
        f"example.com/tiny v1.0.0/go.mod {TINY_GOMOD_H1}",
        "example.com/other v1.0.0 h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    )
    assert pinned_sums(lines, "example.com/tiny", "v1.0.0") == (TINY_H1, TINY_GOMOD_H1)
    assert pinned_sums(lines, "example.com/tiny", "v1.0.1") == (None, None)
    assert pinned_sums(lines, "example.com/other", "v1.0.0")[1] is None


def test_container_path(tmp_path: Path) -> None:
    f = tmp_path / "k8s.io" / "kubernetes@v1.36.5" / "build" / "pause" / "linux" / "pause.c"
    f.parent.mkdir(parents=True)
    f.write_text("int main(){}")
    assert container_path(tmp_path, f, "/gomod/") == "/gomod/k8s.io/kubernetes@v1.36.5/build/pause/linux/pause.c"


# ----------------------------------------------------------------------- wrapper module


def _recipe(source: dict, name: str = "comp", binaries: tuple[str, ...] = ()) -> object:
    data = {
        "schema": 1, "name": name, "version": "1.0.0", "license": "Apache-2.0", "homepage": "https://example.com",
        "binary": [{"name": b, "roles": ["worker"]} for b in binaries or source["packages"]],
        "fetch": {"available": False, "reason": "test"},
        "source": source,
    }
    return parse_recipe(Path(f"{name}.toml"), data)


def _req(*paths: str) -> list[dict]:
    return [{"Path": p, "Version": "v0.0.0"} for p in paths]


def test_wrapper_kubernetes_maps_staging_replaces_and_copies_godebug() -> None:
    recipe = _recipe({
        "kind": "kubernetes", "module": "k8s.io/kubernetes", "version": "v1.36.5", "staging_version": "v0.36.5",
        "packages": {"kubelet": "k8s.io/kubernetes/cmd/kubelet", "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy"},
    }, name="kubernetes")
    upstream = {
        "Go": "1.26.0",
        "_godebug": ["godebug default=go1.26"],
        "Require": _req("k8s.io/api", "k8s.io/client-go"),
        "Replace": [
            {"Old": {"Path": "k8s.io/api"}, "New": {"Path": "./staging/src/k8s.io/api"}},
            {"Old": {"Path": "k8s.io/client-go"}, "New": {"Path": "./staging/src/k8s.io/client-go"}},
        ],
    }
    text = wrapper_gomod(recipe, upstream)
    assert "module mke.build/kubernetes\n" in text
    assert "\ngo 1.26.0\n" in text
    assert "\ngodebug default=go1.26\n" in text
    assert "require k8s.io/kubernetes v1.36.5\n" in text
    assert "\tk8s.io/api => k8s.io/api v0.36.5\n" in text
    assert "\tk8s.io/client-go => k8s.io/client-go v0.36.5\n" in text
    # tools sorted, one per package
    assert "tool (\n\tk8s.io/kubernetes/cmd/kube-proxy\n\tk8s.io/kubernetes/cmd/kubelet\n)" in text
    assert "./staging" not in text


def test_wrapper_drops_guard_replaces_and_uses_local_replace_version() -> None:
    recipe = _recipe({
        "kind": "go", "module": "go.etcd.io/etcd/server/v3", "version": "v3.6.16",
        "local_replace_version": "v3.6.16", "packages": {"etcd": "go.etcd.io/etcd/server/v3"},
    })
    upstream = {
        "Go": "1.26.0",
        "Require": _req("go.etcd.io/etcd/api/v3"),
        "Replace": [
            {"Old": {"Path": "go.etcd.io/etcd/api/v3"}, "New": {"Path": "../api"}},
            {"Old": {"Path": "go.etcd.io/etcd"}, "New": {"Path": "./FORBIDDEN_DEPENDENCY"}},
        ],
    }
    text = wrapper_gomod(recipe, upstream)
    assert "\tgo.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 v3.6.16\n" in text
    assert "FORBIDDEN" not in text and "go.etcd.io/etcd =>" not in text


def test_wrapper_copies_module_replaces_and_recipe_replaces() -> None:
    recipe = _recipe({
        "kind": "go", "module": "github.com/k3s-io/kine", "version": "v0.16.6",
        "packages": {"kine": "github.com/k3s-io/kine"}, "replace": {"golang.org/x/net": "v0.50.0"},
    })
    upstream = {
        "Go": "1.26.10",
        "Require": _req("go.etcd.io/etcd/api/v3"),
        "Replace": [
            {"Old": {"Path": "go.etcd.io/etcd/api/v3"}, "New": {"Path": "go.etcd.io/etcd/api/v3", "Version": "v3.6.13"}},
            {"Old": {"Path": "example.com/x", "Version": "v1.0.0"}, "New": {"Path": "example.com/y", "Version": "v1.0.1"}},
        ],
    }
    text = wrapper_gomod(recipe, upstream)
    assert "\tgo.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 v3.6.13\n" in text
    assert "\texample.com/x v1.0.0 => example.com/y v1.0.1\n" in text
    assert "\tgolang.org/x/net => golang.org/x/net v0.50.0\n" in text
    assert "godebug" not in text


def test_wrapper_without_replaces_has_no_replace_block() -> None:
    recipe = _recipe({"kind": "go", "module": "example.com/a", "version": "v1.0.0", "packages": {"a": "example.com/a"}})
    text = wrapper_gomod(recipe, {"Go": "1.22", "Require": [], "Replace": None})
    assert "replace" not in text
    assert text == wrapper_gomod(recipe, {"Go": "1.22", "Require": [], "Replace": None})  # deterministic


def test_wrapper_local_replace_without_version_names_the_field() -> None:
    recipe = _recipe({"kind": "go", "module": "sigs.k8s.io/apiserver-network-proxy", "version": "v0.36.0",
                      "packages": {"server": "sigs.k8s.io/apiserver-network-proxy/cmd/server"}})
    upstream = {
        "Go": "1.26.2",
        "Require": _req("sigs.k8s.io/apiserver-network-proxy/konnectivity-client"),
        "Replace": [{"Old": {"Path": "sigs.k8s.io/apiserver-network-proxy/konnectivity-client"},
                     "New": {"Path": "./konnectivity-client"}}],
    }
    with pytest.raises(RecipeError, match=r"comp.toml: source.local_replace_version: .*konnectivity-client"):
        wrapper_gomod(recipe, upstream)


@pytest.mark.parametrize("source, message", [
    ({"kind": "kubernetes", "local_replace_version": "v1.0.0", "staging_version": "v0.1.0"},
     r"source.local_replace_version: only allowed for kind = \"go\""),
    ({"kind": "go", "local_replace_version": "1.0.0"}, r"source.local_replace_version: a Go module version starts with 'v'"),
    ({"kind": "go", "replace": {"example.com/b": "1.0"}}, r"source.replace.example.com/b: a Go module version starts"),
    ({"kind": "go", "buildmode": "shared"}, r"source.buildmode: expected one of exe, pie"),
    ({"kind": "c", "buildmode": "pie"}, r"source.buildmode: not allowed for kind = \"c\""),
])
def test_source_fields_for_wrappers_are_validated(source: dict, message: str) -> None:
    base = {"module": "example.com/a", "version": "v1.0.0", "packages": {"a": "example.com/a"}}
    with pytest.raises(RecipeError, match=message):
        _recipe({**base, **source})


def test_wrapper_lists_test_packages_as_tools_so_their_module_stays_required() -> None:
    from build.gomod import list_groups

    recipe = _recipe({"kind": "go", "module": "example.com/a", "version": "v1.0.0",
                      "packages": {"a": "example.com/a/cmd/a"}, "tests": {"a.test": "example.com/a/e2e"}},
                     binaries=("a", "a.test"))
    text = wrapper_gomod(recipe, {"Go": "1.22", "Require": [], "Replace": None})
    assert "tool (\n\texample.com/a/cmd/a\n\texample.com/a/e2e\n)" in text
    assert list_groups(recipe.source) == [(False, ["example.com/a/cmd/a"]), (True, ["example.com/a/e2e"])]


# ----------------------------------------------------------------------- [[source.patch]]

MODULE_FILE = "package a\n\nconst Greeting = \"hello\"\n"
PATCH = """mke: greet differently (a header before the diff, as the real patches carry)

diff --git a/greeting.go b/greeting.go
--- a/greeting.go
+++ b/greeting.go
@@ -1,3 +1,3 @@
 package a
 
-const Greeting = "hello"
+const Greeting = "patched"
"""


def _patched_recipe(tmp_path: Path, patch_text: str = PATCH, **override: object) -> object:
    import hashlib

    (tmp_path / "patches").mkdir(exist_ok=True)
    (tmp_path / "patches" / "0001.patch").write_text(patch_text)
    entry = {"file": "patches/0001.patch", "sha256": hashlib.sha256(patch_text.encode()).hexdigest(),
             "reason": "test", **override}
    data = {
        "schema": 1, "name": "comp", "version": "1.0.0", "license": "Apache-2.0", "homepage": "https://example.com",
        "binary": [{"name": "a", "roles": ["worker"]}], "fetch": {"available": False, "reason": "test"},
        "source": {"kind": "go", "module": "example.com/a", "version": "v1.0.0", "packages": {"a": "example.com/a"},
                   "patch": [entry]},
    }
    return parse_recipe(tmp_path / "comp.toml", data)


@pytest.mark.parametrize("override, message", [
    ({"file": "../outside.patch"}, r"comp.toml: source.patch\[0\].file: '../outside.patch' must be a relative path"),
    ({"file": "patches/missing.patch"}, r"comp.toml: source.patch\[0\].file: cannot read .*missing.patch"),
    ({"sha256": "0" * 64}, r"comp.toml: source.patch\[0\].sha256: patches/0001.patch has sha256 [0-9a-f]{64}, "
                           r"the recipe pins 0{64}; review the patch, then pin its new digest"),
    ({"sha256": "ABC"}, r"source.patch\[0\].sha256: expected 64 lowercase hex digits"),
    ({"reason": "  "}, r"source.patch\[0\].reason: must not be empty"),
    ({"extra": 1}, r"source.patch\[0\].extra: unknown key \(allowed: file, reason, sha256\)"),
])
def test_a_bad_patch_entry_is_one_line_naming_its_field(tmp_path: Path, override: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message) as e:
        _patched_recipe(tmp_path, **override)
    assert "\n" not in str(e.value)


def test_patches_only_for_go_sources(tmp_path: Path) -> None:
    data = {
        "schema": 1, "name": "comp", "version": "1.0.0", "license": "Apache-2.0", "homepage": "https://example.com",
        "binary": [{"name": "a", "roles": ["worker"]}], "fetch": {"available": False, "reason": "test"},
        "source": {"kind": "c", "module": "example.com/a", "version": "v1.0.0", "packages": {"a": "a.c"},
                   "patch": [{"file": "p", "sha256": "0" * 64, "reason": "r"}]},
    }
    with pytest.raises(RecipeError, match=r"source.patch: only allowed for Go sources"):
        parse_recipe(tmp_path / "comp.toml", data)


def test_wrapper_replaces_a_patched_module_with_its_copy(tmp_path: Path) -> None:
    recipe = _patched_recipe(tmp_path)
    text = wrapper_gomod(recipe, {"Go": "1.22", "Require": [], "Replace": None}, "patched")
    assert "replace (\n\texample.com/a v1.0.0 => ./patched\n)" in text
    assert "require example.com/a v1.0.0" in text


def _module(tmp_path: Path) -> Path:
    mod = tmp_path / "modcache" / "example.com" / "a@v1.0.0"
    mod.mkdir(parents=True)
    (mod / "greeting.go").write_text(MODULE_FILE)
    (mod / "greeting.go").chmod(0o444)  # as Go leaves its module cache
    mod.chmod(0o555)
    return mod


def test_apply_patches_changes_a_copy_and_never_the_module_cache(tmp_path: Path) -> None:
    import subprocess

    from build.gomod import apply_patches

    recipe = _patched_recipe(tmp_path)
    mod = _module(tmp_path)
    # the copy sits inside a git work tree (a cache under the repository): git must not apply
    # the patch relative to that repository's root
    work = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    dest = work / "cache" / "src" / "patched"
    apply_patches(recipe, mod, dest)
    assert (dest / "greeting.go").read_text() == MODULE_FILE.replace('"hello"', '"patched"')
    assert (mod / "greeting.go").read_text() == MODULE_FILE
    assert not (work / "greeting.go").exists()
    apply_patches(recipe, mod, dest)  # again (a retried build): from a fresh copy, not patched twice
    assert (dest / "greeting.go").read_text() == MODULE_FILE.replace('"hello"', '"patched"')
    mod.chmod(0o755)


def test_a_patch_that_does_not_apply_names_the_recipe_field_and_the_version(tmp_path: Path) -> None:
    from build.errors import ComponentBuildError
    from build.gomod import apply_patches

    recipe = _patched_recipe(tmp_path, PATCH.replace('-const Greeting = "hello"', '-const Greeting = "bonjour"'))
    mod = _module(tmp_path)
    with pytest.raises(ComponentBuildError, match=r"comp.toml: source.patch\[0\]: patches/0001.patch does not apply to "
                                                  r"example.com/a@v1.0.0: .*; update the patch for this version") as e:
        apply_patches(recipe, mod, tmp_path / "src" / "patched")
    assert "\n" not in str(e.value)
    mod.chmod(0o755)


def test_a_patch_changed_after_loading_is_refused_before_it_is_applied(tmp_path: Path) -> None:
    from build.gomod import apply_patches

    recipe = _patched_recipe(tmp_path)
    (tmp_path / "patches" / "0001.patch").write_text(PATCH.replace("patched", "evil"))
    mod = _module(tmp_path)
    with pytest.raises(RecipeError, match=r"source.patch\[0\].sha256: patches/0001.patch has sha256"):
        apply_patches(recipe, mod, tmp_path / "src" / "patched")
    assert not (tmp_path / "src" / "patched" / "greeting.go").exists() or \
        (tmp_path / "src" / "patched" / "greeting.go").read_text() == MODULE_FILE
    mod.chmod(0o755)
