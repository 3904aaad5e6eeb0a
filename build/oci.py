"""OCI image archives, written deterministically in Python from static binaries.

No container engine and no registry: an image here is a few layer tars made from
files we name (static binaries from the cache, a small base of /etc/passwd and /tmp,
or Debian packages unpacked), a config JSON with the entrypoint, and a manifest. The
same inputs give the same bytes, so the digests are pins:

- layer tar: entries sorted by path, parents listed before children, mtime fixed
  (SOURCE_DATE_EPOCH, default 0), uid/gid as given (no user names), PAX format (file
  capabilities travel as ``SCHILY.xattr.security.capability``, as upstream images do);
- gzip with mtime 0, no file name, level 9;
- JSON canonical (sorted keys, no spaces).

``write_archive`` writes one tar that both ``ctr images import`` (the OCI layout:
``oci-layout``, ``index.json``, ``blobs/sha256/*``) and ``docker load`` (``manifest.json``
with ``RepoTags``) accept, the layout ``docker save`` has used since Docker 25. Each
manifest in ``index.json`` carries ``io.containerd.image.name`` (the full reference) and
``org.opencontainers.image.ref.name`` (the tag), as containerd's own importer sets them.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import lzma
import os
import posixpath
import struct
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from build.errors import ImageError

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
CHUNK = 1 << 20
# Linux capability numbers that images may grant through file capabilities.
CAPABILITIES = {"CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_SYS_ADMIN": 21}


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- layer entries


@dataclasses.dataclass(frozen=True, kw_only=True)
class Entry:
    """One path in a layer. ``path`` is absolute inside the image (``/usr/bin/x``)."""

    path: str
    kind: str = "file"  # file | dir | symlink
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    source: Path | None = None  # file contents from disk...
    data: bytes | None = None  # ...or from memory
    target: str = ""  # symlink target
    xattrs: tuple[tuple[str, bytes], ...] = ()

    @property
    def name(self) -> str:
        """The tar member name: relative, normalised, no leading ``./``."""
        return normalise(self.path)

    def size(self) -> int:
        if self.kind != "file":
            return 0
        if self.data is not None:
            return len(self.data)
        assert self.source is not None
        return self.source.stat().st_size


def normalise(path: str) -> str:
    """``/usr/bin/x``, ``./usr/bin/x/`` -> ``usr/bin/x``; ``..`` components are refused."""
    parts = [c for c in path.split("/") if c not in ("", ".")]
    if not parts or ".." in parts:
        raise ImageError(f"{path!r} is not a path inside an image")
    return "/".join(parts)


def file_capabilities(names: Iterable[str]) -> bytes:
    """``security.capability`` (VFS_CAP_REVISION_2, effective) granting ``names`` as permitted."""
    low = high = 0
    for n in names:
        if n not in CAPABILITIES:
            raise ImageError(f"unknown capability {n!r}; known: {', '.join(sorted(CAPABILITIES))}")
        bit = CAPABILITIES[n]
        if bit < 32:
            low |= 1 << bit
        else:
            high |= 1 << (bit - 32)
    return struct.pack("<IIIII", 0x02000001, low, 0, high, 0)


def binary_entry(path: str, source: Path, *, mode: int = 0o755, uid: int = 0, gid: int = 0,
                 capabilities: Iterable[str] = ()) -> Entry:
    caps = tuple(capabilities)
    xattrs = (("security.capability", file_capabilities(caps)),) if caps else ()
    return Entry(path=path, kind="file", mode=mode, uid=uid, gid=gid, source=source, xattrs=xattrs)


def base_entries() -> list[Entry]:
    """What static binaries expect of a root file system (as distroless/static has it)."""
    passwd = (
        "root:x:0:0:root:/root:/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
        "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
    )
    group = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"
    return [
        Entry(path="/etc/passwd", data=passwd.encode()),
        Entry(path="/etc/group", data=group.encode()),
        Entry(path="/etc/nsswitch.conf", data=b"hosts: files dns\n"),
        Entry(path="/home/nonroot", kind="dir", mode=0o700, uid=65532, gid=65532),
        Entry(path="/root", kind="dir", mode=0o700),
        Entry(path="/tmp", kind="dir", mode=0o1777),
    ]


# --------------------------------------------------------------------------- Debian packages


def _ar_members(f: IO[bytes]) -> Iterator[tuple[str, bytes]]:
    if f.read(8) != b"!<arch>\n":
        raise ImageError("not an ar archive")
    while True:
        header = f.read(60)
        if not header:
            return
        if len(header) < 60 or header[58:60] != b"`\n":
            raise ImageError("truncated ar archive")
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        data = f.read(size)
        if size % 2:
            f.read(1)
        yield name, data


def deb_entries(deb: Path, *, exclude: Iterable[str] = (), what: str = "") -> list[Entry]:
    """The files of a Debian package (its data.tar), as layer entries; ``exclude`` are path prefixes."""
    prefixes = tuple(normalise(p) for p in exclude)
    label = what or deb.name
    data_tar = None
    with open(deb, "rb") as f:
        for name, data in _ar_members(f):
            if name.startswith("data.tar"):
                data_tar = (name, data)
    if data_tar is None:
        raise ImageError(f"{label}: no data.tar in the package")
    name, data = data_tar
    if name.endswith(".xz"):
        data = lzma.decompress(data)
    elif name.endswith(".gz"):
        data = gzip.decompress(data)
    elif name.endswith(".zst"):
        import zstandard

        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    elif name != "data.tar":
        raise ImageError(f"{label}: unsupported member {name}")
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as t:
        for m in t.getmembers():
            if m.name in (".", "./"):
                continue
            p = normalise(m.name)
            if any(p == x or p.startswith(x + "/") for x in prefixes):
                continue
            if m.isdir():
                out.append(Entry(path=p, kind="dir", mode=m.mode & 0o7777, uid=m.uid, gid=m.gid))
            elif m.issym():
                out.append(Entry(path=p, kind="symlink", target=m.linkname, mode=0o777))
            elif m.islnk():
                src = t.extractfile(m)  # a hard link: tarfile reads its target's bytes; the layer gets a copy
                out.append(Entry(path=p, data=src.read() if src else b"", mode=m.mode & 0o7777, uid=m.uid, gid=m.gid))
            elif m.isfile():
                fh = t.extractfile(m)
                assert fh is not None
                out.append(Entry(path=p, data=fh.read(), mode=m.mode & 0o7777, uid=m.uid, gid=m.gid))
    return out


# --------------------------------------------------------------------------- layers


@dataclasses.dataclass(frozen=True, kw_only=True)
class Blob:
    digest: str  # sha256:<hex>
    size: int
    path: Path


@dataclasses.dataclass(frozen=True, kw_only=True)
class Layer:
    blob: Blob  # the gzip'd tar
    diff_id: str  # sha256 of the uncompressed tar
    comment: str = ""


class _HashingWriter(io.RawIOBase):
    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.h = hashlib.sha256()
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        self.f.write(b)
        self.h.update(b)
        self.n += len(b)
        return len(b)


def _with_parents(entries: list[Entry]) -> list[Entry]:
    """Every entry plus directories for its missing parents; duplicates are an error."""
    by_name: dict[str, Entry] = {}
    for e in entries:
        if e.name in by_name:
            if by_name[e.name] == e or (e.kind == "dir" and by_name[e.name].kind == "dir"):
                continue
            raise ImageError(f"/{e.name} is given twice with different contents")
        by_name[e.name] = e
    for name in list(by_name):
        parent = posixpath.dirname(name)
        while parent and parent not in by_name:
            by_name[parent] = Entry(path=parent, kind="dir", mode=0o755)
            parent = posixpath.dirname(parent)
    return [by_name[n] for n in sorted(by_name)]


def write_layer_tar(entries: list[Entry], out: IO[bytes], *, mtime: int = 0) -> None:
    """A deterministic tar of ``entries`` (sorted, parents first) into ``out``."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as t:
        for e in _with_parents(entries):
            ti = tarfile.TarInfo(e.name + ("/" if e.kind == "dir" else ""))
            ti.mtime = mtime
            ti.uid, ti.gid = e.uid, e.gid
            ti.uname = ti.gname = ""
            ti.mode = e.mode & 0o7777
            if e.xattrs:
                # tarfile writes surrogate-escaped values back as the raw bytes (hdrcharset=BINARY)
                ti.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in e.xattrs}
            if e.kind == "dir":
                ti.type = tarfile.DIRTYPE
                t.addfile(ti)
            elif e.kind == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = e.target
                ti.mode = 0o777
                t.addfile(ti)
            elif e.kind == "file":
                ti.type = tarfile.REGTYPE
                ti.size = e.size()
                if e.data is not None:
                    t.addfile(ti, io.BytesIO(e.data))
                else:
                    assert e.source is not None
                    with open(e.source, "rb") as f:
                        t.addfile(ti, f)
            else:
                raise ImageError(f"/{e.name}: unknown entry kind {e.kind!r}")


