"""mke/fips/inventory.py on real ELF files: every file that links or embeds crypto must have its role.

The libraries come from this host (its OpenSSL 3, GnuTLS, Python's _hashlib and this venv's
cryptography wheel, which carries its own OpenSSL); the provider stand-in is a shared object
compiled here that carries the provider's name, as OpenSSL's fips.so does.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from mke.elf import ElfFile
from mke.fips.inventory import crypto_inventory, dt_needed, inspect_file

HOST_LIB = Path("/usr/lib/x86_64-linux-gnu")


def _host(name: str) -> Path:
    p = HOST_LIB / name
    if not p.is_file():
        pytest.skip(f"needs the host's {name}")
    return p


def _hashlib_ext() -> Path:
    import _hashlib

    return Path(_hashlib.__file__)


def _provider_like(path: Path) -> Path:
    """A real shared object with the marks of OpenSSL's FIPS provider (fipsprov.c's name, the fetch code)."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("needs a C compiler")
    path.parent.mkdir(parents=True, exist_ok=True)
    src = path.parent.parent / "provider.c"  # outside the tree: only ELF files count, but keep it clean
    src.write_text('const char *provider_name = "OpenSSL FIPS Provider";\n'
                   'const char *fetch = "inner_evp_generic_fetch";  /* OpenSSL 3 names its fetch code in errors */\n')
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(path), str(src)], check=True)
    src.unlink()
    return path


@pytest.fixture
def runtime(tmp_path) -> Path:
    """A runtime tree whose crypto is exactly: provider, one libcrypto, libssl, _hashlib."""
    root = tmp_path / "rt"
    (root / "lib" / "python3.11" / "lib-dynload").mkdir(parents=True)
    shutil.copyfile(_host("libcrypto.so.3"), root / "lib" / "libcrypto.so.3")
    shutil.copyfile(_host("libssl.so.3"), root / "lib" / "libssl.so.3")
    shutil.copyfile(_hashlib_ext(), root / "lib" / "python3.11" / "lib-dynload" / _hashlib_ext().name)
    shutil.copyfile(_host("libz.so.1") if (HOST_LIB / "libz.so.1").exists() else _host("libc.so.6"),
                    root / "lib" / "libz.so.1")
    _provider_like(root / "fips" / "fips.so")
    return root


def test_dt_needed_reads_the_dynamic_section():
    elf = ElfFile.parse(_hashlib_ext().read_bytes())
    assert "libcrypto.so.3" in dt_needed(elf)
    facts = inspect_file(_host("libcrypto.so.3"), "lib/libcrypto.so.3")
    assert facts["openssl_version_text"] == ssl.OPENSSL_VERSION  # "OpenSSL 3.0.19 27 Jan 2026"
    assert set(facts["marks"]) == {"openssl", "openssl-default-provider"}


def test_accounted_runtime_passes(runtime):
    inv = crypto_inventory(runtime)
    assert inv["problems"] == []
    assert [f["path"] for f in inv["crypto_files"]] == [
        "fips/fips.so", "lib/libcrypto.so.3", "lib/libssl.so.3", f"lib/python3.11/lib-dynload/{_hashlib_ext().name}"]
    assert inv["elf_files"] == 5  # libz is read too, and holds no crypto


def test_a_second_openssl_is_found(runtime):
    """A statically linked OpenSSL anywhere (as PyPI's cryptography wheel carries) is named."""
    shutil.copyfile(runtime / "lib" / "libcrypto.so.3", runtime / "lib" / "python3.11" / "_native.so")
    [problem] = crypto_inventory(runtime)["problems"]
    assert problem.startswith("lib/python3.11/_native.so: embeds openssl ('inner_evp_generic_fetch'); "
                              "embeds openssl-default-provider ('OpenSSL Default Provider')")
    assert problem.endswith("cryptography that is not the runtime's OpenSSL and its FIPS provider")


def test_another_crypto_library_is_found(runtime):
    shutil.copyfile(_host("libgnutls.so.30"), runtime / "lib" / "libgnutls.so.30")
    [problem] = crypto_inventory(runtime)["problems"]
    assert problem.startswith("lib/libgnutls.so.30: links ") and "libnettle.so.8" in problem
    assert "embeds gnutls ('gnutls_global_init')" in problem


def test_cryptography_with_its_own_openssl_is_refused(runtime):
    from fips.runtime import _rust_extension, cryptography_links_system_openssl

    ext = _rust_extension()
    if ext is None or cryptography_links_system_openssl(ext):
        pytest.skip("needs PyPI's cryptography wheel (it carries its own OpenSSL)")
    dest = runtime / "lib/python3.11/site-packages/cryptography/hazmat/bindings" / ext.name
    dest.parent.mkdir(parents=True)
    shutil.copyfile(ext, dest)
    problems = crypto_inventory(runtime)["problems"]
    assert any(p.endswith("does not link libcrypto.so.3 (cryptography, built from its sdist against libcrypto.so.3 "
                          "(carries no OpenSSL of its own))") for p in problems)
    assert any("embeds openssl ('inner_evp_generic_fetch')" in p for p in problems)


def test_missing_or_impostor_provider(runtime):
    (runtime / "fips" / "fips.so").unlink()
    assert crypto_inventory(runtime)["problems"] == [f"fips/fips.so: missing from the runtime at {runtime}"]
    shutil.copyfile(runtime / "lib" / "libssl.so.3", runtime / "fips" / "fips.so")
    problems = crypto_inventory(runtime)["problems"]
    assert any(p.startswith("fips/fips.so: lacks the mark of openssl, openssl-fips-provider") for p in problems)
    assert any(p.startswith("fips/fips.so: links libcrypto.so.3, which its role does not allow") for p in problems)


def test_a_libcrypto_that_is_not_openssl(runtime):
    shutil.copyfile(runtime / "lib" / "libz.so.1", runtime / "lib" / "libcrypto.so.3")
    problems = crypto_inventory(runtime)["problems"]
    assert any(p.startswith("lib/libcrypto.so.3: lacks the mark of openssl") for p in problems)
