"""The payload format: the one module both halves share (build/bundle.py writes it, mke/ reads it).

The payload is an ELF section named ``mkepayload`` inside dist/mke (after its static
entry program, build/entry), which ``strip`` keeps. It is found by section name, never by
file end. A payload can also be a plain file with the same
bytes (tests, ``MKE_PAYLOAD``). The layout (all integers little-endian; docs/payload.md):

    header   128 bytes: magic, format version, header size, manifest offset+length,
             data offset+length, sha256 of the manifest, zero padding
    manifest canonical JSON (sorted keys): components, frames, binaries
    data     zstd frames, one after another; a frame holds one binary or the
             concatenation of a few (a "group"), and each binary names its frame and
             its offset inside the decoded frame

The records are immutable ``NamedTuple``s rather than the project's usual frozen
dataclasses: every ``mke`` start imports this module, and dataclasses (with the
``inspect`` import they pull in) cost ~10 ms of a ~130 ms start-up.

Reading the manifest costs a few small reads (ELF header, program and section headers,
section names: ``mke/elf.py``; payload header, manifest) and never decodes anything. Staging one binary
decodes only its frame. Every frame is checked against its sha256 (compressed bytes)
and every binary against its sha256 and size before the caller may publish it.
"""

from __future__ import annotations

import json
import os
import struct
from typing import NamedTuple

from mke.elf import ElfFile
from mke.errors import PayloadError


def _sha256(data: bytes = b""):  # the type (_sha256.SHA256Type or hashlib's) depends on the build
    """A sha256 object. The manifest check on every start uses CPython's own small
    implementation: importing hashlib would load OpenSSL's libcrypto (a few ms of
    dynamic linking); bulk hashing while staging uses hashlib (OpenSSL, SHA-NI)."""
    try:
        from _sha256 import sha256
    except ImportError:  # pragma: no cover - builds without the module
        from hashlib import sha256
    return sha256(data)

if False:  # for type checkers only: `mke version` imports this module, keep it cheap
    from collections.abc import Iterable, Mapping
    from pathlib import Path
    from typing import Any, BinaryIO, Protocol

    class Sink(Protocol):
        def write(self, data: memoryview) -> object: ...  # ``data`` is valid only during the call

SECTION_NAME = "mkepayload"
MAGIC = b"MKEPAYLD"
FORMAT_VERSION = 1
MANIFEST_SCHEMA = 1
HEADER_SIZE = 128
_HEADER = struct.Struct("<8sIIQQQQ32s")  # 72 bytes, zero-padded to HEADER_SIZE
CODEC = "zstd"
# Largest zstd window the reader accepts (frames are written with --long up to 2^31).
MAX_WINDOW_LOG = 31
READ_CHUNK = 1 << 20
DECODE_CHUNK = 1 << 19  # sinks get views of one reused buffer: they must copy or write at once
_HEX = frozenset("0123456789abcdef")
#: How a FIPS payload's Go binaries were built (``build --fips-go``, fips/toolchain.toml [go]):
#: Go's own FIPS 140-3 module (GOFIPS140) or BoringCrypto (GOEXPERIMENT=boringcrypto).
FIPS_GO_MODES = ("native", "boring")
#: A FIPS payload written before the manifest recorded ``fips_go`` was always built native.
FIPS_GO_DEFAULT = "native"


# --------------------------------------------------------------------------- manifest model


class Frame(NamedTuple):
    """One zstd frame in the data area. ``offset`` is relative to the data area."""

    offset: int
    size: int  # compressed bytes
    decoded_size: int
    sha256: str  # of the compressed bytes
    members: tuple[str, ...]  # binary names, in the order they appear in the decoded frame


class Binary(NamedTuple):
    """One embedded binary (or, in none mode, one binary that mke looks up on PATH)."""

    name: str
    component: str
    version: str
    license: str
    homepage: str
    roles: tuple[str, ...]
    source: Any  # fetch: list of URLs; docker: module@version; none: "PATH"
    mode: str
    fips: bool
    sha256: str | None  # None in none mode
    size: int | None
    frame: int | None = None  # index into Manifest.frames
    offset: int | None = None  # inside the decoded frame
    # Other names the same file answers to (a multi-call binary dispatching on argv[0]):
    # staged as symlinks next to it.
    links: tuple[str, ...] = ()
    # Changes mke made to the upstream source (docker mode's [[source.patch]]): one line each,
    # "file (sha256 ...): reason". Empty for an unmodified upstream build.
    patches: tuple[str, ...] = ()

    @property
    def embedded(self) -> bool:
        return self.frame is not None


