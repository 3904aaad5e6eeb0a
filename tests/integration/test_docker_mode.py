"""docker mode end to end on a real engine, with a small Go program and a small C program.

The program (tests/support/gohello) is published as a module in a Go module proxy on
disk (GOPROXY=file://...), pinned by its go.sum lines in a test recipes.lock, and built
through the whole path: builder image (built once per machine from
recipes/builders/go-builder.toml, then reused by its tag), host-side ``go mod download``
verified by the pins, ``--network=none`` container build with the module cache mounted
read-only, copy-out with get_archive, static-ELF and ``--version`` checks, the CAS, and a
cache hit on the second run. Needs a Docker engine, root (debootstrap, first run only)
and the Debian archive and Go module proxy for the builder image's first build.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from build.cli import main
from build.platform import Platform
from mke.elf import ElfFile
from tests.support.goproxy import docker_mode_env, publish

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "tests" / "recipes" / "docker"
MODULE = "example.com/mke-gohello"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return docker_mode_env(tmp_path_factory, "docker-mode", MODULE)


def _build(env: dict[str, Path], *extra: str, recipes: Path = RECIPES) -> int:
    return main(["build", "--mode=docker", "--recipes-dir", str(recipes), "--lock", str(env["lock"]),
                 "--cache-dir", str(env["cache"]), "--dist", str(env["dist"]), "--jobs", "2",
                 "--go-cache-volume", "mke-test-go-build-cache", *extra])


def test_docker_build_then_cache_hit(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GOPROXY", f"file://{env['proxy']}")
    assert _build(env) == 0
    err = capsys.readouterr().err
    assert "built=2 cached=0" in err
    bindir = env["dist"] / "linux-amd64" / "bin"
    for name in ("gohello", "gohello-tool", "chello"):
        info = ElfFile.open(bindir / name)
        assert info is not None and info.static and info.machine == Platform.parse("amd64").elf_machine, name
    out = subprocess.run([str(bindir / "gohello"), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "gohello version v1.2.3 linux/amd64"
    assert subprocess.run([str(bindir / "chello"), "-v"], capture_output=True, text=True).stdout.strip() == "chello v1.2.3"
    # go version -m: -trimpath, no VCS stamping, the module at its pinned hash
    go = next((env["cache"] / "toolchains").glob("go*/bin/go"))
    meta = subprocess.run([str(go), "version", "-m", str(bindir / "gohello")], capture_output=True, text=True, check=True).stdout
    assert "-trimpath=true" in meta and "CGO_ENABLED=0" in meta and "vcs." not in meta
    assert f"{MODULE}\tv1.2.3\th1:" in meta
    logs = sorted((env["cache"] / "logs").glob("gohello-*.log"))
    assert logs and "command: go build" in logs[0].read_text()
    manifest = json.loads((env["dist"] / "linux-amd64" / "manifest.json").read_text())
    assert {e["name"]: e["source"] for e in manifest["binaries"]}["gohello"] == f"{MODULE}@v1.2.3"

    # second run: every action is a cache hit, nothing runs in a container
    assert _build(env) == 0
    assert "built=0 cached=2" in capsys.readouterr().err


def test_tampered_module_is_refused(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A proxy serving different bytes for a pinned version fails verification before any build."""
    proxy = tmp_path / "evil-proxy"
    src = tmp_path / "src"
    shutil.copytree(REPO / "tests" / "support" / "gohello", src)
    (src / "main.go").write_text((src / "main.go").read_text().replace("hello from", "owned by"))
    publish(proxy, src, MODULE, "v1.2.4")
    # pins of v1.2.3 but the proxy (and a fresh module cache) have other bytes for v1.2.4
    lines = [line.replace("v1.2.3", "v1.2.4") for line in json.loads(env["lock"].read_text())["source"]["gohello"]]
    lock = tmp_path / "recipes.lock"
    lock.write_text(json.dumps({"schema": 1, "fetch": {}, "source": {"gohello": lines}}))
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "gohello.toml").write_text((RECIPES / "gohello.toml").read_text().replace('"v1.2.3"', '"v1.2.4"'))
    monkeypatch.setenv("GOPROXY", f"file://{proxy}")
    rc = main(["build", "--mode=docker", "--recipes-dir", str(recipes), "--lock", str(lock), "--cache-dir",
               str(tmp_path / "cache"), "--dist", str(tmp_path / "dist"), "--go-cache-volume", "mke-test-go-build-cache"])
    err = capsys.readouterr().err
    assert rc != 0
    assert "hash is h1:" in err and "recipes.lock pins" in err
    assert not (tmp_path / "dist" / "linux-amd64" / "bin" / "gohello").exists()


