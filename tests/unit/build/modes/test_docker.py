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