def build_layer(entries: list[Entry], workdir: Path, *, mtime: int = 0, comment: str = "") -> Layer:
    """Write the layer's gzip'd tar into ``workdir`` (named by digest)."""
    workdir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".layer-", dir=workdir)
    try:
        with os.fdopen(fd, "wb") as raw:
            outer = _HashingWriter(raw)
            # The tar stream's own digest (diff_id) is taken before compression.
            with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=outer, mtime=0) as gz:  # type: ignore[arg-type]
                inner = _HashingWriter(gz)  # type: ignore[arg-type]
                write_layer_tar(entries, inner, mtime=mtime)  # type: ignore[arg-type]
        digest = "sha256:" + outer.h.hexdigest()
        final = workdir / digest.split(":", 1)[1]
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Layer(blob=Blob(digest=digest, size=outer.n, path=final), diff_id="sha256:" + inner.h.hexdigest(),
                 comment=comment)


def layer_names(layer_path: Path) -> list[str]:
    """Member names of a gzip'd layer (tests, checks)."""
    with tarfile.open(layer_path, mode="r:gz") as t:
        return t.getnames()


# --------------------------------------------------------------------------- images


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageConfig:
    """What the runtime needs to start the image: the OCI config's ``config`` object."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    user: str = ""
    workdir: str = "/"
    exposed_ports: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    stop_signal: str = ""

    def as_oci(self) -> dict:
        c: dict = {"Env": list(self.env), "WorkingDir": self.workdir}
        if self.entrypoint:
            c["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            c["Cmd"] = list(self.cmd)
        if self.user:
            c["User"] = self.user
        if self.exposed_ports:
            c["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.labels:
            c["Labels"] = dict(self.labels)
        if self.stop_signal:
            c["StopSignal"] = self.stop_signal
        return c


@dataclasses.dataclass(frozen=True, kw_only=True)
class Image:
    ref: str  # registry/repo:tag
    manifest: Blob
    config: Blob
    layers: tuple[Layer, ...]
    platform: tuple[str, str]  # (os, arch)

    @property
    def tag(self) -> str:
        return split_ref(self.ref)[1]

    def describe(self) -> dict:
        return {
            "ref": self.ref,
            "manifest": self.manifest.digest,
            "config": self.config.digest,
            "layers": [layer.blob.digest for layer in self.layers],
            "size": self.manifest.size + self.config.size + sum(layer.blob.size for layer in self.layers),
            "platform": "/".join(self.platform),
        }


def split_ref(ref: str) -> tuple[str, str]:
    """``registry.k8s.io/pause:3.10`` -> (``registry.k8s.io/pause``, ``3.10``); a tag is required."""
    if "@" in ref:
        raise ImageError(f"{ref}: give a tag, not a digest (the digest is what we compute)")
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag or not repo:
        raise ImageError(f"{ref}: an image reference needs a tag (name:tag)")
    return repo, tag


def _write_blob(workdir: Path, data: bytes) -> Blob:
    digest = sha256_digest(data)
    path = workdir / digest.split(":", 1)[1]
    if not path.exists():
        fd, tmp = tempfile.mkstemp(prefix=".blob-", dir=workdir)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return Blob(digest=digest, size=len(data), path=path)


def build_image(ref: str, layers: list[Layer], config: ImageConfig, workdir: Path, *, os_name: str = "linux",
                arch: str = "amd64", created_epoch: int = 0, annotations: dict[str, str] | None = None) -> Image:
    """The config and manifest blobs for ``layers`` (already built into ``workdir``)."""
    split_ref(ref)
    created = _rfc3339(created_epoch)
    cfg = {
        "architecture": arch,
        "os": os_name,
        "created": created,
        "config": config.as_oci(),
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": created, "created_by": f"mke build/oci.py: {layer.comment or 'layer'}"}
                    for layer in layers],
    }
    cfg_blob = _write_blob(workdir, canonical_json(cfg))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": cfg_blob.digest, "size": cfg_blob.size},
        "layers": [{"mediaType": MEDIA_LAYER_GZIP, "digest": layer.blob.digest, "size": layer.blob.size}
                   for layer in layers],
    }
    if annotations:
        manifest["annotations"] = dict(sorted(annotations.items()))
    man_blob = _write_blob(workdir, canonical_json(manifest))
    return Image(ref=ref, manifest=man_blob, config=cfg_blob, layers=tuple(layers), platform=(os_name, arch))


def _rfc3339(epoch: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- archives


def index_document(images: list[Image]) -> dict:
    return {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {
                "mediaType": MEDIA_MANIFEST,
                "digest": img.manifest.digest,
                "size": img.manifest.size,
                "annotations": {ANNOTATION_IMAGE_NAME: img.ref, ANNOTATION_REF_NAME: img.tag},
                "platform": {"architecture": img.platform[1], "os": img.platform[0]},
            }
            for img in sorted(images, key=lambda i: i.ref)
        ],
    }


def docker_manifest(images: list[Image]) -> list[dict]:
    return [
        {
            "Config": f"blobs/sha256/{img.config.digest.split(':', 1)[1]}",
            "RepoTags": [img.ref],
            "Layers": [f"blobs/sha256/{layer.blob.digest.split(':', 1)[1]}" for layer in img.layers],
        }
        for img in sorted(images, key=lambda i: i.ref)
    ]


def write_archive(images: list[Image], out: Path, *, mtime: int = 0) -> str:
    """One tar holding ``images`` as an OCI layout plus docker's manifest.json; returns its sha256."""
    refs = [i.ref for i in images]
    dupes = sorted({r for r in refs if refs.count(r) > 1})
    if dupes:
        raise ImageError(f"image {dupes[0]} is given twice")
    blobs: dict[str, Blob] = {}
    for img in images:
        for b in (img.manifest, img.config, *(layer.blob for layer in img.layers)):
            blobs[b.digest] = b
    meta = {
        "oci-layout": canonical_json({"imageLayoutVersion": "1.0.0"}),
        "index.json": canonical_json(index_document(images)),
        "manifest.json": canonical_json(docker_manifest(images)),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}-", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as raw:
            w = _HashingWriter(raw)
            with tarfile.open(fileobj=w, mode="w|", format=tarfile.PAX_FORMAT) as t:  # type: ignore[arg-type]
                for d in ("blobs/", "blobs/sha256/"):
                    ti = tarfile.TarInfo(d)
                    ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, mtime
                    t.addfile(ti)
                for digest in sorted(blobs):
                    b = blobs[digest]
                    ti = tarfile.TarInfo(f"blobs/sha256/{digest.split(':', 1)[1]}")
                    ti.size, ti.mode, ti.mtime = b.size, 0o644, mtime
                    with open(b.path, "rb") as f:
                        t.addfile(ti, f)
                for name in sorted(meta):
                    ti = tarfile.TarInfo(name)
                    ti.size, ti.mode, ti.mtime = len(meta[name]), 0o644, mtime
                    t.addfile(ti, io.BytesIO(meta[name]))
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return w.h.hexdigest()