def test_failed_build_shows_log_tail_and_path(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    # an ldflag the linker rejects: the container build fails
    (recipes / "gohello.toml").write_text(
        (RECIPES / "gohello.toml").read_text().replace('"-s", "-w"', '"-s", "-w", "-no-such-linker-flag"'))
    monkeypatch.setenv("GOPROXY", f"file://{env['proxy']}")
    rc = _build({**env, "dist": tmp_path / "dist"}, recipes=recipes)
    err = capsys.readouterr().err
    assert rc == 10  # ComponentBuildError
    assert "[gohello] | " in err and "no-such-linker-flag" in err
    assert "build failed (exit" in err and "full log: " in err
    log_path = Path(err.split("full log: ")[1].split()[0])
    assert log_path.is_file()
    # no cache entry for the failed action
    assert not any("no-such-linker-flag" in p.read_text() for p in (env["cache"] / "ac").glob("*.json"))


def test_patched_build_runs_the_patched_source(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """[[source.patch]]: the verified module is copied, patched with git apply and built from the
    copy (the pins stay upstream's); the binary says so in its build info, the manifest names
    the patch, and the action key differs from the unpatched build's."""
    import difflib
    import hashlib

    original = (REPO / "tests" / "support" / "gohello" / "main.go").read_text()
    changed = original.replace("hello from mke's docker mode", "hello from a patched module")
    patch = "gohello: say it is patched\n\n" + "".join(difflib.unified_diff(
        original.splitlines(keepends=True), changed.splitlines(keepends=True), "a/main.go", "b/main.go"))
    recipes = tmp_path / "recipes"
    (recipes / "patches").mkdir(parents=True)
    (recipes / "patches" / "0001-say.patch").write_text(patch)
    (recipes / "gohello.toml").write_text((RECIPES / "gohello.toml").read_text() + f"""
[[source.patch]]
file = "patches/0001-say.patch"
sha256 = "{hashlib.sha256(patch.encode()).hexdigest()}"
reason = "the test's change"
""")
    monkeypatch.setenv("GOPROXY", f"file://{env['proxy']}")
    dist = tmp_path / "dist"
    assert _build({**env, "dist": dist}, recipes=recipes) == 0
    assert "built=1 cached=0" in capsys.readouterr().err  # not the unpatched build's cache entry
    binary = dist / "linux-amd64" / "bin" / "gohello"
    assert subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout.strip() == \
        "hello from a patched module"
    go = next((env["cache"] / "toolchains").glob("go*/bin/go"))
    meta = subprocess.run([str(go), "version", "-m", str(binary)], capture_output=True, text=True, check=True).stdout
    assert f"{MODULE}\tv1.2.3" in meta and "=>\t./patched\t(devel)" in meta  # the build info shows the replacement
    manifest = json.loads((dist / "linux-amd64" / "manifest.json").read_text())
    entry = {e["name"]: e for e in manifest["binaries"]}["gohello"]
    assert entry["source"] == f"{MODULE}@v1.2.3"
    assert entry["patches"] == [f"patches/0001-say.patch (sha256 {hashlib.sha256(patch.encode()).hexdigest()}): "
                                "the test's change"]
    # a patch that no longer applies: one line naming the field, nothing cached or written
    (recipes / "patches" / "0001-say.patch").write_text(patch.replace("hello from mke", "bonjour de mke"))
    text = (recipes / "gohello.toml").read_text()
    digest = hashlib.sha256((recipes / "patches" / "0001-say.patch").read_bytes()).hexdigest()
    (recipes / "gohello.toml").write_text(text[:text.index('sha256 = "')] + f'sha256 = "{digest}"\n'
                                          + 'reason = "the test\'s change"\n')
    dist2 = tmp_path / "dist2"
    assert _build({**env, "dist": dist2}, recipes=recipes) == 10
    err = capsys.readouterr().err
    assert "gohello.toml: source.patch[0]: patches/0001-say.patch does not apply to example.com/mke-gohello@v1.2.3" in err
    assert not (dist2 / "linux-amd64" / "bin" / "gohello").exists()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))


def test_lock_update_takes_the_newest_patch_pins_it_and_the_build_uses_it(
        env: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    """`lock --update` against a proxy whose list is incomplete: v1.2.5 is served, not listed;
    the recipes move to it (chello too: the same module), recipes.lock gets its go.sum lines
    from the builder's Go, and the next build makes v1.2.5 binaries."""
    proxy = tmp_path / "proxy"
    shutil.copytree(env["proxy"], proxy)
    publish(proxy, REPO / "tests" / "support" / "gohello", MODULE, "v1.2.5")
    (proxy / MODULE / "@v" / "list").write_text("v1.2.3\n")
    recipes = tmp_path / "recipes"
    shutil.copytree(RECIPES, recipes)
    lock = tmp_path / "recipes.lock"
    shutil.copy2(env["lock"], lock)
    monkeypatch.setenv("GOPROXY", f"file://{proxy}")
    monkeypatch.setenv("GONOSUMDB", MODULE)  # a test module: no checksum database knows it
    monkeypatch.setenv("MKE_CACHE_DIR", str(env["cache"]))
    assert main(["lock", "--update", "--source-only", "--recipes-dir", str(recipes), "--lock", str(lock)]) == 0
    out = capsys.readouterr().out
    assert "gohello    example.com/mke-gohello  v1.2.3  v1.2.5  patch" in out
    assert "chello     example.com/mke-gohello  v1.2.3  v1.2.5  patch" in out
    pins = json.loads(lock.read_text())["source"]
    assert any(line.startswith(f"{MODULE} v1.2.5 h1:") for line in pins["gohello"]), pins["gohello"]
    assert 'version = "v1.2.5"' in (recipes / "gohello.toml").read_text()
    dist = tmp_path / "dist"
    assert main(["build", "--mode=docker", "--recipes-dir", str(recipes), "--lock", str(lock),
                 "--cache-dir", str(env["cache"]), "--dist", str(dist), "--jobs", "2",
                 "--go-cache-volume", "mke-test-go-build-cache"]) == 0
    out = subprocess.run([str(dist / "linux-amd64" / "bin" / "gohello"), "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "gohello version v1.2.5 linux/amd64"
    # and again: nothing newer
    assert main(["lock", "--update", "--source-only", "--recipes-dir", str(recipes), "--lock", str(lock)]) == 0
    assert "nothing to change" in capsys.readouterr().out
