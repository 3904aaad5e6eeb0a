"""A Go module proxy on disk (``GOPROXY=file:///...``) holding modules made from test sources.

``publish`` lays out ``<root>/<module>/@v/{list,<v>.info,<v>.mod,<v>.zip}`` exactly as the
GOPROXY protocol does, and returns the go.sum lines (``h1:``) of what it published, so
tests can pin them in a recipes.lock and exercise the real ``go mod download`` path
without any network.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path

from build.gomod import escape_path, module_zip_h1

FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def gomod_h1(gomod: bytes) -> str:
    line = f"{hashlib.sha256(gomod).hexdigest()}  go.mod\n".encode()
    return "h1:" + base64.b64encode(hashlib.sha256(line).digest()).decode()


def publish(root: Path, source: Path, module: str, version: str, *, time: str = "2026-01-02T03:04:05Z") -> tuple[str, str]:
    """Publish the module in ``source`` as ``module@version`` under ``root``; return its two go.sum lines."""
    vdir = root / escape_path(module) / "@v"
    vdir.mkdir(parents=True, exist_ok=True)
    gomod = (source / "go.mod").read_bytes()
    prefix = f"{module}@{version}/"
    zpath = vdir / f"{version}.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(p for p in source.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(prefix + f.relative_to(source).as_posix(), date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, f.read_bytes())
    (vdir / f"{version}.mod").write_bytes(gomod)
    (vdir / f"{version}.info").write_text(json.dumps({"Version": version, "Time": time}))
    listing = vdir / "list"
    versions = set(listing.read_text().split()) if listing.exists() else set()
    listing.write_text("".join(f"{v}\n" for v in sorted(versions | {version})))
    return (f"{module} {version} {module_zip_h1(zpath)}", f"{module} {version}/go.mod {gomod_h1(gomod)}")


def docker_mode_env(tmp_path_factory, name: str, module: str) -> dict[str, Path]:
    """A docker-mode test setup: a Docker engine (skip, or fail under CI, without one), the
    gohello module published on a file GOPROXY, a lock pinning it, and a cache whose Go
    toolchain download is shared across runs on one machine (it is verified on use)."""
    import json
    import os

    import pytest

    try:
        from build.docker_engine import DockerEngine

        DockerEngine.connect(timeout=10)
    except Exception:  # noqa: BLE001 - any failure means no usable engine
        if os.environ.get("CI"):
            pytest.fail("CI must provide a Docker engine (scripts/bootstrap.sh starts dockerd)")
        pytest.skip("no Docker engine (start dockerd)")
    repo = Path(__file__).resolve().parents[2]
    root = tmp_path_factory.mktemp(name)
    lines = publish(root / "proxy", repo / "tests" / "support" / "gohello", module, "v1.2.3")
    lock = root / "recipes.lock"
    lock.write_text(json.dumps({"schema": 1, "fetch": {}, "source": {"gohello": list(lines), "chello": list(lines)}}))
    cache = root / "cache"
    shared = Path(os.environ.get("MKE_CACHE_DIR", Path.home() / ".cache" / "mke")) / "toolchains"
    if shared.is_dir():
        cache.mkdir()
        os.symlink(shared, cache / "toolchains")
    return {"root": root, "lock": lock, "cache": cache, "dist": root / "dist", "proxy": root / "proxy"}
