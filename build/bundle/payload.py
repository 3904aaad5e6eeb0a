"""The payload file: the build's binaries and the Python runtime as frames, plus the manifest.

Input is dist/<os>-<arch>/manifest.json (``DistManifest``, written by build/pipeline.py) and
the runtime's parts (build/bundle/runtime.py). The runtime's parts come first, one frame
each (the static entry decodes them in parallel on a first start), then the binaries'
frames (frames.plan_frames). The layout is mke/payload_format.py's.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from build.bundle.frames import DEFAULT_LAYOUT, ZSTD_LEVEL, compress_frame, plan_frames
from build.bundle.runtime import PART_PREFIX
from build.cache import Cache, OutputFile
from build.errors import BundleError
from build.fsutil import atomic_writer
from mke import payload_format as pf

RUNTIME_PYTHON = "3.11"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistManifest:
    """dist/<os>-<arch>/manifest.json as written by build/pipeline.py."""

    path: Path
    platform: str
    mode: str
    fips: bool
    binaries: tuple[dict[str, Any], ...]
    # --fips-go of a FIPS build (native | boring); None: not recorded (a manifest from before
    # the field, or not FIPS). write_bundle resolves it (fips_go_mode) before the payload is made.
    fips_go: str | None = None

    @classmethod
    def load(cls, path: Path) -> DistManifest:
        try:
            doc = json.loads(path.read_text())
            dm = cls(path=path, platform=doc["platform"], mode=doc["mode"], fips=bool(doc.get("fips")),
                     binaries=tuple(sorted(doc["binaries"], key=lambda e: e["name"])), fips_go=doc.get("fips_go"))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise BundleError(f"{path}: cannot read the build manifest ({e}); run the build again") from e
        if dm.fips_go is not None and (not dm.fips or dm.fips_go not in pf.FIPS_GO_MODES):
            raise BundleError(f"{path}: fips_go {dm.fips_go!r} is not one of {', '.join(pf.FIPS_GO_MODES)} "
                              "of a FIPS build; run the build again")
        return dm

    def fips_go_mode(self, asked: str | None = None) -> str | None:
        """The Go FIPS mode of this build's binaries (None when not FIPS): what the manifest
        records, else ``asked`` (``--fips-go`` of this run), else fips/toolchain.toml's default.
        A manifest that records another mode than the one asked for is an error."""
        if not self.fips:
            return None
        if self.fips_go is not None:
            if asked is not None and asked != self.fips_go:
                raise BundleError(f"{self.path}: its binaries were built with --fips-go={self.fips_go}, "
                                  f"not --fips-go={asked}; build them again with --fips-go={asked}")
            return self.fips_go
        from fips.settings import load

        return load().go_mode(asked).name

    @property
    def embedded(self) -> tuple[dict[str, Any], ...]:
        return tuple(b for b in self.binaries if b.get("sha256"))


def mke_version() -> str:
    from mke import __version__

    return __version__


def part_members(parts: tuple[OutputFile, ...]) -> list[dict[str, Any]]:
    """The runtime's parts as frame members: mke-runtime.0, mke-runtime.1, ..."""
    return [{"name": f"{PART_PREFIX}{i}", "sha256": p.sha256, "size": p.size} for i, p in enumerate(parts)]


def node_images(dm: DistManifest, specs_dir: Path) -> tuple[pf.ImageSpec, ...]:
    """The images every node builds itself (recipes/images/*.toml made only of embedded binaries).

    An image spec that needs Debian packages, or a binary this build did not embed, is left
    to the air-gap bundle (``--airgap``).
    """
    from build.airgap import load_image_specs

    embedded = {b["name"]: b for b in dm.embedded}
    out = []
    for spec in load_image_specs(specs_dir).values():
        if spec.debs or not spec.files or not all(f.binary in embedded for f in spec.files):
            continue
        version = next((b["version"] for b in dm.binaries if b["component"] == spec.component), None)
        if version is None:
            continue
        cfg = spec.config()
        out.append(pf.ImageSpec(
            name=spec.name, ref=spec.reference(version), base=spec.base,
            files=tuple(pf.ImageFile(binary=f.binary, path=f.path, mode=f.mode, capabilities=tuple(f.capabilities))
                        for f in spec.files),
            symlinks=tuple(pf.ImageSymlink(path=s.path, target=s.target) for s in spec.symlinks),
            entrypoint=cfg.entrypoint, cmd=cfg.cmd, env=cfg.env, user=cfg.user, workdir=cfg.workdir,
            exposed_ports=cfg.exposed_ports,
        ))
    return tuple(sorted(out, key=lambda i: i.name))