class ImageFile(NamedTuple):
    """A file of an image: an embedded binary copied to ``path``."""

    binary: str
    path: str
    mode: int
    capabilities: tuple[str, ...] = ()


class ImageSymlink(NamedTuple):
    path: str
    target: str


class ImageSpec(NamedTuple):
    """A system image a node builds itself from embedded binaries (mke/worker/images.py)."""

    name: str
    ref: str  # registry/repo:tag, what the cluster's manifests name
    base: bool  # /etc/passwd, /etc/group, /tmp ... as distroless/static has them
    files: tuple[ImageFile, ...]
    symlinks: tuple[ImageSymlink, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    user: str = ""
    workdir: str = "/"
    exposed_ports: tuple[str, ...] = ()

    def to_document(self) -> dict[str, Any]:
        doc = self._asdict()
        doc["files"] = [f._asdict() | {"capabilities": list(f.capabilities)} for f in self.files]
        doc["symlinks"] = [x._asdict() for x in self.symlinks]
        for key in ("entrypoint", "cmd", "env", "exposed_ports"):
            doc[key] = list(doc[key])
        return doc


class Library(NamedTuple):
    """One part of the Python runtime (``mke-runtime.<n>``): a tar stream that is the whole
    content of one frame. The static entry (build/entry) stages the parts once per runtime
    digest and runs that runtime; Python itself never reads them (docs/payload.md)."""

    name: str
    packages: tuple[str, ...]  # unused by runtime parts (kept for the manifest schema): ()
    python: str  # "3.11": the interpreter its compiled files are for
    sha256: str  # of the tar
    size: int
    frame: int
    offset: int

    @property
    def embedded(self) -> bool:
        return True


def _binary_document(b: Binary) -> dict[str, Any]:
    doc = b._asdict() | {"roles": list(b.roles), "links": list(b.links), "patches": list(b.patches)}
    if not b.patches:  # an unpatched binary's entry reads as before the field existed
        del doc["patches"]
    return doc


class Manifest(NamedTuple):
    mke_version: str
    platform: str  # "linux/amd64"
    mode: str  # fetch | docker | none
    fips: bool
    binaries: tuple[Binary, ...]
    frames: tuple[Frame, ...] = ()
    libraries: tuple[Library, ...] = ()
    images: tuple[ImageSpec, ...] = ()
    codec: str = CODEC
    schema: int = MANIFEST_SCHEMA
    # A FIPS payload: how its Go binaries were built (FIPS_GO_MODES). None in a non-FIPS
    # payload, and in a FIPS payload written before the field existed (= native: go_fips).
    fips_go: str | None = None

    @property
    def go_fips(self) -> str | None:
        """The Go FIPS mode of this payload's binaries: native | boring, None when not FIPS."""
        if not self.fips:
            return None
        return self.fips_go or FIPS_GO_DEFAULT

    def binary(self, name: str) -> Binary:
        for b in self.binaries:
            if b.name == name:
                return b
        raise PayloadError(f"this mke has no binary named {name!r}; it has: {', '.join(self.names()) or '(none)'}")

    def entry(self, name: str) -> Binary | Library:
        """A binary or library by name (frame members name either)."""
        for e in (*self.binaries, *self.libraries):
            if e.name == name:
                return e
        raise PayloadError(f"this mke has no payload entry named {name!r}")

    def names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.binaries)

    def for_roles(self, roles: Iterable[str]) -> tuple[Binary, ...]:
        wanted = set(roles)
        return tuple(b for b in self.binaries if wanted.intersection(b.roles))

    def components(self) -> list[dict[str, Any]]:
        """One entry per component (name, version, binaries; patches when mke changed its
        upstream source), sorted by name."""
        out: dict[str, dict[str, Any]] = {}
        for b in self.binaries:
            c = out.setdefault(b.component, {"component": b.component, "version": b.version, "binaries": []})
            c["binaries"].append({"name": b.name, "sha256": b.sha256, "size": b.size})
            if b.patches:
                c["patches"] = list(b.patches)
        return [out[k] for k in sorted(out)]

    # ------------------------------------------------------------- (de)serialization
    def to_document(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "mke_version": self.mke_version,
            "platform": self.platform,
            "mode": self.mode,
            "fips": self.fips,
            "codec": self.codec,
            "frames": [f._asdict() | {"members": list(f.members)} for f in self.frames],
            "binaries": [_binary_document(b) for b in self.binaries],
            "libraries": [x._asdict() | {"packages": list(x.packages)} for x in self.libraries],
            "images": [i.to_document() for i in self.images],
        } | ({"fips_go": self.fips_go} if self.fips_go is not None else {})

    def to_json(self) -> bytes:
        return json.dumps(self.to_document(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes, *, where: str = "payload manifest") -> Manifest:
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, ValueError) as e:
            raise PayloadError(f"{where}: not valid JSON ({e}); the executable is damaged, download it again") from e
        return cls.from_document(doc, where=where)

    @classmethod
    def from_document(cls, doc: Any, *, where: str = "payload manifest") -> Manifest:
        v = _Validator(where)
        v.obj(doc, "")
        schema = v.field(doc, "", "schema", int)
        if schema != MANIFEST_SCHEMA:
            raise PayloadError(f"{where}: schema {schema} is not supported (this mke reads schema {MANIFEST_SCHEMA})")
        frames = []
        for i, f in enumerate(v.field(doc, "", "frames", list)):
            at = f"frames[{i}]"
            v.obj(f, at)
            frames.append(Frame(
                offset=v.nonneg(f, at, "offset"),
                size=v.nonneg(f, at, "size"),
                decoded_size=v.nonneg(f, at, "decoded_size"),
                sha256=v.digest(f, at, "sha256"),
                members=tuple(v.strings(f, at, "members")),
            ))
        binaries = []
        for i, b in enumerate(v.field(doc, "", "binaries", list)):
            at = f"binaries[{i}]"
            v.obj(b, at)
            frame = v.field(b, at, "frame", (int, type(None)))
            sha = v.field(b, at, "sha256", (str, type(None)))
            binaries.append(Binary(
                name=v.field(b, at, "name", str),
                component=v.field(b, at, "component", str),
                version=v.field(b, at, "version", str),
                license=v.field(b, at, "license", str),
                homepage=v.field(b, at, "homepage", str),
                roles=tuple(v.strings(b, at, "roles")),
                source=b.get("source"),
                mode=v.field(b, at, "mode", str),
                fips=v.field(b, at, "fips", bool),
                sha256=v.digest(b, at, "sha256") if sha is not None else None,
                size=v.field(b, at, "size", (int, type(None))),
                frame=frame,
                offset=v.field(b, at, "offset", (int, type(None))),
                links=tuple(v.strings(b, at, "links")) if "links" in b else (),
                patches=tuple(v.strings(b, at, "patches")) if "patches" in b else (),
            ))
        libraries = []
        for i, x in enumerate(doc.get("libraries", [])):
            at = f"libraries[{i}]"
            v.obj(x, at)
            libraries.append(Library(
                name=v.field(x, at, "name", str),
                packages=tuple(v.strings(x, at, "packages")),
                python=v.field(x, at, "python", str),
                sha256=v.digest(x, at, "sha256"),
                size=v.nonneg(x, at, "size"),
                frame=v.nonneg(x, at, "frame"),
                offset=v.nonneg(x, at, "offset"),
            ))
        images = tuple(_image_from_document(v, x, f"images[{i}]") for i, x in enumerate(doc.get("images", [])))
        fips_go = v.field(doc, "", "fips_go", str) if "fips_go" in doc else None
        m = cls(
            fips_go=fips_go,
            schema=schema,
            libraries=tuple(libraries),
            images=images,
            mke_version=v.field(doc, "", "mke_version", str),
            platform=v.field(doc, "", "platform", str),
            mode=v.field(doc, "", "mode", str),
            fips=v.field(doc, "", "fips", bool),
            codec=v.field(doc, "", "codec", str),
            frames=tuple(frames),
            binaries=tuple(binaries),
        )
        m.check(where)
        return m

    def check(self, where: str = "payload manifest") -> None:
        """Cross-field consistency: every embedded binary lies inside its frame, names unique."""
        if self.codec != CODEC:
            raise PayloadError(f"{where}: codec {self.codec!r} is not supported (expected {CODEC!r})")
        if self.fips_go is not None:
            if self.fips_go not in FIPS_GO_MODES:
                raise PayloadError(f"{where}: field fips_go: {self.fips_go!r} is not one of {', '.join(FIPS_GO_MODES)}")
            if not self.fips:
                raise PayloadError(f"{where}: field fips_go: {self.fips_go!r} is set but fips is false")
        seen: set[str] = set()
        for b in (*self.binaries, *self.libraries):
            if b.name in seen:
                raise PayloadError(f"{where}: {b.name!r} is listed twice")
            seen.add(b.name)
            if b.frame is None:
                continue
            if b.sha256 is None or b.size is None or b.offset is None:
                raise PayloadError(f"{where}: binary {b.name!r} is embedded but lacks sha256, size or offset")
            if not 0 <= b.frame < len(self.frames):
                raise PayloadError(f"{where}: binary {b.name!r} names frame {b.frame}, which does not exist")
            f = self.frames[b.frame]
            if b.name not in f.members or b.offset < 0 or b.offset + b.size > f.decoded_size:
                raise PayloadError(f"{where}: binary {b.name!r} does not lie inside frame {b.frame}")
        end = 0
        for i, f in enumerate(self.frames):
            if f.offset < end:
                raise PayloadError(f"{where}: frame {i} overlaps the frame before it")
            end = f.offset + f.size
            for name in f.members:
                if name not in seen:
                    raise PayloadError(f"{where}: frame {i} holds {name!r}, which is not a listed binary or library")
        names = set(self.names())
        for b in self.binaries:
            for link in b.links:
                if "/" in link or link in (".", "..") or link in names:
                    raise PayloadError(f"{where}: binary {b.name!r} has a bad link name {link!r}")
        for img in self.images:
            for f in img.files:
                if f.binary not in names:
                    raise PayloadError(f"{where}: image {img.name!r} needs binary {f.binary!r}, which is not listed")

    @property
    def data_length(self) -> int:
        return max((f.offset + f.size for f in self.frames), default=0)


