"""The Python runtime inside dist/mke: CPython 3.11 with its own dynamic loader and libraries.

Made from pinned inputs (recipes/runtime/python.toml): Debian bookworm's .deb files
(python3.11, its standard library, glibc and every other shared library the runtime loads)
and the wheels of mke's Python dependencies, plus mke/ itself. One cached action:

1. download every .deb and wheel (mirror-aware, sha256-verified) and unpack them;
2. lay out the tree (docs/payload.md)::

       bin/mke          the dynamic loader (ld-linux-x86-64.so.2), named so that ps shows "mke"
       bin/python3.11
       lib/*.so*        every shared library the tree needs (the DT_NEEDED closure, + DLOPEN)
       lib/python311.zip                the standard library minus EXCLUDED, compiled
       lib/python3.11/lib-dynload/      its extension modules
       lib/python3.11/site-packages.zip mke, PyYAML, cffi, the packages' metadata
       lib/python3.11/site-packages/    packages with extension modules: cryptography, zstandard
       fips/            FIPS runtime only: fips.so, openssl.cnf, provenance.json (exact bytes)

3. strip the wheels' shared objects (their debug info), compile every .py with the runtime's
   own interpreter (unchecked-hash .pyc in place of the source, PYTHONHASHSEED=0: the same
   bytes every time), drop the sources; put the pure-Python modules into two zips
   (``zip_modules``: ~100 files to create on a first start instead of ~650);
4. check it: every DT_NEEDED resolves inside the tree, and the runtime, run the way the
   static entry runs it, imports every mke module and maps no file from outside the tree;
5. split the files into PARTS tar streams of about equal size (sorted names, fixed mtime,
   uid 0), each one payload frame that the entry decodes in parallel with the others.

The runtime is a one-directory Python, not a one-file one: it is staged once per digest and
every later start only execs it (a one-file program unpacks itself on every start).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

from build.action import Action
from build.cache import Cache, OutputFile
from build.errors import BuildError, BundleError
from build.fsutil import sha256_file
from build.progress import human_bytes, log
from build.tomlcheck import TomlChecker, join, read_toml

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SPEC = REPO / "recipes" / "runtime" / "python.toml"
SPEC_SCHEMA = 1
RUNTIME_SCHEMA = 1
PART_PREFIX = "mke-runtime."  # payload library names; the entry finds the runtime by this prefix
PARTS = 4
MAX_PART = (1 << 27) - 1  # the entry's zstd window limit (build/entry/stage.go, maxWindowSize)
LOADER = "bin/mke"
PYTHON = "bin/python3.11"
STDLIB = "lib/python3.11"
SITE = f"{STDLIB}/site-packages"
STDLIB_ZIP = "lib/python311.zip"  # on CPython's default sys.path (PYTHONHOME/lib/python311.zip)
SITE_ZIP = f"{STDLIB}/site-packages.zip"  # first on PYTHONPATH (build/entry/main.go, runtimeEnv)
FIPS_DIR = "fips"
COMPILED_AS = "/mke-runtime"  # the path compiled files name as their source (tracebacks)
TRIPLES = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}
LOADER_NAMES = {"amd64": "ld-linux-x86-64.so.2", "arm64": "ld-linux-aarch64.so.1"}

# What the runtime never uses (PyInstaller's old list, plus test and CJK codec modules): top-level
# modules and packages of the standard library, extension modules in lib-dynload, by name.
EXCLUDED = frozenset({
    "tkinter", "_tkinter", "turtle", "turtledemo", "idlelib", "pydoc", "pydoc_data", "doctest", "unittest",
    "lib2to3", "distutils", "ensurepip", "venv", "test", "xmlrpc", "multiprocessing", "_multiprocessing",
    "_posixshmem", "curses", "_curses", "_curses_panel", "readline", "dbm", "_dbm", "_gdbm",
    "tracemalloc", "pdb", "bdb", "profile", "cProfile", "pstats", "_lsprof", "timeit", "trace", "mailbox", "imaplib",
    "poplib", "smtplib", "smtpd", "nntplib", "ftplib", "telnetlib", "cgi", "cgitb", "wsgiref", "decimal", "_decimal",
    "_pydecimal", "bz2", "_bz2", "audioop", "ossaudiodev", "nis", "_crypt", "crypt", "_uuid",
    "_ctypes_test", "_testcapi", "_testinternalcapi", "_testbuffer", "_testimportmultiple", "_testmultiphase",
    "_testclinic", "_xxtestfuzz", "_xxsubinterpreters", "xxlimited", "xxlimited_35", "__phello__", "antigravity",
    "this", "_codecs_cn", "_codecs_hk", "_codecs_iso2022", "_codecs_jp", "_codecs_kr", "_codecs_tw",
    "_multibytecodec", "sitecustomize", "_distutils_system_mod", "site-packages", "dist-packages",
})
EXCLUDED_PATHS = ("xml/dom", "xml/sax", "EXTERNALLY-MANAGED", "LICENSE.txt")
# Wheel members the runtime does not need: PyYAML's libyaml binding (the pure-Python parser reads
# mke.yaml just as well), zstandard's cffi backend (the C one is used), stubs, install records.
WHEEL_SKIP_PREFIXES = ("yaml/_yaml", "yaml/cyaml.py", "_yaml/", "zstandard/backend_cffi", "zstandard/_cffi")
WHEEL_SKIP_SUFFIXES = (".pyi", "/py.typed", ".dist-info/RECORD", ".dist-info/INSTALLER")


# --------------------------------------------------------------------------- the spec


@dataclasses.dataclass(frozen=True, kw_only=True)
class DebPin:
    package: str
    version: str
    arch: str
    url: str
    sha256: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class WheelPin:
    name: str
    version: str
    arch: str
    url: str
    sha256: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class RuntimeSpec:
    """recipes/runtime/python.toml."""

    path: Path
    python: str
    sources: tuple[str, ...]  # "mirror suite"
    packages: tuple[str, ...]  # Debian packages
    dlopen: tuple[str, ...]  # sonames loaded by dlopen (not in any DT_NEEDED), e.g. libgcc_s.so.1
    requirements: tuple[str, ...]  # "name==version"
    debs: tuple[DebPin, ...]
    wheels: tuple[WheelPin, ...]

    def for_arch(self, arch: str) -> tuple[tuple[DebPin, ...], tuple[WheelPin, ...]]:
        debs = tuple(d for d in self.debs if d.arch == arch)
        wheels = tuple(w for w in self.wheels if w.arch == arch)
        missing = sorted(set(self.packages) - {d.package for d in debs})
        if not debs or missing:
            raise BundleError(f"{self.path}: no pinned .deb for {', '.join(missing) or 'anything'} on {arch}; "
                              f"run `python -m build.bundle.pins --arch {arch}`")
        return debs, wheels


def _pin(check: TomlChecker, where: str, value: Any, cls: type, name_key: str) -> Any:
    if not isinstance(value, dict):
        raise check.fail(where, "expected a table")
    keys = {name_key, "version", "arch", "url", "sha256"}
    check.keys(where, value, allowed=keys, required=keys)
    fields = {k: check.get(where, value, k, str) for k in sorted(keys)}
    sha = fields["sha256"]
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise check.fail(join(where, "sha256"), f"not a sha256 hex digest: {sha!r}")
    check.choice(join(where, "arch"), fields["arch"], tuple(TRIPLES))
    if not fields["url"].startswith(("http://", "https://")):
        raise check.fail(join(where, "url"), "must be an http(s) URL")
    return cls(**fields)


def load_spec(path: Path = DEFAULT_SPEC) -> RuntimeSpec:
    doc = read_toml(path, "runtime spec")
    check = TomlChecker(path)
    check.keys("", doc, allowed={"schema", "python", "debian", "pypi", "deb", "wheel"},
               required={"schema", "python", "debian", "pypi"})
    if check.get("", doc, "schema", int) != SPEC_SCHEMA:
        raise check.fail("schema", f"unsupported; this toolchain reads schema {SPEC_SCHEMA}")
    if check.get("", doc, "python", str) != "3.11":
        raise check.fail("python", "the runtime layout (bin/python3.11, lib/python3.11) is for Python 3.11")
    debian = check.get("", doc, "debian", dict)
    check.keys("debian", debian, allowed={"sources", "packages", "dlopen"}, required={"sources", "packages"})
    pypi = check.get("", doc, "pypi", dict)
    check.keys("pypi", pypi, allowed={"requirements"}, required={"requirements"})
    sources = check.str_list("debian", debian, "sources")
    for i, src in enumerate(sources):
        if len(src.split()) != 2 or not src.startswith(("http://", "https://")):
            raise check.fail(f"debian.sources[{i}]", f"expected 'MIRROR-URL SUITE', got {src!r}")
    requirements = check.str_list("pypi", pypi, "requirements")
    for i, r in enumerate(requirements):
        if r.count("==") != 1:
            raise check.fail(f"pypi.requirements[{i}]", f"pin one version with ==, got {r!r}")
    debs = tuple(_pin(check, f"deb[{i}]", d, DebPin, "package") for i, d in enumerate(check.get("", doc, "deb", list, [])))
    wheels = tuple(_pin(check, f"wheel[{i}]", w, WheelPin, "name")
                   for i, w in enumerate(check.get("", doc, "wheel", list, [])))
    return RuntimeSpec(path=path, python="3.11", sources=sources, packages=check.str_list("debian", debian, "packages"),
                       dlopen=check.str_list("debian", debian, "dlopen", ()), requirements=requirements,
                       debs=debs, wheels=wheels)


def render_pins(debs: list[DebPin], wheels: list[WheelPin]) -> str:
    """The [[deb]] and [[wheel]] tables of the spec (build/bundle/pins.py writes them)."""
    out = []
    for d in sorted(debs, key=lambda d: (d.arch, d.package)):
        out.append(f'\n[[deb]]\npackage = "{d.package}"\nversion = "{d.version}"\narch = "{d.arch}"\n'
                   f'url = "{d.url}"\nsha256 = "{d.sha256}"\n')
    for w in sorted(wheels, key=lambda w: (w.arch, w.name.lower())):
        out.append(f'\n[[wheel]]\nname = "{w.name}"\nversion = "{w.version}"\narch = "{w.arch}"\n'
                   f'url = "{w.url}"\nsha256 = "{w.sha256}"\n')
    return "".join(out)


# --------------------------------------------------------------------------- FIPS additions


@dataclasses.dataclass(frozen=True, kw_only=True)
class FipsAdditions:
    """What a FIPS runtime carries besides the plain one (fips.runtime.runtime_additions)."""

    files: tuple[tuple[str, Path], ...]  # (path in the tree, source): copied byte for byte
    cryptography_wheel: Path  # replaces PyPI's cryptography: linked to the runtime's libcrypto.so.3
    provenance: dict[str, Any]

    def key(self) -> dict[str, Any]:
        return {"files": [[dest, sha256_file(src)] for dest, src in self.files],
                "cryptography_wheel": [self.cryptography_wheel.name, sha256_file(self.cryptography_wheel)]}


# --------------------------------------------------------------------------- the action


@dataclasses.dataclass(frozen=True, kw_only=True)
class Runtime:
    key: str
    parts: tuple[OutputFile, ...]  # the tar streams, in part order
    metadata: dict[str, Any]


def _mke_sources() -> dict[str, str]:
    files = [p for p in (REPO / "mke").rglob("*") if p.is_file() and p.suffix in (".py", ".yaml", ".json", ".txt")
             and "__pycache__" not in p.parts]
    return {p.relative_to(REPO).as_posix(): sha256_file(p) for p in sorted(files)}


def _tool_version(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BundleError(f"{tool} not found; install binutils (scripts/bootstrap.sh does)")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "unknown"


def runtime_action(spec: RuntimeSpec, platform: str, *, source_date_epoch: int,
                   fips: FipsAdditions | None = None) -> Action:
    arch = platform.split("/", 1)[1]
    debs, wheels = spec.for_arch(arch)
    return Action(mode="bundle-runtime", component="python-runtime" + ("-fips" if fips else ""), platform=platform,
                  inputs={
                      "schema": RUNTIME_SCHEMA,
                      "debs": [[d.package, d.version, d.sha256] for d in debs],
                      "wheels": [[w.name, w.version, w.sha256] for w in wheels],
                      "dlopen": list(spec.dlopen),
                      "assembler": sha256_file(Path(__file__)),
                      "sources": _mke_sources(),
                      "strip": _tool_version("strip"),
                      "parts": PARTS,
                      "fips": fips.key() if fips else None,
                      "source_date_epoch": source_date_epoch,
                  })


def build_runtime(cache: Cache, spec: RuntimeSpec, platform: str, *, source_date_epoch: int,
                  fips: FipsAdditions | None = None, mirror: str | None = None) -> Runtime:
    """The runtime's parts (tar streams in the CAS), from the cache or made now."""
    from build.platform import Platform

    action = runtime_action(spec, platform, source_date_epoch=source_date_epoch, fips=fips)
    key = action.key()
    result = cache.get(key)
    if result is None:
        if str(Platform.host()) != platform:
            raise BundleError(f"cannot make the {platform} Python runtime on a {Platform.host()} host: its own "
                              f"interpreter compiles and checks it; bundle on a {platform} machine (or pass --no-bundle)")
        with cache.action_lock(key):
            result = cache.get(key)
            if result is None:
                t0 = time.monotonic()
                log("runtime", f"assembling the Python runtime for {platform}" + (" (FIPS)" if fips else ""))
                with cache.tempdir("runtime-") as wd:
                    tree, meta = assemble(cache, spec, platform, Path(wd), fips=fips, mirror=mirror)
                    outputs = []
                    for i, names in enumerate(split_parts(tree)):
                        out = Path(wd) / f"{PART_PREFIX}{i}.tar"
                        write_part(tree, names, out, source_date_epoch)
                        digest, size = cache.cas.put_file(out)
                        outputs.append(OutputFile(name=out.name, sha256=digest, size=size, executable=False))
                    meta["seconds"] = round(time.monotonic() - t0, 3)
                result = cache.put(action, outputs, meta)
                log("runtime", f"  {meta['files']} files, {human_bytes(meta['size'])} in {len(outputs)} parts, "
                               f"{meta['seconds']:.0f}s")
    parts = tuple(sorted(result.outputs, key=lambda o: int(o.name.removeprefix(PART_PREFIX).split(".")[0])))
    return Runtime(key=key, parts=parts, metadata=result.metadata)


