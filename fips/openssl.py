"""The OpenSSL 3 FIPS provider for the mke runtime: build, ``fipsinstall``, configure.

From the pinned tarball in fips/toolchain.toml (Debian's ``.orig.tar.gz``, which is
OpenSSL's release tarball), on the build host:

1. download (mirror-aware, verified against the pinned sha256) and unpack;
2. ``./Configure <target> enable-fips ...`` and ``make build_generated providers/fips.so``
   (only the provider: about 80 s on 2 cores; the rest of OpenSSL is not needed);
3. ``openssl fipsinstall -self_test_onload`` with the host's OpenSSL 3 CLI: runs the
   module's self tests and writes the module MAC. With ``-self_test_onload`` the section
   has no install-status/install-mac, so the self tests run on every load and the same
   configuration is valid on any machine the bundle runs on;
4. ``openssl.cnf``: the fips section inline, with ``module = ${ENV::MKE_FIPS_RUNTIME}/fips.so``
   (an absolute path at run time, whatever OPENSSL_MODULES says), providers fips + base active, the
   default provider NOT loaded, ``default_properties = fips=yes``.

The result (fips.so, openssl.cnf, provenance.json) is an action in the build cache, keyed
by every input (settings, tarball digest, compiler and host OpenSSL versions).
``provenance.json`` says which version was built and whether that version is a validated
module: only the versions listed under ``openssl.validated`` are.

    python -m fips.openssl build [--out DIR]      # build (or take from the cache) and copy to DIR
"""

from __future__ import annotations

import argparse
import json
import os
import platform as _platform
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from build.action import Action
from build.cache import Cache, OutputFile, default_cache_dir
from build.errors import BuildError, ComponentBuildError, VerificationError, report
from build.fsutil import extract_all
from build.progress import log
from fips.settings import FipsToolchain, load

SCHEMA = 3
COMPONENT = "openssl-fips-provider"
RUNTIME_DIR_ENV = "MKE_FIPS_RUNTIME"  # the directory holding fips.so (mke.fips.runtime_env.RUNTIME_ENV)
_TARGETS = {"x86_64": "linux-x86_64", "aarch64": "linux-aarch64"}

OPENSSL_CNF = """\
# mke FIPS runtime: OpenSSL uses only the FIPS provider (plus base, for encoders/decoders).
# MKE_FIPS_RUNTIME must name the directory holding fips.so (mke's runtime hook sets it);
# unset, loading this file fails, and with it every algorithm (fail closed).
config_diagnostics = 1
openssl_conf = openssl_init

[openssl_init]
providers = provider_sect
alg_section = algorithm_sect

[provider_sect]
fips = fips_sect
base = base_sect

[base_sect]
activate = 1

[algorithm_sect]
default_properties = fips=yes

{fips_section}"""


