"""The OpenSSL 3 FIPS provider for the mke runtime: build it as its security policy says, configure it.

From the source pinned in fips/toolchain.toml ``[openssl]`` (a release tarball, or a crates.io
crate carrying the OpenSSL tree: 3.1.2 comes from the ``openssl-src`` crate), on the build host:

1. download (mirror-aware, verified against the pinned sha256 before anything reads it) and
   unpack; check VERSION.dat (and a crate's Cargo.toml) say the pinned versions;
2. the security policy's build: ``./Configure enable-fips``, ``make``, ``make install_fips``
   (into a staging DESTDIR); before installing, ``make diff-fips-checksums`` checks that the
   FIPS module's sources hash to the ``providers/fips-sources.checksums`` (and
   ``providers/fips.checksum``) the tree carries;
3. ``make install_fips`` writes ``fipsmodule.cnf``: the module-mac (HMAC-SHA256 over fips.so
   with the build's FIPSKEY; checked here against the installed fips.so) and, with 3.1,
   no install-status/install-mac, so the self tests run on every load and the same
   configuration is valid on any machine the bundle runs on (a 3.0-style file with
   install-mac is rewritten by the tree's own ``openssl fipsinstall -self_test_onload``);
4. ``openssl.cnf``: that fips section inline, with ``module = ${ENV::MKE_FIPS_RUNTIME}/fips.so``
   (an absolute path at run time, whatever OPENSSL_MODULES says), providers fips + base active, the
   default provider NOT loaded, ``default_properties = fips=yes``; checked by loading it (in a
   fresh Python, the self tests observed through OSSL_SELF_TEST_set_callback) and with the
   host's ``openssl`` command.

The result (fips.so, openssl.cnf, provenance.json) is two actions in the build cache, keyed
by every input (settings, source digest, compiler, host OpenSSL). ``provenance.json`` says
which version was built, from what, how, and exactly what is and is not claimed: only the
versions listed under ``openssl.validated`` are validated modules.

    python -m fips.openssl build [--out DIR]      # build (or take from the cache) and copy to DIR
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import platform as _platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from build.action import Action
from build.cache import Cache, OutputFile, default_cache_dir
from build.errors import BuildError, ComponentBuildError, DigestMismatchError, VerificationError, report
from build.fsutil import extract_all, sha256_file
from build.progress import log
from fips.settings import FipsToolchain, load

SCHEMA = 4
COMPONENT = "openssl-fips-provider"
RUNTIME_DIR_ENV = "MKE_FIPS_RUNTIME"  # the directory holding fips.so (mke.fips.runtime_env.RUNTIME_ENV)
#: The security policy's build, in order (recorded in provenance.json).
PROCEDURE = ("./Configure <configure>", "make", "module sources vs providers/fips.checksum (util/fips-checksums.sh)",
             "make install_fips DESTDIR=<staging>")

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
    """Building fips.so: the source, Configure options, the procedure and the compiler (not the host's OpenSSL)."""
    machine = machine or _platform.machine()
    o = tc.openssl
    return Action(mode="fips-openssl-compile", component=COMPONENT, platform=f"linux/{machine}", inputs={
        "schema": SCHEMA,
        "openssl": {"version": o.version, "url": o.url, "sha256": o.sha256, "configure": list(o.configure),
                    "subdir": o.crate.subdir if o.crate else None},
        "procedure": list(PROCEDURE),
        "cc": compiler_version(),
    })


def configure_action(tc: FipsToolchain, module: OutputFile, fipsmodule_cnf: OutputFile,
                     module_meta: dict[str, Any]) -> Action:
    """openssl.cnf + provenance: fips.so and fipsmodule.cnf by digest, what provenance says, the checks."""
    o = tc.openssl
    return Action(mode="fips-openssl-configure", component=COMPONENT, platform=f"linux/{_platform.machine()}", inputs={
        "schema": SCHEMA,
        "module": module.sha256,
        "fipsmodule_cnf": fipsmodule_cnf.sha256,
        "module_meta": {k: module_meta.get(k) for k in ("openssl_version", "configure", "target", "compiler",
                                                        "fips_module_sources_checksum", "module_sources_check",
                                                        "module_mac", "crate_vcs", "fipsmodule_cnf_from")},
        "validated": dict(o.validated),
        "source": [o.source, o.url, o.sha256, o.sha256_from, o.crate.upstream_commit if o.crate else None],
        "host_openssl": host_openssl()[1],
        "cnf": OPENSSL_CNF,
        "probe": sha256_file(Path(__file__).resolve().parents[1] / "mke" / "fips" / "libcrypto.py"),
    })


def _fips_section(fipsmodule_cnf: str) -> str:
    lines = [ln for ln in fipsmodule_cnf.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines or lines[0].strip() != "[fips_sect]":
        raise ComponentBuildError(f"{COMPONENT}: fipsmodule.cnf does not start with [fips_sect]:\n{fipsmodule_cnf}")
    if any(ln.startswith(("install-mac", "install-status")) for ln in lines):
        raise ComponentBuildError(f"{COMPONENT}: fipsmodule.cnf has install-mac/install-status: the self tests would "
                                  "run only at install, not on every load")
    if any(ln.strip().startswith("module") and not ln.strip().startswith("module-mac") for ln in lines):
        raise ComponentBuildError(f"{COMPONENT}: fipsmodule.cnf names a module path; mke sets its own")
    return "\n".join(lines) + "\n" + f"module = ${{ENV::{RUNTIME_DIR_ENV}}}/fips.so\n"


def module_mac(fipsmodule_cnf: str) -> str:
    """The module-mac of a fipsmodule.cnf, as 64 lowercase hex digits ('' when there is none)."""
    for ln in fipsmodule_cnf.splitlines():
        key, _, value = ln.partition("=")
        if key.strip() == "module-mac":
            return value.strip().replace(":", "").lower()
    return ""


def check_module_mac(fips_so: Path, fipsmodule_cnf: str, fipskey: str) -> str:
    """The module-mac is HMAC-SHA256(FIPSKEY, fips.so): what the provider checks at every load. Returns it."""
    want = module_mac(fipsmodule_cnf)
    if not want:
        raise VerificationError(f"{COMPONENT}: fipsmodule.cnf has no module-mac")
    have = hmac.new(bytes.fromhex(fipskey), fips_so.read_bytes(), hashlib.sha256).hexdigest()
    if have != want:
        raise VerificationError(f"{COMPONENT}: fipsmodule.cnf's module-mac {want} is not HMAC-SHA256 of {fips_so.name} "
                                f"({have}); the module and its configuration do not belong together")
    return have


SELF_TEST_PROBE = """
import json
from mke.fips.libcrypto import load_config_with_self_test_log, provider_state
r = load_config_with_self_test_log()
r["provider"] = provider_state()
print(json.dumps(r))
"""


def self_test_probe(python: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Load the configuration in a fresh ``python`` (argv) and report the self tests the provider ran and
    what libcrypto says about it (mke.fips.libcrypto); ``env`` must point OPENSSL_CONF at it."""
    proc = subprocess.run([*python, "-c", SELF_TEST_PROBE], env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise VerificationError(f"{COMPONENT}: loading the provider in Python failed (exit {proc.returncode}): "
                                + " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:]))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_self_tests(report: dict[str, Any], version: str, where: str) -> None:
    """The provider loaded, is ``version``, and ran its integrity check and known-answer tests, all passed."""
    prov = report.get("provider", {}).get("fips_provider") or {}
    if not report.get("fips_loaded") or report.get("failed"):
        failed = [e for e in report.get("events", []) if e[0] == "Fail"]
        raise VerificationError(f"{COMPONENT}: the FIPS provider did not load {where}"
                                + (f": self tests failed: {failed[:3]}" if failed else ""))
    if prov.get("version") != version:
        raise VerificationError(f"{COMPONENT}: {where} the loaded FIPS provider says version {prov.get('version')}, "
                                f"expected {version}")
    types = set(report.get("types", []))
    if "Module_Integrity" not in types or not any(t.startswith("KAT_") for t in types - {"KAT_Integrity"}):
        raise VerificationError(f"{COMPONENT}: {where} the provider loaded without running its integrity check and "
                                f"known-answer tests (ran: {sorted(types) or 'none'})")


def _smoke_test(out: Path, openssl: str, log_file: Path, version: str) -> dict[str, Any]:
    """The configuration works under the host's libcrypto: the provider loads, runs its self tests, is
    active, MD5 is refused, SHA-256 works."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENSSL_")}
    env.update(OPENSSL_CONF=str(out / "openssl.cnf"), **{RUNTIME_DIR_ENV: str(out)})
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    probe = self_test_probe([sys.executable], env)
    check_self_tests(probe, version, "in the build's Python")
    listing = _run([openssl, "list", "-providers"], env=env, log_file=log_file, what="openssl list -providers")
    if "OpenSSL FIPS Provider" not in listing or "status: active" not in listing:
        raise VerificationError(f"{COMPONENT}: the FIPS provider is not active with the generated openssl.cnf:\n{listing}")
    md5 = subprocess.run([openssl, "dgst", "-md5"], input=b"mke", env=env, capture_output=True, check=False)
    if md5.returncode == 0:
        raise VerificationError(f"{COMPONENT}: MD5 still works with the generated openssl.cnf")
    sha = subprocess.run([openssl, "dgst", "-sha256"], input=b"mke", env=env, capture_output=True, check=False)
    if sha.returncode != 0:
        raise VerificationError(f"{COMPONENT}: SHA-256 fails with the generated openssl.cnf: {sha.stderr.decode()[-300:]}")
    return {"host_libcrypto": probe["provider"].get("version"), "provider": probe["provider"].get("fips_provider"),
            "self_tests_passed": probe["passed"], "self_test_types": probe["types"],
            "providers": listing.strip(), "md5_refused": True, "sha256_of_mke": sha.stdout.decode().split()[-1]}


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

    Two cached actions: building fips.so and its fipsmodule.cnf (minutes; keyed by the source,
    Configure options, the procedure, the compiler) and configuring it (seconds; keyed by
    their digests, the host's OpenSSL that checks it, and the openssl.cnf template), so a new
    host OpenSSL or template does not rebuild the module.
    """
    import contextlib

    from build.download import Downloader

    def compile_run(key: str) -> tuple[dict[str, Path], dict[str, Any]]:
        work = Path(stack.enter_context(cache.tempdir("openssl-fips-")))
        try:
            source = Downloader(cache.root / "downloads", mirror=mirror).download(
                tc.openssl.download_url(), sha256=tc.openssl.sha256, component=COMPONENT)
        except DigestMismatchError as e:  # the pin lives in fips/toolchain.toml, not recipes.lock
            raise DigestMismatchError(f"{tc.path}: openssl.sha256: {str(e).split('; the file was deleted')[0]}; the "
                                      "file was deleted and nothing was built. openssl.sha256_from says where the pin "
                                      "came from: check the source there before changing it") from e
        return _compile(tc, source, work, jobs=jobs, log_dir=cache.root / "logs", key=key)

    with cache.shared(), contextlib.ExitStack() as stack:
        compiled = _cached(cache, compile_action(tc), compile_run)
        module = compiled.output("fips.so")
        fipsmodule = compiled.output("fipsmodule.cnf")

        def configure_run(key: str) -> tuple[dict[str, Path], dict[str, Any]]:
            work = Path(stack.enter_context(cache.tempdir("openssl-fips-cnf-")))
            cache.cas.copy_out(module.sha256, work / "fips.so")
            cache.cas.copy_out(fipsmodule.sha256, work / "fipsmodule.cnf")
            return _configure(tc, work, compiled.metadata, log_dir=cache.root / "logs", key=key)

        configured = _cached(cache, configure_action(tc, module, fipsmodule, compiled.metadata), configure_run)
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


def _source_tree(tc: FipsToolchain, source: Path, work: Path) -> tuple[Path, dict[str, Any]]:
    """Unpack the verified source; return the OpenSSL tree and what the archive says about itself."""
    o = tc.openssl
    with tarfile.open(source) as tf:
        extract_all(tf, work)
    facts: dict[str, Any] = {}
    if o.crate is not None:
        top = work / f"{o.crate.name}-{o.crate.version}"
        cargo = top / "Cargo.toml"
        if not cargo.is_file():
            raise ComponentBuildError(f"{COMPONENT}: {o.url}: no {top.name}/Cargo.toml; is it the crate "
                                      f"{o.crate.name} {o.crate.version}? (fips/toolchain.toml openssl.crate)")
        m = re.search(r'^version = "([^"]+)"', cargo.read_text(), re.M)
        if m is None or m.group(1) != o.crate.version:
            raise ComponentBuildError(f"{COMPONENT}: {o.url}: Cargo.toml says version {m.group(1) if m else '?'}, "
                                      f"fips/toolchain.toml openssl.crate.version says {o.crate.version}")
        vcs = top / ".cargo_vcs_info.json"
        facts["crate_vcs"] = json.loads(vcs.read_text()).get("git", {}).get("sha1") if vcs.is_file() else None
        src = top / o.crate.subdir
        if not (src / "Configure").is_file():
            raise ComponentBuildError(f"{COMPONENT}: {o.url}: no Configure in {top.name}/{o.crate.subdir}; "
                                      "check fips/toolchain.toml openssl.crate.subdir")
        return src, facts
    srcs = [p for p in work.iterdir() if p.is_dir() and (p / "Configure").exists()]
    if len(srcs) != 1:
        raise ComponentBuildError(f"{COMPONENT}: {o.url}: expected one source directory with Configure")
    return srcs[0], facts


def verify_module_sources(src: Path, env: dict[str, str], log_file: Path) -> str:
    """The FIPS module's sources are the ones the tree's checksums name, unchanged; returns what was checked.

    1. complete: every file the built module's objects were compiled from (the .d files of
       libfips.a and fips.so) is listed in providers/fips.module.sources (or its .in template is);
    2. unchanged: util/fips-checksums.sh (OpenSSL's own: unifdef -DFIPS_MODULE, comments
       squeezed, sha256) over the listed files gives providers/fips-sources.checksums exactly,
       and that file's sha256 is providers/fips.checksum (what ``make diff-fips-checksums``
       compares; that target re-configures out of tree, which an in-tree build refuses).
    """
    if shutil.which("unifdef") is None:
        raise BuildError(f"{COMPONENT}: checking the FIPS module's sources needs unifdef; apt-get install unifdef")
    listed = (src / "providers" / "fips.module.sources").read_text().split()
    listed_set = set(listed)
    deps: set[str] = set()
    dfiles = [p for p in src.rglob("*.d") if p.name.startswith(("libfips-lib-", "fips-dso-"))]
    for d in dfiles:
        text = d.read_text().replace("\\\n", " ")
        for line in text.splitlines():
            for dep in line.split(":", 1)[-1].split():
                if not dep.startswith("/"):  # relative to the tree: make runs the compiler there
                    deps.add(os.path.normpath(dep))
    if not dfiles or not deps:
        raise ComponentBuildError(f"{COMPONENT}: no dependency files of the FIPS module's objects after make")
    unlisted = sorted(d for d in deps if d not in listed_set and d + ".in" not in listed_set)
    if unlisted:
        raise VerificationError(f"{COMPONENT}: the FIPS module was compiled from {len(unlisted)} file(s) that "
                                f"providers/fips.module.sources does not list: {', '.join(unlisted[:5])}")
    proc = subprocess.run(["./util/fips-checksums.sh", *listed], cwd=src, env=env, capture_output=True, text=True,
                          check=False)
    with open(log_file, "a") as f:
        f.write(f"$ util/fips-checksums.sh <{len(listed)} files of providers/fips.module.sources>\n{proc.stderr}\n")
    committed = (src / "providers" / "fips-sources.checksums").read_text()
    if proc.returncode != 0 or proc.stdout != committed:
        have = dict(reversed(ln.split(None, 1)) for ln in proc.stdout.splitlines() if ln.strip())
        want = dict(reversed(ln.split(None, 1)) for ln in committed.splitlines() if ln.strip())
        bad = sorted(n for n in set(have) | set(want) if have.get(n) != want.get(n))
        raise VerificationError(f"{COMPONENT}: the FIPS module's sources differ from providers/fips-sources.checksums "
                                f"({len(bad)} file(s): {', '.join(bad[:5])}){'; ' + proc.stderr.strip()[-200:] if proc.returncode else ''}")
    checksum = (src / "providers" / "fips.checksum").read_text().split()[0]
    if hashlib.sha256(committed.encode()).hexdigest() != checksum:
        raise VerificationError(f"{COMPONENT}: providers/fips-sources.checksums does not hash to providers/fips.checksum "
                                f"({checksum})")
    return (f"the {len(deps)} files fips.so was compiled from are all among the {len(listed)} files of "
            f"providers/fips.module.sources, whose util/fips-checksums.sh digests equal providers/fips-sources.checksums, "
            f"sha256 {checksum} (providers/fips.checksum)")


def _compile(tc: FipsToolchain, source: Path, work: Path, *, jobs: int, log_dir: Path, key: str
             ) -> tuple[dict[str, Path], dict[str, Any]]:
    t0 = time.monotonic()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"{COMPONENT}-{key}.log"
    log_file.write_text("")
    src, facts = _source_tree(tc, source, work)
    fields = dict(line.split("=", 1) for line in (src / "VERSION.dat").read_text().splitlines() if "=" in line)
    built = ".".join(fields.get(k, "?") for k in ("MAJOR", "MINOR", "PATCH"))
    if built != tc.openssl.version or fields.get("PRE_RELEASE_TAG"):
        raise ComponentBuildError(f"{COMPONENT}: {tc.openssl.url} holds OpenSSL {built}"
                                  f"{'-' + fields['PRE_RELEASE_TAG'] if fields.get('PRE_RELEASE_TAG') else ''}, "
                                  f"fips/toolchain.toml says openssl.version = {tc.openssl.version}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENSSL_")}
    env["SOURCE_DATE_EPOCH"] = os.environ.get("SOURCE_DATE_EPOCH", "0")
    log(COMPONENT, f"OpenSSL {built}: ./Configure {' '.join(tc.openssl.configure)} (log {log_file})")
    configured = _run(["./Configure", *tc.openssl.configure], cwd=src, env=env, log_file=log_file, what="Configure")
    m = re.search(r"for target (\S+)", configured)
    target = m.group(1) if m else "?"
    log(COMPONENT, f"make -j{jobs} (target {target}; the whole tree, as the security policy says: minutes)")
    _run(["make", f"-j{jobs}"], cwd=src, env=env, log_file=log_file, what="make")
    module_sources = verify_module_sources(src, env, log_file)
    dest = work / "install"
    _run(["make", "install_fips", f"DESTDIR={dest}"], cwd=src, env=env, log_file=log_file, what="make install_fips")
    sos = sorted(dest.rglob("ossl-modules/fips.so"))
    cnfs = sorted(dest.rglob("fipsmodule.cnf"))
    if len(sos) != 1 or len(cnfs) != 1:
        raise ComponentBuildError(f"{COMPONENT}: make install_fips installed {len(sos)} fips.so and {len(cnfs)} "
                                  f"fipsmodule.cnf under {dest}; expected one of each")
    fips_so, cnf = sos[0], cnfs[0]
    cnf_from = "make install_fips"
    if "install-mac" in cnf.read_text():  # OpenSSL 3.0: self tests at install only; ask for them on every load
        _run(["perl", "util/wrap.pl", "apps/openssl", "fipsinstall", "-module", str(fips_so), "-provider_name", "fips",
              "-self_test_onload", "-out", str(cnf)], cwd=src, env=env, log_file=log_file,
             what="openssl fipsinstall -self_test_onload")
        cnf_from = "make install_fips, then the tree's openssl fipsinstall -self_test_onload"
    fipskey = re.search(r"^FIPSKEY=([0-9a-fA-F]+)$", (src / "Makefile").read_text(), re.M)
    if fipskey is None:
        raise ComponentBuildError(f"{COMPONENT}: no FIPSKEY in the generated Makefile")
    mac = check_module_mac(fips_so, cnf.read_text(), fipskey.group(1))
    out = work / "out"
    out.mkdir()
    shutil.copyfile(fips_so, out / "fips.so")
    os.chmod(out / "fips.so", 0o755)
    shutil.copyfile(cnf, out / "fipsmodule.cnf")
    meta = {
        "openssl_version": built,
        "configure": ["./Configure", *tc.openssl.configure],
        "target": target,
        "procedure": list(PROCEDURE),
        "compiler": compiler_version(),
        "fips_module_sources_checksum": (src / "providers" / "fips.checksum").read_text().split()[0],
        "module_sources_check": module_sources,
        "module_mac": {"value": mac, "verified": "HMAC-SHA256 of the installed fips.so with the Makefile's FIPSKEY",
                       "fipskey": fipskey.group(1).lower()},
        "fipsmodule_cnf_from": cnf_from,
        "installed_as": [fips_so.relative_to(dest).as_posix(), cnf.relative_to(dest).as_posix()],
        **facts,
        "seconds": round(time.monotonic() - t0, 3),
        "log": str(log_file),
    }
    log(COMPONENT, f"fips.so built and installed in {meta['seconds']:.0f}s")
    return {"fips.so": out / "fips.so", "fipsmodule.cnf": out / "fipsmodule.cnf"}, meta


def claims(tc: FipsToolchain, built: str, module_meta: dict[str, Any]) -> tuple[str, list[str], list[str]]:
    """(statement, claimed, not claimed): what provenance.json, the SBOM and ``mke version`` say."""
    o = tc.openssl
    certificate = dict(o.validated).get(built)
    how = f"{' '.join(module_meta['configure'])}, make, make install_fips"
    if o.crate is not None:
        origin = (f"the crates.io crate {o.crate.name} {o.crate.version} (OpenSSL commit {o.crate.upstream_commit[:8]}; "
                  "not the release tarball")
        origin += " the security policy names)" if certificate else ")"
    else:
        origin = f"the release tarball {o.url.rsplit('/', 1)[-1]}"
    claimed = [f"fips.so is the OpenSSL FIPS provider {built}, built with {how} from {origin}",
               module_meta.get("module_sources_check", ""),
               "its self tests (module HMAC, known-answer tests) run every time it is loaded (no install-status)"]
    not_claimed = ["the libcrypto that loads fips.so (the runtime's own) is outside the module boundary and not "
                   "validated", "the operating environment: the certificate lists the tested platforms; this "
                   "machine is not one of them"]
    if certificate:
        claimed.insert(1, f"{built} is a validated version: {certificate}")
        if o.crate is not None:
            not_claimed.insert(0, f"the source is not the release tarball openssl-{built}.tar.gz that the security "
                               "policy names (it is not reachable here); the crate's tree lacks test/recipes/ and "
                               "demos/ and adds dotfiles, dev/ and util/mktar.sh (docs/fips.md): none of them is a "
                               "FIPS module source")
        statement = f"OpenSSL FIPS provider {built}, a validated version ({certificate}), built with {how} from {origin}"
    else:
        not_claimed.insert(0, f"{built} is NOT a validated version (validated: {', '.join(dict(o.validated))})")
        statement = (f"OpenSSL FIPS provider {built} built with {how} from {origin}; {built} is NOT a validated "
                     f"version (validated: {', '.join(dict(o.validated))})")
    return statement, [c for c in claimed if c], not_claimed


def _configure(tc: FipsToolchain, work: Path, module_meta: dict[str, Any], *, log_dir: Path, key: str
               ) -> tuple[dict[str, Path], dict[str, Any]]:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"{COMPONENT}-configure-{key}.log"
    log_file.write_text("")
    openssl, openssl_version = host_openssl()
    fipsmodule = (work / "fipsmodule.cnf").read_text()
    check_module_mac(work / "fips.so", fipsmodule, module_meta["module_mac"]["fipskey"])
    section = _fips_section(fipsmodule)
    (work / "openssl.cnf").write_text(OPENSSL_CNF.format(fips_section=section))
    built = module_meta["openssl_version"]
    smoke = _smoke_test(work, openssl, log_file, built)
    o = tc.openssl
    certificate = dict(o.validated).get(built)
    statement, claimed, not_claimed = claims(tc, built, module_meta)
    provenance = {
        "schema": SCHEMA,
        "openssl_version": built,
        "source": o.source,
        "url": o.url,
        "source_sha256": o.sha256,
        "sha256_from": o.sha256_from,
        "crate": ({"name": o.crate.name, "version": o.crate.version, "subdir": o.crate.subdir,
                   "vcs_commit": module_meta.get("crate_vcs"), "openssl_commit": o.crate.upstream_commit}
                  if o.crate else None),
        "configure": module_meta["configure"],
        "target": module_meta.get("target"),
        "procedure": module_meta.get("procedure"),
        "fips_module_sources_checksum": module_meta["fips_module_sources_checksum"],
        "module_sources_check": module_meta.get("module_sources_check"),
        "module_mac": module_meta["module_mac"]["value"],
        "fipsmodule_cnf_from": module_meta.get("fipsmodule_cnf_from"),
        "fips_so_sha256": sha256_file(work / "fips.so"),
        "self_test_onload": True,
        "compiler": module_meta["compiler"],
        "validated": certificate is not None,
        "certificate": certificate,
        "validated_versions": dict(o.validated),
        "claimed": claimed,
        "not_claimed": not_claimed,
        "statement": statement,
        "smoke_test": {**smoke, "host_openssl": openssl_version},
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
    b.add_argument("--toolchain", type=Path, default=None, help="the FIPS toolchain file (default fips/toolchain.toml)")
    args = p.parse_args(argv)
    try:
        tc = load(args.toolchain) if args.toolchain else load()
        files = build_provider(tc, Cache(args.cache_dir or default_cache_dir()), mirror=args.mirror, jobs=args.jobs)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            for name, path in files.items():  # atomically: a reader never sees half a fips.so
                tmp = args.out / f".{name}.tmp"
                shutil.copyfile(path, tmp)
                os.chmod(tmp, 0o755 if name == "fips.so" else 0o644)
                os.replace(tmp, args.out / name)
        prov = json.loads(files["provenance.json"].read_text())
        print(prov["statement"])
        for name, path in files.items():
            print(f"{name}: {args.out / name if args.out else path}")
        return 0
    except (BuildError, OSError) as e:
        return report(e)


if __name__ == "__main__":
    sys.exit(main())
