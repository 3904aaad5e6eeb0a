"""Small real payloads for tests: zstd frames written with mke/payload_format.py's layout.

``make_payload`` compresses the given contents exactly like the bundler does (one zstd
frame per group, content checksum on) and writes a plain payload file; ``embed`` puts
such a file into a copy of an ELF executable as the ``mkepayload`` section (followed by
another section: the reader must find it by name, not by position), as build/bundle/
does for dist/mke.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import zstandard

from mke import payload_format as pf


def make_payload(path: Path, groups: list[dict[str, bytes]], *, mode: str = "fetch", roles: dict | None = None,
                 version: str = "1.0.0", libraries: dict[str, tuple[bytes, tuple[str, ...]]] | None = None,
                 links: dict[str, tuple[str, ...]] | None = None, images: tuple[pf.ImageSpec, ...] = (),
                 fips: bool = False, fips_go: str | None = None) -> pf.Manifest:
    """Write a payload file with one frame per group ({name: content}); returns its manifest
    (``fips``, ``fips_go``: what a FIPS bundle's manifest says)."""
    roles = roles or {}
    work = path.parent / f".{path.name}.frames"
    work.mkdir(parents=True, exist_ok=True)
    frames, frame_files, binaries, libs = [], [], [], []
    offset = 0
    all_groups = [(g, False) for g in groups] + [({n: c for n, (c, _) in (libraries or {}).items()}, True)]
    for group, is_lib in all_groups:
        if not group:
            continue
        index = len(frames)
        data = b"".join(group.values())
        cctx = zstandard.ZstdCompressor(level=3, write_checksum=True, write_content_size=True)
        blob = cctx.compress(data)
        f = work / f"frame{index}.zst"
        f.write_bytes(blob)
        frame_files.append(f)
        frames.append(pf.Frame(offset=offset, size=len(blob), decoded_size=len(data),
                               sha256=hashlib.sha256(blob).hexdigest(), members=tuple(group)))
        offset += len(blob)
        inner = 0
        for name, content in group.items():
            digest = hashlib.sha256(content).hexdigest()
            if is_lib:
                libs.append(pf.Library(name=name, packages=libraries[name][1], python="3.11", sha256=digest,
                                       size=len(content), frame=index, offset=inner, links=(links or {}).get(name, ())))
            else:
                binaries.append(pf.Binary(
                    name=name, component=name.split("-")[0], version=version, license="Apache-2.0",
                    homepage="https://example.invalid", roles=tuple(roles.get(name, ("controller", "worker"))),
                    source=[f"https://example.invalid/{name}"], mode=mode, fips=fips, sha256=digest,
                    size=len(content), frame=index, offset=inner, links=(links or {}).get(name, ())))
            inner += len(content)
    manifest = pf.Manifest(mke_version="0.0.1", platform="linux/amd64", mode=mode, fips=fips,
                           frames=tuple(frames), binaries=tuple(sorted(binaries, key=lambda b: b.name)),
                           libraries=tuple(libs), images=images, fips_go=fips_go)
    with open(path, "wb") as out:
        pf.write_payload(out, manifest, frame_files)
    shutil.rmtree(work)
    return manifest


def embed(exe: Path, payload: Path, out: Path, *, pydata: bytes = b"PYDATA" * 100) -> Path:
    """Copy ``exe`` to ``out`` with ``payload`` as section mkepayload, then a pydata section."""
    side = out.parent / f".{out.name}.pydata"
    side.write_bytes(pydata)
    shutil.copyfile(exe, out)
    subprocess.run(["objcopy", "--add-section", f"{pf.SECTION_NAME}={payload}", str(out)], check=True)
    subprocess.run(["objcopy", "--add-section", f"pydata={side}", str(out)], check=True)
    side.unlink()
    out.chmod(0o755)
    return out


def executable_bytes(name: str = "true") -> bytes:
    """A real executable from the host (for binaries that must run)."""
    return Path(shutil.which(name) or f"/bin/{name}").read_bytes()
