"""HTTP downloads: streaming, mirror-aware, resumable, retried, digest-verified.

- ``--mirror URL`` / ``MKE_MIRROR`` rewrites ``https://host/path`` to ``URL/host/path``
  (host and path kept under the mirror, like a generic remote repository).
- Retries with exponential backoff on 5xx and connection errors (including a body
  cut short); never on 4xx.
- A partial download is kept as ``downloads/<sha256(url)>.part`` and resumed with a
  Range request; it is never trusted: the whole file is verified before use and a
  mismatch deletes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import requests
import urllib3

from build.errors import DigestMismatchError, FetchError
from build.fsutil import CHUNK
from build.fsutil import sha256_file as _sha256
from build.progress import TransferProgress, log

USER_AGENT = "mke-toolchain/1"


def mirror_url(url: str, mirror: str | None) -> str:
    """Rewrite an upstream URL onto a mirror, keeping host and path."""
    if not mirror:
        return url
    parts = urllib.parse.urlsplit(url)
    base = mirror.rstrip("/")
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return f"{base}/{parts.netloc}{path}"


class Downloader:
    def __init__(
        self,
        downloads_dir: Path,
        *,
        mirror: str | None = None,
        retries: int = 5,
        backoff: float | None = None,
        timeout: float = 30.0,
    ):
        self.dir = downloads_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.mirror = mirror
        self.retries = retries
        # MKE_FETCH_BACKOFF: first retry delay in seconds (doubles each retry).
        self.backoff = backoff if backoff is not None else float(os.environ.get("MKE_FETCH_BACKOFF", "0.5"))
        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT

    def fetch_text(self, url: str, component: str) -> str:
        """GET a small text document (checksum files), with the same retry policy."""
        real = mirror_url(url, self.mirror)
        for attempt in self._attempts(component, real):
            try:
                r = self._session.get(real, timeout=self.timeout)
            except requests.RequestException as e:
                attempt.failed(f"{type(e).__name__}: {e}")
                continue
            if r.status_code >= 500:
                attempt.failed(f"HTTP {r.status_code}")
                continue
            if r.status_code >= 400:
                raise FetchError(f"{component}: GET {real}: HTTP {r.status_code} {r.reason}; check the recipe URL or the mirror")
            return r.text
        raise AssertionError("unreachable")

    def download(self, url: str, *, sha256: str, component: str) -> Path:
        """Download ``url`` (via the mirror) and return a local path whose bytes hash to ``sha256``."""
        with self.downloaded(url, sha256=sha256, component=component) as path:
            return path

    @contextlib.contextmanager
    def downloaded(self, url: str, *, sha256: str, component: str, remove: bool = False) -> Iterator[Path]:
        """``download``, holding the URL's lock until the block ends: two recipes that share an
        artifact (etcd and etcdutl: one release tarball) never see it removed under them.
        ``remove``: delete the file at the end of the block (its contents went elsewhere)."""
        real = mirror_url(url, self.mirror)
        name = hashlib.sha256(url.encode()).hexdigest()[:32]
        part = self.dir / f"{name}.part"
        done = self.dir / f"{name}.{sha256[:16]}"
        lock_fd = os.open(self.dir / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)  # another build may be downloading the same URL
            if done.is_file() and _sha256(done) == sha256:
                yield done
                if remove:
                    done.unlink(missing_ok=True)
                return
            for attempt in self._attempts(component, real):
                try:
                    self._get_into(real, part, component)
                except _Retryable as e:
                    attempt.failed(str(e))
                    continue
                break
            actual = _sha256(part)
            if actual != sha256:
                part.unlink(missing_ok=True)
                raise DigestMismatchError(
                    f"{component}: {url} (from {real}): sha256 mismatch: expected {sha256}, got {actual}; "
                    "the file was deleted. If upstream re-published it, update recipes.lock with `nox -s lock`"
                )
            os.replace(part, done)
            yield done
            if remove:
                done.unlink(missing_ok=True)
        finally:
            os.close(lock_fd)

    # ------------------------------------------------------------------ internals
    def _get_into(self, url: str, part: Path, component: str) -> None:
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            r = self._session.get(url, stream=True, timeout=self.timeout, headers=headers)
        except requests.RequestException as e:
            raise _Retryable(f"{type(e).__name__}: {e}") from e
        with contextlib.closing(r):
            if r.status_code == 416 and have:
                part.unlink()  # our partial is longer than the file: start over
                raise _Retryable("HTTP 416 for resumed range; restarting from byte 0")
            if r.status_code >= 500:
                raise _Retryable(f"HTTP {r.status_code} {r.reason}")
            if r.status_code >= 400:
                raise FetchError(f"{component}: GET {url}: HTTP {r.status_code} {r.reason}; check the recipe URL or the mirror")
            if r.status_code == 200 and have:
                have = 0  # server ignored Range: rewrite from the start
            length = r.headers.get("Content-Length")
            total = (int(length) + have) if length and length.isdigit() else None
            label = url.rsplit("/", 1)[-1]
            if have:
                log(component, f"resuming {label} at {have} bytes")
            progress = TransferProgress(component, label, total, start=have)
            received = 0
            # Keep the bytes of a body cut short (urllib3 would raise and drop them) so the
            # next attempt resumes after them; the length check below catches truncation.
            r.raw.enforce_content_length = False
            with open(part, "ab" if have else "wb", buffering=0) as f:  # unbuffered: a kill keeps what arrived
                try:
                    # read1: return what has arrived instead of waiting for a full chunk
                    while chunk := r.raw.read1(CHUNK):
                        f.write(chunk)
                        received += len(chunk)
                        progress.update(len(chunk))
                except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
                    raise _Retryable(f"transfer interrupted after {have + received} bytes: {type(e).__name__}") from e
            if length and length.isdigit() and received < int(length):
                raise _Retryable(f"body truncated: got {received} of {length} bytes")
            progress.finish()

    def _attempts(self, component: str, url: str):
        return _Attempts(component, url, self.retries, self.backoff)


class _Retryable(Exception):
    pass


class _Attempt:
    def __init__(self, owner: "_Attempts"):
        self.owner = owner

    def failed(self, why: str) -> None:
        self.owner.last_error = why


class _Attempts:
    """Iterate over tries; sleep with exponential backoff between them; raise after the last."""

    def __init__(self, component: str, url: str, retries: int, backoff: float):
        self.component, self.url, self.retries, self.backoff = component, url, retries, backoff
        self.last_error: str | None = None

    def __iter__(self):
        for i in range(self.retries + 1):
            if i:
                delay = self.backoff * (2 ** (i - 1))
                log(self.component, f"{self.url}: {self.last_error}; retry {i}/{self.retries} in {delay:.1f}s")
                time.sleep(delay)
            self.last_error = None
            yield _Attempt(self)
            if self.last_error is None:
                return
        raise FetchError(f"{self.component}: GET {self.url} failed after {self.retries + 1} attempts: {self.last_error}")
