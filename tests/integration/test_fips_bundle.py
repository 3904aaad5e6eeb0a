"""A real FIPS bundle (dist/mke-fips) made by build/bundle, then run: its runtime's crypto.

The bundler's FIPS path on a manifest without embedded Go binaries (those are proven by
tests/integration/test_fips_build.py and, in the bundle, by `mke fips check`): the OpenSSL
FIPS provider and cryptography built against libcrypto.so.3 go into the Python runtime
(fips/runtime.py); the bundle is run and must refuse MD5 and RSA-1024 and report its
provider. Uses the shared build cache (the provider and the cryptography wheel are built
once, minutes; the runtime and its frames once per change under mke/). The same bundle in
other root filesystems: tests/integration/test_static.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from build import bundle
from mke import payload_format as pf
from tests.support.bundles import fips_bundle as make_fips_bundle

pytestmark = [pytest.mark.slow, pytest.mark.docker]


@pytest.fixture(scope="module")
def runtime_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fips-runtime")


@pytest.fixture(scope="module")
def fips_bundle(tmp_path_factory) -> bundle.Bundle:
    root = tmp_path_factory.mktemp("fips-bundle")
    dist = root / "dist"
    dist.mkdir()
    (dist / "mke").write_bytes(b"the non-FIPS bundle")  # its SHA256SUMS line must survive
    (dist / "SHA256SUMS").write_text(f"{'a' * 64}  mke\n")
    return make_fips_bundle(root)


def _run(b: bundle.Bundle, runtime_dir: Path, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENSSL", "MKE_FIPS"))}
    env["MKE_RUNTIME_DIR"] = str(runtime_dir)
    proc = subprocess.run([str(b.exe), *args], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_release_files(fips_bundle):
    b = fips_bundle
    assert b.exe.name == "mke-fips" and b.versioned.name.startswith("mke-fips-") and b.versioned.name.endswith("-linux-amd64")
    assert b.versioned.stat().st_ino == b.exe.stat().st_ino
    sums = dict(reversed(line.split("  ", 1)) for line in b.sums.read_text().splitlines())
    assert sums == {"mke": "a" * 64, "mke-fips": b.sha256, b.versioned.name: b.sha256}
    doc = json.loads(b.sbom.read_text())
    pkgs = {p["name"]: p for p in doc["packages"]}
    assert "fips true" in pkgs["mke"]["comment"] and "FIPS provider" in doc["comment"]
    assert "openssl-fips-provider" in pkgs


def test_version_reports_the_fips_runtime(fips_bundle, runtime_dir):
    doc = _run(fips_bundle, runtime_dir, "version", "--json")
    rt = doc["runtime"]
    assert doc["fips"] is True and rt["fips"] is True and rt["openssl_fips_provider"]
    assert rt["validated"] is (rt["certificate"] is not None) and rt["statement"]
    # issue 17: the provider is 3.1.2, validated under FIPS 140-3, and the caveats travel with it
    assert rt["openssl_fips_provider"] == "3.1.2" and rt["certificate"] == "FIPS 140-3 certificate #4985"
    assert rt["not_claimed"][0].startswith("the source is not the release tarball openssl-3.1.2.tar.gz")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENSSL", "MKE_FIPS"))}
    env["MKE_RUNTIME_DIR"] = str(runtime_dir)
    text = subprocess.run([str(fips_bundle.exe), "version"], capture_output=True, text=True, env=env, timeout=120,
                          check=True).stdout
    assert "runtime crypto: OpenSSL FIPS provider 3.1.2 (validated version: FIPS 140-3 certificate #4985)" in text
    # issue 17 item 3: the payload records the Go FIPS mode (the toolchain's default here)
    assert doc["fips_go"] == "native" and "go crypto: native (Go Cryptographic Module" in text


def test_runtime_crypto_is_fips(fips_bundle, runtime_dir):
    doc = _run(fips_bundle, runtime_dir, "fips", "check", "--runtime-only", "--json")
    s = doc["runtime"]
    assert doc["ok"], doc["problems"]
    assert s["hashlib_md5_refused"] and s["hashlib_new_md5_refused"] and s["hashlib_sha256_works"]
    assert s["evp_rsa1024_refused"] and s["evp_p256_works"] and s["builtin_hash_modules"] == []
    c = s["cryptography"]
    assert c["fips_enabled"] and c["md5_refused"] and c["rsa1024_sign_refused"] and c["p256_works"]
    o = s["hashlib_openssl"]
    assert o["fips"] and not o["default"] and o["default_properties_fips"]
    # issue 17: the 3.1.2 provider under the runtime's own (3.0) libcrypto, reported as the validated version
    assert o["version"].startswith("OpenSSL 3.0.") and o["fips_provider"]["version"] == "3.1.2"
    assert s["provider_certificate"] == "FIPS 140-3 certificate #4985"
    # every file of the staged runtime that links or embeds crypto, and nothing else
    inv = s["crypto_inventory"]
    assert inv["problems"] == [] and inv["elf_files"] > 20
    assert {f["path"] for f in inv["crypto_files"]} >= {
        "fips/fips.so", "lib/libcrypto.so.3", "lib/libssl.so.3", "bin/python3.11"}
    assert any(f["path"].startswith("lib/python3.11/site-packages/cryptography/") and "libcrypto.so.3" in
               f["crypto_needed"] and not f["marks"] for f in inv["crypto_files"])


def test_fips_check_text_says_validated(fips_bundle, runtime_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENSSL", "MKE_FIPS"))}
    env["MKE_RUNTIME_DIR"] = str(runtime_dir)
    out = subprocess.run([str(fips_bundle.exe), "fips", "check", "--runtime-only"], capture_output=True, text=True,
                         env=env, timeout=300, check=True).stdout
    assert "provider version       3.1.2: validated (FIPS 140-3 certificate #4985)" in out
    assert "as built (provenance.json)" in out
    assert "no other file links or embeds a crypto library" in out
    assert out.rstrip().endswith("FIPS: every check passed")


def _staged(b: bundle.Bundle, runtime_dir: Path) -> Path:
    _run(b, runtime_dir, "version", "--json")  # staged
    p = pf.Payload.open(b.exe)
    h = hashlib.sha256(b"mke-runtime 1\n")
    for lib in p.manifest.libraries:
        h.update(f"{lib.name} {lib.sha256} {lib.size}\n".encode())
    return runtime_dir / h.hexdigest()


def test_self_tests_run_at_load_in_the_staged_runtime(fips_bundle, runtime_dir):
    """Issue 17: the 3.1.2 provider loads into the staged runtime's own libcrypto (3.0.x) and runs its
    integrity check and known-answer tests there (seen through OSSL_SELF_TEST_set_callback)."""
    from build.bundle.runtime import FIPS_LOAD_CHECK, runtime_command

    argv, env = runtime_command(_staged(fips_bundle, runtime_dir), "-c", FIPS_LOAD_CHECK)
    r = json.loads(subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=True).stdout)
    assert r["fips_loaded"] and r["failed"] == 0 and r["passed"] >= 20
    assert {"Module_Integrity", "KAT_Digest", "KAT_Cipher", "KAT_Signature", "DRBG"} <= set(r["types"])
    assert r["provider"]["version"].startswith("OpenSSL 3.0.") and r["provider"]["fips_provider"]["version"] == "3.1.2"


def test_fips_module_is_carried_byte_for_byte(fips_bundle, runtime_dir):
    """fips.so's integrity MAC (in openssl.cnf) is over its exact bytes: the runtime carries them unchanged."""
    fips_dir = _staged(fips_bundle, runtime_dir) / "fips"
    prov = json.loads((fips_dir / "provenance.json").read_text())
    assert hashlib.sha256((fips_dir / "fips.so").read_bytes()).hexdigest() == prov["fips_so_sha256"]
    assert "${ENV::MKE_FIPS_RUNTIME}/fips.so" in (fips_dir / "openssl.cnf").read_text()
    # CPython's own hash modules are built into Debian's python3.11: the runtime blocks them at start
    # (mke/start.py); `fips check` reports builtin_hash_modules == [] (test_runtime_crypto_is_fips).


