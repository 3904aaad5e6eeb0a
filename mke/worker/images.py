"""The system images every node builds itself: no registry, and no binary carried twice.

The payload lists the images the default cluster runs (``Manifest.images``: pause,
CoreDNS, metrics-server, konnectivity-agent), each made of binaries the payload already
embeds plus a few small files (``/etc/passwd``, ``/tmp``, a file capability). At worker
start ``SystemImages.ensure`` stages those binaries, writes the images with
``mke/images/oci.py`` (plain tar layers, fixed times and owners: the same digests on
every node of one mke version), imports them into containerd's ``k8s.io`` namespace and
labels them ``io.cri-containerd.pinned=pinned``, which makes the CRI report them pinned:
kubelet's image garbage collection never removes them.

A marker (``worker/system-images.json``) records what was imported; a restart whose
payload and containerd still match it does nothing but one ``ctr images list``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mke.images import oci
from mke.node.files import write_file_atomic
from mke.payload_format import ImageSpec

MARKER = "system-images.json"


def specs_key(specs: tuple[ImageSpec, ...], digests: dict[str, str]) -> str:
    """What decides the images' bytes: the specs and the digests of the binaries they hold."""
    doc = {"schema": 1, "images": [s.to_document() for s in specs], "binaries": dict(sorted(digests.items()))}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def build_archive(specs: tuple[ImageSpec, ...], binaries: dict[str, Path], workdir: Path, out: Path,
                  *, arch: str) -> dict[str, str]:
    """Write every image of ``specs`` into one archive ``out``; returns ref -> manifest digest."""
    blobs = workdir / "blobs"
    base = None
    images = []
    for spec in specs:
        layers = []
        if spec.base:
            base = base or oci.build_layer(oci.base_entries(), blobs, comment="base", compress=False)
            layers.append(base)
        entries = [oci.binary_entry(f.path, binaries[f.binary], mode=f.mode, capabilities=f.capabilities)
                   for f in spec.files]
        entries += [oci.Entry(path=s.path, kind="symlink", target=s.target) for s in spec.symlinks]
        layers.append(oci.build_layer(entries, blobs, comment=spec.name, compress=False))
        config = oci.ImageConfig(entrypoint=spec.entrypoint, cmd=spec.cmd, env=spec.env, user=spec.user,
                                 workdir=spec.workdir, exposed_ports=spec.exposed_ports)
        images.append(oci.build_image(spec.ref, layers, config, blobs, arch=arch))
    oci.write_archive(images, out)
    return {img.ref: img.manifest.digest for img in images}


class SystemImages:
    """Build, import and pin the payload's system images (called by ImageImport before kubelet)."""

    def __init__(self, specs: tuple[ImageSpec, ...], *, stage: Callable[[list[str]], dict[str, Path]],
                 digests: dict[str, str], state_dir: Path, scratch: Path, arch: str) -> None:
        self.specs = specs
        self.stage = stage  # names -> staged paths
        self.digests = digests  # binary name -> sha256 (from the payload manifest)
        self.marker = state_dir / MARKER
        self.scratch = scratch
        self.arch = arch

    @property
    def key(self) -> str:
        names = sorted({f.binary for s in self.specs for f in s.files})
        return specs_key(self.specs, {n: self.digests[n] for n in names})

    def recorded(self) -> dict[str, str]:
        """ref -> digest as last imported for this payload, or {} (another payload, or never)."""
        try:
            doc = json.loads(self.marker.read_text())
        except (OSError, ValueError):
            return {}
        return dict(doc.get("images", {})) if doc.get("key") == self.key else {}

    def ensure(self, present: dict[str, str], import_archive: Callable[[Path, list[str]], None],
               say: Callable[[str], None]) -> dict[str, Any]:
        """Import the images unless containerd already has each one at its digest; returns a report."""
        if not self.specs:
            return {"images": 0}
        want = self.recorded()
        if want and all(present.get(ref) == digest for ref, digest in want.items()):
            return {"images": len(want), "built": False}
        t0 = time.monotonic()
        binaries = self.stage(sorted({f.binary for s in self.specs for f in s.files}))
        self.scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
        work = Path(tempfile.mkdtemp(prefix="system-images-", dir=self.scratch))
        try:
            archive = work / "system-images.tar"
            refs = build_archive(self.specs, binaries, work, archive, arch=self.arch)
            built = time.monotonic() - t0
            import_archive(archive, sorted(refs))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        write_file_atomic(self.marker, json.dumps({"key": self.key, "images": refs}, indent=1, sort_keys=True).encode(),
                          0o600)
        say(f"built {len(refs)} system images from the payload in {built:.1f}s, imported and pinned "
            f"({', '.join(sorted(refs))})")
        return {"images": len(refs), "built": True, "seconds": round(time.monotonic() - t0, 2), "digests": refs}
