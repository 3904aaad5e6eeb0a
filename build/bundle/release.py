"""The bundle step: dist/mke (or dist/mke-fips) and its release files.

1. the Python runtime (build/bundle/runtime.py) and the static entry (build/bundle/entry.py),
   each a cached action;
2. the payload (build/bundle/payload.py): the runtime's parts and the binaries' frames;
3. the join (build/bundle/elfjoin.py): entry + payload section; the joined file is run once
   (``version --json`` with a scratch runtime dir) before anything is published;
4. release files: dist/mke, dist/mke-<version>-<os>-<arch> (a hard link), SHA256SUMS
   (shared with the other bundle) and the SPDX SBOM (build/bundle/sbom.py).

A FIPS dist manifest (``build --fips``) makes dist/mke-fips: its runtime carries the OpenSSL
FIPS provider and a cryptography linked to the runtime's libcrypto.so.3 (fips/runtime.py),
and every embedded binary must pass the FIPS check before the file is published (docs/fips.md).
Its payload manifest records the Go FIPS mode (``fips_go``: native | boring, from the dist
manifest or ``--fips-go``): the runtime passes GODEBUG=fips140=on only to native children.

Everything is written to temp names and renamed; a stamp (dist/.bundle.json) records the
key and the files' size/mtime/inode so that an unchanged bundle is not rewritten.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from build.action import canonical_json
from build.bundle.elfjoin import join, objcopy_version
from build.bundle.entry import build_entry
from build.bundle.frames import DEFAULT_LAYOUT, ZSTD_LEVEL, plan_frames, zstd_identity
from build.bundle.payload import DistManifest, mke_version, node_images, part_members, write_payload_file
from build.bundle.runtime import FipsAdditions, build_runtime, load_spec, runtime_action
from build.bundle.sbom import sbom
from build.cache import Cache
from build.errors import BundleError
from build.fsutil import sha256_file, write_atomic
from build.progress import human_bytes, log

REPO = Path(__file__).resolve().parents[2]
BUNDLE_SCHEMA = 3  # 3: links and node images in the payload manifest
STAMP = ".bundle.json"
DEFAULT_EPOCH = 315532800  # 1980-01-01, the earliest date a zip file can hold


def _stamp_of(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Bundle:
    exe: Path
    versioned: Path
    sums: Path
    sbom: Path
    sha256: str
    size: int
    raw_size: int  # sum of the embedded binaries
    cached: bool


def update_sums(sums: Path, entries: dict[str, str]) -> None:
    """SHA256SUMS with ``entries`` (name -> digest) set; lines of other files still in dist/ are kept
    (dist/mke and dist/mke-fips share the file). Written only when it changes."""
    lines: dict[str, str] = {}
    old = b""
    with contextlib.suppress(FileNotFoundError):
        old = sums.read_bytes()
        for line in old.decode(errors="replace").splitlines():
            d, sep, name = line.partition("  ")
            if sep and name not in entries and (sums.parent / name).is_file():
                lines[name] = d
    lines.update(entries)
    new = "".join(f"{d}  {n}\n" for n, d in sorted(lines.items()))
    if new.encode() != old:
        write_atomic(sums, new.encode())


def bundle_names(version: str, platform: str, *, fips: bool) -> tuple[str, str]:
    """(executable name, versioned artifact name): mke / mke-<v>-<os>-<arch>, or mke-fips / mke-fips-<v>-..."""
    os_name, arch = platform.split("/", 1)
    base = "mke-fips" if fips else "mke"
    return base, f"{base}-{version}-{os_name}-{arch}"


def smoke_test(exe: Path, scratch: Path, *, mode: str) -> dict[str, Any]:
    """Run the joined file as a user would (``version --json``, the runtime staged into ``scratch``)."""
    env = {"PATH": "/usr/bin:/bin", "MKE_RUNTIME_DIR": str(scratch), "HOME": str(scratch)}
    proc = subprocess.run([str(exe), "version", "--json"], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        doc = None
    if proc.returncode != 0 or not isinstance(doc, dict) or doc.get("mode") != mode:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise BundleError(f"{exe}: the joined executable does not run (exit {proc.returncode}): {tail}")
    return doc


def write_bundle(*, cache: Cache, manifest_path: Path, dist: Path, layout: str = DEFAULT_LAYOUT,
                 jobs: int = 2, source_date_epoch: int = 0, mirror: str | None = None,
                 fips_go: str | None = None, compression_level: int = ZSTD_LEVEL) -> Bundle:
    """dist/mke (dist/mke-fips for a FIPS manifest) and its release files; see the module doc."""
    from build.platform import Platform

    t0 = time.monotonic()
    dm = DistManifest.load(manifest_path)
    # native | boring for a FIPS build: recorded in the payload (mke's children get GODEBUG by it)
    dm = dataclasses.replace(dm, fips_go=dm.fips_go_mode(fips_go))
    platform = Platform.parse(dm.platform.split("/", 1)[1])
    version = mke_version()
    base, artifact = bundle_names(version, dm.platform, fips=dm.fips)
    exe, versioned = dist / base, dist / artifact
    sums, sbom_path = dist / "SHA256SUMS", dist / f"{artifact}.spdx.json"
    dist.mkdir(parents=True, exist_ok=True)
    sde = source_date_epoch or default_epoch()
    spec = load_spec()
    fips: FipsAdditions | None = None
    if dm.fips:
        # The runtime's own crypto: OpenSSL FIPS provider + a cryptography linked to libcrypto.so.3
        # (fips/runtime.py, docs/fips.md).
        from fips.runtime import prepare

        fips = prepare(cache, mirror=mirror, jobs=jobs)
    by_name = {b["name"]: b for b in dm.binaries}
    plan = plan_frames(dm.binaries, layout)
    images = node_images(dm, REPO / "recipes" / "images")
    with cache.shared():
        entry = build_entry(cache, platform, mirror=mirror)
        runtime = build_runtime(cache, spec, dm.platform, source_date_epoch=sde, fips=fips, mirror=mirror)
    # Cheap key first: if nothing changed, leave every file alone.
    key = hashlib.sha256(canonical_json({
        "schema": BUNDLE_SCHEMA, "runtime": runtime_action(spec, dm.platform, source_date_epoch=sde, fips=fips).key(),
        "entry": entry.sha256, "layout": layout, "codec": zstd_identity(compression_level), "objcopy": objcopy_version(),
        "frames": [[by_name[n]["sha256"] for n in names] for _, names in plan],
        "manifest": [{k: v for k, v in b.items() if not k.startswith("_")} for b in dm.binaries],
        "mode": dm.mode, "fips": dm.fips, "platform": dm.platform, "version": version, "sde": sde,
        "images": [i.to_document() for i in images],
    } | ({"fips_go": dm.fips_go} if dm.fips else {}))).hexdigest()
    stamp_path = dist / (f".{base}{STAMP[len('.bundle'):]}" if dm.fips else STAMP)
    raw = sum(int(b["size"]) for b in dm.embedded)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        stamp = json.loads(stamp_path.read_text())
        if stamp["key"] == key and all(_stamp_of(dist / n) == s for n, s in stamp["files"].items()):
            update_sums(sums, {artifact: stamp["sha256"], base: stamp["sha256"]})
            log("bundle", f"{exe} is up to date ({human_bytes(stamp['size'])})")
            return Bundle(exe=exe, versioned=versioned, sums=sums, sbom=sbom_path, sha256=stamp["sha256"],
                          size=stamp["size"], raw_size=raw, cached=True)
    with cache.shared(), cache.tempdir("bundle-") as wd:
        work = Path(wd)
        payload_file = work / "payload"
        manifest = write_payload_file(cache, dm, payload_file, runtime=runtime.parts, layout=layout, jobs=jobs,
                                      images=images, level=compression_level)
        staged = dist / f".tmp-{base}"
        try:
            join(cache.cas.path(entry.sha256), payload_file, staged)
            smoke_test(staged, work / "runtime", mode=dm.mode)
            if dm.fips:  # the embedded binaries prove FIPS before dist/mke-fips is published
                verify_fips_bundle(staged, exe, dm.fips_go)
            os.replace(staged, exe)
        finally:
            with contextlib.suppress(FileNotFoundError):
                staged.unlink()
    digest = sha256_file(exe)
    size = exe.stat().st_size
    # Release files.
    tmp_link = dist / f".tmp-{artifact}"
    with contextlib.suppress(FileNotFoundError):
        tmp_link.unlink()
    os.link(exe, tmp_link)
    os.replace(tmp_link, versioned)
    update_sums(sums, {artifact: digest, base: digest})
    doc = sbom(manifest, artifact=artifact, digest=digest, source_date_epoch=sde, runtime=runtime.metadata,
               fips_provenance=fips.provenance if fips else None)
    write_atomic(sbom_path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
    # SHA256SUMS is shared with the other bundle: checked (and fixed) on every run instead.
    files = {p.name: _stamp_of(p) for p in (exe, versioned, sbom_path)}
    write_atomic(stamp_path, json.dumps({"key": key, "files": files, "sha256": digest, "size": size},
                                        sort_keys=True).encode())
    parts = sum(p["size"] for p in part_members(runtime.parts))
    log("bundle", f"{exe}: {human_bytes(size)} (entry {human_bytes(entry.size)}, runtime {human_bytes(parts)} in "
                  f"{len(runtime.parts)} parts, embedded binaries {human_bytes(raw)}, {len(manifest.frames)} frames, "
                  f"layout {layout}) in {time.monotonic() - t0:.1f}s")
    return Bundle(exe=exe, versioned=versioned, sums=sums, sbom=sbom_path, sha256=digest, size=size,
                  raw_size=raw, cached=False)


def verify_fips_bundle(path: Path, name: Path, fips_go: str | None) -> None:
    """What ``python -m build.fips_check dist/mke-fips --require`` checks: every binary in the payload."""
    from build.errors import VerificationError
    from build.fips_check import check_bundle, default_policy, failure_message

    reports, _meta = check_bundle(path, policy=default_policy(fips_go))
    if not all(r.ok for r in reports):
        raise VerificationError(failure_message(reports, str(name)))
    log("bundle", f"{name}: all {len(reports)} embedded binaries pass the FIPS check")


def default_epoch() -> int:
    """SOURCE_DATE_EPOCH, else a fixed date (never 'now', so that bundles are reproducible)."""
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return DEFAULT_EPOCH
