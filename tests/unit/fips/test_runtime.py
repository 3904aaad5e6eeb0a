"""fips/runtime.py: telling a system-linked cryptography from one that carries its own OpenSSL."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fips.runtime import cryptography_links_system_openssl


@pytest.mark.skipif(shutil.which("gcc") is None or not Path("/usr/lib/x86_64-linux-gnu/libcrypto.so").exists()
                    and not Path("/usr/lib/aarch64-linux-gnu/libcrypto.so").exists(),
                    reason="needs gcc and libssl-dev (scripts/bootstrap.sh installs them)")
def test_dt_needed_libcrypto_is_read_from_the_extension(tmp_path):
    """Real shared objects from gcc: one linked to libcrypto.so.3 (as a system-linked cryptography's
    _rust.abi3.so is), one not; a damaged one and a non-ELF file count as not linked."""
    (tmp_path / "m.c").write_text("int mke(void){return 0;}\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", tmp_path / "linked.so", tmp_path / "m.c",
                    "-Wl,--no-as-needed", "-lcrypto"], check=True)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", tmp_path / "own.so", tmp_path / "m.c"], check=True)
    assert cryptography_links_system_openssl(tmp_path / "linked.so")
    assert not cryptography_links_system_openssl(tmp_path / "own.so")
    (tmp_path / "cut.so").write_bytes((tmp_path / "linked.so").read_bytes()[:-100])
    assert not cryptography_links_system_openssl(tmp_path / "cut.so")
    (tmp_path / "text.so").write_text("not an ELF file\n")
    assert not cryptography_links_system_openssl(tmp_path / "text.so")
