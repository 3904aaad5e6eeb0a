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


def fips_payload(path: Path, groups: list[dict[str, bytes]], *, fips: bool = True) -> Path:
    """A payload file (one zstd frame per group) whose manifest says ``fips``."""
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
                           frames=tuple(frames), binaries=tuple(sorted(binaries, key=lambda b: b.name)))
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


def test_clean_env_of_a_fips_runtime():
    """mke/procenv.py's clean_env applies child_env in a FIPS runtime (mke/start.py set MKE_FIPS_RUNTIME)."""
    from mke.procenv import clean_env

    base = {"PATH": "/bin", "MKE_FIPS_RUNTIME": "/var/lib/mke/runtime/ab/fips",
            "OPENSSL_CONF": "/var/lib/mke/runtime/ab/fips/openssl.cnf", "MKE_FIPS_SAVED_OPENSSL_CONF": "",
            "GODEBUG": "fips140=off"}
    env = clean_env(base)
    assert env == {"PATH": "/bin", "GODEBUG": "fips140=on"}
    assert clean_env({"PATH": "/bin", "GODEBUG": "fips140=off"})["GODEBUG"] == "fips140=off"
