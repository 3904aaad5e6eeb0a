"""The bundler: the last step of a build. dist/<os>-<arch>/manifest.json + CAS -> dist/mke.

Steps, each cached in the content-addressed cache so that a no-op build costs a few
hashes of small files:

1. **Frames**: the binaries are grouped (``LAYOUTS``; default ``groups``: one zstd frame
   per role set) and each group is compressed once (level 19, long-distance matching,
   content checksum). A frame is an action: its key is the members' digests plus the
   codec parameters; its output is one CAS blob.
2. **Runtime**: a PyInstaller one-file build of ``mke/`` (lean: unused stdlib and
   packages excluded), reproducible (PYTHONHASHSEED=0, SOURCE_DATE_EPOCH, sorted
   inputs). Also an action, keyed by the digest of every runtime source file and the
   versions of Python, PyInstaller and the packages bundled.
3. **Join**: the payload (mke/payload_format.py) becomes the ELF section ``mkepayload``,
   placed before PyInstaller's ``pydata`` section (objcopy: dump pydata, remove it, add
   the payload, add pydata back) so that the bootloader's backwards scan for its archive
   stays short and ``strip`` keeps both.
4. **Release files**: dist/mke, dist/mke-<version>-<os>-<arch> (a hard link), SHA256SUMS,
   and an SPDX 2.3 JSON SBOM (mke-<version>-<os>-<arch>.spdx.json).

A FIPS dist manifest (``build --fips``) makes dist/mke-fips and mke-fips-<version>-<os>-<arch>
instead: the runtime gets the OpenSSL FIPS provider, a cryptography linked to the system
libcrypto.so.3 and the FIPS runtime hook (``fips.runtime.prepare``, ``RuntimeSpec.with_fips``),
and every embedded binary must pass the FIPS check before the file is published (docs/fips.md).

Everything is written to temp names and renamed; a stamp (dist/.bundle.json) records
the key and the files' size/mtime/inode so that an unchanged bundle is not rewritten.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform as _platform
import py_compile
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from build.action import Action, canonical_json
from build.cache import Cache, OutputFile
from build.errors import BundleError
from build.fsutil import CHUNK, atomic_writer, sha256_file, write_atomic
from build.progress import human_bytes, log
from mke import payload_format as pf
from mke.pylib import LAZY_PACKAGES

REPO = Path(__file__).resolve().parent.parent
ENTRY_SCRIPT = REPO / "build" / "pyinstaller" / "mke_entry.py"
SPEC_FILE = REPO / "build" / "pyinstaller" / "mke.spec"
BUNDLE_SCHEMA = 1
ZSTD_LEVEL = 19
ZSTD_WINDOW_LOG = 31  # long-distance matching over a whole group; decode memory <= the group's size
LAYOUTS = ("groups", "per-binary", "solid")
DEFAULT_LAYOUT = "groups"
STAMP = ".bundle.json"
DEFAULT_EPOCH = 315532800  # 1980-01-01, the earliest date a zip file can hold

# Modules the runtime never uses; PyInstaller would otherwise collect them because
# something in the stdlib imports them conditionally. Fewer files = faster start-up
# (a one-file program unpacks everything on every start).
EXCLUDES = (
    "tkinter", "_tkinter", "turtle", "turtledemo", "idlelib", "pydoc", "pydoc_data", "doctest", "unittest",
    "lib2to3", "distutils", "setuptools", "pkg_resources", "pip", "ensurepip", "venv", "test", "xmlrpc",
    "multiprocessing", "concurrent.futures.process", "sqlite3", "_sqlite3", "curses", "_curses", "readline",
    "dbm", "tracemalloc", "pdb", "bdb", "profile", "cProfile", "pstats", "timeit", "trace", "mailbox",
    "imaplib", "poplib", "smtplib", "nntplib", "ftplib", "telnetlib", "cgi", "cgitb", "wsgiref", "xml.dom",
    "xml.sax", "pyexpat", "_decimal", "decimal", "_pydecimal", "lzma", "_lzma", "bz2", "_bz2", "audioop",
    "_ctypes_test", "_testcapi", "_testinternalcapi", "_testbuffer", "_testimportmultiple", "_testmultiphase",
    "_xxtestfuzz", "zstandard.backend_cffi", "cffi", "IPython", "numpy",
    # PyYAML's libyaml binding: the pure-Python parser reads mke.yaml just as well.
    "yaml._yaml", "_yaml", "yaml.cyaml",
)

ROLE_ORDER = ("controller", "worker", "image")


# --------------------------------------------------------------------------- inputs


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistManifest:
    """dist/<os>-<arch>/manifest.json as written by build/pipeline.py."""

    path: Path
    platform: str
    mode: str
    fips: bool
    binaries: tuple[dict[str, Any], ...]

    @classmethod
    def load(cls, path: Path) -> DistManifest:
        try:
            doc = json.loads(path.read_text())
            return cls(path=path, platform=doc["platform"], mode=doc["mode"], fips=bool(doc.get("fips")),
                       binaries=tuple(sorted(doc["binaries"], key=lambda e: e["name"])))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise BundleError(f"{path}: cannot read the build manifest ({e}); run the build again") from e

    @property
    def embedded(self) -> tuple[dict[str, Any], ...]:
        return tuple(b for b in self.binaries if b.get("sha256"))


def mke_version() -> str:
    from mke import __version__

    return __version__


# --------------------------------------------------------------------------- frames


def plan_frames(binaries: Iterable[dict[str, Any]], layout: str) -> list[tuple[str, list[str]]]:
    """Group binary names into frames: [(frame label, [names in frame order])].

    ``groups``: a controller frame and a worker frame, so that staging a role decodes
    only what that role runs. Binaries both roles run (kubectl) open the worker frame:
    decoding stops once the wanted binaries are out, so a controller decodes just that
    prefix, and the worker binaries after it still find its code within the window.
    Binaries of other roles (image) get frames of their own. Within a frame the biggest
    binaries come first: they share the most code.
    """
    if layout not in LAYOUTS:
        raise BundleError(f"unknown payload layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    items = [b for b in binaries if b.get("sha256")]
    order = sorted(items, key=lambda b: (-int(b["size"]), b["name"]))
    if layout == "per-binary":
        return [(b["name"], [b["name"]]) for b in sorted(items, key=lambda b: b["name"])]
    if layout == "solid":
        return [("all", [b["name"] for b in order])] if order else []
    groups: dict[str, list[str]] = {}
    shared = []
    for b in order:
        roles = tuple(r for r in ROLE_ORDER if r in b.get("roles", ())) or ("other",)
        if roles == ("controller", "worker"):
            shared.append(b["name"])
        else:
            groups.setdefault("+".join(roles), []).append(b["name"])
    if shared:
        groups["worker"] = shared + groups.get("worker", [])
    rank = {"controller": 0, "worker": 1}
    return [(k, v) for k, v in sorted(groups.items(), key=lambda kv: (rank.get(kv[0], 2), kv[0]))]


def _zstd_identity() -> dict[str, Any]:
    import zstandard

    return {"python-zstandard": zstandard.__version__, "libzstd": ".".join(map(str, zstandard.ZSTD_VERSION)),
            "level": ZSTD_LEVEL, "window_log": ZSTD_WINDOW_LOG, "checksum": True, "ldm": True, "threads": "n>=1"}


def compress_frame(cache: Cache, platform: str, members: list[dict[str, Any]], *, jobs: int) -> tuple[OutputFile, int]:
    """The compressed blob of ``members`` concatenated, from the cache or made now."""
    import zstandard

    decoded = sum(int(m["size"]) for m in members)
    action = Action(mode="bundle-frame", component="+".join(m["name"] for m in members), platform=platform,
                    inputs={"codec": _zstd_identity(), "members": [[m["name"], m["sha256"], m["size"]] for m in members]})
    key = action.key()
    hit = cache.get(key)
    if hit is not None:
        return hit.outputs[0], decoded
    with cache.action_lock(key):
        hit = cache.get(key)
        if hit is not None:
            return hit.outputs[0], decoded
        t0 = time.monotonic()
        names = ", ".join(m["name"] for m in members)
        log("bundle", f"compressing {names} ({human_bytes(decoded)}, zstd -{ZSTD_LEVEL} --long={ZSTD_WINDOW_LOG})")
        params = zstandard.ZstdCompressionParameters.from_level(
            ZSTD_LEVEL, source_size=decoded, window_log=min(ZSTD_WINDOW_LOG, max(10, decoded.bit_length())),
            enable_ldm=True, write_checksum=True, write_content_size=True,
            # Always >= 1 worker: zstd's multi-threaded output does not depend on the count.
            threads=max(1, jobs),
        )
        cctx = zstandard.ZstdCompressor(compression_params=params)
        with cache.tempdir("frame-") as wd:
            out = Path(wd) / "frame.zst"
            corrupt: list[str] = []
            try:
                with open(out, "wb") as raw, cctx.stream_writer(raw, size=decoded, closefd=False) as w:
                    for m in members:
                        src = cache.cas.path(m["sha256"])
                        h = hashlib.sha256()
                        try:
                            with open(src, "rb") as f:
                                while chunk := f.read(CHUNK):
                                    h.update(chunk)
                                    w.write(chunk)
                        except FileNotFoundError:
                            raise BundleError(f"{m['name']}: blob {m['sha256']} is not in the cache; "
                                              "run the build again") from None
                        if h.hexdigest() != m["sha256"]:
                            corrupt.append(f"{m['name']}: cache blob {src} is corrupt")
                            break
            except zstandard.ZstdError:
                if not corrupt:
                    raise
            if corrupt:
                raise BundleError(f"{corrupt[0]}; run `nox -s cache -- verify` and build again")
            digest, size = cache.cas.put_file(out)
        result = cache.put(action, [OutputFile(name="frame.zst", sha256=digest, size=size, executable=False)],
                           {"seconds": round(time.monotonic() - t0, 3), "decoded": decoded})
        log("bundle", f"  {human_bytes(size)} ({100 * size / max(1, decoded):.1f}%) in {time.monotonic() - t0:.1f}s")
        return result.outputs[0], decoded


PYLIB_NAME = "mke-python-lib"


def make_payload_manifest(dm: DistManifest, frames: list[tuple[list[str], OutputFile, int]],
                          pylib: OutputFile | None = None) -> pf.Manifest:
    """The payload manifest for ``dm`` with frames laid out one after another."""
    by_name: dict[str, dict[str, Any]] = {b["name"]: b for b in dm.binaries}
    if pylib is not None:
        by_name[PYLIB_NAME] = {"name": PYLIB_NAME, "size": pylib.size, "sha256": pylib.sha256}
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
        ))
    libraries = []
    if pylib is not None:
        frame, inner = placement[PYLIB_NAME]
        libraries.append(pf.Library(name=PYLIB_NAME, packages=LAZY_PACKAGES, sha256=pylib.sha256, size=pylib.size,
                                    python=f"{sys.version_info.major}.{sys.version_info.minor}",
                                    frame=frame, offset=inner))
    m = pf.Manifest(mke_version=mke_version(), platform=dm.platform, mode=dm.mode, fips=dm.fips,
                    frames=tuple(pf_frames), binaries=tuple(binaries), libraries=tuple(libraries))
    m.check("bundle")
    return m


def write_payload_file(cache: Cache, dm: DistManifest, out: Path, *, layout: str = DEFAULT_LAYOUT,
                       jobs: int = 2, pylib: OutputFile | None = None) -> pf.Manifest:
    """Compress (or reuse) every frame and write the whole payload to ``out``.

    The lazy Python library (if any) gets a frame of its own, first: it is small and
    the first ``import cryptography`` decodes it."""
    by_name = {b["name"]: b for b in dm.binaries}
    frames = []
    if pylib is not None:
        member = {"name": PYLIB_NAME, "sha256": pylib.sha256, "size": pylib.size}
        blob, decoded = compress_frame(cache, dm.platform, [member], jobs=jobs)
        frames.append(([PYLIB_NAME], blob, decoded))
    for _label, names in plan_frames(dm.binaries, layout):
        blob, decoded = compress_frame(cache, dm.platform, [by_name[n] for n in names], jobs=jobs)
        frames.append((names, blob, decoded))
    manifest = make_payload_manifest(dm, frames, pylib)
    with atomic_writer(out) as f:
        pf.write_payload(f, manifest, [cache.cas.path(blob.sha256) for _, blob, _ in frames])
    return manifest


# --------------------------------------------------------------------------- runtime (PyInstaller)


def _runtime_sources() -> list[Path]:
    files = [p for p in (REPO / "mke").rglob("*") if p.is_file() and p.suffix in (".py", ".yaml", ".json", ".txt")
             and "__pycache__" not in p.parts]
    files += [p for p in (REPO / "build" / "pyinstaller").iterdir() if p.suffix in (".py", ".spec")]
    return sorted(files, key=lambda p: p.relative_to(REPO).as_posix())


def _package_versions() -> dict[str, str]:
    out = {}
    for name in ("pyinstaller", "pyinstaller-hooks-contrib", "zstandard", "cryptography", "PyYAML", "cffi"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class RuntimeSpec:
    """What the PyInstaller build is given (written to JSON for build/pyinstaller/mke.spec)."""

    name: str = "mke"
    entry: Path = ENTRY_SCRIPT
    collect: tuple[str, ...] = ("mke",)
    excludes: tuple[str, ...] = EXCLUDES
    lazy: tuple[str, ...] = LAZY_PACKAGES
    strip: bool = True
    # Extra files for Analysis, as (source, dest dir) pairs; ``exact`` ones are moved back to
    # DATA after Analysis so that strip leaves their bytes alone (the FIPS provider's MAC).
    binaries: tuple[tuple[str, str], ...] = ()
    datas: tuple[tuple[str, str], ...] = ()
    exact: tuple[tuple[str, str], ...] = ()
    runtime_hooks: tuple[str, ...] = ()

    def config(self) -> dict[str, Any]:
        cfg = {"name": self.name, "entry": str(self.entry), "paths": [str(REPO)], "collect": list(self.collect),
               "excludes": sorted(self.excludes), "lazy": list(self.lazy), "strip": self.strip}
        # Only when set: the plain runtime's config (and so its cache key) stays as it was.
        for field in ("binaries", "datas", "exact"):
            if getattr(self, field):
                cfg[field] = [list(e) for e in getattr(self, field)]
        if self.runtime_hooks:
            cfg["runtime_hooks"] = list(self.runtime_hooks)
        return cfg

    def with_fips(self, opts: dict[str, Any]) -> RuntimeSpec:
        """This spec plus ``fips.runtime.bundle_options`` (docs/fips.md, "Bundle hook")."""
        def pairs(key: str) -> tuple[tuple[str, str], ...]:
            return tuple((str(src), str(dest)) for src, dest in opts.get(key, ()))

        return dataclasses.replace(
            self, name=f"{self.name}-fips", excludes=tuple(sorted({*self.excludes, *opts.get("excludes", ())})),
            binaries=self.binaries + pairs("binaries"), datas=self.datas + pairs("datas"),
            exact=self.exact + pairs("exact"),
            runtime_hooks=self.runtime_hooks + tuple(str(h) for h in opts.get("runtime_hooks", ())))

    def key_config(self) -> dict[str, Any]:
        """config() with every extra file named by its digest instead of its (cache temp) path."""
        cfg = self.config()
        cfg.pop("paths")
        cfg["entry"] = Path(self.entry).resolve().relative_to(REPO).as_posix() if str(self.entry).startswith(str(REPO)) \
            else sha256_file(Path(self.entry))
        for field in ("binaries", "datas", "exact"):
            if field in cfg:
                cfg[field] = [[Path(src).name, sha256_file(Path(src)), dest] for src, dest in cfg[field]]
        if "runtime_hooks" in cfg:
            cfg["runtime_hooks"] = [[Path(h).name, sha256_file(Path(h))] for h in cfg["runtime_hooks"]]
        return cfg


def runtime_action(platform: str, source_date_epoch: int, spec: RuntimeSpec) -> Action:
    sources = {p.relative_to(REPO).as_posix(): sha256_file(p) for p in _runtime_sources()}
    cfg = spec.key_config()
    return Action(mode="bundle-runtime", component=spec.name, platform=platform, inputs={
        "sources": sources, "python": sys.version, "implementation": _platform.python_implementation(),
        "packages": _package_versions(), "config": cfg, "source_date_epoch": source_date_epoch,
        "schema": BUNDLE_SCHEMA,
    })


def reproducible_env(source_date_epoch: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "_PYI_", "PYINSTALLER"))}
    env.update({"PYTHONHASHSEED": "0", "SOURCE_DATE_EPOCH": str(source_date_epoch), "PYTHONPATH": str(REPO),
                "PYTHONDONTWRITEBYTECODE": "1", "TZ": "UTC", "LC_ALL": "C.UTF-8"})
    return env


def run_pyinstaller(workdir: Path, spec: RuntimeSpec, *, source_date_epoch: int) -> Path:
    """Run PyInstaller on build/pyinstaller/mke.spec; returns the one-file executable."""
    config = workdir / "config.json"
    config.write_text(json.dumps(spec.config(), indent=1, sort_keys=True))
    cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
           "--distpath", str(workdir / "dist"), "--workpath", str(workdir / "work"), str(SPEC_FILE)]
    env = reproducible_env(source_date_epoch) | {"MKE_PYI_CONFIG": str(config)}
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        if "No module named PyInstaller" in (proc.stderr or ""):
            raise BundleError("PyInstaller is not installed in this environment; "
                              "install requirements/build.txt (nox -s build does)")
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        raise BundleError(f"PyInstaller failed (exit {proc.returncode}): {lines[-1] if lines else '(no output)'}")
    return workdir / "dist" / spec.name


def build_runtime(cache: Cache, platform: str, *, source_date_epoch: int, spec: RuntimeSpec = RuntimeSpec()) -> OutputFile:
    """The PyInstaller one-file executable (no payload), from the cache or built now."""
    action = runtime_action(platform, source_date_epoch, spec)
    key = action.key()
    hit = cache.get(key)
    if hit is not None:
        return hit.outputs[0]
    with cache.action_lock(key):
        hit = cache.get(key)
        if hit is not None:
            return hit.outputs[0]
        t0 = time.monotonic()
        log("bundle", f"PyInstaller one-file build of {spec.entry.name}")
        with cache.tempdir("pyinstaller-") as wd:
            exe = run_pyinstaller(Path(wd), spec, source_date_epoch=source_date_epoch)
            digest, size = cache.cas.put_file(exe)
        result = cache.put(action, [OutputFile(name=spec.name, sha256=digest, size=size)],
                           {"seconds": round(time.monotonic() - t0, 3)})
        log("bundle", f"  runtime {human_bytes(size)} in {time.monotonic() - t0:.1f}s")
        return result.outputs[0]


# --------------------------------------------------------------------------- lazy Python library


def _lazy_files() -> list[tuple[str, Path]]:
    """(archive name, file) for every file of LAZY_PACKAGES in this environment, sorted."""
    out: dict[str, Path] = {}
    for name in LAZY_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        if spec.submodule_search_locations:
            for root in spec.submodule_search_locations:
                base = Path(root).parent
                for p in Path(root).rglob("*"):
                    if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
                        out[p.relative_to(base).as_posix()] = p
                libs = Path(root).parent / f"{name}.libs"
                if libs.is_dir():
                    for p in libs.rglob("*"):
                        if p.is_file():
                            out[p.relative_to(base).as_posix()] = p
        elif spec.origin:
            out[Path(spec.origin).name] = Path(spec.origin)
    return sorted(out.items())


def _tarinfo(name: str, size: int, mode: int, mtime: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime, ti.type = size, mode, mtime, kind
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def build_pylib(cache: Cache, platform: str, *, source_date_epoch: int) -> OutputFile | None:
    """A deterministic tar of the lazy packages plus their bytecode (unchecked-hash .pyc)."""
    files = _lazy_files()
    if not files:
        return None
    action = Action(mode="bundle-pylib", component="pylib", platform=platform, inputs={
        "files": [[n, sha256_file(p)] for n, p in files], "python": sys.version, "sde": source_date_epoch,
        "schema": BUNDLE_SCHEMA,
    })
    key = action.key()
    hit = cache.get(key)
    if hit is not None:
        return hit.outputs[0]
    with cache.action_lock(key), cache.tempdir("pylib-") as wd:
        tree = Path(wd) / "tree"
        for name, src in files:
            dst = tree / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        for name, _ in files:
            if name.endswith(".py"):
                py_compile.compile(str(tree / name), doraise=True, quiet=1,
                                   invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        out = Path(wd) / "pylib.tar"
        members = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*"))
        with open(out, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in members:
                p = tree / name
                if p.is_dir():
                    tar.addfile(_tarinfo(name, 0, 0o755, source_date_epoch, tarfile.DIRTYPE))
                else:
                    mode = 0o755 if name.endswith(".so") or ".so." in name else 0o644
                    with open(p, "rb") as f:
                        tar.addfile(_tarinfo(name, p.stat().st_size, mode, source_date_epoch), f)
        digest, size = cache.cas.put_file(out)
        result = cache.put(action, [OutputFile(name="pylib.tar", sha256=digest, size=size, executable=False)], {})
        return result.outputs[0]


# --------------------------------------------------------------------------- join


def _objcopy(*args: str) -> None:
    tool = shutil.which("objcopy")
    if tool is None:
        raise BundleError("objcopy not found; install binutils (scripts/bootstrap.sh does)")
    proc = subprocess.run([tool, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BundleError(f"objcopy {' '.join(args[:2])} failed: {(proc.stderr or proc.stdout).strip()}")


def join(runtime: Path, payload: Path, out: Path) -> None:
    """Write ``out``: ``runtime`` with ``payload`` as section mkepayload placed before pydata.

    Separate objcopy calls keep the order: adding both in one call would put pydata first
    and the bootloader would scan the whole payload backwards on every start.
    """
    with tempfile.TemporaryDirectory(prefix="join-", dir=out.parent) as wd:
        w = Path(wd)
        shutil.copyfile(runtime, w / "runtime")
        _objcopy("--dump-section", f"pydata={w / 'pydata'}", str(w / "runtime"), str(w / "scratch"))
        _objcopy("--remove-section", "pydata", str(w / "runtime"), str(w / "joined"))
        _objcopy("--add-section", f"{pf.SECTION_NAME}={payload}", str(w / "joined"))
        _objcopy("--add-section", f"pydata={w / 'pydata'}", str(w / "joined"))
        check_joined(w / "joined")
        os.chmod(w / "joined", 0o755)
        os.replace(w / "joined", out)


def check_joined(path: Path) -> pf.Payload:
    """The payload is found by name, lies before pydata, and its manifest reads back."""
    with open(path, "rb") as f:
        ours = pf.find_elf_section(f, pf.SECTION_NAME, str(path))
        pydata = pf.find_elf_section(f, "pydata", str(path))
    if ours is None or pydata is None:
        raise BundleError(f"{path}: joined executable lacks the {pf.SECTION_NAME} or pydata section")
    if not ours[0] + ours[1] <= pydata[0]:
        raise BundleError(f"{path}: {pf.SECTION_NAME} must come before pydata in the file")
    payload = pf.Payload.open(path)
    if payload is None:
        raise BundleError(f"{path}: payload does not read back")
    return payload


# --------------------------------------------------------------------------- release files


def _iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _spdx_id(text: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "-" for c in text)


def sbom(manifest: pf.Manifest, *, artifact: str, digest: str, source_date_epoch: int,
         fips_provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """An SPDX 2.3 JSON document: mke, each embedded component (version, license, source,
    digest of each binary), and the Python packages inside the runtime.

    For a FIPS bundle (``fips_provenance``: the OpenSSL FIPS provider's provenance.json) the
    document and the mke package say so, and the provider is a package of its own whose
    comment is the provenance statement (which version, validated or not)."""
    doc_id = uuid.uuid5(uuid.NAMESPACE_URL, f"mke:{artifact}:{digest}")
    comment = f"build mode {manifest.mode}, fips {str(manifest.fips).lower()}, platform {manifest.platform}"
    if fips_provenance is not None:
        comment += f"; FIPS build: runtime crypto through {fips_provenance.get('statement', '(no statement)')}"
    packages: list[dict[str, Any]] = [{
        "SPDXID": "SPDXRef-Package-mke", "name": "mke", "versionInfo": manifest.mke_version,
        "downloadLocation": "NOASSERTION", "filesAnalyzed": False, "licenseConcluded": "Apache-2.0",
        "licenseDeclared": "Apache-2.0", "copyrightText": "NOASSERTION", "primaryPackagePurpose": "APPLICATION",
        "checksums": [{"algorithm": "SHA256", "checksumValue": digest}],
        "comment": comment,
    }]
    files: list[dict[str, Any]] = []
    rels = [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
             "relatedSpdxElement": "SPDXRef-Package-mke"}]
    components: dict[str, list[pf.Binary]] = {}
    for b in manifest.binaries:
        components.setdefault(b.component, []).append(b)
    for comp in sorted(components):
        bins = components[comp]
        first = bins[0]
        pid = f"SPDXRef-Package-{_spdx_id(comp)}"
        source = first.source
        pkg: dict[str, Any] = {
            "SPDXID": pid, "name": comp, "versionInfo": first.version, "filesAnalyzed": False,
            "licenseConcluded": first.license or "NOASSERTION", "licenseDeclared": first.license or "NOASSERTION",
            "copyrightText": "NOASSERTION", "homepage": first.homepage or "NOASSERTION",
            "downloadLocation": "NOASSERTION", "primaryPackagePurpose": "APPLICATION",
        }
        urls = source if isinstance(source, list) else []
        if urls:
            pkg["downloadLocation"] = urls[0]
        if isinstance(source, str) and "@" in source:
            module, version = source.rsplit("@", 1)
            pkg["externalRefs"] = [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                                    "referenceLocator": f"pkg:golang/{module}@{version}"}]
            pkg["sourceInfo"] = f"built from source: Go module {source}"
        elif urls and urls[0].endswith(".dsc"):  # kind = "debian" recipes (build/debsrc.py)
            pkg["sourceInfo"] = "built from Debian source packages: " + " ".join(urls)
        elif urls:
            pkg["sourceInfo"] = "upstream release artifacts: " + " ".join(urls)
        else:
            pkg["sourceInfo"] = "not embedded: looked up on PATH at run time (none mode)"
        packages.append(pkg)
        rels.append({"spdxElementId": "SPDXRef-Package-mke", "relationshipType": "CONTAINS", "relatedSpdxElement": pid})
        for b in bins:
            if not b.sha256:
                continue
            fid = f"SPDXRef-File-{_spdx_id(b.name)}"
            files.append({"SPDXID": fid, "fileName": f"./bin/{b.name}", "fileTypes": ["BINARY"],
                          "checksums": [{"algorithm": "SHA256", "checksumValue": b.sha256}],
                          "licenseConcluded": b.license or "NOASSERTION", "copyrightText": "NOASSERTION",
                          "comment": f"{b.size} bytes; roles: {', '.join(b.roles)}"})
            rels.append({"spdxElementId": pid, "relationshipType": "CONTAINS", "relatedSpdxElement": fid})
    for name, version in sorted(_package_versions().items()):
        if name.startswith("pyinstaller"):
            continue
        pid = f"SPDXRef-Package-python-{_spdx_id(name)}"
        packages.append({"SPDXID": pid, "name": name, "versionInfo": version, "downloadLocation": "NOASSERTION",
                         "filesAnalyzed": False, "licenseConcluded": "NOASSERTION", "licenseDeclared": "NOASSERTION",
                         "copyrightText": "NOASSERTION", "primaryPackagePurpose": "LIBRARY",
                         "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                                           "referenceLocator": f"pkg:pypi/{name.lower()}@{version}"}]})
        if fips_provenance is not None and name == "cryptography":
            packages[-1]["sourceInfo"] = ("built from its sdist against the system libcrypto.so.3 that the bundle "
                                          "carries (fips.runtime.cryptography_wheel)")
        rels.append({"spdxElementId": "SPDXRef-Package-mke", "relationshipType": "CONTAINS", "relatedSpdxElement": pid})
    py = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    packages.append({"SPDXID": "SPDXRef-Package-python", "name": "cpython", "versionInfo": py,
                     "downloadLocation": "NOASSERTION", "filesAnalyzed": False, "licenseConcluded": "PSF-2.0",
                     "licenseDeclared": "PSF-2.0", "copyrightText": "NOASSERTION", "primaryPackagePurpose": "LIBRARY"})
    rels.append({"spdxElementId": "SPDXRef-Package-mke", "relationshipType": "CONTAINS",
                 "relatedSpdxElement": "SPDXRef-Package-python"})
    doc = {
        "spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT", "name": artifact,
        "documentNamespace": f"https://spdx.org/spdxdocs/{artifact}-{doc_id}",
        "creationInfo": {"created": _iso(source_date_epoch), "creators": [f"Tool: mke-build-{manifest.mke_version}"]},
        "packages": packages, "files": files, "relationships": rels,
    }
    if fips_provenance is not None:
        prov = fips_provenance
        pkg = {"SPDXID": "SPDXRef-Package-openssl-fips-provider", "name": "openssl-fips-provider",
               "versionInfo": str(prov.get("openssl_version") or "NOASSERTION"),
               "downloadLocation": prov.get("url") or "NOASSERTION", "filesAnalyzed": False,
               "licenseConcluded": "Apache-2.0", "licenseDeclared": "Apache-2.0", "copyrightText": "NOASSERTION",
               "homepage": "https://www.openssl.org", "primaryPackagePurpose": "LIBRARY",
               "sourceInfo": f"{prov.get('source', 'NOASSERTION')}; Configure {' '.join(prov.get('configure', []))}",
               "comment": f"{prov.get('statement', '')}; validated: {str(bool(prov.get('validated'))).lower()}"}
        if prov.get("fips_so_sha256"):
            pkg["checksums"] = [{"algorithm": "SHA256", "checksumValue": prov["fips_so_sha256"]}]
        packages.append(pkg)
        rels.append({"spdxElementId": "SPDXRef-Package-mke", "relationshipType": "CONTAINS",
                     "relatedSpdxElement": pkg["SPDXID"]})
        doc["comment"] = f"FIPS build of mke. {prov.get('statement', '')}"
    return doc


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


def _update_sums(sums: Path, entries: dict[str, str]) -> None:
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


def write_bundle(*, cache: Cache, manifest_path: Path, dist: Path, layout: str = DEFAULT_LAYOUT,
                 jobs: int = 2, source_date_epoch: int = 0, spec: RuntimeSpec = RuntimeSpec(),
                 mirror: str | None = None, fips_go: str | None = None) -> Bundle:
    """dist/mke (dist/mke-fips for a FIPS manifest) and its release files; see the module doc."""
    t0 = time.monotonic()
    dm = DistManifest.load(manifest_path)
    from build.platform import Platform

    host = Platform.host()
    if str(host) != dm.platform:
        raise BundleError(f"cannot bundle {dm.platform} on a {host} host: PyInstaller builds the runtime for the "
                          f"machine it runs on; pass --no-bundle here and bundle on a {dm.platform} machine")
    version = mke_version()
    base, artifact = bundle_names(version, dm.platform, fips=dm.fips)
    exe, versioned = dist / base, dist / artifact
    sums, sbom_path = dist / "SHA256SUMS", dist / f"{artifact}.spdx.json"
    dist.mkdir(parents=True, exist_ok=True)
    fips_provenance = None
    if dm.fips:
        # The runtime's own crypto: OpenSSL FIPS provider + a cryptography linked to the system
        # libcrypto.so.3 (installed into this Python before the lazy library collects it),
        # CPython's built-in hash modules left out (fips/runtime.py, docs/fips.md).
        from fips.runtime import prepare

        fips_opts = prepare(cache, mirror=mirror, jobs=jobs, install=True)
        spec = spec.with_fips(fips_opts)
        fips_provenance = fips_opts["provenance"]
    by_name = {b["name"]: b for b in dm.binaries}
    plan = plan_frames(dm.binaries, layout)
    sde = source_date_epoch or _default_epoch()
    # Cheap key first: if nothing changed, leave every file alone.
    runtime_key = runtime_action(dm.platform, sde, spec).key()
    key = hashlib.sha256(canonical_json({
        "schema": BUNDLE_SCHEMA, "runtime": runtime_key, "layout": layout, "codec": _zstd_identity(),
        "frames": [[by_name[n]["sha256"] for n in names] for _, names in plan],
        "manifest": [{k: v for k, v in b.items() if not k.startswith("_")} for b in dm.binaries],
        "mode": dm.mode, "fips": dm.fips, "platform": dm.platform, "version": version, "sde": sde,
    })).hexdigest()
    stamp_path = dist / (f".{base}{STAMP[len('.bundle'):]}" if dm.fips else STAMP)
    raw = sum(int(b["size"]) for b in dm.embedded)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        stamp = json.loads(stamp_path.read_text())
        if stamp["key"] == key and all(_stamp_of(dist / n) == s for n, s in stamp["files"].items()):
            _update_sums(sums, {artifact: stamp["sha256"], base: stamp["sha256"]})
            log("bundle", f"{exe} is up to date ({human_bytes(stamp['size'])})")
            return Bundle(exe=exe, versioned=versioned, sums=sums, sbom=sbom_path, sha256=stamp["sha256"],
                          size=stamp["size"], raw_size=raw, cached=True)
    with cache.shared():
        runtime = build_runtime(cache, dm.platform, source_date_epoch=sde, spec=spec)
        pylib = build_pylib(cache, dm.platform, source_date_epoch=sde) if spec.lazy else None
        with cache.tempdir("bundle-") as wd:
            payload_file = Path(wd) / "payload"
            manifest = write_payload_file(cache, dm, payload_file, layout=layout, jobs=jobs, pylib=pylib)
            if dm.fips:  # the embedded binaries prove FIPS before dist/mke-fips is published
                staged = dist / f".tmp-{base}"
                try:
                    join(cache.cas.path(runtime.sha256), payload_file, staged)
                    _verify_fips_bundle(staged, exe, fips_go)
                    os.replace(staged, exe)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        staged.unlink()
            else:
                join(cache.cas.path(runtime.sha256), payload_file, exe)
    digest = sha256_file(exe)
    size = exe.stat().st_size
    # Release files.
    tmp_link = dist / f".tmp-{artifact}"
    with contextlib.suppress(FileNotFoundError):
        tmp_link.unlink()
    os.link(exe, tmp_link)
    os.replace(tmp_link, versioned)
    _update_sums(sums, {artifact: digest, base: digest})
    doc = sbom(manifest, artifact=artifact, digest=digest, source_date_epoch=sde, fips_provenance=fips_provenance)
    write_atomic(sbom_path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
    # SHA256SUMS is shared with the other bundle: checked (and fixed) on every run instead.
    files = {p.name: _stamp_of(p) for p in (exe, versioned, sbom_path)}
    write_atomic(stamp_path, json.dumps({"key": key, "files": files, "sha256": digest, "size": size},
                                        sort_keys=True).encode())
    log("bundle", f"{exe}: {human_bytes(size)} (embedded binaries {human_bytes(raw)}, "
                  f"{len(manifest.frames)} frames, layout {layout}) in {time.monotonic() - t0:.1f}s")
    return Bundle(exe=exe, versioned=versioned, sums=sums, sbom=sbom_path, sha256=digest, size=size,
                  raw_size=raw, cached=False)


def _verify_fips_bundle(path: Path, name: Path, fips_go: str | None) -> None:
    """What ``python -m build.fips_check dist/mke-fips --require`` checks: every binary in the payload."""
    from build.errors import VerificationError
    from build.fips_check import check_bundle, default_policy, failure_message

    reports, _meta = check_bundle(path, policy=default_policy(fips_go))
    if not all(r.ok for r in reports):
        raise VerificationError(failure_message(reports, str(name)))
    log("bundle", f"{name}: all {len(reports)} embedded binaries pass the FIPS check")


def _default_epoch() -> int:
    """SOURCE_DATE_EPOCH, else a fixed date (never 'now', so that bundles are reproducible)."""
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return DEFAULT_EPOCH
