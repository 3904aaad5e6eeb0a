"""Upstream-shaped release artifacts made of small, real, static binaries.

For each fetchable recipe, build a tiny static C program per binary that prints the
recipe's expected ``--version`` text, pack it the way upstream does (raw, tar.gz or
zip at the recipe's member path), and publish checksum files beside it, under
``root/<host>/<path>`` so that a MirrorServer serves it at the upstream path.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
import urllib.parse
import zipfile
from pathlib import Path

from build.modes.fetch import expand_artifacts
from build.recipes import Recipe

C_TEMPLATE = r"""
#include <stdio.h>
int main(int argc, char **argv) {
    printf("%s\n", VERSION_TEXT);
    return 0;
}
"""


def static_binary(out: Path, text: str, *, cache: Path) -> Path:
    """A static x86-64 executable that prints ``text`` (compiled once per text)."""
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    cached = cache / f"bin-{key}"
    if not cached.exists():
        cache.mkdir(parents=True, exist_ok=True)
        src = cache / f"src-{key}.c"
        src.write_text(C_TEMPLATE)
        literal = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        subprocess.run(["gcc", "-static", "-Os", "-s", f"-DVERSION_TEXT={literal}", "-o", str(cached), str(src)], check=True)
    shutil.copyfile(cached, out)
    out.chmod(0o755)
    return out


def version_text(recipe: Recipe, binary: str) -> str:
    spec = next(b for b in recipe.binaries if b.name == binary)
    return spec.expected_version_text(recipe.version) or f"{binary} {recipe.version}"


def local_path(root: Path, url: str) -> Path:
    parts = urllib.parse.urlsplit(url)
    return root / parts.netloc / parts.path.lstrip("/")


def publish_all(recipes: list[Recipe], root: Path, *, os_name: str = "linux", arch: str = "amd64",
                cache: Path) -> dict[str, dict[str, str]]:
    """Every recipe's artifacts + checksum files under root; {recipe: {url: sha256}}.

    Recipes may share an upstream artifact (etcd and etcdutl both come from the etcd release
    tarball): one file is made per URL, holding every recipe's members, as upstream's does."""
    by_url: dict[str, list[tuple[Recipe, object]]] = {}
    for recipe in recipes:
        for art in expand_artifacts(recipe, os_name, arch):
            by_url.setdefault(art.url, []).append((recipe, art))
    out: dict[str, dict[str, str]] = {r.name: {} for r in recipes}
    checksum_lines: dict[str, dict[str, str]] = {}
    work = cache / "work"
    work.mkdir(parents=True, exist_ok=True)
    for url, users in by_url.items():
        art = users[0][1]
        members: dict[str, tuple[Recipe, str]] = {}  # member path -> (recipe, binary)
        for recipe, a in users:
            for binary, member in a.members:
                members.setdefault(member, (recipe, binary))
        dest = local_path(root, url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if art.archive == "raw":
            (member, (recipe, binary)), = members.items()
            static_binary(dest, version_text(recipe, binary), cache=cache)
        elif art.archive == "tar.gz":
            with tarfile.open(dest, "w:gz") as tar:
                for member, (recipe, binary) in members.items():
                    exe = static_binary(work / binary, version_text(recipe, binary), cache=cache)
                    tar.add(exe, arcname=member)
                tar.addfile(tarfile.TarInfo("README.md"), io.BytesIO(b""))
        elif art.archive == "zip":
            with zipfile.ZipFile(dest, "w") as z:
                for member, (recipe, binary) in members.items():
                    z.write(static_binary(work / binary, version_text(recipe, binary), cache=cache), member)
        digest = hashlib.sha256(dest.read_bytes()).hexdigest()
        for recipe, _ in users:
            out[recipe.name][url] = digest
        filename = url.rsplit("/", 1)[-1]
        if art.checksum_format == "bare":
            local_path(root, art.checksum_url).write_text(digest + "\n")
        else:
            checksum_lines.setdefault(art.checksum_url, {})[filename] = f"{digest}  {filename}"
    for url, lines in checksum_lines.items():
        p = local_path(root, url)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("\n".join(sorted(lines.values())) + "\n")
    return out
