"""``lock --update``: move each Go-source recipe to the newest patch release its module's
proxy serves, rewrite the recipe files and re-pin recipes.lock, and print old -> new.

The Go module proxy's version list (``@v/list``) is not exhaustive (docs/recipes.md), so the
list is only a hint: the next patch versions are probed one by one (``@v/<version>.info``)
until ``MAX_MISSES`` in a row are missing. A newer minor release is reported and left alone
unless ``allow_minor`` (Kubernetes' version-skew rules and every component's own
compatibility notes are the reason: a minor is a decision, a patch is routine). Pre-releases
are never taken; a major version is a different module path and never crossed.

What a recipe file says is changed by text, line by line, so comments and layout stay:

- ``[source] version``, and the versions derived from it: ``local_replace_version`` (the
  same release), ``staging_version`` (Kubernetes' ``v0.<minor>.<patch>``);
- the top-level ``version`` when it is the source version without its ``v`` (pause's own
  version is not its module's, and stays);
- on a minor update, ``gitMinor=<minor>`` in ldflags.

Nothing is written unless every probe and the new pins succeed: the lock is written first
(its pins for the new versions), then each recipe file atomically. A recipe with
``[[source.patch]]`` is updated too, and flagged: its patches must still apply, which the
next build checks strictly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from build.errors import BuildError
from build.fsutil import write_atomic
from build.gomod import escape_path
from build.recipes import Recipe, SourceSpec, parse_recipe

DEFAULT_PROXY = "https://proxy.golang.org"
MAX_MISSES = 3  # consecutive missing patch versions after which the probe stops
MAX_MINORS = 3  # newer minors looked at (each needs its .0 or .1 served)
SEMVER = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")


def goproxy_url(explicit: str | None = None) -> str:
    """``--goproxy``, else the first usable entry of $GOPROXY, else proxy.golang.org."""
    if explicit:
        return explicit.rstrip("/")
    for entry in re.split(r"[,|]", os.environ.get("GOPROXY", "")):
        entry = entry.strip()
        if entry and entry not in ("direct", "off"):
            return entry.rstrip("/")
    return DEFAULT_PROXY


def parse_semver(version: str) -> tuple[int, int, int] | None:
    m = SEMVER.match(version)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


class Proxy:
    """Read-only GOPROXY protocol client for ``http(s)://`` and ``file://`` proxies."""

    def __init__(self, base: str, *, timeout: float = 20.0) -> None:
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.requests = 0

    def _get(self, module: str, rest: str) -> bytes | None:
        """The body, or None when the proxy says the module or version is not there (404/410)."""
        url = f"{self.base}/{escape_path(module)}/@v/{rest}"
        self.requests += 1
        if url.startswith("file://"):
            path = Path(urllib.parse.urlparse(url).path)
            try:
                return path.read_bytes()
            except FileNotFoundError:
                return None
            except OSError as e:
                raise BuildError(f"{url}: cannot read: {e.strerror}") from e
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as e:
            if e.code in (404, 410):
                return None
            # some proxies (and mirrors of one) answer a version they do not serve with 403
            # "This module version is not available."
            if e.code == 403 and b"not available" in (e.read() or b""):
                return None
            raise BuildError(f"{url}: HTTP {e.code} from the Go module proxy; try again, or give --goproxy") from e
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise BuildError(f"{url}: cannot reach the Go module proxy ({reason}); give --goproxy URL "
                             f"or set GOPROXY") from e

    def listed(self, module: str) -> list[str]:
        body = self._get(module, "list")
        return (body or b"").decode(errors="replace").split()

    def exists(self, module: str, version: str) -> bool:
        body = self._get(module, f"{version}.info")
        if body is None:
            return False
        try:
            return json.loads(body).get("Version") == version
        except (ValueError, AttributeError):
            raise BuildError(f"{self.base}: {module}@{version}.info is not the proxy's JSON") from None


def newest(proxy: Proxy, module: str, current: str, *, allow_minor: bool) -> tuple[str, str | None]:
    """(the newest version to take, a newer minor left alone or None)."""
    cur = parse_semver(current)
    if cur is None:
        return current, None  # a pseudo-version or pre-release: pinned on purpose
    major, minor, patch = cur
    listed = {v for v in (parse_semver(x) for x in proxy.listed(module)) if v and v[0] == major}

    def last_patch(mi: int, start: int) -> int | None:
        """The highest patch of major.mi served, probing from ``start`` (None: not even that one)."""
        best = None
        p, misses = start, 0
        top = max((v[2] for v in listed if v[1] == mi), default=-1)
        while misses < MAX_MISSES or p <= top:
            if (major, mi, p) in listed or proxy.exists(module, f"v{major}.{mi}.{p}"):
                best, misses = p, 0
            else:
                misses += 1
            p += 1
        return best

    found = last_patch(minor, patch + 1)
    take = current if found is None else f"v{major}.{minor}.{found}"
    newer_minor = None
    for mi in range(minor + 1, minor + 1 + MAX_MINORS):
        first = 0 if ((major, mi, 0) in listed or proxy.exists(module, f"v{major}.{mi}.0")) else None
        if first is None and ((major, mi, 1) in listed or proxy.exists(module, f"v{major}.{mi}.1")):
            first = 1
        if first is None:
            break
        later = last_patch(mi, first + 1)
        newer_minor = f"v{major}.{mi}.{first if later is None else later}"
    if allow_minor and newer_minor:
        return newer_minor, None
    return take, newer_minor


