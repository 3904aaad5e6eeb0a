"""mke/images/oci.py: deterministic OCI layers, images and archives (the writer both the
toolchain's air-gap bundles and every node's system images use)."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest

from mke.errors import ImageError
from mke.images import oci
from tests.support.files import fake_binary as _binary

# --------------------------------------------------------------------------- layers


def test_layer_is_deterministic_and_lists_parents_first(tmp_path):
    src = _binary(tmp_path, "tool")
    entries = [oci.binary_entry("/usr/local/bin/tool", src), *oci.base_entries()]
    a = oci.build_layer(entries, tmp_path / "a")
    os.utime(src, (1, 1))  # the file's own mtime never enters the layer
    b = oci.build_layer(list(reversed(entries)), tmp_path / "b")
    assert a.blob.digest == b.blob.digest and a.diff_id == b.diff_id
    assert a.blob.path.read_bytes() == b.blob.path.read_bytes()
    assert a.blob.digest == "sha256:" + hashlib.sha256(a.blob.path.read_bytes()).hexdigest()
    names = oci.layer_names(a.blob.path)
    assert names == sorted(names)
    assert names.index("usr") < names.index("usr/local") < names.index("usr/local/bin") < names.index("usr/local/bin/tool")
    with tarfile.open(a.blob.path, "r:gz") as t:
        for m in t.getmembers():
            assert (m.mtime, m.uname, m.gname) == (0, "", "")
        assert t.getmember("tmp").mode == 0o1777
        assert t.getmember("usr/local/bin/tool").mode == 0o755
    c = oci.build_layer(entries, tmp_path / "c", mtime=1700000000)
    assert c.diff_id != a.diff_id


def test_file_capabilities_travel_as_pax_xattr(tmp_path):
    layer = oci.build_layer([oci.binary_entry("/coredns", _binary(tmp_path, "coredns"),
                                              capabilities=["CAP_NET_BIND_SERVICE"])], tmp_path)
    with tarfile.open(layer.blob.path, "r:gz") as t:
        m = t.getmember("coredns")
    raw = m.pax_headers["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape")
    assert raw == bytes.fromhex("0100000200040000000000000000000000000000")  # rev 2, effective, bit 10 permitted
    with pytest.raises(ImageError, match="unknown capability 'CAP_FLY'"):
        oci.file_capabilities(["CAP_FLY"])


def test_duplicate_paths_and_escaping_paths_are_refused(tmp_path):
    with pytest.raises(ImageError, match="/x is given twice"):
        oci.build_layer([oci.Entry(path="/x", data=b"1"), oci.Entry(path="/x", data=b"2")], tmp_path)
    with pytest.raises(ImageError, match="not a path inside an image"):
        oci.Entry(path="/a/../../etc", data=b"").name  # noqa: B018
    assert not list(tmp_path.glob(".layer-*"))  # a failed layer leaves no temp file


# --------------------------------------------------------------------------- images and archives


def _two_images(tmp_path: Path) -> list[oci.Image]:
    wd = tmp_path / "blobs"
    base = oci.build_layer(oci.base_entries(), wd, comment="base")
    one = oci.build_layer([oci.binary_entry("/one", _binary(tmp_path, "one"))], wd)
    two = oci.build_layer([oci.binary_entry("/two", _binary(tmp_path, "two"))], wd)
    return [
        oci.build_image("registry.example/one:v1", [base, one], oci.ImageConfig(entrypoint=("/one",), user="65532"), wd),
        oci.build_image("registry.example/sub/two:1.0", [base, two], oci.ImageConfig(entrypoint=("/two",)), wd),
    ]


def test_archive_is_an_oci_layout_and_a_docker_save(tmp_path):
    images = _two_images(tmp_path)
    digest = oci.write_archive(images, tmp_path / "a.tar")
    assert digest == hashlib.sha256((tmp_path / "a.tar").read_bytes()).hexdigest()
    assert oci.write_archive(list(reversed(images)), tmp_path / "b.tar") == digest  # order-independent
    with tarfile.open(tmp_path / "a.tar") as t:
        names = t.getnames()
        index = json.load(t.extractfile("index.json"))
        docker = json.load(t.extractfile("manifest.json"))
        layout = json.load(t.extractfile("oci-layout"))
    assert layout == {"imageLayoutVersion": "1.0.0"}
    # the shared base layer is stored once
    assert len([n for n in names if n.startswith("blobs/sha256/")]) == len(set(names)) - 5
    refs = {m["annotations"]["io.containerd.image.name"]: m for m in index["manifests"]}
    assert refs["registry.example/sub/two:1.0"]["annotations"]["org.opencontainers.image.ref.name"] == "1.0"
    assert refs["registry.example/one:v1"]["platform"] == {"architecture": "amd64", "os": "linux"}
    assert sorted(t for d in docker for t in d["RepoTags"]) == sorted(refs)
    for d in docker:
        assert all(p in names for p in [d["Config"], *d["Layers"]])
    listed = {i["ref"]: i for i in oci.read_archive(tmp_path / "a.tar")}
    one = next(i for i in images if i.ref == "registry.example/one:v1")
    assert listed["registry.example/one:v1"]["manifest"] == one.manifest.digest
    cfg = json.loads(one.config.path.read_bytes())
    assert cfg["config"]["Entrypoint"] == ["/one"] and cfg["config"]["User"] == "65532"
    assert cfg["rootfs"]["diff_ids"] == [layer.diff_id for layer in one.layers]
    assert cfg["created"] == "1970-01-01T00:00:00Z"


def test_tampered_archive_is_refused(tmp_path):
    oci.write_archive(_two_images(tmp_path), tmp_path / "a.tar")
    data = bytearray((tmp_path / "a.tar").read_bytes())
    with tarfile.open(tmp_path / "a.tar") as t:
        member = max((m for m in t.getmembers() if m.name.startswith("blobs/sha256/")), key=lambda m: m.size)
    data[member.offset_data + member.size // 2] ^= 0xFF
    (tmp_path / "bad.tar").write_bytes(bytes(data))
    with pytest.raises(ImageError, match="does not hash to its name"):
        oci.read_archive(tmp_path / "bad.tar")


def test_references_need_a_tag_and_are_unique(tmp_path):
    with pytest.raises(ImageError, match="needs a tag"):
        oci.split_ref("registry.example/one")
    with pytest.raises(ImageError, match="not a digest"):
        oci.split_ref("registry.example/one@sha256:" + "0" * 64)
    assert oci.split_ref("localhost:5000/one:v1") == ("localhost:5000/one", "v1")
    img = _two_images(tmp_path)[0]
    with pytest.raises(ImageError, match="given twice"):
        oci.write_archive([img, img], tmp_path / "x.tar")


def test_plain_layers_for_a_node_are_the_tar_itself(tmp_path):
    """A node's own images keep layers uncompressed: the blob's digest is the diff_id, the media type says tar."""
    entries = [oci.binary_entry("/pause", _binary(tmp_path, "pause"))]
    plain = oci.build_layer(entries, tmp_path / "plain", compress=False)
    again = oci.build_layer(entries, tmp_path / "again", compress=False)
    assert plain.blob.digest == plain.diff_id == again.blob.digest
    assert plain.media_type == oci.MEDIA_LAYER_TAR
    gz = oci.build_layer(entries, tmp_path / "gz")
    assert gz.diff_id == plain.diff_id and gz.blob.digest != plain.blob.digest and gz.media_type == oci.MEDIA_LAYER_GZIP
    image = oci.build_image("registry.k8s.io/pause:3.10.2", [plain], oci.ImageConfig(entrypoint=("/pause",)),
                            tmp_path / "plain")
    manifest = json.loads(image.manifest.path.read_bytes())
    assert manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
