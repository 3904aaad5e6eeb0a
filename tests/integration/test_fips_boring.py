"""`--fips-go=boring` for real: which GODEBUG a BoringCrypto program survives, and what mke gives it.

Issue 17 item 3. docs/fips.md said a BoringCrypto binary must not get ``GODEBUG=fips140=on``
while mke/procenv.py gave every child of a FIPS mke exactly that. This builds the test program
of tests/support/gofips.py twice with the host's Go: with ``GOEXPERIMENT=boringcrypto
CGO_ENABLED=1`` and the settings fips/toolchain.toml's [go.boring] adds (static, external
linker, BoringSSL from the syso Go ships: no network), and natively with ``GOFIPS140=v1.0.0``;
runs each with and without fips140 settings; then runs them from a FIPS payload that records
its mode, in the environment mke's clean_env gives a child. A host that cannot build the
BoringCrypto program (no Go 1.24+, no gcc) fails here, naming what is missing.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from mke import payload_format as pf
from mke.fips.runtime_env import child_env
from mke.procenv import clean_env
from tests.support.gofips import GO, BoringBuildError, build, build_boring, have_go_fips, write_program
from tests.support.payloads import make_payload

pytestmark = pytest.mark.slow

PANIC = "panic: fips140: FIPS 140-3 mode is incompatible with GOEXPERIMENT=boringcrypto"
SHA = "a02cd7e1c6810a9ab2ecd76efe0bfe33e26baa0071bdc1c7b289f3f19f778249"  # sha256("mke")


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("boring")
    if not have_go_fips():
        pytest.fail(f"needs Go 1.24+ on the host to build the FIPS test programs (found: {GO or 'no go on PATH'})")
    src = write_program(d / "src")
    try:
        boring = build_boring(src, d / "boring")
    except BoringBuildError as e:
        pytest.fail(f"cannot build the BoringCrypto test program: {e}")
    return {"boring": boring, "native": build(src, d / "native", env={"GOFIPS140": "v1.0.0"})}


def run(binary: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary)], env=env, capture_output=True, text=True, timeout=60, check=False)


def go_env(godebug: str | None) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin"} | ({"GODEBUG": godebug} if godebug is not None else {})


def test_the_programs_are_what_they_claim(programs):
    out = subprocess.run([GO, "version", "-m", str(programs["boring"])], capture_output=True, text=True,
                         check=True).stdout
    assert "-X:boringcrypto" in out.splitlines()[0] and "GOEXPERIMENT=boringcrypto" in out and "CGO_ENABLED=1" in out
    out = subprocess.run([GO, "version", "-m", str(programs["native"])], capture_output=True, text=True,
                         check=True).stdout
    assert "GOFIPS140=v1.0.0-" in out and "fips140=on" in out


@pytest.mark.parametrize("value", ["on", "only"])
def test_boring_program_panics_with_fips140(programs, value):
    """What docs/fips.md said: GODEBUG=fips140=on (or only) kills a BoringCrypto program at start."""
    proc = run(programs["boring"], go_env(f"fips140={value}"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines()[0] == PANIC, proc.stderr


@pytest.mark.parametrize("godebug", [None, "fips140=off", "x509sha1=1"])
def test_boring_program_runs_without_fips140_on(programs, godebug):
    """Without fips140=on it runs, with BoringCrypto on (crypto/boring.Enabled); fips140=off does not turn
    BoringCrypto off, and crypto/fips140.Enabled (Go's own module) stays false either way."""
    proc = run(programs["boring"], go_env(godebug))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"fips140=false boring=true {SHA}\n"


@pytest.mark.parametrize("godebug, fips", [(None, "true"), ("fips140=on", "true"), ("fips140=only", "true"),
                                           ("fips140=off", "false")])
def test_native_program_with_and_without(programs, godebug, fips):
    """GOFIPS140=v1.0.0: FIPS mode on by default, fine with fips140=on, and turned off by fips140=off
    (why a native payload's children get fips140=on forced)."""
    proc = run(programs["native"], go_env(godebug))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"fips140={fips} boring=false {SHA}\n"


def _from_payload(path: Path, name: str, out: Path) -> Path:
    """The binary as mke stages it: decoded from the payload's frame and checked against its digest."""
    payload = pf.Payload.open(path)
    sink = io.BytesIO()
    payload.decode_frame(payload.manifest.binary(name).frame, {name: sink})
    out.write_bytes(sink.getvalue())
    out.chmod(0o755)
    return out


def _fips_mke_env(godebug: str) -> dict[str, str]:
    """os.environ of a FIPS mke (mke/start.py's variables) whose caller set ``godebug``."""
    return {"PATH": "/usr/bin:/bin", "GODEBUG": godebug, "MKE_FIPS_RUNTIME": "/var/lib/mke/runtime/ab/fips",
            "OPENSSL_CONF": "/var/lib/mke/runtime/ab/fips/openssl.cnf", "MKE_FIPS_SAVED_OPENSSL_CONF": "",
            "OPENSSL_MODULES": "/var/lib/mke/runtime/ab/fips", "MKE_FIPS_SAVED_OPENSSL_MODULES": ""}


@pytest.mark.parametrize("caller", ["x509sha1=1", "fips140=on", "fips140=only,x509sha1=1", "fips140=off"])
def test_boring_payload_children_run_in_the_env_mke_gives_them(programs, tmp_path, monkeypatch, caller):
    """A FIPS payload that records fips_go=boring: clean_env leaves every fips140 setting out (the caller's
    too), and its real BoringCrypto program runs. What clean_env gave before (fips140=on forced for any
    FIPS mke: child_env(go_fips="native")) kills it."""
    payload = tmp_path / "payload"
    make_payload(payload, [{"runc": programs["boring"].read_bytes()}], mode="docker", fips=True, fips_go="boring")
    assert pf.Payload.open(payload).manifest.go_fips == "boring"
    monkeypatch.setenv(pf.PAYLOAD_ENV, str(payload))
    runc = _from_payload(payload, "runc", tmp_path / "runc")
    env = clean_env(_fips_mke_env(caller))
    assert "fips140" not in env.get("GODEBUG", "") and "MKE_FIPS_RUNTIME" not in env and "OPENSSL_CONF" not in env
    proc = run(runc, env)
    assert proc.returncode == 0 and proc.stdout == f"fips140=false boring=true {SHA}\n", proc.stderr
    before = run(runc, child_env(_fips_mke_env(caller), go_fips="native"))
    assert before.returncode == 2 and before.stderr.splitlines()[0] == PANIC


def test_native_payload_children_get_fips140_on(programs, tmp_path, monkeypatch):
    """A native FIPS payload (and one from before fips_go existed): fips140=on is forced, over the caller's off."""
    for name, fips_go in (("native", "native"), ("old", None)):
        payload = tmp_path / name
        make_payload(payload, [{"kubelet": programs["native"].read_bytes()}], mode="docker", fips=True,
                     fips_go=fips_go)
        monkeypatch.setenv(pf.PAYLOAD_ENV, str(payload))
        kubelet = _from_payload(payload, "kubelet", tmp_path / f"kubelet-{name}")
        env = clean_env(_fips_mke_env("fips140=off"))
        assert env["GODEBUG"] == "fips140=on"
        proc = run(kubelet, env)
        assert proc.returncode == 0 and proc.stdout == f"fips140=true boring=false {SHA}\n", proc.stderr

