"""What the bundler does differently for a FIPS mke (dist/mke-fips): the Python runtime's crypto.

The runtime's crypto is hashlib (``_hashlib`` -> ``libcrypto.so.3``) and ``cryptography``.
For both to use the FIPS provider there must be *one* OpenSSL in the process:

- PyPI's cryptography wheels link their own OpenSSL statically (cryptography 48.0.0: OpenSSL
  4.0.0). That copy can load an external fips.so, but the FIPS provider refuses to be
  shared by two libcrypto copies in one process (fipsprov.c: "We do not support the
  scenario of an application linked against multiple versions of libcrypto ... sharing a
  single fips.so"): whichever initialises it second gets no FIPS provider, and its key
  generation then fails. So the FIPS build uses cryptography **built from source against the
  system libcrypto.so.3** (``cryptography_wheel``), the same library ``_hashlib`` uses;
- the bundle carries fips.so + openssl.cnf (fips/openssl.py) and a runtime hook that sets
  OPENSSL_CONF/OPENSSL_MODULES before anything loads libcrypto;
- CPython's own hash modules are excluded, so hashlib cannot fall back to them when the
  FIPS provider refuses an algorithm (``hashlib.md5()`` then fails).

``prepare(cache)`` builds what is missing and returns ``bundle_options(...)``: the dict the
bundler merges into its PyInstaller configuration (see docs/fips.md, "Bundle hook").

    python -m fips.runtime prepare [--install]    # provider + cryptography wheel; --install: into this Python
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform as _platform
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from build.action import Action
from build.cache import Cache, OutputFile, default_cache_dir
from build.errors import BuildError, BundleError, report
from build.progress import log
from mke.elf import ElfFile
from mke.fips.runtime_state import BUILTIN_HASH_MODULES

RUNTIME_HOOK = Path(__file__).resolve().parent / "pyi_rth_mke_fips.py"
BUNDLE_DIR = "mke_fips"  # inside the bundle (sys._MEIPASS); the runtime hook names it too
WHEEL_SCHEMA = 1


# ---------------------------------------------------------------------------- cryptography


def _rust_extension() -> Path | None:
    spec = importlib.util.find_spec("cryptography")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(root.glob("hazmat/bindings/_rust*.so"))
    return found[0] if found else None


def cryptography_links_system_openssl(ext: Path | None = None) -> bool:
    """True when cryptography's Rust extension loads libcrypto.so.3 (instead of carrying its own OpenSSL)."""
    ext = ext or _rust_extension()
    if ext is None:
        return False
    try:
        elf = ElfFile.parse(ext.read_bytes())
    except ValueError:  # a damaged extension: it links nothing usable
        return False
    dynstr = elf.section_bytes(".dynstr") if elf is not None else None
    return dynstr is not None and b"\0libcrypto.so.3\0" in bytes(dynstr)


def _tool_version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip().splitlines()[0]
    except (OSError, IndexError):
        return "missing"


def cryptography_wheel(cache: Cache, version: str) -> Path:
    """cryptography==version built from its sdist against the system OpenSSL (cached); returns the wheel.

    Needs Rust (cargo), a C compiler and libssl-dev; pip fetches the sdist, maturin and the
    Rust crates from their registries (PyPI, crates.io).
    """
    openssl_dev = _tool_version(["pkg-config", "--modversion", "openssl"])
    if openssl_dev == "missing" or not openssl_dev.startswith("3."):
        raise BuildError("building cryptography against the system OpenSSL needs libssl-dev 3.x and pkg-config "
                         f"(pkg-config --modversion openssl: {openssl_dev}); apt-get install libssl-dev pkg-config")
    if shutil.which("cargo") is None:
        raise BuildError("building cryptography from source needs Rust (cargo on PATH)")
    act = Action(mode="fips-pywheel", component="cryptography", platform=f"linux/{_platform.machine()}", inputs={
        "schema": WHEEL_SCHEMA, "version": version, "python": sys.version, "openssl_dev": openssl_dev,
        "rustc": _tool_version(["rustc", "--version"]), "cc": _tool_version([os.environ.get("CC", "gcc"), "--version"]),
    })
    key = act.key()
    with cache.shared():
        result = cache.get(key)
        if result is None:
            with cache.action_lock(key):
                result = cache.get(key)
                if result is None:
                    t0 = time.monotonic()
                    log("cryptography", f"building cryptography {version} against the system OpenSSL {openssl_dev} "
                                        "(pip wheel --no-binary cryptography; a few minutes)")
                    with cache.tempdir("pywheel-") as wd:
                        env = {**os.environ, "CARGO_BUILD_JOBS": str(os.cpu_count() or 2)}
                        env.pop("OPENSSL_STATIC", None)
                        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-binary",
                                               "cryptography", f"cryptography=={version}", "-w", wd],
                                              capture_output=True, text=True, env=env, check=False)
                        if proc.returncode != 0:
                            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
                            raise BuildError(f"cryptography {version}: source build failed (exit {proc.returncode})\n{tail}")
                        wheels = sorted(Path(wd).glob("cryptography-*.whl"))
                        digest, size = cache.cas.put_file(wheels[0])
                        result = cache.put(act, [OutputFile(name=wheels[0].name, sha256=digest, size=size,
                                                            executable=False)],
                                           {"seconds": round(time.monotonic() - t0, 3), "openssl": openssl_dev})
                    log("cryptography", f"built in {time.monotonic() - t0:.0f}s")
        out = result.outputs[0]
        named = cache.root / "tmp" / "wheels" / out.name
        if not named.exists():
            cache.cas.copy_out(out.sha256, named, mode=0o644)
        return named


def install_wheel(wheel: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps",
                           str(wheel)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"pip install {wheel.name} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")