def make_payload_manifest(dm: DistManifest, frames: list[tuple[list[str], OutputFile, int]],
                          runtime: list[dict[str, Any]], images: tuple[pf.ImageSpec, ...] = ()) -> pf.Manifest:
    """The payload manifest for ``dm`` with frames laid out one after another.

    ``frames``: (member names, compressed blob, decoded size); ``runtime``: part members
    (each the only member of its frame)."""
    by_name: dict[str, dict[str, Any]] = {b["name"]: b for b in dm.binaries} | {r["name"]: r for r in runtime}
    pf_frames = []
    placement: dict[str, tuple[int, int]] = {}
    offset = 0
    for index, (names, blob, decoded) in enumerate(frames):
        pf_frames.append(pf.Frame(offset=offset, size=blob.size, decoded_size=decoded, sha256=blob.sha256,
                                  members=tuple(names)))
        inner = 0
        for n in names:
            placement[n] = (index, inner)
            inner += int(by_name[n]["size"])
        offset += blob.size
    binaries = []
    for b in dm.binaries:
        frame, inner = placement.get(b["name"], (None, None))
        binaries.append(pf.Binary(
            name=b["name"], component=b["component"], version=b["version"], license=b.get("license", ""),
            homepage=b.get("homepage", ""), roles=tuple(b.get("roles", ())), source=b.get("source"),
            mode=b.get("mode", dm.mode), fips=bool(b.get("fips", dm.fips)),
            sha256=b.get("sha256"), size=b.get("size"), frame=frame, offset=inner,
            links=tuple(b.get("links", ())), patches=tuple(b.get("patches", ())),
        ))
    libraries = []
    for r in runtime:
        frame, inner = placement[r["name"]]
        libraries.append(pf.Library(name=r["name"], packages=(), python=RUNTIME_PYTHON, sha256=r["sha256"],
                                    size=r["size"], frame=frame, offset=inner))
    m = pf.Manifest(mke_version=mke_version(), platform=dm.platform, mode=dm.mode, fips=dm.fips,
                    frames=tuple(pf_frames), binaries=tuple(binaries), libraries=tuple(libraries), images=images,
                    fips_go=(dm.fips_go or pf.FIPS_GO_DEFAULT) if dm.fips else None)
    m.check("bundle")
    return m


def write_payload_file(cache: Cache, dm: DistManifest, out: Path, *, runtime: tuple[OutputFile, ...],
                       layout: str = DEFAULT_LAYOUT, jobs: int = 2,
                       images: tuple[pf.ImageSpec, ...] = (), level: int = ZSTD_LEVEL) -> pf.Manifest:
    """Compress (or reuse) every frame and write the whole payload to ``out``."""
    by_name = {b["name"]: b for b in dm.binaries}
    frames = []
    members = part_members(runtime)
    for member in members:
        blob, decoded = compress_frame(cache, dm.platform, [member], jobs=jobs, level=level)
        frames.append(([member["name"]], blob, decoded))
    for _label, names in plan_frames(dm.binaries, layout):
        blob, decoded = compress_frame(cache, dm.platform, [by_name[n] for n in names], jobs=jobs, level=level)
        frames.append((names, blob, decoded))
    manifest = make_payload_manifest(dm, frames, members, images)
    with atomic_writer(out) as f:
        pf.write_payload(f, manifest, [cache.cas.path(blob.sha256) for _, blob, _ in frames])
    return manifest
