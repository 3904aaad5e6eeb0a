"""What the bundler does differently for a FIPS mke (dist/mke-fips): the Python runtime's crypto.

The runtime's crypto is hashlib (``_hashlib`` -> ``libcrypto.so.3``) and ``cryptography``.
For both to use the FIPS provider there must be *one* OpenSSL in the process:

- PyPI's cryptography wheels link their own OpenSSL statically (cryptography 48.0.0: OpenSSL
  4.0.0). That copy can load an external fips.so, but the FIPS provider refuses to be
  shared by two libcrypto copies in one process (fipsprov.c: "We do not support the
  scenario of an application linked against multiple versions of libcrypto ... sharing a
  single fips.so"): whichever initialises it second gets no FIPS provider, and its key
  generation then fails. So the FIPS build uses cryptography **built from source against
  libcrypto.so.3** (``cryptography_wheel``), the library the runtime carries and ``_hashlib``
  uses (the build links against the host's libssl-dev 3.x: the same ABI);
- the runtime carries fips.so + openssl.cnf + provenance.json under ``fips/`` (fips/openssl.py),
  byte for byte; mke/start.py points OPENSSL_CONF at them before anything loads libcrypto;
- CPython's own hash modules are built into Debian's python3.11: mke/start.py blocks them in a
  FIPS runtime, so hashlib cannot fall back to them when the FIPS provider refuses an algorithm.

``prepare(cache)`` builds what is missing and returns ``FipsAdditions`` for
build/bundle/runtime.py (see docs/fips.md, "The FIPS bundle").

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
from typing import TYPE_CHECKING

from build.action import Action
from build.cache import Cache, OutputFile, default_cache_dir
from build.errors import BuildError, BundleError, report
from build.progress import log
from mke.elf import ElfFile

if TYPE_CHECKING:
    from build.bundle.runtime import FipsAdditions

BUNDLE_DIR = "fips"  # inside the runtime (mke/start.py looks for fips/openssl.cnf there)
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


def runtime_additions(provider: Mapping[str, Path], wheel: Path) -> FipsAdditions:
    """What a FIPS runtime carries besides the plain one (build/bundle/runtime.py).

    ``provider``: fips.so, openssl.cnf, provenance.json (fips.openssl.build_provider), copied
    byte for byte into ``fips/`` (fips.so's integrity MAC in openssl.cnf is over its exact
    bytes: the bundler strips only the wheels' shared objects); ``wheel``: cryptography linked
    to libcrypto.so.3, which replaces PyPI's.
    """
    from build.bundle.runtime import FipsAdditions

    missing = [n for n in ("fips.so", "openssl.cnf", "provenance.json") if n not in provider]
    if missing:
        raise BundleError(f"FIPS runtime: the OpenSSL FIPS provider build lacks {', '.join(missing)}")
    return FipsAdditions(
        files=tuple((f"{BUNDLE_DIR}/{n}", Path(provider[n])) for n in ("fips.so", "openssl.cnf", "provenance.json")),
        cryptography_wheel=wheel,
        provenance=json.loads(Path(provider["provenance.json"]).read_text()),
    )


def prepare(cache: Cache, *, mirror: str | None = None, jobs: int = 2, install: bool = False) -> FipsAdditions:
    """Everything a FIPS runtime needs, built or taken from the cache.

    ``install``: also install the cryptography wheel into the running Python (the FIPS runtime
    tests, `nox -s tests-fips`, run mke.fips in their own venv); the bundler does not need it.
    """
    import importlib.metadata

    from build.bundle.runtime import load_spec
    from fips.openssl import build_provider
    from fips.settings import load

    provider = build_provider(load(), cache, mirror=mirror, jobs=jobs)
    pins = [r for r in load_spec().requirements if r.lower().startswith("cryptography==")]
    version = pins[0].split("==", 1)[1] if pins else importlib.metadata.version("cryptography")
    wheel = cryptography_wheel(cache, version)
    if install and not cryptography_links_system_openssl():
        install_wheel(wheel)
        importlib.invalidate_caches()
        if not cryptography_links_system_openssl():
            raise BundleError(f"{wheel.name} was installed but cryptography still does not load libcrypto.so.3")
        log("cryptography", f"installed {wheel.name} (linked to the system libcrypto.so.3)")
    return runtime_additions(provider, wheel)


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
        print(json.dumps({"files": {d: str(src) for d, src in opts.files}, "cryptography_wheel": str(opts.cryptography_wheel),
                          "provenance": opts.provenance}, indent=2, sort_keys=True))
    else:
        print(opts.provenance["statement"])
        print(f"cryptography: {opts.cryptography_wheel}")
        for dest, src in opts.files:
            print(f"runtime: {src} -> {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