def _run(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, log_file: Path | None = None,
         what: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if log_file is not None:
        with open(log_file, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ComponentBuildError(f"{COMPONENT}: {what} failed (exit {proc.returncode})"
                                  + (f"; full log: {log_file}" if log_file else "") + f"\n{tail}")
    return proc.stdout


def host_openssl() -> tuple[str, str]:
    """(path, version) of the OpenSSL 3 CLI that runs fipsinstall."""
    exe = shutil.which("openssl")
    if exe is None:
        raise BuildError(f"{COMPONENT}: no `openssl` command (OpenSSL 3 CLI) on PATH; install it (apt-get install openssl)")
    version = subprocess.run([exe, "version"], capture_output=True, text=True, check=False).stdout.strip()
    if not version.startswith("OpenSSL 3."):
        raise BuildError(f"{COMPONENT}: `openssl version` says {version!r}; fipsinstall needs OpenSSL 3")
    return exe, version


def compiler_version() -> str:
    cc = os.environ.get("CC", "gcc")
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout.splitlines()[0]
    except (OSError, IndexError) as e:
        raise BuildError(f"{COMPONENT}: no C compiler ({cc}): {e}; install gcc") from e


def compile_action(tc: FipsToolchain, machine: str | None = None) -> Action:
    """Compiling fips.so: the tarball, Configure options and the compiler (not the host's OpenSSL)."""
    machine = machine or _platform.machine()
    return Action(mode="fips-openssl-compile", component=COMPONENT, platform=f"linux/{machine}", inputs={
        "schema": SCHEMA,
        "openssl": {"version": tc.openssl.version, "url": tc.openssl.url, "sha256": tc.openssl.sha256,
                    "configure": list(tc.openssl.configure)},
        "cc": compiler_version(),
    })


def configure_action(tc: FipsToolchain, module: OutputFile, module_meta: dict[str, Any]) -> Action:
    """fipsinstall + openssl.cnf + provenance: the module's digest, the host OpenSSL, the template."""
    return Action(mode="fips-openssl-configure", component=COMPONENT, platform=f"linux/{_platform.machine()}", inputs={
        "schema": SCHEMA,
        "module": module.sha256,
        "module_meta": {k: module_meta.get(k) for k in ("openssl_version", "configure", "compiler",
                                                        "fips_module_sources_checksum")},
        "validated": dict(tc.openssl.validated),
        "source": tc.openssl.source,
        "fipsinstall": host_openssl()[1],
        "cnf": OPENSSL_CNF,
    })


def _fips_section(fipsmodule_cnf: str) -> str:
    lines = [ln for ln in fipsmodule_cnf.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines or lines[0].strip() != "[fips_sect]":
        raise ComponentBuildError(f"{COMPONENT}: fipsinstall wrote an unexpected config:\n{fipsmodule_cnf}")
    if any(ln.startswith(("install-mac", "install-status")) for ln in lines):
        raise ComponentBuildError(f"{COMPONENT}: fipsinstall wrote install-mac/status; -self_test_onload was ignored")
    return "\n".join(lines) + "\n" + f"module = ${{ENV::{RUNTIME_DIR_ENV}}}/fips.so\n"


def _smoke_test(out: Path, openssl: str, log_file: Path) -> dict[str, Any]:
    """The configuration works: fips is the active provider, MD5 is refused, SHA-256 works."""
    env = {**os.environ, "OPENSSL_CONF": str(out / "openssl.cnf"), RUNTIME_DIR_ENV: str(out)}
    env.pop("OPENSSL_MODULES", None)
    listing = _run([openssl, "list", "-providers"], env=env, log_file=log_file, what="openssl list -providers")
    if "OpenSSL FIPS Provider" not in listing or "status: active" not in listing:
        raise VerificationError(f"{COMPONENT}: the FIPS provider is not active with the generated openssl.cnf:\n{listing}")
    md5 = subprocess.run([openssl, "dgst", "-md5"], input=b"mke", env=env, capture_output=True, check=False)
    if md5.returncode == 0:
        raise VerificationError(f"{COMPONENT}: MD5 still works with the generated openssl.cnf")
    sha = subprocess.run([openssl, "dgst", "-sha256"], input=b"mke", env=env, capture_output=True, check=False)
    if sha.returncode != 0:
        raise VerificationError(f"{COMPONENT}: SHA-256 fails with the generated openssl.cnf: {sha.stderr.decode()[-300:]}")
    return {"providers": listing.strip(), "md5_refused": True, "sha256_of_mke": sha.stdout.decode().split()[-1]}


def _cached(cache: Cache, act: Action, run: Any) -> Any:
    """The action's result from the cache, or run(key) -> (files, metadata) stored in the CAS."""
    key = act.key()
    result = cache.get(key)
    if result is not None:
        return result
    with cache.action_lock(key):
        result = cache.get(key)
        if result is not None:
            return result
        files, meta = run(key)
        outputs = []
        for name, path in sorted(files.items()):
            digest, size = cache.cas.put_file(path)
            outputs.append(OutputFile(name=name, sha256=digest, size=size, executable=name == "fips.so"))
        return cache.put(act, outputs, meta)


def build_provider(tc: FipsToolchain, cache: Cache, *, mirror: str | None = None, jobs: int = 2) -> dict[str, Path]:
    """fips.so + openssl.cnf + provenance.json, built or from the cache; returns named files.

    Two cached actions: compiling fips.so (minutes; keyed by the tarball, Configure options,
    compiler) and configuring it (seconds; keyed by fips.so's digest, the host's OpenSSL that
    runs fipsinstall, and the openssl.cnf template), so a new host OpenSSL or template does not
    recompile the module.
    """
    from build.download import Downloader

    def compile_run(key: str) -> tuple[dict[str, Path], dict[str, Any]]:
        work = Path(stack.enter_context(cache.tempdir("openssl-fips-")))
        tarball = Downloader(cache.root / "downloads", mirror=mirror).download(
            tc.openssl.url, sha256=tc.openssl.sha256, component=COMPONENT)
        return _compile(tc, tarball, work, jobs=jobs, log_dir=cache.root / "logs", key=key)

    import contextlib

    with cache.shared(), contextlib.ExitStack() as stack:
        compiled = _cached(cache, compile_action(tc), compile_run)
        module = compiled.output("fips.so")

        def configure_run(key: str) -> tuple[dict[str, Path], dict[str, Any]]:
            work = Path(stack.enter_context(cache.tempdir("openssl-fips-cnf-")))
            cache.cas.copy_out(module.sha256, work / "fips.so")
            return _configure(tc, work, compiled.metadata, log_dir=cache.root / "logs", key=key)

        configured = _cached(cache, configure_action(tc, module, compiled.metadata), configure_run)
        log(COMPONENT, json.loads(cache.cas.path(configured.output("provenance.json").sha256).read_text())["statement"])
        # Named copies: the bundler keeps file names (fips.so must be called fips.so).
        named = cache.root / "tmp" / f"{COMPONENT}-{configured.key[:16]}"
        out: dict[str, Path] = {}
        for o in (module, *configured.outputs):
            target = named / o.name
            if not (target.is_file() and target.stat().st_size == o.size):
                cache.cas.copy_out(o.sha256, target, mode=0o755 if o.executable else 0o644)
            out[o.name] = target
        return out


def _compile(tc: FipsToolchain, tarball: Path, work: Path, *, jobs: int, log_dir: Path, key: str
             ) -> tuple[dict[str, Path], dict[str, Any]]:
    t0 = time.monotonic()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"{COMPONENT}-{key}.log"
    log_file.write_text("")
    target = _TARGETS.get(_platform.machine())
    if target is None:
        raise BuildError(f"{COMPONENT}: no OpenSSL Configure target for {_platform.machine()}")
    with tarfile.open(tarball) as tf:
        extract_all(tf, work)
    srcs = [p for p in work.iterdir() if p.is_dir() and (p / "Configure").exists()]
    if len(srcs) != 1:
        raise ComponentBuildError(f"{COMPONENT}: {tc.openssl.url}: expected one source directory with Configure")
    src = srcs[0]
    version_dat = (src / "VERSION.dat").read_text()
    fields = dict(line.split("=", 1) for line in version_dat.splitlines() if "=" in line)
    built = ".".join(fields.get(k, "?") for k in ("MAJOR", "MINOR", "PATCH"))
    if built != tc.openssl.version:
        raise ComponentBuildError(f"{COMPONENT}: {tc.openssl.url} holds OpenSSL {built}, fips/toolchain.toml says "
                                  f"openssl.version = {tc.openssl.version}")
    log(COMPONENT, f"OpenSSL {built}: Configure {target} {' '.join(tc.openssl.configure)}")
    env = {**os.environ, "SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", "0")}
    _run(["perl", "Configure", target, *tc.openssl.configure], cwd=src, env=env, log_file=log_file, what="Configure")
    log(COMPONENT, f"make providers/fips.so (-j{jobs}; log {log_file})")
    _run(["make", f"-j{jobs}", "build_generated", "providers/fips.so"], cwd=src, env=env, log_file=log_file,
         what="make providers/fips.so")
    out = work / "out"
    out.mkdir()
    shutil.copyfile(src / "providers" / "fips.so", out / "fips.so")
    os.chmod(out / "fips.so", 0o755)
    meta = {
        "openssl_version": built,
        "configure": [target, *tc.openssl.configure],
        "compiler": compiler_version(),
        "fips_module_sources_checksum": (src / "providers" / "fips.checksum").read_text().split()[0],
        "seconds": round(time.monotonic() - t0, 3),
        "log": str(log_file),
    }
    log(COMPONENT, f"fips.so compiled in {meta['seconds']:.0f}s")
    return {"fips.so": out / "fips.so"}, meta


def _configure(tc: FipsToolchain, work: Path, module_meta: dict[str, Any], *, log_dir: Path, key: str
               ) -> tuple[dict[str, Path], dict[str, Any]]:
    from build.fsutil import sha256_file

    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"{COMPONENT}-configure-{key}.log"
    log_file.write_text("")
    openssl, openssl_version = host_openssl()
    _run([openssl, "fipsinstall", "-module", str(work / "fips.so"), "-out", str(work / "fipsmodule.cnf"),
          "-provider_name", "fips", "-self_test_onload"], log_file=log_file, what="openssl fipsinstall")
    section = _fips_section((work / "fipsmodule.cnf").read_text())
    (work / "openssl.cnf").write_text(OPENSSL_CNF.format(fips_section=section))
    smoke = _smoke_test(work, openssl, log_file)
    built = module_meta["openssl_version"]
    certificate = dict(tc.openssl.validated).get(built)
    provenance = {
        "schema": SCHEMA,
        "openssl_version": built,
        "source": tc.openssl.source,
        "url": tc.openssl.url,
        "tarball_sha256": tc.openssl.sha256,
        "configure": module_meta["configure"],
        "fips_module_sources_checksum": module_meta["fips_module_sources_checksum"],
        "fips_so_sha256": sha256_file(work / "fips.so"),
        "fipsinstall": f"{openssl_version} (-self_test_onload)",
        "compiler": module_meta["compiler"],
        "validated": certificate is not None,
        "certificate": certificate,
        "validated_versions": dict(tc.openssl.validated),
        "statement": (f"OpenSSL {built} FIPS provider: {certificate}" if certificate else
                      f"OpenSSL {built} FIPS provider built with enable-fips from the unmodified upstream tarball; "
                      f"{built} is NOT a validated version (validated: {', '.join(dict(tc.openssl.validated))})"),
        "smoke_test": smoke,
    }
    (work / "provenance.json").write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    return {"openssl.cnf": work / "openssl.cnf", "provenance.json": work / "provenance.json"}, \
        {"validated": certificate is not None, "openssl_version": built, "log": str(log_file)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fips.openssl", description="Build the OpenSSL FIPS provider for mke")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or take from the cache) and copy fips.so, openssl.cnf, provenance.json")
    b.add_argument("--out", type=Path, default=None, help="copy the outputs here")
    b.add_argument("--cache-dir", type=Path, default=None)
    b.add_argument("--mirror", default=os.environ.get("MKE_MIRROR"))
    b.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = p.parse_args(argv)
    try:
        files = build_provider(load(), Cache(args.cache_dir or default_cache_dir()), mirror=args.mirror, jobs=args.jobs)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            for name, path in files.items():
                shutil.copyfile(path, args.out / name)
                os.chmod(args.out / name, 0o755 if name == "fips.so" else 0o644)
        prov = json.loads(files["provenance.json"].read_text())
        print(prov["statement"])
        for name, path in files.items():
            print(f"{name}: {args.out / name if args.out else path}")
        return 0
    except (BuildError, OSError) as e:
        return report(e)


if __name__ == "__main__":
    sys.exit(main())
