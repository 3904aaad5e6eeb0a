"""mke/payload_format.py: layout, manifest validation, ELF section lookup, decoding, tamper checks."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess

import pytest

from mke import payload_format as pf
from mke.errors import PayloadError
from tests.support.payloads import embed, make_payload

A = os.urandom(300_000) + b"A" * 200_000
B = b"B" * 123_457 + os.urandom(1000)
C = os.urandom(50_000)
needs_objcopy = pytest.mark.skipif(shutil.which("objcopy") is None, reason="needs objcopy (binutils)")


@pytest.fixture
def payload_file(tmp_path):
    path = tmp_path / "payload"
    make_payload(path, [{"alpha": A, "beta": B}, {"gamma": C}], roles={"alpha": ("controller",), "beta": ("worker",)})
    return path


def decode(p: pf.Payload, *names: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for index, members in p.frames_for(names).items():
        sinks = {b.name: io.BytesIO() for b in members}
        p.decode_frame(index, sinks)
        out.update({n: s.getvalue() for n, s in sinks.items()})
    return out


def test_round_trip_manifest_and_content(payload_file):
    p = pf.Payload.open(payload_file)
    assert p is not None and p.base == 0
    m = p.manifest
    assert m.names() == ("alpha", "beta", "gamma")
    assert [f.members for f in m.frames] == [("alpha", "beta"), ("gamma",)]
    assert m.binary("beta").offset == len(A)
    assert decode(p, "alpha", "beta", "gamma") == {"alpha": A, "beta": B, "gamma": C}
    assert [b.name for b in m.for_roles(["worker"])] == ["beta", "gamma"]
    assert pf.Manifest.from_json(m.to_json()) == m


def test_one_member_of_a_group_alone(payload_file):
    p = pf.Payload.open(payload_file)
    assert decode(p, "alpha") == {"alpha": A}  # stops before beta
    assert decode(p, "beta") == {"beta": B}


def test_verify_and_tampered_frame(payload_file):
    p = pf.Payload.open(payload_file)
    assert p.verify() == []
    data = bytearray(payload_file.read_bytes())
    frame = p.manifest.frames[1]
    data[p.header.data_offset + frame.offset + frame.size // 2] ^= 0xFF
    payload_file.write_bytes(bytes(data))
    p = pf.Payload.open(payload_file)
    assert len(p.verify()) == 1
    with pytest.raises(PayloadError, match="gamma"):
        decode(p, "gamma")
    assert decode(p, "alpha") == {"alpha": A}  # other frames still fine


def test_tampered_manifest_is_refused(payload_file):
    data = bytearray(payload_file.read_bytes())
    i = data.index(b'"gamma"')
    data[i + 1] = ord("G")
    payload_file.write_bytes(bytes(data))
    with pytest.raises(PayloadError, match="does not match its sha256"):
        pf.Payload.open(payload_file)


def test_truncated_payload_is_refused(payload_file):
    data = payload_file.read_bytes()
    payload_file.write_bytes(data[:-10])
    with pytest.raises(PayloadError, match="truncated"):
        pf.Payload.open(payload_file)
    payload_file.write_bytes(data[:100])
    with pytest.raises(PayloadError, match="truncated"):
        pf.Payload.open(payload_file)


def test_not_a_payload(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"hello")
    assert pf.Payload.open(f) is None


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.update(schema=99), "schema 99"),
    (lambda d: d["binaries"][0].update(size="big"), "binaries[0].size"),
    (lambda d: d["binaries"][0].pop("sha256"), "binaries[0].sha256"),
    (lambda d: d["frames"][0].update(sha256="xyz"), "frames[0].sha256"),
    (lambda d: d["binaries"][0].update(frame=7), "frame 7"),
    (lambda d: d["binaries"][0].update(offset=10**9), "does not lie inside"),
    (lambda d: d.update(codec="xz"), "codec"),
])
def test_manifest_validation_names_the_field(payload_file, mutate, field):
    doc = pf.Payload.open(payload_file).manifest.to_document()
    mutate(doc)
    with pytest.raises(PayloadError, match=field.replace("[", r"\[").replace("]", r"\]")):
        pf.Manifest.from_json(json.dumps(doc).encode())


@needs_objcopy
def test_elf_section_found_by_name_and_survives_strip(tmp_path, payload_file):
    exe = embed(shutil.which("true"), payload_file, tmp_path / "exe")
    p = pf.Payload.open(exe)
    assert p is not None and p.base > 0
    assert decode(p, "gamma") == {"gamma": C}
    with open(exe, "rb") as f:
        ours = pf.find_elf_section(f, pf.SECTION_NAME, str(exe))
        pydata = pf.find_elf_section(f, "pydata", str(exe))
    assert ours[0] + ours[1] <= pydata[0]
    subprocess.run([str(exe)], check=True)  # still a working executable
    stripped = tmp_path / "stripped"
    subprocess.run(["strip", "-o", str(stripped), str(exe)], check=True)
    p2 = pf.Payload.open(stripped)
    assert p2.manifest == p.manifest and decode(p2, "alpha", "beta") == {"alpha": A, "beta": B}


@needs_objcopy
def test_elf_without_payload_and_truncated_elf(tmp_path, payload_file):
    assert pf.Payload.open(shutil.which("true")) is None
    exe = embed(shutil.which("true"), payload_file, tmp_path / "exe")
    cut = tmp_path / "cut"
    cut.write_bytes(exe.read_bytes()[:-200])  # the section table lives at the end
    with pytest.raises(PayloadError, match="truncated"):
        pf.Payload.open(cut)


def test_write_payload_checks_frame_files(tmp_path, payload_file):
    m = pf.Payload.open(payload_file).manifest
    short = tmp_path / "short"
    short.write_bytes(b"x")
    with pytest.raises(ValueError):
        pf.write_payload(io.BytesIO(), m, [short, short])


def test_running_payload_from_env(monkeypatch, payload_file, tmp_path):
    monkeypatch.setenv(pf.PAYLOAD_ENV, str(payload_file))
    assert pf.running_payload().manifest.names() == ("alpha", "beta", "gamma")
    monkeypatch.setenv(pf.PAYLOAD_ENV, str(tmp_path / "missing"))
    with pytest.raises(PayloadError, match="no such file"):
        pf.running_payload()
    monkeypatch.delenv(pf.PAYLOAD_ENV)
    assert pf.running_payload() is None  # from source: no payload


def test_tampered_frame_prefix_is_caught_by_member_digest(payload_file):
    p = pf.Payload.open(payload_file)
    frame = p.manifest.frames[0]  # alpha then beta; decoding alpha alone stops early
    data = bytearray(payload_file.read_bytes())
    data[p.header.data_offset + frame.offset + 64] ^= 0x01
    payload_file.write_bytes(bytes(data))
    with pytest.raises(PayloadError, match="alpha|cannot be decoded"):
        decode(pf.Payload.open(payload_file), "alpha")


def test_node_images_round_trip_and_must_name_listed_binaries(tmp_path):
    from tests.support.payloads import make_payload

    spec = pf.ImageSpec(name="coredns", ref="registry.k8s.io/coredns/coredns:v1.12.1", base=True,
                        files=(pf.ImageFile(binary="coredns", path="/coredns", mode=0o755,
                                            capabilities=("CAP_NET_BIND_SERVICE",)),),
                        entrypoint=("/coredns",), user="65532:65532", exposed_ports=("53/udp",))
    make_payload(tmp_path / "p", [{"coredns": b"\x7fELF"}], images=(spec,))
    assert pf.Payload.open(tmp_path / "p").manifest.images == (spec,)
    bad = spec._replace(files=(spec.files[0]._replace(binary="missing"),))
    make_payload(tmp_path / "q", [{"coredns": b"\x7fELF"}], images=(bad,))
    with pytest.raises(PayloadError, match="image 'coredns' needs binary 'missing'"):
        pf.Payload.open(tmp_path / "q")


def _doc(**changes) -> dict:
    m = pf.Manifest(mke_version="0.1.0", platform="linux/amd64", mode="docker", fips=True, binaries=())
    return json.loads(m.to_json()) | changes


def test_fips_go_is_recorded_and_validated():
    """Issue 17 item 3: a FIPS payload records its Go FIPS mode; an old one (no field) means native."""
    for mode in pf.FIPS_GO_MODES:
        m = pf.Manifest.from_document(_doc(fips_go=mode))
        assert m.fips_go == mode and m.go_fips == mode
        assert json.loads(m.to_json())["fips_go"] == mode
    old = pf.Manifest.from_document(_doc())
    assert old.fips_go is None and old.go_fips == "native"
    plain = pf.Manifest.from_document(_doc(fips=False))
    assert plain.go_fips is None and "fips_go" not in json.loads(plain.to_json())  # non-FIPS bytes as before
    for bad, match in (("both", "field fips_go: 'both' is not one of native, boring"), (1, "field fips_go: wrong type")):
        with pytest.raises(PayloadError, match=match):
            pf.Manifest.from_document(_doc(fips_go=bad))
    with pytest.raises(PayloadError, match="fips_go: 'boring' is set but fips is false"):
        pf.Manifest.from_document(_doc(fips=False, fips_go="boring"))


def test_fips_go_survives_a_payload_file(tmp_path):
    make_payload(tmp_path / "p", [{"runc": b"x"}], fips=True, fips_go="boring")
    assert pf.Payload.open(tmp_path / "p").manifest.go_fips == "boring"
