"""The bundler: the last step of a build. dist/<os>-<arch>/manifest.json + CAS -> dist/mke.

dist/mke is a static entry program with the payload as an ELF section (docs/payload.md):

    entry.py     the static entry program (build/entry/, Go), built in docker mode
    runtime.py   the Python runtime it stages and runs: CPython 3.11 with its own loader and
                 libraries (pinned Debian packages and wheels) + mke/, split into parts
    frames.py    how binaries are grouped into zstd frames, each compressed once (cached)
    payload.py   the payload file: runtime parts and binary frames + the manifest
    elfjoin.py   entry + payload -> one static ELF executable, checked
    sbom.py      the SPDX SBOM
    release.py   write_bundle: all of the above, then dist/mke, SHA256SUMS, the SBOM
    debian.py, pins.py   .deb files; updating the runtime's pins (python -m build.bundle.pins)

Each step is a cached action, so a no-op bundle costs a few hashes of small files.
"""

from build.bundle.payload import DistManifest
from build.bundle.release import Bundle, bundle_names, write_bundle

__all__ = ["Bundle", "DistManifest", "bundle_names", "write_bundle"]
