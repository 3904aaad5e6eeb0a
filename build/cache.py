"""The content-addressed cache: an action cache (ac/) pointing at blobs in a CAS (cas/).

Layout under the cache root (default ~/.cache/mke, or $MKE_CACHE_DIR, or --cache-dir)::

    cas/sha256/ab/<digest>   immutable blobs, written by temp file + rename
    ac/<key>.json            ActionResult: output name -> digest, size, executable
    locks/                   one flock per action key, so two builds never duplicate work
    downloads/               partial downloads kept for resume (never trusted: verified)
    logs/                    build logs
    tmp/                     scratch space of running actions
    lock                     shared by builds, exclusive for gc

Rules: hash content, never paths; results are written atomically and only after
every output is in the CAS; a blob is verified whenever it is read, and a corrupt
blob is deleted so that the action runs again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from build.action import Action, canonical_json
from build.errors import CacheError
from build.fsutil import CHUNK, atomic_writer, sha256_file

RESULT_SCHEMA = 1


def default_cache_dir() -> Path:
    env = os.environ.get("MKE_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mke"


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutputFile:
    name: str
    sha256: str
    size: int
    executable: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class ActionResult:
    key: str
    outputs: tuple[OutputFile, ...]
    metadata: dict[str, Any]  # e.g. source URLs, builder image, build seconds

    def output(self, name: str) -> OutputFile:
        for o in self.outputs:
            if o.name == name:
                return o
        raise KeyError(name)

    def to_json(self, action: Action) -> bytes:
        return canonical_json({
            "schema": RESULT_SCHEMA,
            "key": self.key,
            "action": action.document(),
            "outputs": [dataclasses.asdict(o) for o in self.outputs],
            "metadata": self.metadata,
        })

    @classmethod
    def from_json(cls, data: bytes) -> "ActionResult":
        doc = json.loads(data)
        if doc.get("schema") != RESULT_SCHEMA:
            raise ValueError(f"result schema {doc.get('schema')!r}")
        return cls(
            key=doc["key"],
            outputs=tuple(OutputFile(**o) for o in doc["outputs"]),
            metadata=doc.get("metadata", {}),
        )


class ContentStore:
    """cas/sha256/ab/<digest>: blobs named by their sha256."""

    def __init__(self, root: Path):
        self.root = root / "cas" / "sha256"
        self._tmp = root / "tmp"

    def path(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise CacheError(f"not a sha256 digest: {digest!r}")
        return self.root / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put_file(self, src: Path, expected: str | None = None) -> tuple[str, int]:
        """Copy ``src`` into the store (hashing while copying); returns (digest, size)."""
        self._tmp.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="put-", dir=self._tmp)
        h = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = h.hexdigest()
            if expected is not None and digest != expected:
                raise CacheError(f"{src}: content changed while storing (expected {expected}, got {digest})")
            dest = self.path(digest)
            if dest.is_file():
                os.unlink(tmp)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(tmp, 0o444)
                os.replace(tmp, dest)
            return digest, size
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def verify(self, digest: str) -> bool:
        """True if the blob exists and hashes to its name; a corrupt blob is removed."""
        p = self.path(digest)
        if not p.is_file():
            return False
        if sha256_file(p) == digest:
            return True
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
        return False

    def copy_out(self, digest: str, dest: Path, mode: int = 0o755) -> None:
        """Write the blob to ``dest`` atomically, verifying the bytes as they are read."""
        src = self.path(digest)
        h = hashlib.sha256()
        try:
            with atomic_writer(dest, mode) as out, open(src, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                if h.hexdigest() != digest:
                    raise CacheError(f"cache blob {src} is corrupt (sha256 {h.hexdigest()}); it was removed, run the build again")
        except CacheError:
            with contextlib.suppress(FileNotFoundError):
                src.unlink()
            raise
        except FileNotFoundError:
            raise CacheError(f"cache blob {src} is missing; run the build again") from None

    def iter_digests(self) -> Iterator[str]:
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if sub.is_dir():
                for p in sorted(sub.iterdir()):
                    if not p.name.startswith("."):
                        yield p.name


class Cache:
    """The action cache plus the CAS, sharing one root directory."""

    def __init__(self, root: Path):
        self.root = Path(root).expanduser()
        try:
            for sub in ("ac", "cas/sha256", "locks", "downloads", "logs", "tmp"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(f"cache directory {self.root} is not usable: {e}; pass --cache-dir or set MKE_CACHE_DIR") from e
        self.cas = ContentStore(self.root)

    # ----------------------------------------------------------- locking
    @contextlib.contextmanager
    def _flock(self, path: Path, kind: int) -> Iterator[None]:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, kind)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def shared(self) -> contextlib.AbstractContextManager[None]:
        """Held by every build: many builds share one cache; gc waits for them."""
        return self._flock(self.root / "lock", fcntl.LOCK_SH)

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        return self._flock(self.root / "lock", fcntl.LOCK_EX)

    def action_lock(self, key: str) -> contextlib.AbstractContextManager[None]:
        """Held while running one action, so a second build waits and then hits."""
        return self._flock(self.root / "locks" / f"{key}.lock", fcntl.LOCK_EX)

    def tempdir(self, prefix: str) -> contextlib.AbstractContextManager[str]:
        return tempfile.TemporaryDirectory(prefix=prefix, dir=self.root / "tmp")

    # ----------------------------------------------------------- action cache
    def _ac_path(self, key: str) -> Path:
        return self.root / "ac" / f"{key}.json"

    def get(self, key: str, *, verify: bool = False) -> ActionResult | None:
        """The stored result for ``key``, or None. A result whose blobs are gone is a miss."""
        path = self._ac_path(key)
        try:
            result = ActionResult.from_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)  # unreadable entry: drop it, rebuild
            return None
        for o in result.outputs:
            ok = self.cas.verify(o.sha256) if verify else self.cas.has(o.sha256)
            if not ok:
                path.unlink(missing_ok=True)
                return None
        return result

    def put(self, action: Action, outputs: list[OutputFile], metadata: dict[str, Any]) -> ActionResult:
        """Record a finished action; every output must already be in the CAS."""
        for o in outputs:
            if not self.cas.has(o.sha256):
                raise CacheError(f"output {o.name} ({o.sha256}) is not in the CAS")
        result = ActionResult(key=action.key(), outputs=tuple(sorted(outputs, key=lambda o: o.name)), metadata=metadata)
        with atomic_writer(self._ac_path(result.key)) as f:
            f.write(result.to_json(action))
        return result

    # ----------------------------------------------------------- maintenance
    def iter_results(self) -> Iterator[tuple[Path, ActionResult | None]]:
        for p in sorted((self.root / "ac").glob("*.json")):
            try:
                yield p, ActionResult.from_json(p.read_bytes())
            except (ValueError, KeyError, TypeError, OSError):
                yield p, None

    def stats(self) -> dict[str, Any]:
        blobs = list(self.cas.iter_digests())
        size = sum(self.cas.path(d).stat().st_size for d in blobs)
        results = list(self.iter_results())
        return {
            "root": str(self.root),
            "actions": len(results),
            "blobs": len(blobs),
            "blob_bytes": size,
            "partial_downloads": len(list((self.root / "downloads").iterdir())),
        }

    def verify_all(self) -> list[str]:
        """Check every AC entry and every blob; return the problems found (and removed)."""
        problems = []
        for p, result in self.iter_results():
            if result is None:
                problems.append(f"{p}: unreadable action result (removed)")
                p.unlink(missing_ok=True)
                continue
            if p.stem != result.key:
                problems.append(f"{p}: names key {result.key} (removed)")
                p.unlink(missing_ok=True)
                continue
            for o in result.outputs:
                if not self.cas.has(o.sha256):
                    problems.append(f"{p}: output {o.name} blob {o.sha256} missing (entry removed)")
                    p.unlink(missing_ok=True)
                    break
        for d in self.cas.iter_digests():
            if not self.cas.verify(d):
                problems.append(f"blob {d}: content does not match its name (removed)")
        for tmp in self.root.glob("ac/.tmp-*"):
            problems.append(f"{tmp}: leftover temp file")
        return problems

    def gc(self, *, max_age_days: float | None = None) -> dict[str, int]:
        """Remove temp leftovers, unreferenced blobs and (optionally) results older than N days."""
        removed = {"results": 0, "blobs": 0, "temp": 0, "downloads": 0}
        with self.exclusive():
            now = time.time()
            live: set[str] = set()
            for p, result in self.iter_results():
                too_old = max_age_days is not None and now - p.stat().st_mtime > max_age_days * 86400
                if result is None or too_old:
                    p.unlink(missing_ok=True)
                    removed["results"] += 1
                    continue
                live.update(o.sha256 for o in result.outputs)
            for d in list(self.cas.iter_digests()):
                if d not in live:
                    self.cas.path(d).unlink(missing_ok=True)
                    removed["blobs"] += 1
            for p in (self.root / "tmp").iterdir():
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed["temp"] += 1
            for p in list(self.root.glob("ac/.tmp-*")) + list(self.root.glob("cas/sha256/*/.tmp-*")):
                p.unlink(missing_ok=True)
                removed["temp"] += 1
            for p in (self.root / "downloads").iterdir():
                p.unlink()
                removed["downloads"] += 1
        return removed
