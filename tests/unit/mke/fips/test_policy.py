"""mke/fips/policy.py: what a build demands of each binary, on real Go and C binaries."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mke.fips.binary import inspect_binary
from mke.fips.policy import BinaryReport, Policy, evaluate, runtime_policy

NATIVE = Policy(go_mode="native", go_module="v1.0.0", exempt=(("pause", "C, no crypto"),))


def report(path: Path, policy: Policy = NATIVE, name: str | None = None) -> BinaryReport:
    return evaluate(inspect_binary(path, name), policy)


def test_not_go_and_not_elf(tmp_path):
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    assert not inspect_binary(script).elf
    r = report(script)
    assert not r.ok and "not an ELF executable" in r.problems[0]
    if shutil.which("gcc"):
        (tmp_path / "p.c").write_text("int main(void){return 0;}\n")
        subprocess.run(["gcc", "-static", "-o", tmp_path / "pause", tmp_path / "p.c"], check=True)
        subprocess.run(["gcc", "-static", "-o", tmp_path / "other", tmp_path / "p.c"], check=True)
        assert report(tmp_path / "pause").ok and report(tmp_path / "pause").exempt == "C, no crypto"
        other = report(tmp_path / "other")
        assert not other.ok and "not a Go binary" in other.problems[0]


def test_fips_binary_passes(gobins):
    r = report(gobins["fips"])
    assert r.ok, r.problems
    assert r.gofips140.startswith("v1.0.0-") and r.fips140_default == "on" and r.static
    assert r.module.startswith("v1.0.0-") and r.module_functions > 50


def test_non_fips_binary_fails_with_reasons(gobins):
    r = report(gobins["plain"])
    assert not r.ok
    text = " | ".join(r.problems)
    assert "without the Go Cryptographic Module" in text
    assert "fips140=(unset)" in text
    assert "in-tree crypto module" in text


def test_latest_is_not_the_validated_module(gobins):
    """GOFIPS140=latest turns FIPS mode on but uses the unfrozen (unvalidated) packages."""
    r = report(gobins["latest"])
    assert r.fips140_default == "on"
    assert not r.ok
    assert any("GOFIPS140=latest" in p for p in r.problems)
    assert any("in-tree" in p for p in r.problems)


def test_boring_label_without_cgo_proves_nothing(gobins):
    boring = Policy(go_mode="boring", go_module="")
    r = report(gobins["boring-nocgo"], boring)
    assert not r.ok
    assert any("CGO_ENABLED=0" in p for p in r.problems)
    assert any("no BoringCrypto" in p for p in r.problems)
    assert not report(gobins["fips"], boring).ok  # and native binaries do not pass a boring policy


def test_no_crypto_binary_passes(gobins):
    r = report(gobins["nocrypto-fips"])
    assert r.ok and r.module == "none"


def test_static_pie_external_linking(gobins):
    if "fips-static-pie" not in gobins:
        pytest.skip("needs gcc")
    r = report(gobins["fips-static-pie"])
    assert r.ok, r.problems
    assert r.cgo and r.module_functions > 50


def test_dynamic_binary_fails(gobins):
    if "fips-dynamic" not in gobins:
        pytest.skip("needs gcc")
    r = report(gobins["fips-dynamic"])
    assert not r.ok and r.problems == ("dynamically linked (has PT_INTERP)",)


def test_runtime_policy_demands_the_recorded_mode(gobins):
    """`mke fips check` holds the binaries to the --fips-go the payload records (issue 17 item 3), never
    either one: a native binary fails a boring payload's check, a BoringCrypto one a native payload's."""
    assert runtime_policy() == runtime_policy("native") and runtime_policy("boring").go_mode == "boring"
    assert report(gobins["fips"], runtime_policy("native")).ok
    assert not report(gobins["plain"], runtime_policy("native")).ok
    native_in_boring = report(gobins["fips"], runtime_policy("boring"))
    assert not native_in_boring.ok and "built without GOEXPERIMENT=boringcrypto" in native_in_boring.problems
    with pytest.raises(ValueError):
        runtime_policy("either")
    if "boring" not in gobins:
        pytest.skip("needs gcc for the BoringCrypto program")
    boring = report(gobins["boring"], runtime_policy("boring"))
    assert boring.ok, boring.problems
    assert boring.module == "boringcrypto" and boring.cgo and boring.static and boring.fips140_default is None
    boring_in_native = report(gobins["boring"], runtime_policy("native"))
    assert not boring_in_native.ok
    assert "GOEXPERIMENT=boringcrypto is set; it cannot be combined with GOFIPS140" in boring_in_native.problems


def test_c_crypto_library_inside_a_binary_fails(gobins, tmp_path):
    """Issue 17, item 2: a Go binary or an exempt C program that carries a C crypto library's code fails.

    The Go case: a real FIPS Go binary with a static OpenSSL's marks in its file (as cgo linking
    libcrypto.a would leave them); the C case: the exempt `pause` compiled with them."""
    marked = tmp_path / "kubelet"
    marked.write_bytes(gobins["fips"].read_bytes() + b"\0inner_evp_generic_fetch\0OpenSSL Default Provider\0")
    r = report(marked)
    assert not r.ok
    assert r.problems == ("embeds the code of openssl ('inner_evp_generic_fetch'), openssl-default-provider "
                          "('OpenSSL Default Provider'): a crypto library outside the FIPS module",)
    assert report(gobins["fips"]).ok  # the same binary without them passes
    if shutil.which("gcc"):
        (tmp_path / "p.c").write_text('const char *v = "gnutls_global_init";\nint main(void){return v[0] == 0;}\n')
        subprocess.run(["gcc", "-static", "-o", tmp_path / "pause", tmp_path / "p.c"], check=True)
        pause = report(tmp_path / "pause")
        assert not pause.ok and pause.problems[0].startswith("embeds the code of gnutls ('gnutls_global_init')")
