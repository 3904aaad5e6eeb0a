"""recipes.lock: every pinned outside input.

JSON, sorted, written only by ``nox -s lock`` (build/pins.py)::

    {
      "schema": 1,
      "fetch":  {"<component>": {"<os/arch>": {"<artifact URL>": "<sha256>"}}},
      "source": {"<component>": ["<module> <version> h1:...", "<module> <version>/go.mod h1:..."]},
      "debian": {"<component>": {"<.dsc, .orig.tar.*, .debian.tar.*, .deb URL>": "<sha256>"}}
    }

Fetch mode refuses an artifact whose URL has no digest here unless the user passes
--allow-unpinned, and always refuses a mismatch. Source builds verify the module
download against the go.sum lines.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from build.action import canonical_json
from build.errors import LockfileError
from build.fsutil import write_atomic

LOCK_SCHEMA = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GOSUM = re.compile(r"^\S+ v\S+ h1:[A-Za-z0-9+/=]{44}$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Lockfile:
    path: Path
    fetch: dict[str, dict[str, dict[str, str]]]
    source: dict[str, tuple[str, ...]]
    debian: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)

    @classmethod
    def empty(cls, path: Path) -> "Lockfile":
        return cls(path=path, fetch={}, source={}, debian={})

    @classmethod
    def load(cls, path: Path) -> "Lockfile":
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise LockfileError(f"{path}: lock file not found; run `nox -s lock` on a connected machine") from None
        except (OSError, ValueError) as e:
            raise LockfileError(f"{path}: not valid JSON: {e}") from None
        if not isinstance(doc, dict) or doc.get("schema") != LOCK_SCHEMA:
            raise LockfileError(f"{path}: schema: expected {LOCK_SCHEMA}, got {doc.get('schema') if isinstance(doc, dict) else doc!r}")
        unknown = set(doc) - {"schema", "fetch", "source", "debian"}
        if unknown:
            raise LockfileError(f"{path}: unknown key {sorted(unknown)[0]!r} (allowed: debian, fetch, source, schema)")
        fetch = doc.get("fetch", {})
        for comp, plats in fetch.items():
            for plat, urls in plats.items():
                for url, digest in urls.items():
                    if not isinstance(digest, str) or not _SHA256.match(digest):
                        raise LockfileError(f"{path}: fetch.{comp}.{plat}[{url}]: not a sha256 hex digest: {digest!r}")
        source = {}
        for comp, lines in doc.get("source", {}).items():
            for line in lines:
                if not isinstance(line, str) or not _GOSUM.match(line):
                    raise LockfileError(f"{path}: source.{comp}: not a go.sum line: {line!r}")
            source[comp] = tuple(lines)
        debian = doc.get("debian", {})
        for comp, urls in debian.items():
            if not isinstance(urls, dict):
                raise LockfileError(f"{path}: debian.{comp}: expected an object of URL -> sha256")
            for url, digest in urls.items():
                if not isinstance(digest, str) or not _SHA256.match(digest):
                    raise LockfileError(f"{path}: debian.{comp}[{url}]: not a sha256 hex digest: {digest!r}")
        return cls(path=path, fetch=fetch, source=source, debian=debian)

    def artifact_digest(self, component: str, platform: str, url: str) -> str | None:
        return self.fetch.get(component, {}).get(platform, {}).get(url)

    def gosum(self, component: str) -> tuple[str, ...]:
        return self.source.get(component, ())

    def debian_pins(self, component: str) -> dict[str, str]:
        return dict(self.debian.get(component, {}))

    def with_debian(self, component: str, pins: dict[str, str]) -> Lockfile:
        debian = dict(self.debian)
        debian[component] = dict(sorted(pins.items()))
        return dataclasses.replace(self, debian=debian)

    def with_artifact(self, component: str, platform: str, url: str, digest: str) -> "Lockfile":
        fetch = json.loads(json.dumps(self.fetch))
        fetch.setdefault(component, {}).setdefault(platform, {})[url] = digest
        return dataclasses.replace(self, fetch=fetch)

    def with_source(self, component: str, lines: tuple[str, ...]) -> "Lockfile":
        source = dict(self.source)
        source[component] = tuple(sorted(lines))
        return dataclasses.replace(self, source=source)

    def save(self) -> None:
        doc = {"schema": LOCK_SCHEMA, "fetch": self.fetch, "source": {k: list(v) for k, v in self.source.items()}}
        if self.debian:
            doc["debian"] = self.debian
        text = json.dumps(json.loads(canonical_json(doc)), indent=2, sort_keys=True) + "\n"
        write_atomic(self.path, text.encode())