@pytest.fixture(scope="module")
def go_programs(tmp_path_factory) -> dict[str, Path]:
    """The test program of tests/support/gofips.py, native (GOFIPS140=v1.0.0) and BoringCrypto."""
    from tests.support.gofips import BoringBuildError, build, build_boring, have_go_fips, write_program

    d = tmp_path_factory.mktemp("fips-go")
    if not have_go_fips():
        pytest.fail("needs Go 1.24+ on the host to build the FIPS test programs")
    src = write_program(d / "src")
    try:
        boring = build_boring(src, d / "boring" / "kubectl")
    except BoringBuildError as e:
        pytest.fail(f"cannot build the BoringCrypto test program: {e}")
    return {"boring": boring, "native": build(src, d / "native" / "kubectl", env={"GOFIPS140": "v1.0.0"})}


def _run_child(b: bundle.Bundle, runtime_dir: Path, program: Path, godebug: str) -> subprocess.CompletedProcess:
    """`mke-fips kubectl` with ``program`` as kubectl: it runs in the environment the bundle's own
    clean_env makes (exec_tool), so it prints what Go's FIPS mode is in a child of this mke."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENSSL", "MKE_FIPS", "GODEBUG"))}
    env |= {"MKE_RUNTIME_DIR": str(runtime_dir), "KUBECONFIG": "/dev/null", "GODEBUG": godebug}
    return subprocess.run([str(b.exe), "kubectl", "--bin-dir", str(program.parent)], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


def test_native_bundle_children_get_fips140_on(fips_bundle, runtime_dir, go_programs):
    """The caller's GODEBUG=fips140=off does not reach a native payload's Go programs."""
    proc = _run_child(fips_bundle, runtime_dir, go_programs["native"], "fips140=off")
    assert proc.returncode == 0 and proc.stdout.startswith("fips140=true boring=false"), proc.stderr


def test_boring_bundle_children_get_no_fips140(tmp_path_factory, runtime_dir, go_programs):
    """Issue 17 item 3 end to end: a real dist/mke-fips whose payload records fips_go=boring; its child, a real
    BoringCrypto program, runs although the caller set GODEBUG=fips140=on (which makes it panic: checked)."""
    root = tmp_path_factory.mktemp("fips-bundle-boring")
    b = make_fips_bundle(root, fips_go="boring")
    assert pf.Payload.open(b.exe).manifest.go_fips == "boring"
    assert _run(b, runtime_dir, "version", "--json")["fips_go"] == "boring"
    direct = subprocess.run([str(go_programs["boring"])], env={"GODEBUG": "fips140=on"}, capture_output=True,
                            text=True, check=False)
    assert direct.returncode == 2 and "FIPS 140-3 mode is incompatible with GOEXPERIMENT=boringcrypto" in direct.stderr
    proc = _run_child(b, runtime_dir, go_programs["boring"], "fips140=on,x509sha1=1")
    assert proc.returncode == 0 and proc.stdout.startswith("fips140=false boring=true"), proc.stderr
    assert "mke: warning: GODEBUG fips140=on is not passed to the programs mke starts" in proc.stderr
    doc = _run(b, runtime_dir, "fips", "check", "--binaries-only", "--json")
    assert doc["payload"]["fips_go"] == "boring"