# --------------------------------------------------------------------------- assembly


def _excluded(rel: str) -> bool:
    first = rel.split("/", 1)[0]
    module = first.split(".", 1)[0]
    if module in EXCLUDED or first in EXCLUDED:
        return True
    if rel.startswith("lib-dynload/") and rel.split("/", 1)[1].split(".", 1)[0] in EXCLUDED:
        return True
    return any(rel == p or rel.startswith(p + "/") for p in EXCLUDED_PATHS) or "/__pycache__/" in f"/{rel}"


def _copy_file(src: Path, dest: Path, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src.resolve(), dest)
    os.chmod(dest, mode)


def _unpack_wheel(wheel: Path, site: Path) -> list[str]:
    """Install a wheel (purelib/platlib only) by unpacking it, minus WHEEL_SKIP_*; returns the names."""
    names = []
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            name = info.filename
            if info.is_dir() or name.startswith(WHEEL_SKIP_PREFIXES) or name.endswith(WHEEL_SKIP_SUFFIXES):
                continue
            if ".data/" in name.split("/", 1)[0] + "/" or name.startswith("/") or ".." in name.split("/"):
                raise BundleError(f"{wheel.name}: member {name} is not a plain purelib/platlib file")
            target = site / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.chmod(target, 0o755 if name.endswith(".so") or ".so." in name else 0o644)
            names.append(name)
    return names


