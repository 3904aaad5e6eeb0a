"""Update the pins of the Python runtime (recipes/runtime/python.toml) from upstream indexes.

    python -m build.bundle.pins [--arch amd64] [--spec recipes/runtime/python.toml]

For each Debian package in ``[debian].packages`` (and, transitively, nothing else: the list
is explicit), the newest version across ``[debian].sources`` (Packages indexes fetched over
the mirror-aware downloader; Debian's index is the authority for the sha256), and for each
``[pypi].requirements`` line the best-matching CPython 3.11 manylinux wheel from PyPI's JSON
API (PyPI's sha256). The ``[[deb]]`` and ``[[wheel]]`` tables are rewritten; the rest of the
file is kept. Run it on a connected machine, review the diff, commit it: the new pins change
the runtime and so every bundle.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import sys
from pathlib import Path

from build.bundle.debian import newest, parse_packages
from build.bundle.runtime import DEFAULT_SPEC, DebPin, RuntimeSpec, WheelPin, load_spec, render_pins
from build.download import Downloader
from build.errors import BuildError, BundleError
from build.fsutil import write_atomic
from build.progress import log

MANYLINUX_GLIBC = 36  # the runtime's glibc (Debian bookworm: 2.36): wheels for manylinux_2_X, X <= 36


KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


def _get(url: str) -> bytes:
    import requests

    r = requests.get(url, timeout=60)
    if r.status_code != 200:
        raise BundleError(f"GET {url}: HTTP {r.status_code}")
    return r.content


def _signed_packages(mirror: str, suite: str, arch: str) -> str:
    """The suite's Packages index, checked against its InRelease file, whose signature gpgv checks
    with Debian's archive keyring: the pins' digests come from Debian's signed word."""
    import hashlib
    import subprocess
    import tempfile

    if not KEYRING.is_file():
        raise BundleError(f"{KEYRING} not found: install debian-archive-keyring (pins are taken from signed indexes)")
    inrelease = _get(f"{mirror}/dists/{suite}/InRelease")
    with tempfile.NamedTemporaryFile() as f:
        f.write(inrelease)
        f.flush()
        proc = subprocess.run(["gpgv", "--keyring", str(KEYRING), f.name], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BundleError(f"{mirror}/dists/{suite}/InRelease: bad signature: {proc.stderr.strip()[-200:]}")
    want = f"main/binary-{arch}/Packages.xz"
    digest = None
    section = False
    for line in inrelease.decode("utf-8", "replace").splitlines():
        if not line.startswith(" "):
            section = line.startswith("SHA256:")
            continue
        parts = line.split()
        if section and len(parts) == 3 and parts[2] == want:
            digest = parts[0]
    if digest is None:
        raise BundleError(f"{mirror}/dists/{suite}/InRelease lists no {want}")
    data = _get(f"{mirror}/dists/{suite}/{want}")
    if hashlib.sha256(data).hexdigest() != digest:
        raise BundleError(f"{mirror}/dists/{suite}/{want}: sha256 does not match InRelease")
    return lzma.decompress(data).decode("utf-8", "replace")


def _debian_pins(spec: RuntimeSpec, arch: str) -> list[DebPin]:
    stanzas = []
    for source in spec.sources:
        mirror, suite = source.split()
        found = [(mirror, st) for st in parse_packages(_signed_packages(mirror, suite, arch))]
        stanzas += found
        log("pins", f"{mirror} {suite} {arch}: {len(found)} packages")
    pins = []
    for package in spec.packages:
        found = newest(stanzas, package)
        if found is None:
            raise BundleError(f"{spec.path}: debian.packages: {package} is in none of {', '.join(spec.sources)}")
        mirror, st = found
        pins.append(DebPin(package=package, version=st["Version"], arch=arch,
                           url=f"{mirror}/{st['Filename']}", sha256=st["SHA256"]))
    return pins


def _file_url(base: str, url: str) -> str:
    """A wheel's canonical URL: some PyPI front ends answer with links relative to themselves
    (``../../packages/packages/...``) for files that files.pythonhosted.org serves."""
    import urllib.parse

    full = urllib.parse.urljoin(base, url)
    parts = urllib.parse.urlsplit(full)
    if parts.netloc == "pypi.org" and parts.path.startswith("/packages/packages/"):
        return "https://files.pythonhosted.org" + parts.path.removeprefix("/packages")
    return full


def _wheel_pins(spec: RuntimeSpec, arch: str, dl: Downloader) -> list[WheelPin]:
    from packaging.requirements import Requirement
    from packaging.tags import cpython_tags
    from packaging.utils import parse_wheel_filename

    machine = {"amd64": "x86_64", "arm64": "aarch64"}[arch]
    major, minor = (int(x) for x in spec.python.split("."))
    platforms = [f"manylinux_2_{n}_{machine}" for n in range(MANYLINUX_GLIBC, 16, -1)] + [f"manylinux2014_{machine}"]
    ranked = {str(t): i for i, t in enumerate(cpython_tags(python_version=(major, minor), platforms=platforms))}
    pins = []
    for line in spec.requirements:
        req = Requirement(line)
        versions = [str(s.version) for s in req.specifier if s.operator == "=="]
        if len(versions) != 1:
            raise BundleError(f"{spec.path}: pypi.requirements: {line!r} must pin one version with ==")
        json_url = f"https://pypi.org/pypi/{req.name}/json"
        doc = json.loads(dl.fetch_text(json_url, component="python-runtime"))
        best = None
        for f in doc.get("releases", {}).get(versions[0], []):
            if f.get("packagetype") != "bdist_wheel":
                continue
            _, _, _, tags = parse_wheel_filename(f["filename"])
            rank = min((ranked[str(t)] for t in tags if str(t) in ranked), default=None)
            if rank is not None and (best is None or rank < best[0]):
                best = (rank, f)
        if best is None:
            raise BundleError(f"{req.name}=={versions[0]}: PyPI has no wheel for CPython {spec.python} on "
                              f"manylinux {machine} (glibc <= 2.{MANYLINUX_GLIBC})")
        f = best[1]
        pins.append(WheelPin(name=req.name, version=versions[0], arch=arch, url=_file_url(json_url, f["url"]),
                             sha256=f["digests"]["sha256"]))
    return pins


def update(spec_path: Path, arches: list[str], mirror: str | None) -> RuntimeSpec:
    spec = load_spec(spec_path)
    from build.cache import Cache, default_cache_dir

    dl = Downloader(Cache(default_cache_dir()).root / "downloads", mirror=mirror)
    debs = [p for p in spec.debs if p.arch not in arches]
    wheels = [p for p in spec.wheels if p.arch not in arches]
    for arch in arches:
        debs += _debian_pins(spec, arch)
        wheels += _wheel_pins(spec, arch, dl)
    text = spec_path.read_text()
    head = text.split("\n[[deb]]", 1)[0].split("\n[[wheel]]", 1)[0].rstrip("\n")
    write_atomic(spec_path, (head + "\n" + render_pins(debs, wheels)).encode())
    new = load_spec(spec_path)
    for p in new.debs:
        log("pins", f"{p.package} {p.version} ({p.arch})")
    for w in new.wheels:
        log("pins", f"{w.name} {w.version} ({w.arch}): {w.url.rsplit('/', 1)[-1]}")
    return new


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m build.bundle.pins", description=__doc__.splitlines()[0])
    p.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    p.add_argument("--arch", action="append", choices=["amd64", "arm64"], help="default: amd64")
    p.add_argument("--mirror", default=os.environ.get("MKE_MIRROR"))
    args = p.parse_args(argv)
    try:
        update(args.spec, args.arch or ["amd64"], args.mirror)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
