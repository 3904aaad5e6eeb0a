"""Push OCI image archives (the layout mke/images/oci.py writes) to a registry over the
OCI distribution API, and run the registry for a conformance run.

Why not a library: no maintained Python OCI client pushes an OCI-layout tar without a
container engine; the protocol needed here is four requests (check blob, start upload,
finish upload with the digest, put manifest), written against the distribution spec
(https://github.com/opencontainers/distribution-spec/blob/main/spec.md#push).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ANNOTATION_IMAGE_NAME = "io.containerd.image.name"


class PushError(Exception):
    pass


@dataclass(frozen=True)
class Pushed:
    ref: str  # the image's own reference, e.g. registry.k8s.io/e2e-test-images/agnhost:2.66.1
    repository: str  # the path in the registry, e.g. e2e-test-images/agnhost
    tag: str
    digest: str  # the manifest's digest
    blobs_sent: int
    blobs_present: int


def split_ref(ref: str) -> tuple[str, str, str]:
    """``registry.k8s.io/e2e-test-images/agnhost:2.66.1`` -> (host, repository path, tag)."""
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        raise PushError(f"{ref}: not a reference with a tag")
    host, _, path = name.partition("/")
    if not path or ("." not in host and ":" not in host and host != "localhost"):
        host, path = "docker.io", name if "/" in name else f"library/{name}"
    return host, path, tag


def _request(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
             timeout: float = 120.0) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
    except (urllib.error.URLError, OSError) as e:
        raise PushError(f"{method} {url}: {getattr(e, 'reason', e)}") from e


def ping(base: str, timeout: float = 5.0) -> bool:
    try:
        status, _, _ = _request("GET", f"{base}/v2/", timeout=timeout)
    except PushError:
        return False
    return status in (200, 401)


class _Archive:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar = tarfile.open(path, "r:")
        self._members = {m.name: m for m in self._tar.getmembers()}

    def close(self) -> None:
        self._tar.close()

    def read(self, name: str) -> bytes:
        m = self._members.get(name)
        if m is None:
            raise PushError(f"{self.path}: no {name} in the archive")
        f = self._tar.extractfile(m)
        assert f is not None
        return f.read()

    def blob(self, digest: str) -> bytes:
        algo, _, hexd = digest.partition(":")
        data = self.read(f"blobs/{algo}/{hexd}")
        if algo != "sha256" or hashlib.sha256(data).hexdigest() != hexd:
            raise PushError(f"{self.path}: blob {digest} does not match its digest")
        return data


def _push_blob(base: str, repo: str, digest: str, data: bytes) -> bool:
    """True when sent, False when the registry had it already."""
    status, _, _ = _request("HEAD", f"{base}/v2/{repo}/blobs/{digest}")
    if status == 200:
        return False
    status, headers, body = _request("POST", f"{base}/v2/{repo}/blobs/uploads/", b"",
                                     {"Content-Length": "0"})
    if status != 202:
        raise PushError(f"POST {base}/v2/{repo}/blobs/uploads/: HTTP {status}: {body[:200]!r}")
    location = headers.get("Location") or headers.get("location")
    if not location:
        raise PushError(f"POST {base}/v2/{repo}/blobs/uploads/: no Location header")
    url = urllib.parse.urljoin(base + "/", location)
    url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": digest})
    status, _, body = _request("PUT", url, data, {"Content-Type": "application/octet-stream",
                                                  "Content-Length": str(len(data))})
    if status != 201:
        raise PushError(f"PUT blob {digest} to {repo}: HTTP {status}: {body[:200]!r}")
    return True


def push_archive(path: Path, base: str) -> list[Pushed]:
    """Push every image in the archive ``path`` to the registry at ``base`` (``http://host:port``),
    each under its own repository path and tag (the registry host of its reference is dropped,
    as a mirror of that host serves it)."""
    archive = _Archive(path)
    try:
        index = json.loads(archive.read("index.json"))
        out = []
        for desc in index.get("manifests", []):
            ref = desc.get("annotations", {}).get(ANNOTATION_IMAGE_NAME)
            if not ref:
                raise PushError(f"{path}: a manifest in index.json has no {ANNOTATION_IMAGE_NAME} annotation")
            _, repo, tag = split_ref(ref)
            raw = archive.blob(desc["digest"])
            manifest = json.loads(raw)
            sent = present = 0
            for b in (manifest["config"], *manifest["layers"]):
                if _push_blob(base, repo, b["digest"], archive.blob(b["digest"])):
                    sent += 1
                else:
                    present += 1
            media = manifest.get("mediaType") or desc["mediaType"]
            status, headers, body = _request("PUT", f"{base}/v2/{repo}/manifests/{tag}", raw,
                                             {"Content-Type": media, "Content-Length": str(len(raw))})
            if status != 201:
                raise PushError(f"PUT manifest {ref}: HTTP {status}: {body[:200]!r}")
            got = headers.get("Docker-Content-Digest") or headers.get("docker-content-digest")
            if got and got != desc["digest"]:
                raise PushError(f"{ref}: the registry stored manifest {got}, expected {desc['digest']}")
            out.append(Pushed(ref=ref, repository=repo, tag=tag, digest=desc["digest"], blobs_sent=sent,
                              blobs_present=present))
        return out
    finally:
        archive.close()


def registry_config(listen: str, storage: Path) -> str:
    """distribution v3's config: filesystem storage, plain HTTP (the run's network is private), no auth."""
    return "\n".join([
        "version: 0.1",
        "log:",
        "  level: info",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {storage}",
        "  delete:",
        "    enabled: false",
        "http:",
        f"  addr: {listen}",
        "",
    ])