def read_archive(path: Path) -> list[dict]:
    """Check an archive we wrote (every blob's digest, index vs manifest.json) and list its images."""
    found: dict[str, str] = {}
    sizes: dict[str, int] = {}
    docs: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:") as t:
            for m in t:
                if not m.isfile():
                    continue
                f = t.extractfile(m)
                assert f is not None
                if m.name.startswith("blobs/sha256/"):
                    h = hashlib.sha256()
                    small = b""
                    while chunk := f.read(CHUNK):
                        h.update(chunk)
                        if len(small) < 1 << 20:
                            small += chunk
                    want = m.name.rsplit("/", 1)[1]
                    if h.hexdigest() != want:
                        raise ImageError(f"{path}: {m.name} does not hash to its name (got {h.hexdigest()})")
                    found["sha256:" + want] = small.decode("latin-1") if len(small) < 1 << 20 else ""
                    sizes["sha256:" + want] = m.size
                else:
                    docs[m.name] = f.read()
    except (OSError, tarfile.TarError) as e:
        raise ImageError(f"{path}: not a readable image archive: {e}") from e
    for need in ("oci-layout", "index.json", "manifest.json"):
        if need not in docs:
            raise ImageError(f"{path}: no {need}; not an image archive written by mke")
    index = json.loads(docs["index.json"])
    out = []
    for d in index.get("manifests", []):
        if d["digest"] not in found or sizes[d["digest"]] != d["size"]:
            raise ImageError(f"{path}: manifest {d['digest']} is missing or has the wrong size")
        manifest = json.loads(found[d["digest"]].encode("latin-1"))
        for child in (manifest["config"], *manifest["layers"]):
            if child["digest"] not in found or sizes[child["digest"]] != child["size"]:
                raise ImageError(f"{path}: blob {child['digest']} of {d['annotations'].get(ANNOTATION_IMAGE_NAME)} is missing")
        out.append({
            "ref": d["annotations"][ANNOTATION_IMAGE_NAME],
            "manifest": d["digest"],
            "config": manifest["config"]["digest"],
            "layers": [x["digest"] for x in manifest["layers"]],
            "platform": f"{d['platform']['os']}/{d['platform']['architecture']}",
        })
    tags = sorted(t for m in json.loads(docs["manifest.json"]) for t in m["RepoTags"])
    if tags != sorted(i["ref"] for i in out):
        raise ImageError(f"{path}: manifest.json names {tags}, index.json {sorted(i['ref'] for i in out)}")
    return out
