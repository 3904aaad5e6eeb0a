"""fetch mode: download upstream's release binaries, verify them against recipes.lock, unpack."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import re
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import Any

from build.action import Action
from build.errors import FetchError, UnpinnedArtifactError, UsageError
from build.modes.base import BuildContext
from build.progress import log
from build.recipes import Recipe, render

_HEX64 = re.compile(r"\b([0-9a-f]{64})\b")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConcreteArtifact:
    """One URL to download, with what to take out of it."""

    url: str
    archive: str
    checksum_url: str
    checksum_format: str
    members: tuple[tuple[str, str], ...]  # (binary, member path); raw: (binary, "")


def expand_artifacts(recipe: Recipe, os_name: str, arch: str) -> list[ConcreteArtifact]:
    """Fill every template of the recipe's artifacts for one platform."""
    uarch = recipe.fetch.arch_name(arch)
    out: list[ConcreteArtifact] = []
    for art in recipe.fetch.artifacts:
        binaries = recipe.binary_names if art.per_binary else (art.binary,) if art.binary else (None,)
        for binary in binaries:
            values = {"version": recipe.version, "os": os_name, "arch": uarch, "binary": binary or ""}
            url = render(art.url, **values)
            checksum_url = render(art.checksum_url, url=url, filename=url.rsplit("/", 1)[-1], **values)
            if art.archive == "raw":
                members = ((binary, ""),)
            else:
                members = tuple((b, render(m, **{**values, "binary": b})) for b, m in art.members)
            out.append(ConcreteArtifact(url=url, archive=art.archive, checksum_url=checksum_url,
                                        checksum_format=art.checksum_format, members=members))
    return out


def parse_checksum(text: str, fmt: str, filename: str, *, source: str) -> str:
    """Find the sha256 for ``filename`` in an upstream checksum file."""
    if fmt == "bare":
        m = _HEX64.search(text.strip().lower())
        if not m:
            raise FetchError(f"{source}: no sha256 digest found in checksum file")
        return m.group(1)
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and _HEX64.fullmatch(parts[0].lower()):
            name = parts[-1].lstrip("*")
            if name == filename or name.rsplit("/", 1)[-1] == filename:
                return parts[0].lower()
    raise FetchError(f"{source}: no line for {filename} in checksum file")


def _norm(member: str) -> str:
    while member.startswith("./"):
        member = member[2:]
    return member


def unpack(archive_path: Path, art: ConcreteArtifact, dest: Path, component: str) -> dict[str, Path]:
    """Take each wanted member out of the archive; raw artifacts are the binary itself."""
    dest.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    if art.archive == "raw":
        (binary, _), = art.members
        target = dest / binary
        shutil.copyfile(archive_path, target)
        out[binary] = target
        return out
    wanted = {_norm(m): b for b, m in art.members}
    try:
        if art.archive == "tar.gz":
            with tarfile.open(archive_path, "r:gz") as tar:
                for info in tar:
                    b = wanted.get(_norm(info.name))
                    if b is None:
                        continue
                    if not info.isfile():
                        raise FetchError(f"{component}: {art.url}: member {info.name} is not a regular file")
                    src = tar.extractfile(info)
                    assert src is not None
                    with src, open(dest / b, "wb") as f:
                        shutil.copyfileobj(src, f, 1 << 20)
                    out[b] = dest / b
        elif art.archive == "zip":
            with zipfile.ZipFile(archive_path) as z:
                for info in z.infolist():
                    b = wanted.get(_norm(info.filename))
                    if b is None or info.is_dir():
                        continue
                    with z.open(info) as src, open(dest / b, "wb") as f:
                        shutil.copyfileobj(src, f, 1 << 20)
                    out[b] = dest / b
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise FetchError(f"{component}: {art.url}: cannot unpack {art.archive}: {e}") from e
    missing = sorted(m for m, b in wanted.items() if b not in out)
    if missing:
        raise FetchError(f"{component}: {art.url}: archive has no member {missing[0]!r}; fix fetch.artifact.members in the recipe")
    return out


class FetchMode:
    name = "fetch"
    embeds = True

    def prepare(self, ctx: BuildContext, recipes: list[Recipe]) -> None:
        for r in recipes:
            if not r.fetch.available:
                raise UsageError(
                    f"{r.name} cannot be fetched: {r.fetch.reason}; build it with --mode=docker "
                    f"or leave it out (--component ...)"
                )

    def _pins(self, ctx: BuildContext, recipe: Recipe) -> list[tuple[ConcreteArtifact, str]]:
        pinned = []
        downloader = None
        for art in expand_artifacts(recipe, ctx.platform.os, ctx.platform.arch):
            digest = ctx.lock.artifact_digest(recipe.name, str(ctx.platform), art.url)
            if digest is None:
                if not ctx.allow_unpinned:
                    raise UnpinnedArtifactError(
                        f"{recipe.name}: {art.url} has no pinned sha256 for {ctx.platform} in {ctx.lock.path}; "
                        "run `nox -s lock` to pin it, or pass --allow-unpinned to trust upstream's checksum file"
                    )
                from build.download import Downloader  # requests is slow to import: only when needed

                downloader = downloader or Downloader(ctx.cache.root / "downloads", mirror=ctx.mirror)
                text = downloader.fetch_text(art.checksum_url, recipe.name)
                digest = parse_checksum(text, art.checksum_format, art.url.rsplit("/", 1)[-1], source=art.checksum_url)
                log(recipe.name, f"WARNING: {art.url} is not pinned; trusting {art.checksum_url} (sha256 {digest[:12]}…)")
            pinned.append((art, digest))
        return pinned

    def action(self, ctx: BuildContext, recipe: Recipe) -> Action:
        pins = self._pins(ctx, recipe)
        return Action(
            mode=self.name,
            component=recipe.name,
            platform=str(ctx.platform),
            inputs={
                "version": recipe.version,
                "binaries": list(recipe.binary_names),
                "artifacts": [
                    {"url": a.url, "sha256": d, "archive": a.archive, "members": [list(m) for m in a.members]}
                    for a, d in pins
                ],
            },
        )

    def run(self, ctx: BuildContext, recipe: Recipe, action: Action, workdir: Path) -> tuple[dict[str, Path], dict[str, Any]]:
        from build.download import Downloader

        downloader = Downloader(ctx.cache.root / "downloads", mirror=ctx.mirror)
        arts = action.inputs["artifacts"]
        concrete = {a.url: a for a in expand_artifacts(recipe, ctx.platform.os, ctx.platform.arch)}

        def one(item: dict) -> dict[str, Path]:
            art = concrete[item["url"]]
            # verified, unpacked, then removed (the outputs go to the CAS), all under the URL's
            # lock: another recipe of the same artifact downloads it again rather than lose it
            with downloader.downloaded(art.url, sha256=item["sha256"], component=recipe.name, remove=True) as path:
                return unpack(path, art, workdir / "out", recipe.name)

        files: dict[str, Path] = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, ctx.jobs)) as pool:
            for result in pool.map(one, arts):
                files.update(result)
        return files, {"source": [a["url"] for a in arts]}
