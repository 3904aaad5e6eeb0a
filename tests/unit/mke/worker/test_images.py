"""mke/worker/images.py: the system images a node builds from its payload's binaries, the
same bytes on every node, imported once and skipped while containerd still has them. The
import itself is a recorder here; tests/integration/test_oci_import.py imports real
archives into a real containerd, and the e2e cluster runs pods from these images."""

from __future__ import annotations

import json
from pathlib import Path

from mke import payload_format as pf
from mke.images import oci
from mke.worker.images import SystemImages

SPECS = (
    pf.ImageSpec(name="pause", ref="registry.k8s.io/pause:3.10.2", base=False,
                 files=(pf.ImageFile(binary="pause", path="/pause", mode=0o755),), entrypoint=("/pause",),
                 user="65535:65535"),
    pf.ImageSpec(name="coredns", ref="registry.k8s.io/coredns/coredns:v1.12.1", base=True,
                 files=(pf.ImageFile(binary="coredns", path="/coredns", mode=0o755,
                                     capabilities=("CAP_NET_BIND_SERVICE",)),),
                 entrypoint=("/coredns",), user="65532:65532", exposed_ports=("53/udp",)),
)


def node(tmp_path: Path, name: str, content: bytes = b"") -> tuple[SystemImages, list]:
    bins = tmp_path / name / "bin"
    bins.mkdir(parents=True)
    paths = {}
    for b in ("pause", "coredns"):
        (bins / b).write_bytes(b"\x7fELF " + b.encode() + content)
        paths[b] = bins / b
    staged: list = []

    def stage(names):
        staged.append(names)
        return {n: paths[n] for n in names}

    si = SystemImages(SPECS, stage=stage, digests={"pause": "a" * 64, "coredns": "b" * 64},
                      state_dir=tmp_path / name / "worker", scratch=tmp_path / name / "tmp", arch="amd64")
    return si, staged


def test_every_node_builds_the_same_images_and_pins_them(tmp_path):
    imported: dict[str, dict] = {}
    for name in ("w1", "w2"):
        si, _ = node(tmp_path, name)
        calls = []

        def import_archive(archive: Path, refs: list[str], calls=calls) -> None:
            calls.append((sorted(i["ref"] for i in oci.read_archive(archive)), refs))

        report = si.ensure({}, import_archive, lambda m: None)
        assert report["built"] and calls == [(sorted(r for r in (s.ref for s in SPECS)), sorted(s.ref for s in SPECS))]
        imported[name] = report["digests"]
        assert not (tmp_path / name / "tmp").exists() or not any((tmp_path / name / "tmp").iterdir())  # no leftovers
    assert imported["w1"] == imported["w2"]  # same digests on every node


def test_a_restart_with_the_images_present_does_nothing(tmp_path):
    si, staged = node(tmp_path, "w1")
    digests = si.ensure({}, lambda a, r: None, lambda m: None)["digests"]
    staged.clear()
    report = si.ensure(dict(digests), lambda a, r: (_ for _ in ()).throw(AssertionError("imported again")), print)
    assert report == {"images": 2, "built": False} and staged == []  # nothing staged, nothing built


def test_missing_or_changed_images_are_imported_again(tmp_path):
    si, _ = node(tmp_path, "w1")
    digests = si.ensure({}, lambda a, r: None, lambda m: None)["digests"]
    calls = []
    gone = {k: v for k, v in digests.items() if "pause" not in k}  # someone removed pause
    assert si.ensure(gone, lambda a, r: calls.append(r), lambda m: None)["built"]
    assert calls
    other = SystemImages(SPECS, stage=si.stage, digests={"pause": "c" * 64, "coredns": "b" * 64},
                         state_dir=si.marker.parent, scratch=si.scratch, arch="amd64")
    assert other.recorded() == {}  # another payload: the marker does not count
    assert json.loads(si.marker.read_text())["key"] == si.key
    assert si.marker.stat().st_mode & 0o777 == 0o600
