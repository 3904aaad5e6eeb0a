"""Shared fixtures: a tiny dist manifest whose binaries and runtime parts are in a real cache."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest

from build.bundle.payload import DistManifest
from build.cache import Cache, OutputFile


def entry(name: str, size: int, roles: list[str], sha: str | None = "0" * 64) -> dict:
    return {"name": name, "component": name.split("-")[0], "version": "1.0", "license": "MIT",
            "homepage": "https://example.com", "roles": roles, "mode": "fetch", "fips": False,
            "sha256": sha, "size": size, "source": [f"https://example.com/{name}"]}


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def dist(tmp_path):
    """(cache, DistManifest, runtime parts, tmp dir)."""
    cache = Cache(tmp_path / "cache")
    entries = []
    for name, roles in (("alpha", ["controller"]), ("beta", ["worker"]), ("gamma", ["controller", "worker"])):
        f = tmp_path / name
        f.write_bytes(os.urandom(20000) + name.encode() * 5000)
        digest, size = cache.cas.put_file(f)
        entries.append(entry(name, size, roles, digest))
    parts = []
    for i in range(2):
        f = tmp_path / f"part{i}.tar"
        f.write_bytes(tar_of({f"lib/file{i}": os.urandom(3000)}))
        digest, size = cache.cas.put_file(f)
        parts.append(OutputFile(name=f"mke-runtime.{i}.tar", sha256=digest, size=size, executable=False))
    manifest = tmp_path / "dist" / "linux-amd64" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"schema": 1, "platform": "linux/amd64", "mode": "fetch", "fips": False,
                                    "binaries": entries}))
    return cache, DistManifest.load(manifest), tuple(parts), tmp_path