def _is_elf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def needed(path: Path) -> list[str]:
    """The DT_NEEDED sonames of an ELF file (readelf -d)."""
    proc = subprocess.run(["readelf", "-dW", str(path)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BundleError(f"readelf -d {path} failed: {proc.stderr.strip()}")
    return [line.rsplit("[", 1)[1].rstrip("]") for line in proc.stdout.splitlines() if "(NEEDED)" in line]


def _close_libraries(tree: Path, root: Path, triple: str, loader: str, dlopen: tuple[str, ...]) -> list[str]:
    """Copy into lib/ every shared library the tree needs, from the unpacked .debs; returns their sonames."""
    dirs = [root / "lib" / triple, root / "usr" / "lib" / triple, root / "lib", root / "usr" / "lib"]
    lib = tree / "lib"
    have: set[str] = {loader}
    todo = [(p.relative_to(tree).as_posix(), n) for p in sorted(tree.rglob("*")) if p.is_file() and _is_elf(p)
            for n in needed(p)] + [("debian.dlopen", n) for n in dlopen]
    while todo:
        who, soname = todo.pop(0)
        if soname in have:
            continue
        found = next((d / soname for d in dirs if (d / soname).exists()), None)
        if found is None:
            raise BundleError(f"{who} needs {soname}, which no pinned Debian package provides; add its package to "
                              "debian.packages in recipes/runtime/python.toml and run `python -m build.bundle.pins`")
        _copy_file(found, lib / soname, 0o755)
        have.add(soname)
        todo += [(f"lib/{soname}", n) for n in needed(lib / soname)]
    return sorted(have - {loader})


def runtime_command(tree: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment that run ``tree``'s Python as the static entry does (build/entry/main.go)."""
    argv = [str(tree / LOADER), "--inhibit-cache", "--library-path", str(tree / "lib"), str(tree / PYTHON), "-S", "-P",
            *args]
    env = {"PYTHONHOME": str(tree), "PYTHONPATH": f"{tree / SITE_ZIP}:{tree / SITE}", "PYTHONNOUSERSITE": "1",
           "PYTHONCOERCECLOCALE": "0",
           "PYTHONUTF8": "1", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin:/bin"}
    return argv, env


def _run(tree: Path, *args: str, what: str) -> str:
    argv, env = runtime_command(tree, *args)
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        raise BundleError(f"the Python runtime failed to {what} (exit {proc.returncode}): {tail}")
    return proc.stdout


CHECK = r"""
import importlib, json, os, pkgutil, sys
import mke
from mke import start
if os.path.exists(os.path.join(sys.prefix, "fips", "openssl.cnf")):  # as a FIPS runtime starts (mke/start.py)
    start._fips_runtime(os.path.join(sys.prefix, "fips"))
mods = ["yaml", "zstandard", "cryptography.x509", "cryptography.hazmat.primitives.asymmetric.ec",
        "cryptography.hazmat.bindings._rust", "_cffi_backend", "ssl", "hashlib", "ctypes", "json", "http.client",
        "lzma", "gzip"]  # lzma, gzip: mke/node/kmod.py decompresses kernel modules the kernel cannot
mods += [m.name for m in pkgutil.walk_packages(mke.__path__, "mke.") if m.name != "mke.__main__"]
for m in mods:
    importlib.import_module(m)
import zstandard
assert zstandard.backend == "cext", zstandard.backend
prefix = os.path.realpath(sys.prefix) + "/"
outside = set()
for line in open("/proc/self/maps"):
    parts = line.split(maxsplit=5)
    if len(parts) == 6 and parts[5].startswith("/") and not os.path.realpath(parts[5].strip()).startswith(prefix):
        outside.add(parts[5].strip())
print(json.dumps({"modules": len(mods), "outside": sorted(outside), "version": sys.version.split()[0]}))
"""


def assemble(cache: Cache, spec: RuntimeSpec, platform: str, work: Path, *, fips: FipsAdditions | None = None,
             mirror: str | None = None) -> tuple[Path, dict[str, Any]]:
    """Build the runtime tree under ``work``; returns (tree, metadata for the SBOM and the docs)."""
    from build.bundle.debian import extract_deb
    from build.download import Downloader

    arch = platform.split("/", 1)[1]
    triple, loader = TRIPLES[arch], LOADER_NAMES[arch]
    debs, wheels = spec.for_arch(arch)
    dl = Downloader(cache.root / "downloads", mirror=mirror)
    root, tree = work / "debs", work / "tree"
    for d in debs:
        extract_deb(dl.download(d.url, sha256=d.sha256, component="python-runtime"), root)
    py = root / "usr" / "bin" / "python3.11"
    if not py.is_file():
        raise BundleError(f"{spec.path}: no usr/bin/python3.11 in the pinned packages (python3.11-minimal missing?)")
    _copy_file(py, tree / PYTHON, 0o755)
    _copy_file(root / "lib" / triple / loader, tree / LOADER, 0o755)
    stdlib_src = root / "usr" / "lib" / "python3.11"
    for src in sorted(stdlib_src.rglob("*")):
        rel = src.relative_to(stdlib_src).as_posix()
        if src.is_file() and not _excluded(rel):
            _copy_file(src, tree / STDLIB / rel, 0o755 if src.suffix == ".so" else 0o644)
    site = tree / SITE
    site.mkdir(parents=True, exist_ok=True)
    installed: dict[str, str] = {}
    for w in wheels:
        if fips is not None and w.name.lower() == "cryptography":
            path, version = fips.cryptography_wheel, w.version
        else:
            path, version = dl.download(w.url, sha256=w.sha256, component="python-runtime"), w.version
        named = work / "wheels" / w.url.rsplit("/", 1)[-1]
        named.parent.mkdir(exist_ok=True)
        shutil.copyfile(path, named)
        _unpack_wheel(named, site)
        installed[w.name] = version
    for rel in _mke_sources():
        _copy_file(REPO / rel, site / rel, 0o644)
    if fips is not None:
        for dest, src in fips.files:
            _copy_file(src, tree / dest, 0o755 if dest.endswith(".so") else 0o644)
    strip = shutil.which("strip")
    assert strip is not None  # runtime_action checked
    for so in sorted(site.rglob("*.so*")):
        if so.is_file() and _is_elf(so):
            subprocess.run([strip, "--strip-unneeded", str(so)], check=True, capture_output=True)
    libs = _close_libraries(tree, root, triple, loader, spec.dlopen)
    if fips is not None and "libcrypto.so.3" not in {n for so in site.glob("cryptography/hazmat/bindings/_rust*.so")
                                                    for n in needed(so)}:
        raise BundleError("the FIPS runtime's cryptography does not load libcrypto.so.3 (fips.runtime builds it so)")
    _run(tree, "-m", "compileall", "-q", "-b", "-d", f"{COMPILED_AS}/{STDLIB}", "--invalidation-mode", "unchecked-hash",
         str(tree / STDLIB), what="compile its standard library and packages")
    for p in sorted(tree.rglob("*.py")):
        if not p.with_suffix(".pyc").is_file():
            raise BundleError(f"{p.relative_to(tree)}: was not compiled")
        p.unlink()
    cached = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("__pycache__"))
    if cached:  # timestamped, unused (no sources), and not reproducible: nothing may have written them
        raise BundleError(f"the runtime tree holds {cached[0]}: PYTHONDONTWRITEBYTECODE was not honoured")
    zip_modules(tree)
    report = json.loads(_run(tree, "-c", CHECK, what="import every mke module").strip().splitlines()[-1])
    if report["outside"]:
        raise BundleError(f"the Python runtime loads files from outside itself: {', '.join(report['outside'])}")
    fips_check = check_fips_tree(tree, fips) if fips is not None else None
    files = [p for p in tree.rglob("*") if p.is_file()]
    python_deb = next(d.version for d in debs if d.package == "python3.11-minimal")
    meta = {
        "files": len(files), "size": sum(p.stat().st_size for p in files), "python": report["version"],
        "python_deb": python_deb, "libraries": libs, "modules_checked": report["modules"],
        "debs": [dataclasses.asdict(d) for d in debs],
        "wheels": [dataclasses.asdict(w) | ({"fips_build": True} if fips and w.name.lower() == "cryptography" else {})
                   for w in wheels],
        "fips": bool(fips),
    }
    if fips_check is not None:
        meta["fips_check"] = fips_check
    return tree, meta


FIPS_LOAD_CHECK = r"""
import json, os, sys
from mke import start
start._fips_runtime(os.path.join(sys.prefix, "fips"))  # as a FIPS runtime starts
from mke.fips.libcrypto import load_config_with_self_test_log, provider_state
r = load_config_with_self_test_log()
r["provider"] = provider_state()
print(json.dumps(r))
"""


def check_fips_tree(tree: Path, fips: FipsAdditions) -> dict[str, Any]:
    """The FIPS runtime as it will be staged: its own libcrypto loads the provider, whose self tests run
    and pass; every file that links or embeds cryptography is accounted for (mke.fips.inventory)."""
    from fips.openssl import check_self_tests
    from mke.fips.inventory import crypto_inventory

    version = fips.provenance.get("openssl_version")
    report = json.loads(_run(tree, "-c", FIPS_LOAD_CHECK, what="load its FIPS provider").strip().splitlines()[-1])
    libcrypto = report.get("provider", {}).get("version")
    try:
        check_self_tests(report, str(version), f"in the runtime (its own libcrypto, {libcrypto})")
    except BuildError as e:
        raise BundleError(str(e)) from e
    inventory = crypto_inventory(tree)
    if inventory["problems"]:
        raise BundleError(f"the FIPS runtime carries cryptography that is not accounted for: {inventory['problems'][0]}"
                          + (f" (and {len(inventory['problems']) - 1} more)" if len(inventory["problems"]) > 1 else ""))
    log("runtime", f"FIPS: {libcrypto} loads OpenSSL FIPS provider {version} "
                   f"({report['passed']} self tests passed at load); {len(inventory['crypto_files'])} of "
                   f"{inventory['elf_files']} ELF files hold or use cryptography, each accounted for")
    return {"libcrypto": libcrypto, "provider": report["provider"].get("fips_provider"),
            "self_tests_passed": report["passed"], "self_test_types": report["types"],
            "crypto_files": [{"path": f["path"], "role": f["role"], "links": f["crypto_needed"],
                              "marks": f["marks"]} for f in inventory["crypto_files"]],
            "elf_files": inventory["elf_files"]}


def _has_extension(path: Path) -> bool:
    return path.is_file() and ".so" in path.name or path.is_dir() and any(p.suffix == ".so" or ".so." in p.name
                                                                         for p in path.rglob("*"))


def _write_zip(base: Path, files: list[Path], out: Path) -> None:
    """A deterministic, uncompressed zip of ``files`` (names relative to ``base``), which are then removed."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as z:
        for p in sorted(files, key=lambda p: p.relative_to(base).as_posix()):
            info = zipfile.ZipInfo(p.relative_to(base).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system, info.external_attr = 3, 0o644 << 16
            z.writestr(info, p.read_bytes())
            p.unlink()
    for d in sorted((d for d in base.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
        if not any(d.iterdir()):
            d.rmdir()


def zip_modules(tree: Path) -> None:
    """The compiled pure-Python modules into two zips (zipimport), so that staging creates ~100 files
    instead of ~650: the standard library into lib/python311.zip; mke, PyYAML, cffi and the
    packages' metadata into site-packages.zip. A package with an extension module (cryptography,
    zstandard, _cffi_backend) stays a directory: a package lives in one place and an extension
    module cannot be loaded from a zip; so do lib-dynload/ and the non-code files of the
    standard library."""
    stdlib, site = tree / STDLIB, tree / SITE
    _write_zip(stdlib, [p for p in stdlib.rglob("*.pyc") if not p.is_relative_to(stdlib / "lib-dynload")
                        and not p.is_relative_to(site)], tree / STDLIB_ZIP)
    pure = [top for top in site.iterdir() if not _has_extension(top)]
    _write_zip(site, [p for top in pure for p in ([top] if top.is_file() else top.rglob("*")) if p.is_file()],
               tree / SITE_ZIP)


def split_parts(tree: Path, parts: int = PARTS) -> list[list[str]]:
    """The tree's files (relative names, sorted) in at most ``parts`` contiguous runs whose
    largest is as small as it can be (the entry decodes the parts in parallel; neighbours in
    name order compress better together than files spread over the parts)."""
    files = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file())
    sizes = [(tree / f).stat().st_size for f in files]

    def runs(cap: int) -> list[list[int]]:
        out: list[list[int]] = [[]]
        acc = 0
        for i, s in enumerate(sizes):
            if out[-1] and acc + s > cap:
                out.append([])
                acc = 0
            out[-1].append(i)
            acc += s
        return out

    lo, hi = max(sizes, default=0), max(sum(sizes), 1)
    while lo < hi:  # the smallest cap that needs no more than ``parts`` runs
        mid = (lo + hi) // 2
        if len(runs(mid)) <= parts:
            hi = mid
        else:
            lo = mid + 1
    if lo > MAX_PART:
        raise BundleError(f"a runtime part would exceed {MAX_PART} bytes; raise PARTS in {__file__}")
    return [[files[i] for i in run] for run in runs(lo) if run]


def write_part(tree: Path, names: list[str], out: Path, mtime: int) -> None:
    """A deterministic tar of ``names`` (regular files only: what the entry accepts)."""
    with open(out, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            p = tree / name
            st = p.stat()
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.type = st.st_size, mtime, tarfile.REGTYPE
            ti.mode = 0o755 if st.st_mode & 0o111 else 0o644
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            with open(p, "rb") as f:
                tar.addfile(ti, f)


def digest_of_parts(parts: tuple[OutputFile, ...]) -> str:
    """The runtime id the entry computes (build/entry/payload.go): its directory name."""
    h = hashlib.sha256(b"mke-runtime 1\n")
    for i, p in enumerate(parts):
        h.update(f"{PART_PREFIX}{i} {p.sha256} {p.size}\n".encode())
    return h.hexdigest()