@dataclasses.dataclass(frozen=True, kw_only=True)
class Update:
    component: str
    module: str
    old: str
    new: str
    held: str | None  # a newer minor not taken (no --allow-minor)
    path: Path
    text: str  # the recipe file's new text (== the old one when nothing changes)
    patched: bool  # the recipe carries [[source.patch]]

    @property
    def changed(self) -> bool:
        return self.new != self.old


def rewrite(recipe: Recipe, text: str, new: str, proxy: Proxy) -> str:
    """``text`` (the recipe file) with its source at ``new`` (see the module docstring)."""
    src = recipe.source
    assert isinstance(src, SourceSpec)
    old, old_sv, new_sv = src.version, parse_semver(src.version), parse_semver(new)
    assert old_sv and new_sv
    subs: dict[str, tuple[str, str]] = {"version": (old, new)}
    if src.local_replace_version == old:
        subs["local_replace_version"] = (old, new)
    if src.staging_version:
        staging = f"v0.{new_sv[1]}.{new_sv[2]}"
        if not proxy.exists("k8s.io/api", staging):
            raise BuildError(f"{recipe.path}: staging_version {staging} (for {new}) is not served by the proxy "
                             f"(k8s.io/api@{staging}); update by hand")
        subs["staging_version"] = (src.staging_version, staging)
    out, section = [], ""
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped.strip("[]").strip()
        m = re.match(r'^(\s*)([A-Za-z_]+)(\s*=\s*)"([^"]*)"(.*)$', line.rstrip("\n"))
        if m and section == "" and m[2] == "version" and m[4] == old.removeprefix("v"):
            line = f'{m[1]}{m[2]}{m[3]}"{new.removeprefix("v")}"{m[5]}\n'
        elif m and section == "source" and m[2] in subs and m[4] == subs[m[2]][0]:
            line = f'{m[1]}{m[2]}{m[3]}"{subs[m[2]][1]}"{m[5]}\n'
        elif section == "source" and new_sv[1] != old_sv[1]:
            line = line.replace(f"gitMinor={old_sv[1]}\"", f"gitMinor={new_sv[1]}\"")
        out.append(line)
    return "".join(out)


def plan(recipes: list[Recipe], proxy: Proxy, *, allow_minor: bool) -> list[Update]:
    from build.progress import log

    updates = []
    for r in recipes:
        if not isinstance(r.source, SourceSpec) or r.source.kind not in ("go", "kubernetes", "c"):
            continue
        new, held = newest(proxy, r.source.module, r.source.version, allow_minor=allow_minor)
        log(r.name, f"{r.source.module}: {r.source.version} -> {new}" + (f" ({held} held)" if held else ""))
        text = r.path.read_text()
        new_text = rewrite(r, text, new, proxy) if new != r.source.version else text
        updates.append(Update(component=r.name, module=r.source.module, old=r.source.version, new=new, held=held,
                              path=r.path, text=new_text, patched=bool(r.source.patches)))
    return updates


def table(updates: list[Update]) -> str:
    rows = [("COMPONENT", "MODULE", "OLD", "NEW", "NOTE")]
    for u in updates:
        notes = []
        if u.changed:
            notes.append("minor" if parse_semver(u.new)[1] != parse_semver(u.old)[1] else "patch")  # type: ignore[index]
        if u.held:
            notes.append(f"{u.held} held (newer minor: --allow-minor)")
        if u.changed and u.patched:
            notes.append("has patches: the build checks they still apply")
        rows.append((u.component, u.module, u.old, u.new if u.changed else "=", "; ".join(notes)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + ("  " + r[4] if r[4] else "")
                     for r in rows)


def apply(updates: list[Update], lock_path: Path, *, pin) -> list[Recipe]:
    """Re-pin the changed recipes (``pin(recipes)`` writes the lock), then write their files.
    Returns the updated recipes. The new texts are parsed first: a rewrite that does not load
    is refused before anything is written."""
    import tomllib

    changed = [u for u in updates if u.changed]
    if not changed:
        return []
    parsed = []
    for u in changed:
        try:
            parsed.append(parse_recipe(u.path, tomllib.loads(u.text)))
        except tomllib.TOMLDecodeError as e:
            raise BuildError(f"{u.path}: the updated recipe does not parse ({e}); nothing was written") from e
    pin(parsed)
    for u in changed:
        write_atomic(u.path, u.text.encode(), 0o644)
    return parsed