def _image_from_document(v: _Validator, x: Any, at: str) -> ImageSpec:
    v.obj(x, at)
    files = []
    for j, f in enumerate(v.field(x, at, "files", list)):
        fat = f"{at}.files[{j}]"
        v.obj(f, fat)
        path = v.field(f, fat, "path", str)
        if not path.startswith("/") or ".." in path.split("/"):
            raise v.fail(fat, "path", "must be an absolute path inside the image")
        files.append(ImageFile(binary=v.field(f, fat, "binary", str), path=path, mode=v.nonneg(f, fat, "mode"),
                               capabilities=tuple(v.strings(f, fat, "capabilities"))))
    links = []
    for j, s in enumerate(v.field(x, at, "symlinks", list)):
        sat = f"{at}.symlinks[{j}]"
        v.obj(s, sat)
        links.append(ImageSymlink(path=v.field(s, sat, "path", str), target=v.field(s, sat, "target", str)))
    return ImageSpec(
        name=v.field(x, at, "name", str), ref=v.field(x, at, "ref", str), base=v.field(x, at, "base", bool),
        files=tuple(files), symlinks=tuple(links),
        entrypoint=tuple(v.strings(x, at, "entrypoint")), cmd=tuple(v.strings(x, at, "cmd")),
        env=tuple(v.strings(x, at, "env")), user=v.field(x, at, "user", str), workdir=v.field(x, at, "workdir", str),
        exposed_ports=tuple(v.strings(x, at, "exposed_ports")),
    )


