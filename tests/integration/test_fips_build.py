"""`build --mode=docker --fips` end to end on a real engine with the small test recipes.

The same path as tests/integration/test_docker_mode.py (module proxy on disk, builder image,
hermetic container build), with the FIPS toolchain: the Go build gets GOFIPS140=v1.0.0, its
cache key differs from the non-FIPS build, the build's FIPS step writes fips-report.json,
and a binary that cannot prove it is FIPS (here the C test program, which is not exempt)
fails the build with a message naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from build.cli import main
from mke.fips.binary import inspect_binary
from mke.fips.policy import evaluate, runtime_policy
from tests.support.goproxy import docker_mode_env

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "tests" / "recipes" / "docker"
MODULE = "example.com/mke-gohello"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return docker_mode_env(tmp_path_factory, "fips-build", MODULE)


def _build(env: dict[str, Path], dist: Path, *extra: str) -> int:
    return main(["build", "--mode=docker", "--recipes-dir", str(RECIPES), "--lock", str(env["lock"]),
                 "--cache-dir", str(env["cache"]), "--dist", str(dist), "--jobs", "1",
                 "--go-cache-volume", "mke-test-go-build-cache", *extra])


def test_fips_build_verifies_and_keys_apart(env, monkeypatch, capsys):
    monkeypatch.setenv("GOPROXY", f"file://{env['proxy']}")
    assert _build(env, env["root"] / "dist-plain", "--component", "gohello") == 0
    capsys.readouterr()
    dist = env["root"] / "dist-fips"
    assert _build(env, dist, "--component", "gohello", "--fips") == 0
    err = capsys.readouterr().err
    assert "built=1 cached=0" in err  # never the non-FIPS entry
    out = dist / "linux-amd64"
    report = json.loads((out / "fips-report.json").read_text())
    assert report["ok"] and report["fips_build"] and report["go_mode"] == "native"
    facts = inspect_binary(out / "bin" / "gohello")
    assert facts.buildinfo.setting("GOFIPS140").startswith("v1.0.0-")
    assert facts.buildinfo.default_godebug["fips140"] == "on"
    assert "-trimpath" in facts.buildinfo.setting("-trimpath") or facts.buildinfo.setting("-trimpath") == "true"
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["fips"] is True and doc["fips_go"] == "native"  # the bundle's payload records it (issue 17 item 3)
    # the non-FIPS output of the same recipe fails the same check
    plain = evaluate(inspect_binary(env["root"] / "dist-plain" / "linux-amd64" / "bin" / "gohello"),
                     runtime_policy())
    assert not plain.ok


def test_fips_build_fails_naming_an_unprovable_binary(env, monkeypatch, capsys):
    monkeypatch.setenv("GOPROXY", f"file://{env['proxy']}")
    assert _build(env, env["root"] / "dist-fips-c", "--fips") == 11
    err = capsys.readouterr().err
    assert "FIPS check failed for" in err and "chello: not a Go binary" in err