# ---------------------------------------------------------------------------- the bundle


def _system_library(soname: str) -> Path | None:
    """The file the dynamic loader would use for ``soname`` (from /sbin/ldconfig -p)."""
    try:
        out = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return None
    machine = "x86-64" if _platform.machine() == "x86_64" else _platform.machine()
    for line in out.splitlines():
        line = line.strip()
        if line.startswith(soname + " ") and machine in line and "=>" in line:
            return Path(line.split("=>", 1)[1].strip())
    return None


def bundle_options(provider: Mapping[str, Path]) -> dict[str, Any]:
    """What the bundler merges into its PyInstaller configuration for a FIPS build.

    ``provider``: fips.so, openssl.cnf, provenance.json (fips.openssl.build_provider).
    Keys: ``excludes`` (module names), ``binaries`` and ``datas`` ((source, dest dir) pairs as
    PyInstaller's Analysis takes them), ``exact`` (files whose bytes must survive unchanged: the
    spec moves them back to DATA after Analysis, see below), ``runtime_hooks`` (paths), ``environment`` (what the
    hook sets, for the docs/SBOM), ``provenance`` (the provider's provenance.json).
    """
    missing = [n for n in ("fips.so", "openssl.cnf", "provenance.json") if n not in provider]
    if missing:
        raise BundleError(f"FIPS bundle options: the OpenSSL FIPS provider build lacks {', '.join(missing)}")
    # fips.so goes in as *data*: PyInstaller strips binaries (strip=True), which would break
    # the module's integrity check (the MAC in openssl.cnf is over the exact bytes).
    binaries: list[tuple[str, str]] = []
    # cryptography is staged lazily (mke/pylib.py), so PyInstaller does not see that its
    # extension needs libssl.so.3 next to the libcrypto.so.3 hashlib brings: bundle both.
    for soname in ("libcrypto.so.3", "libssl.so.3"):
        lib = _system_library(soname)
        if lib is not None:
            binaries.append((str(lib), "."))
    return {
        "excludes": sorted(BUILTIN_HASH_MODULES),
        "binaries": binaries,
        "datas": [(str(provider["fips.so"]), BUNDLE_DIR), (str(provider["openssl.cnf"]), BUNDLE_DIR),
                  (str(provider["provenance.json"]), BUNDLE_DIR)],
        # PyInstaller reclassifies an ELF file given as data into a binary and strips it (strip=True),
        # which breaks the module MAC. The spec must move these back to DATA after Analysis:
        #   exact = {f"{dest}/{Path(src).name}": src for src, dest in opts["exact"]}
        #   a.binaries = [e for e in a.binaries if e[0] not in exact]
        #   a.datas = [e for e in a.datas if e[0] not in exact] + [(n, s, "DATA") for n, s in exact.items()]
        "exact": [(str(provider["fips.so"]), BUNDLE_DIR)],
        "runtime_hooks": [str(RUNTIME_HOOK)],
        "environment": {"OPENSSL_CONF": f"<bundle>/{BUNDLE_DIR}/openssl.cnf", "MKE_FIPS_RUNTIME": f"<bundle>/{BUNDLE_DIR}",
                        "CRYPTOGRAPHY_OPENSSL_NO_LEGACY": "1"},
        "provenance": json.loads(Path(provider["provenance.json"]).read_text()),
    }


def prepare(cache: Cache, *, mirror: str | None = None, jobs: int = 2, install: bool = False) -> dict[str, Any]:
    """Everything a FIPS bundle needs, built or taken from the cache; returns ``bundle_options``.

    Raises BundleError when the cryptography in this Python carries its own OpenSSL and
    ``install`` is False (the bundler collects cryptography from the running environment).
    """
    from fips.openssl import build_provider
    from fips.settings import load

    provider = build_provider(load(), cache, mirror=mirror, jobs=jobs)
    if not cryptography_links_system_openssl():
        import importlib.metadata

        version = importlib.metadata.version("cryptography")
        wheel = cryptography_wheel(cache, version)
        if not install:
            raise BundleError(f"the cryptography {version} in {sys.prefix} carries its own OpenSSL; the FIPS bundle needs "
                              f"it linked to libcrypto.so.3: pip install --force-reinstall --no-deps {wheel} "
                              "(or run `python -m fips.runtime prepare --install`)")
        install_wheel(wheel)
        importlib.invalidate_caches()
        if not cryptography_links_system_openssl():
            raise BundleError(f"{wheel.name} was installed but cryptography still does not load libcrypto.so.3")
        log("cryptography", f"installed {wheel.name} (linked to the system libcrypto.so.3)")
    return bundle_options(provider)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fips.runtime", description="FIPS runtime inputs for the bundler")
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("prepare", help="build the OpenSSL FIPS provider and a system-linked cryptography")
    pr.add_argument("--install", action="store_true", help="install the cryptography wheel into this Python")
    pr.add_argument("--cache-dir", type=Path, default=None)
    pr.add_argument("--mirror", default=os.environ.get("MKE_MIRROR"))
    pr.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    pr.add_argument("--json", action="store_true", help="print the bundle options as JSON")
    args = p.parse_args(argv)
    try:
        opts = prepare(Cache(args.cache_dir or default_cache_dir()), mirror=args.mirror, jobs=args.jobs,
                       install=args.install)
    except (BuildError, OSError) as e:
        return report(e)
    if args.json:
        print(json.dumps(opts, indent=2, sort_keys=True))
    else:
        print(opts["provenance"]["statement"])
        print(f"excludes: {' '.join(opts['excludes'])}")
        for src, dest in opts["binaries"] + opts["datas"]:
            print(f"bundle: {src} -> {dest}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
