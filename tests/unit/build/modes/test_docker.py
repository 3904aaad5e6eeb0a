"""build/modes/docker.py without an engine: names, dates, container commands and environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from build.errors import ComponentBuildError
from build.modes.docker import DockerMode, GoBuildEnv, build_date, go_exec_name
from build.recipes import load_recipe, load_recipes

REPO = Path(__file__).resolve().parents[4]


@pytest.mark.parametrize("path, name", [
    ("go.etcd.io/etcd/server/v3", "server"),
    ("github.com/containerd/containerd/v2/cmd/containerd", "containerd"),
    ("github.com/k3s-io/kine", "kine"),
    ("example.com/tool/v10", "tool"),
    ("example.com/v1", "v1"),  # v0/v1 are not major-version suffixes
    ("k8s.io/kubernetes/cmd/kube-apiserver", "kube-apiserver"),
])
def test_go_exec_name(path: str, name: str) -> None:
    assert go_exec_name(path) == name


def test_build_date_prefers_source_date_epoch() -> None:
    assert build_date(1700000000, "2026-09-23T17:07:00Z") == "2023-11-14T22:13:20Z"
    assert build_date(0, "2026-09-23T17:07:00Z") == "2026-09-23T17:07:00Z"
    assert build_date(None, "2026-09-23T19:07:00+02:00") == "2026-09-23T17:07:00Z"
    assert build_date(0, None) == "1970-01-01T00:00:00Z"


def _env(**kw) -> GoBuildEnv:
    base = dict(goos="linux", goarch="amd64", cgo=False, cc="x86_64-linux-gnu-gcc", tags=(), ldflags="-s -w",
                buildmode="", extra_env=(), build_date="2026-09-23T17:07:00Z")
    return GoBuildEnv(**{**base, **kw})


def test_container_env_is_offline_and_pinned() -> None:
    env = _env().container_env()
    assert env["GOPROXY"] == "off" and env["GOFLAGS"] == "-mod=mod" and env["GOTOOLCHAIN"] == "local"
    assert env["CGO_ENABLED"] == "0" and "CC" not in env
    assert env["SOURCE_DATE_EPOCH"] == "1790183220"  # 2026-09-23T17:07:00Z


def test_container_env_cross_cgo_uses_the_target_toolchain() -> None:
    env = _env(goarch="arm64", cgo=True, cc="aarch64-linux-gnu-gcc", extra_env=(("CGO_CFLAGS", "-DX=1"),)).container_env()
    assert env["CC"] == "aarch64-linux-gnu-gcc"
    assert env["PKG_CONFIG_LIBDIR"].startswith("/usr/lib/aarch64-linux-gnu/pkgconfig")
    assert env["CGO_CFLAGS"] == "-DX=1" and env["GOARCH"] == "arm64"


def test_fips_is_part_of_the_key() -> None:
    assert _env().as_key() != _env(fips=True).as_key()


def test_go_command_builds_all_packages_in_one_go_build() -> None:
    recipe = load_recipes(REPO / "recipes")["kubernetes"]
    cmd = DockerMode().command(recipe, _env(tags=("selinux", "notest"), ldflags="-s -w -X a.b=c"))
    assert cmd[:5] == ["go", "build", "-v", "-trimpath", "-buildvcs=false"]
    assert "-tags=selinux,notest" in cmd and "-ldflags=-s -w -X a.b=c" in cmd
    assert cmd[cmd.index("-o") + 1] == "/out/"
    pkgs = [a for a in cmd if a.startswith("k8s.io/kubernetes/cmd/")]
    assert len(pkgs) == len(recipe.binaries) == 6


def test_go_command_buildmode() -> None:
    recipe = load_recipes(REPO / "recipes")["runc"]
    cmd = DockerMode().command(recipe, _env(buildmode="pie"))
    assert "-buildmode=pie" in cmd


def test_c_command_compiles_and_strips(tmp_path: Path) -> None:
    recipe = load_recipes(REPO / "recipes")["pause"]
    cmd = DockerMode().command(recipe, _env(cgo=True, ldflags="-Os -static -DVERSION=v3.10.2"),
                               {"pause": "/gomod/k8s.io/kubernetes@v1.36.5/build/pause/linux/pause.c"})
    assert cmd[:2] == ["/bin/sh", "-ec"]
    script = cmd[2]
    assert "x86_64-linux-gnu-gcc -Os -static -DVERSION=v3.10.2" in script
    assert "-o /out/pause /gomod/k8s.io/kubernetes@v1.36.5/build/pause/linux/pause.c" in script
    assert "x86_64-linux-gnu-strip /out/pause" in script


def test_clashing_output_names_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "clash.toml"
    p.write_text("""
