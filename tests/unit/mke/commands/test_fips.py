"""`mke fips check` (mke/commands/fips.py) on a real payload of host-built Go binaries."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import zstandard

from mke import payload_format as pf
from mke.cli import main
from tests.support.gofips import build_programs, have_go_fips

pytestmark = pytest.mark.skipif(not have_go_fips(), reason="needs Go 1.24+ on the host")


@pytest.fixture(scope="module")
def gobins(tmp_path_factory) -> dict[str, Path]:
    return build_programs(tmp_path_factory.mktemp("fipsgo"))


def fips_payload(path: Path, groups: list[dict[str, bytes]], *, fips: bool = True, fips_go: str | None = None) -> Path:
    """A payload file (one zstd frame per group) whose manifest says ``fips`` (and ``fips_go``)."""
    frames, blobs, binaries, offset = [], [], [], 0
    for group in groups:
        data = b"".join(group.values())
        blob = zstandard.ZstdCompressor(level=1, write_checksum=True, write_content_size=True).compress(data)
        frames.append(pf.Frame(offset=offset, size=len(blob), decoded_size=len(data),
                               sha256=hashlib.sha256(blob).hexdigest(), members=tuple(group)))
        f = path.parent / f".frame{len(blobs)}"
        f.write_bytes(blob)
        blobs.append(f)
        inner = 0
        for name, content in group.items():
            binaries.append(pf.Binary(name=name, component=name, version="1.0.0", license="Apache-2.0",
                                      homepage="https://example.invalid", roles=("controller",), source="m@v1",
                                      mode="docker", fips=fips, sha256=hashlib.sha256(content).hexdigest(),
                                      size=len(content), frame=len(frames) - 1, offset=inner))
            inner += len(content)
        offset += len(blob)
    manifest = pf.Manifest(mke_version="0.0.1", platform="linux/amd64", mode="docker", fips=fips,
                           frames=tuple(frames), binaries=tuple(sorted(binaries, key=lambda b: b.name)),
                           fips_go=fips_go)
    with open(path, "wb") as out:
        pf.write_payload(out, manifest, blobs)
    return path


def run_check(monkeypatch, payload: Path, *args: str) -> int:
    monkeypatch.setenv(pf.PAYLOAD_ENV, str(payload))
    return main(["fips", "check", *args])


def test_fips_payload_passes(gobins, tmp_path, monkeypatch, capsys):
    p = fips_payload(tmp_path / "payload", [{"kube-apiserver": gobins["fips"].read_bytes(),
                                             "etcd": gobins["fips-static-pie" if "fips-static-pie" in gobins else "fips"]
                                             .read_bytes()}])
    assert run_check(monkeypatch, p, "--binaries-only", "--bin-dir", str(tmp_path / "bin")) == 0
    out = capsys.readouterr().out
    assert "kube-apiserver" in out and "v1.0.0-" in out and "FIPS: every check passed" in out


def test_non_fips_binary_slipped_into_payload_is_named(gobins, tmp_path, monkeypatch, capsys):
    p = fips_payload(tmp_path / "payload", [{"kube-apiserver": gobins["fips"].read_bytes()},
                                            {"kubelet": gobins["plain"].read_bytes()}])
    assert run_check(monkeypatch, p, "--binaries-only", "--bin-dir", str(tmp_path / "bin")) == 12
    captured = capsys.readouterr()
    assert "mke: error: FIPS check failed: kubelet: built without the Go Cryptographic Module" in captured.err
    assert "  kubelet: DefaultGODEBUG has fips140=(unset)" in captured.out


def _boring(gobins) -> Path:
    if "boring" not in gobins:
        pytest.skip("needs gcc (GOEXPERIMENT=boringcrypto links through cgo); "
                    "tests/integration/test_fips_boring.py fails instead")
    return gobins["boring"]


def test_boring_payload_is_held_to_boring_rules(gobins, tmp_path, monkeypatch, capsys):
    """Issue 17 item 3: the check demands the mode the payload records, never either one."""
    boring = _boring(gobins).read_bytes()
    p = fips_payload(tmp_path / "boring", [{"runc": boring}], fips_go="boring")
    assert run_check(monkeypatch, p, "--binaries-only", "--json", "--bin-dir", str(tmp_path / "bin")) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and doc["payload"]["fips_go"] == "boring" and doc["binaries"][0]["module"] == "boringcrypto"
    assert run_check(monkeypatch, p, "--binaries-only", "--bin-dir", str(tmp_path / "bin")) == 0
    assert "Go FIPS mode: boring" in capsys.readouterr().out
    # a native binary in a boring payload fails; so does a boring one in a native payload
    mixed = fips_payload(tmp_path / "mixed", [{"runc": boring, "kubelet": gobins["fips"].read_bytes()}],
                         fips_go="boring")
    assert run_check(monkeypatch, mixed, "--binaries-only", "--bin-dir", str(tmp_path / "bin")) == 12
    assert "kubelet: built without GOEXPERIMENT=boringcrypto" in capsys.readouterr().err
    native = fips_payload(tmp_path / "native", [{"runc": boring}], fips_go="native")
    assert run_check(monkeypatch, native, "--binaries-only", "--bin-dir", str(tmp_path / "bin")) == 12
    captured = capsys.readouterr()
    assert "runc: embeds the code of boringssl" in captured.err  # BoringSSL is allowed only with boring
    assert "runc: built without the Go Cryptographic Module" in captured.out


def test_old_fips_payload_without_fips_go_is_native(gobins, tmp_path, monkeypatch, capsys):
    """A FIPS payload from before the manifest recorded fips_go was built native: a boring binary fails."""
    p = fips_payload(tmp_path / "old", [{"runc": _boring(gobins).read_bytes()}])
    assert pf.Payload.open(p).manifest.fips_go is None
    assert run_check(monkeypatch, p, "--binaries-only", "--json", "--bin-dir", str(tmp_path / "bin")) == 12
    doc = json.loads(capsys.readouterr().out)
    assert doc["payload"]["fips_go"] == "native" and not doc["ok"]


def test_non_fips_manifest_fails(gobins, tmp_path, monkeypatch, capsys):
    p = fips_payload(tmp_path / "payload", [{"kubelet": gobins["fips"].read_bytes()}], fips=False)
    assert run_check(monkeypatch, p, "--binaries-only", "--bin-dir", str(tmp_path / "bin")) == 12
    assert "not a FIPS build" in capsys.readouterr().err


def test_staged_binaries_are_read_in_place(gobins, tmp_path, monkeypatch, capsys):
    from mke import staging

    p = fips_payload(tmp_path / "payload", [{"kubelet": gobins["fips"].read_bytes(),
                                             "kube-proxy": gobins["nocrypto-fips"].read_bytes()}])
    payload = pf.Payload.open(p)
    staging.stage(payload, ["kubelet"], tmp_path / "bin")
    assert run_check(monkeypatch, p, "--binaries-only", "--json", "--bin-dir", str(tmp_path / "bin")) == 0
    doc = json.loads(capsys.readouterr().out)
    by = {b["name"]: b for b in doc["binaries"]}
    assert by["kubelet"]["read_from"].startswith(str(tmp_path / "bin" / ".store"))
    assert by["kube-proxy"]["read_from"] == "payload" and by["kube-proxy"]["module"] == "none"
    assert doc["ok"] and doc["payload"]["fips"]


def test_runtime_without_provider_fails(monkeypatch, capsys):
    """Run from source (no FIPS bundle, no provider configured): the runtime check says so."""
    for name in ("OPENSSL_CONF", "OPENSSL_MODULES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(pf.PAYLOAD_ENV, raising=False)
    assert main(["fips", "check", "--runtime-only"]) == 12 or pytest.skip("this Python already runs a FIPS provider")
    out = capsys.readouterr().out
    assert "RUNTIME" in out and "FIPS provider          NOT loaded" in out


def test_clean_env_of_a_boring_fips_payload(gobins, tmp_path, monkeypatch, capsys):
    """Issue 17 item 3: a boring payload's children get no fips140 at all (fips140=on makes them panic).

    Before the payload recorded --fips-go, clean_env forced fips140=on for every FIPS mke."""
    import subprocess

    from mke.procenv import clean_env

    p = fips_payload(tmp_path / "payload", [{"runc": b"a BoringCrypto runc"}], fips_go="boring")
    monkeypatch.setenv(pf.PAYLOAD_ENV, str(p))
    base = {"PATH": "/bin", "MKE_FIPS_RUNTIME": "/var/lib/mke/runtime/ab/fips", "GODEBUG": "x509sha1=1"}
    env = clean_env(base)
    assert env == {"PATH": "/bin", "GODEBUG": "x509sha1=1"}
    # the caller's own fips140 does not reach them either (on/only would panic: said once on stderr)
    from mke.fips import runtime_env

    monkeypatch.setattr(runtime_env, "_warned_boring_godebug", False)
    capsys.readouterr()
    assert "GODEBUG" not in clean_env(base | {"GODEBUG": "fips140=on"})
    assert clean_env(base | {"GODEBUG": "fips140=only"}) == {"PATH": "/bin"}
    err = capsys.readouterr().err
    assert err.count("mke: warning: GODEBUG fips140=on is not passed to the programs mke starts") == 1
    assert clean_env(base | {"GODEBUG": "fips140=off,x509sha1=1"})["GODEBUG"] == "x509sha1=1"
    if "boring" in gobins:  # the real thing runs in it (and panics in what clean_env used to give)
        proc = subprocess.run([gobins["boring"]], env=env, capture_output=True, text=True, check=False)
        assert proc.returncode == 0 and proc.stdout.startswith("fips140=false boring=true"), proc.stderr
    # a native payload's children still get fips140=on, whatever the caller set
    native = fips_payload(tmp_path / "native", [{"kubelet": gobins["fips"].read_bytes()}], fips_go="native")
    monkeypatch.setenv(pf.PAYLOAD_ENV, str(native))
    assert clean_env(base | {"GODEBUG": "fips140=off"})["GODEBUG"] == "fips140=on"


def test_clean_env_of_a_fips_runtime(monkeypatch):
    """mke/procenv.py's clean_env applies child_env in a FIPS runtime (mke/start.py set MKE_FIPS_RUNTIME)."""
    from mke.procenv import clean_env

    monkeypatch.delenv(pf.PAYLOAD_ENV, raising=False)  # no payload (run from source): native
    base = {"PATH": "/bin", "MKE_FIPS_RUNTIME": "/var/lib/mke/runtime/ab/fips",
            "OPENSSL_CONF": "/var/lib/mke/runtime/ab/fips/openssl.cnf", "MKE_FIPS_SAVED_OPENSSL_CONF": "",
            "GODEBUG": "fips140=off"}
    env = clean_env(base)
    assert env == {"PATH": "/bin", "GODEBUG": "fips140=on"}
    assert clean_env({"PATH": "/bin", "GODEBUG": "fips140=off"})["GODEBUG"] == "fips140=off"
