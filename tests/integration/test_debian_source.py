"""``kind = "debian"`` recipes end to end on a real engine, offline, with a fixture package.

tests/support/debpkg.py makes a tiny Debian source package (orig + debian tarballs with a
quilt patch, a .dsc) and a .deb carrying a header and a pkg-config file; a local HTTP
server serves them; a test lock pins every URL. The real path runs: download verified
against the lock and the .dsc, unpack with tarfile's data filter, the builder image
(recipes/builders/go-builder.toml), a ``--network=none`` container that patches,
configures, builds and installs, copy-out, the static-ELF check, the CAS, the manifest
(with the binary's links) and a cache hit on the second run. The output is then run in
an empty root (only the file, /proc, /dev, /sys) in its own mount namespace.
Needs a Docker engine and root (chroot, mount namespace; debootstrap on a first run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from build.cli import main
from mke.elf import ElfFile
from tests.support.debpkg import PATCH, lock_pins, make_packages, recipe_text
from tests.support.goproxy import docker_mode_env
from tests.support.mirror import MirrorServer

pytestmark = [pytest.mark.docker, pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    if os.geteuid() != 0:
        pytest.skip("needs root (chroot into an empty root)")
    base = docker_mode_env(tmp_path_factory, "debian-source", "example.com/mke-gohello")
    served = base["root"] / "served"
    files = make_packages(served / "debian" / "pool")
    with MirrorServer(served) as server:
        url = f"{server.url}/debian"
        recipes = base["root"] / "recipes"
        recipes.mkdir()
        (recipes / "mkehello.toml").write_text(recipe_text(url))
        lock = base["root"] / "debian.lock"
        lock.write_text(json.dumps({"schema": 1, "fetch": {}, "source": {}, "debian": {"mkehello": lock_pins(url, files)}}))
        yield {**base, "recipes": recipes, "lock": lock, "files": files, "url": url, "server": server}


def _build(env, *extra: str) -> int:
    return main(["build", "--mode=docker", "--recipes-dir", str(env["recipes"]), "--lock", str(env["lock"]),
                 "--cache-dir", str(env["cache"]), "--dist", str(env["dist"]), "--jobs", "1", *extra])


def _run_in_empty_root(binary: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``binary`` as /bin/<name> in a root holding nothing else (plus /proc, /dev, /sys)."""
    root = tmp / "root"
    (root / "bin").mkdir(parents=True)
    for d in ("proc", "dev", "sys"):
        (root / d).mkdir()
    shutil.copy2(binary, root / "bin" / binary.name)
    script = (f"mount -t proc proc {root}/proc && mount --rbind /dev {root}/dev && mount -t sysfs sysfs {root}/sys "
              f"&& exec chroot {root} /bin/{binary.name} \"$@\"")
    try:
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "--fork", "sh", "-ec", script, "sh", *args],
                              capture_output=True, text=True, timeout=60, check=False)
    finally:
        shutil.rmtree(root)  # the mounts lived in the namespace, gone with it


def test_debian_recipe_builds_static_from_verified_sources(env, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert _build(env) == 0
    assert "built=1 cached=0" in capsys.readouterr().err
    out = env["dist"] / "linux-amd64" / "bin" / "mkehello"
    info = ElfFile.open(out)
    assert info is not None and info.static
    proc = _run_in_empty_root(out, tmp_path)
    assert proc.returncode == 0, proc.stderr
    # the Debian patch was applied; the header came from the .deb's sysroot
    assert proc.stdout.splitlines() == ["mkehello 1.0 patched", "greetings from the sysroot"]
    manifest = json.loads((env["dist"] / "linux-amd64" / "manifest.json").read_text())
    entry = {e["name"]: e for e in manifest["binaries"]}["mkehello"]
    assert entry["links"] == ["mkehello-alias"]
    assert entry["source"] == [f"{env['url']}/pool/m/mkehello/mkehello_1.0-1.dsc",
                               f"{env['url']}/pool/m/mkegreet/mkegreet-dev_2.0-1_amd64.deb"]
    log = next((env["cache"] / "logs").glob("mkehello-*.log")).read_text()
    assert "patch -s -f --no-backup-if-mismatch -p1 -i debian/patches/say-patched.patch" in log
    assert _build(env) == 0
    assert "built=0 cached=1" in capsys.readouterr().err


def test_tampered_source_is_refused_before_any_build(env, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The server answers other bytes for the pinned debian tarball: refused, named, nothing cached."""
    evil = tmp_path / "evil"
    files = make_packages(evil / "debian" / "pool", patch=PATCH.replace("patched", "owned"))
    shutil.copyfile(env["files"]["dsc"], files["dsc"])  # the honest .dsc, a tampered tarball
    with MirrorServer(evil) as server:
        url = f"{server.url}/debian"
        recipes = tmp_path / "recipes"
        recipes.mkdir()
        (recipes / "mkehello.toml").write_text(recipe_text(url))
        lock = tmp_path / "lock"
        honest = {u.replace(env["url"], url): d for u, d in lock_pins(env["url"], env["files"]).items()}
        lock.write_text(json.dumps({"schema": 1, "fetch": {}, "source": {}, "debian": {"mkehello": honest}}))
        cache = tmp_path / "cache"
        rc = main(["build", "--mode=docker", "--recipes-dir", str(recipes), "--lock", str(lock),
                   "--cache-dir", str(cache), "--dist", str(tmp_path / "dist"), "--jobs", "1"])
    err = capsys.readouterr().err
    assert rc != 0
    line = [x for x in err.splitlines() if x.startswith("error:")][-1]
    assert "mkehello_1.0-1.debian.tar.xz" in line and "sha256" in line.lower(), line
    assert not list(cache.glob("ac/*.json"))