schema = 1
name = "clash"
version = "1.0.0"
license = "MIT"
homepage = "https://example.com"
[[binary]]
name = "a"
roles = ["worker"]
[[binary]]
name = "b"
roles = ["worker"]
[fetch]
available = false
reason = "test"
[source]
kind = "go"
module = "example.com/m"
version = "v1.0.0"
packages = { a = "example.com/m/x/server", b = "example.com/m/y/server" }
""")
    with pytest.raises(ComponentBuildError, match="both be written as 'server'"):
        DockerMode().command(load_recipe(p), _env())


def test_every_real_recipe_has_a_docker_build() -> None:
    for recipe in load_recipes(REPO / "recipes").values():
        assert recipe.source is not None, recipe.name
        if recipe.source.kind not in ("c", "debian"):  # debian: build/debsrc.py (tests/unit/build/test_debsrc.py)
            DockerMode().command(recipe, _env())  # no output-name clashes


def test_test_binaries_are_linked_by_go_test_c() -> None:
    recipe = load_recipe(REPO / "tests" / "recipes" / "good" / "testsuite.toml")
    cmd = DockerMode().command(recipe, _env(tags=("selinux",), ldflags="-s -w"))
    assert cmd[:2] == ["/bin/sh", "-ec"]
    steps = cmd[2].split(" && ")
    assert steps[0] == "mkdir -p /out"
    assert steps[1].startswith("go build -v -trimpath -buildvcs=false -tags=selinux") and steps[1].endswith(
        "-o /out/ example.com/suite/cmd/runner")
    # the test's dependencies are compiled first with `go build -v` (progress lines), same flags
    assert steps[2].startswith("go list -test -deps -tags=selinux -f ") and steps[2].endswith(
        "example.com/suite/e2e > /tmp/suite.test.deps")
    assert steps[3] == "xargs go build -v -trimpath -buildvcs=false -tags=selinux < /tmp/suite.test.deps"
    assert steps[4] == ("go test -c -trimpath -buildvcs=false -tags=selinux '-ldflags=-s -w' "
                        "-o /out/suite.test example.com/suite/e2e")


def test_tests_enter_the_action_key_only_when_set() -> None:
    from build.modes.docker import source_key

    suite = load_recipe(REPO / "tests" / "recipes" / "good" / "testsuite.toml")
    assert source_key(suite.source)["tests"] == (("suite.test", "example.com/suite/e2e"),)
    # recipes without test binaries keep the key they had before the field existed
    for recipe in load_recipes(REPO / "recipes").values():
        if recipe.source.kind != "debian":
            assert "tests" not in source_key(recipe.source), recipe.name


def test_conformance_suite_is_built_without_notest() -> None:
    recipe = load_recipes(REPO / "recipes" / "conformance")["kubernetes-e2e"]
    assert dict(recipe.source.tests) == {"e2e.test": "k8s.io/kubernetes/test/e2e"}
    assert dict(recipe.source.packages) == {"ginkgo": "github.com/onsi/ginkgo/v2/ginkgo"}
    assert "notest" not in recipe.source.tags and not recipe.source.cgo
    script = DockerMode().command(recipe, _env(tags=recipe.source.tags))[2]
    assert "go test -c" in script and "-o /out/e2e.test k8s.io/kubernetes/test/e2e" in script