class _Validator:
    """Type checks for manifest fields; every error names the field."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, at: str, key: str, what: str) -> PayloadError:
        path = f"{at}.{key}" if at else key
        return PayloadError(f"{self.where}: field {path}: {what}; the executable is damaged, download it again")

    def obj(self, value: Any, at: str) -> None:
        if not isinstance(value, dict):
            raise PayloadError(f"{self.where}: {at or 'document'} must be an object")

    def field(self, d: dict, at: str, key: str, types: Any) -> Any:
        if key not in d:
            raise self.fail(at, key, "missing")
        value = d[key]
        ok = isinstance(value, types) and not (isinstance(value, bool) and types in (int, (int, type(None))))
        if not ok:
            raise self.fail(at, key, f"wrong type {type(value).__name__}")
        return value

    def nonneg(self, d: dict, at: str, key: str) -> int:
        value = self.field(d, at, key, int)
        if value < 0:
            raise self.fail(at, key, "must not be negative")
        return value

    def digest(self, d: dict, at: str, key: str) -> str:
        value = self.field(d, at, key, str)
        if len(value) != 64 or not _HEX.issuperset(value):
            raise self.fail(at, key, "not a sha256 hex digest")
        return value

    def strings(self, d: dict, at: str, key: str) -> list[str]:
        value = self.field(d, at, key, list)
        if not all(isinstance(x, str) for x in value):
            raise self.fail(at, key, "must be a list of strings")
        return value


# --------------------------------------------------------------------------- header + layout


class Header(NamedTuple):
    manifest_offset: int
    manifest_length: int
    data_offset: int
    data_length: int
    manifest_sha256: bytes

    def pack(self) -> bytes:
        raw = _HEADER.pack(MAGIC, FORMAT_VERSION, HEADER_SIZE, self.manifest_offset, self.manifest_length,
                           self.data_offset, self.data_length, self.manifest_sha256)
        return raw + b"\0" * (HEADER_SIZE - len(raw))

    @classmethod
    def unpack(cls, raw: bytes, where: str) -> Header:
        if len(raw) < HEADER_SIZE:
            raise PayloadError(f"{where}: payload header is truncated; the executable is damaged, download it again")
        magic, version, size, m_off, m_len, d_off, d_len, digest = _HEADER.unpack_from(raw)
        if magic != MAGIC:
            raise PayloadError(f"{where}: payload header has the wrong magic; the executable is damaged, download it again")
        if version != FORMAT_VERSION:
            raise PayloadError(f"{where}: payload format {version} is not supported (this mke reads {FORMAT_VERSION})")
        if size != HEADER_SIZE or m_off < HEADER_SIZE or d_off < m_off + m_len:
            raise PayloadError(f"{where}: payload header is inconsistent; the executable is damaged, download it again")
        return cls(manifest_offset=m_off, manifest_length=m_len, data_offset=d_off, data_length=d_len,
                   manifest_sha256=digest)


def layout(manifest: Manifest, *, align: int = 16) -> tuple[Header, bytes]:
    """The header and manifest bytes for ``manifest``; the data area follows at ``header.data_offset``."""
    body = manifest.to_json()
    data_offset = HEADER_SIZE + len(body)
    data_offset += -data_offset % align
    header = Header(manifest_offset=HEADER_SIZE, manifest_length=len(body), data_offset=data_offset,
                    data_length=manifest.data_length, manifest_sha256=_sha256(body).digest())
    return header, header.pack() + body + b"\0" * (data_offset - HEADER_SIZE - len(body))


def write_payload(out: BinaryIO, manifest: Manifest, frame_files: list[Path]) -> int:
    """Write a whole payload (header, manifest, frames) to ``out``; returns its size.

    ``frame_files[i]`` holds the compressed bytes of ``manifest.frames[i]``, which must
    already carry the right offsets, sizes and digests (build/bundle.py computes them).
    """
    if len(frame_files) != len(manifest.frames):
        raise ValueError("one file per frame")
    header, head = layout(manifest)
    out.write(head)
    pos = 0
    for frame, path in zip(manifest.frames, frame_files, strict=True):
        if frame.offset != pos:
            out.write(b"\0" * (frame.offset - pos))
            pos = frame.offset
        with open(path, "rb") as f:
            while chunk := f.read(READ_CHUNK):
                out.write(chunk)
                pos += len(chunk)
        if pos != frame.offset + frame.size:
            raise ValueError(f"frame file {path} does not have {frame.size} bytes")
    return header.data_offset + pos


# --------------------------------------------------------------------------- finding the section


def find_elf_section(f: BinaryIO, name: str, where: str) -> tuple[int, int] | None:
    """(file offset, size) of the section called ``name``; None if the file is no ELF or has none.

    Raises PayloadError when the file is an ELF whose headers or section are cut off
    (a truncated download) or point past the end of the file.
    """
    try:
        elf = ElfFile.read(f)
        return None if elf is None else elf.section_span(name)
    except ValueError as e:
        raise PayloadError(f"{where}: the executable is truncated or damaged ({e}); download it again") from e


# --------------------------------------------------------------------------- reader


class Payload(NamedTuple):
    """An opened payload: where it is and what it holds. Cheap: nothing is decoded."""

    path: str
    label: str  # how messages name the file (the executable's path, not /proc/self/exe)
    base: int  # file offset of the payload's first byte (section start, or 0 for a plain file)
    size: int  # bytes in the section (or file)
    header: Header
    manifest: Manifest

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, label: str | None = None) -> Payload | None:
        """Read the manifest of ``path`` (an ELF with a ``mkepayload`` section, or a plain payload
        file). Returns None when ``path`` is an ELF without payload (a build without one)."""
        path = os.fspath(path)
        where = label or path
        try:
            with open(path, "rb") as f:
                found = find_elf_section(f, SECTION_NAME, where)
                if found is None:
                    f.seek(0)
                    if f.read(len(MAGIC)) != MAGIC:
                        return None
                    f.seek(0, os.SEEK_END)
                    found = (0, f.tell())
                base, size = found
                f.seek(base)
                header = Header.unpack(f.read(HEADER_SIZE), where)
                if header.data_offset + header.data_length > size:
                    raise PayloadError(f"{where}: the payload is truncated ({size} bytes, its header says "
                                       f"{header.data_offset + header.data_length}); download mke again")
                f.seek(base + header.manifest_offset)
                body = f.read(header.manifest_length)
        except OSError as e:
            raise PayloadError(f"{where}: cannot read the payload: {e.strerror or e}") from e
        if len(body) != header.manifest_length:
            raise PayloadError(f"{where}: the payload manifest is truncated; download mke again")
        if _sha256(body).digest() != header.manifest_sha256:
            raise PayloadError(f"{where}: the payload manifest does not match its sha256 (tampered or damaged); "
                               "download mke again")
        manifest = Manifest.from_json(body, where=f"{where}: payload manifest")
        if manifest.data_length > header.data_length:
            raise PayloadError(f"{where}: the payload manifest points past the data area; download mke again")
        return cls(path=path, label=where, base=base, size=size, header=header, manifest=manifest)

    def frames_for(self, names: Iterable[str]) -> dict[int, list[Binary]]:
        """Frame index -> the wanted binaries in it (only embedded binaries)."""
        out: dict[int, list[Binary]] = {}
        for name in names:
            b = self.manifest.binary(name)
            if b.frame is None:
                raise PayloadError(f"{self.label}: {name} is not embedded (mode {b.mode}); it is looked up on PATH")
            out.setdefault(b.frame, []).append(b)
        return out

    def decode_frame(self, index: int, sinks: Mapping[str, Sink]) -> None:
        """Decode frame ``index`` once, writing each wanted member's bytes to its sink.

        Decoding stops as soon as the last wanted member is complete. Raises
        PayloadError (after the sinks got bytes, which the caller must then discard)
        if the bytes do not check out:

        - whole frame decoded: the sha256 of its compressed bytes (from the manifest,
          itself covered by the header's sha256) and zstd's content checksum; the
          decoded bytes are a deterministic function of verified input, so hashing
          them again (4-6x more data) would add nothing;
        - only a prefix decoded (e.g. kubectl at the head of the worker frame): the
          sha256 of each wanted member.
        Every member's size is checked in both cases.
        """
        import zstandard  # imported here: `mke version` never pays for it

        frame = self.manifest.frames[index]
        wanted = [self.manifest.entry(n) for n in sinks]
        for b in wanted:
            if b.frame != index:
                raise ValueError(f"{b.name} is not in frame {index}")
        spans = [(b, b.offset or 0, (b.offset or 0) + (b.size or 0)) for b in wanted]
        stop = max((e for _, _, e in spans), default=0)
        whole = stop >= frame.decoded_size
        where = f"{self.label}: payload frame {index} ({', '.join(frame.members)})"
        import hashlib

        hashes = {} if whole else {b.name: hashlib.sha256() for b in wanted}
        written = {b.name: 0 for b in wanted}
        dctx = zstandard.ZstdDecompressor(max_window_size=1 << MAX_WINDOW_LOG)
        reader = _FrameReader(self.path, self.base + self.header.data_offset + frame.offset, frame.size, where)
        try:
            pos = 0
            stream = dctx.stream_reader(reader, read_size=READ_CHUNK, read_across_frames=False, closefd=False)
            # One reused buffer: a fresh bytes object per read costs a page fault per 4 KiB.
            buf = memoryview(bytearray(DECODE_CHUNK))
            while pos < stop:
                n = stream.readinto(buf)
                if not n:
                    break
                end = pos + n
                for b, b_start, b_end in spans:
                    lo, hi = max(b_start, pos), min(b_end, end)
                    if hi > lo:
                        piece = buf[lo - pos:hi - pos]
                        if not whole:
                            hashes[b.name].update(piece)
                        sinks[b.name].write(piece)
                        written[b.name] += hi - lo
                pos = end
            if whole or pos >= frame.decoded_size:
                while stream.readinto(buf):  # the end of the frame: its checksum gets checked
                    pass
                reader.read_rest()
                if reader.digest() != frame.sha256:
                    raise PayloadError(f"{where}: compressed bytes do not match their sha256 (tampered or "
                                       "damaged); download mke again")
        except zstandard.ZstdError as e:
            raise PayloadError(f"{where}: cannot be decoded ({e}); the executable is damaged or tampered with, "
                               "download it again") from e
        finally:
            reader.close()
        for b in wanted:
            if written[b.name] != b.size or (not whole and hashes[b.name].hexdigest() != b.sha256):
                raise PayloadError(f"{where}: {b.name} does not match its size or sha256 {b.sha256}"
                                   " (tampered or damaged); download mke again")

    def verify(self) -> list[str]:
        """Check every frame's compressed bytes against its sha256 without decoding; returns problems."""
        problems = []
        for i, frame in enumerate(self.manifest.frames):
            reader = _FrameReader(self.path, self.base + self.header.data_offset + frame.offset, frame.size,
                                  f"{self.label}: payload frame {i}")
            try:
                reader.read_rest()
            except PayloadError as e:
                problems.append(str(e))
                continue
            finally:
                reader.close()
            if reader.digest() != frame.sha256:
                problems.append(f"{self.label}: payload frame {i} ({', '.join(frame.members)}) does not match its sha256")
        return problems


class _FrameReader:
    """File-like over one frame's compressed bytes that hashes what it hands out."""

    def __init__(self, path: str, offset: int, size: int, where: str):
        self._f = open(path, "rb", buffering=0)
        self._f.seek(offset)
        self._left = size
        self._size = size
        import hashlib

        self._hash = hashlib.sha256()
        self._where = where

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._f.read(n)
        if not data:
            raise PayloadError(f"{self._where}: the executable is truncated; download mke again")
        self._left -= len(data)
        self._hash.update(data)
        return data

    def readable(self) -> bool:
        return True

    def read_rest(self) -> None:
        while self._left > 0:
            self.read(READ_CHUNK)

    def digest(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        self._f.close()


PAYLOAD_ENV = "MKE_PAYLOAD"


def running_payload() -> Payload | None:
    """The payload of the running mke, or None (a build without payload, or run from source).

    ``$MKE_PAYLOAD`` names a payload file (or an executable carrying one) to use instead.
    dist/mke's Python runs under its static entry (build/entry), so /proc/self/exe is the
    runtime's loader, not mke: the entry passes the mke file open as a file descriptor
    (mke/start.py), which stays the file this process started from even if dist/mke is
    replaced meanwhile.
    """
    from mke import start

    env = os.environ.get(PAYLOAD_ENV)
    if env:
        if not os.path.exists(env):
            raise PayloadError(f"${PAYLOAD_ENV}={env}: no such file")
        payload = Payload.open(env)
        if payload is None:  # the variable asks for a payload: "none here" would hide the mistake
            raise PayloadError(f"${PAYLOAD_ENV}={env}: neither an mke payload nor an executable carrying one")
        return payload
    if start.payload_path:
        return Payload.open(start.payload_path, label=start.executable)
    return None
