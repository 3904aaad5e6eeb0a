"""build/oci.py (OCI layers, images, archives) and build/airgap.py (image specs, the bundle step)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import lzma
import os
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from build import airgap, oci
from build.cache import Cache, OutputFile
from build.errors import BuildError, ImageError, RecipeError
from build.modes.base import BuildContext
from build.platform import Platform

REPO = Path(__file__).resolve().parents[3]


def _binary(tmp_path: Path, name: str, content: bytes = b"\x7fELF fake binary") -> Path:
    p = tmp_path / "src" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(content + name.encode())
    p.chmod(0o755)
    return p


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


# --------------------------------------------------------------------------- Debian packages


def _tar_xz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for ti, data in members:
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return lzma.compress(buf.getvalue())


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode() + data
        if len(data) % 2:
            out += b"\n"
    return out


def make_deb(path: Path) -> Path:
    def ti(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = "", mode: int = 0o755) -> tarfile.TarInfo:
        t = tarfile.TarInfo(name)
        t.type, t.size, t.linkname, t.mode, t.mtime = kind, size, link, mode, 1234567
        return t

    data = _tar_xz([
        (ti("./", tarfile.DIRTYPE), None),
        (ti("./usr/", tarfile.DIRTYPE), None),
        (ti("./usr/sbin/", tarfile.DIRTYPE), None),
        (ti("./usr/sbin/xtables-nft-multi", size=5), b"ELF!!"),
        (ti("./usr/sbin/iptables-nft", tarfile.SYMTYPE, link="xtables-nft-multi"), None),
        (ti("./usr/share/", tarfile.DIRTYPE), None),
        (ti("./usr/share/doc/", tarfile.DIRTYPE), None),
        (ti("./usr/share/doc/copyright", size=3, mode=0o644), b"GPL"),
    ])
    path.write_bytes(_ar([("debian-binary", b"2.0\n"), ("control.tar.xz", _tar_xz([])), ("data.tar.xz", data)]))
    return path


def test_deb_entries_unpack_the_data_tar_with_excludes(tmp_path):
    deb = make_deb(tmp_path / "iptables.deb")
    entries = {e.name: e for e in oci.deb_entries(deb, exclude=["/usr/share"])}
    assert set(entries) == {"usr", "usr/sbin", "usr/sbin/xtables-nft-multi", "usr/sbin/iptables-nft"}
    assert entries["usr/sbin/xtables-nft-multi"].data == b"ELF!!"
    assert entries["usr/sbin/iptables-nft"].target == "xtables-nft-multi"
    layer = oci.build_layer(list(entries.values()), tmp_path / "l")
    with tarfile.open(layer.blob.path, "r:gz") as t:
        assert t.getmember("usr/sbin/iptables-nft").issym()
        assert t.getmember("usr/sbin/xtables-nft-multi").mtime == 0  # the package's mtimes are not kept
    (tmp_path / "bad.deb").write_bytes(b"not an ar")
    with pytest.raises(ImageError, match="not an ar archive"):
        oci.deb_entries(tmp_path / "bad.deb")


# --------------------------------------------------------------------------- image specs


GOOD_SPEC = {
    "schema": 1, "name": "tool", "ref": "registry.example/tool:v{version}", "component": "tool",
    "entrypoint": ["/tool"], "user": "65532:65532",
    "file": [{"binary": "tool", "path": "/tool", "capabilities": ["CAP_NET_BIND_SERVICE"]}],
}


@pytest.mark.parametrize("change,message", [
    ({"entrypiont": ["/x"]}, "tool.toml: entrypiont: unknown key (did you mean 'entrypoint'?)"),
    ({"ref": "registry.example/tool"}, "tool.toml: ref: an image reference needs a tag (name:tag)"),
    ({"ref": "registry.example/tool:{verison}"}, "tool.toml: ref: bad template"),
    ({"file": []}, "tool.toml: file: list at least one [[file]]"),
    ({"file": [{"binary": "tool", "path": "tool"}]}, "tool.toml: file[0].path: must be absolute, got 'tool'"),
    ({"file": [{"binary": "tool", "path": "/t", "capabilities": ["CAP_X"]}]}, "file[0].capabilities: unknown capability 'CAP_X'"),
    ({"deb": [{"url": "http://deb.example/x_{arch}.deb", "sha256": {"amd64": "abc"}}]}, "deb[0].sha256.amd64: expected 64 lowercase hex"),
    ({"deb": [{"url": "http://deb.example/x_{os}.deb", "sha256": {}}]}, "deb[0].url: bad template"),
    ({"name": "other"}, "tool.toml: name: 'other' does not match the file name"),
    ({"schema": 2}, "tool.toml: schema: unsupported image spec schema 2"),
])
def test_image_spec_errors_name_file_and_field(change, message):
    with pytest.raises(RecipeError) as e:
        airgap.parse_image_spec(Path("recipes/images/tool.toml"), {**GOOD_SPEC, **change})
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_repository_specs_match_the_images_the_runtime_expects():
    """Every air-gap image is what mke's default config references (so no pod pulls)."""
    from build.recipes import load_recipes
    from mke.config import ImagesConfig

    recipes = load_recipes(REPO / "recipes")
    specs = airgap.load_image_specs(REPO / "recipes" / "images")
    refs = {s.reference(recipes[s.component].version) for s in specs.values()}
    cfg = ImagesConfig()
    expected = {cfg.pause, cfg.coredns, cfg.metrics_server, cfg.kube_proxy, cfg.konnectivity_agent}
    assert refs == expected
    for s in specs.values():
        for f in s.files:
            owner = [r for r in recipes.values() if f.binary in r.binary_names]
            assert owner, f"{s.path}: no recipe builds {f.binary}"


# --------------------------------------------------------------------------- the bundle step


def _ctx(tmp_path: Path) -> BuildContext:
    from build.lockfile import Lockfile

    return BuildContext(cache=Cache(tmp_path / "cache"), lock=Lockfile.empty(tmp_path / "lock"),
                        platform=Platform.parse("amd64"), repo_root=tmp_path)


def _results(ctx: BuildContext, tmp_path: Path, content: bytes = b"") -> list:
    outputs = []
    for name in ("tool", "helper"):
        digest, size = ctx.cache.cas.put_file(_binary(tmp_path, name, content or b"\x7fELF fake binary"))
        outputs.append(OutputFile(name=name, sha256=digest, size=size))
    recipe = SimpleNamespace(name="tool", version="1.2.3")
    return [SimpleNamespace(recipe=recipe, result=SimpleNamespace(outputs=tuple(outputs)), cached=False)]


def _specs(tmp_path: Path) -> Path:
    d = tmp_path / "images"
    d.mkdir(exist_ok=True)
    (d / "tool.toml").write_text(
        'schema = 1\nname = "tool"\nref = "registry.example/tool:v{version}"\ncomponent = "tool"\n'
        'entrypoint = ["/tool"]\n[[file]]\nbinary = "tool"\npath = "/tool"\n'
        '[[file]]\nbinary = "helper"\npath = "/usr/bin/helper"\n[[symlink]]\npath = "/bin/h"\ntarget = "/usr/bin/helper"\n'
    )
    return d


def test_build_airgap_writes_the_bundle_and_is_a_no_op_the_second_time(tmp_path, capsys):
    ctx = _ctx(tmp_path)
    results = _results(ctx, tmp_path)
    out = airgap.build_airgap(ctx, results, tmp_path / "dist", specs_dir=_specs(tmp_path))
    assert out.name == "mke-airgap-images-linux-amd64.tar"
    listing = json.loads(out.with_suffix(".json").read_text())
    [img] = listing["images"]
    assert img["ref"] == "registry.example/tool:v1.2.3"
    assert oci.read_archive(out)[0]["manifest"] == img["manifest"]
    assert listing["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert img["manifest"] in capsys.readouterr().err  # the pins are printed
    stamp = out.stat().st_mtime_ns
    out2 = airgap.build_airgap(ctx, results, tmp_path / "dist", specs_dir=_specs(tmp_path))
    assert out2.stat().st_mtime_ns == stamp  # cached image, archive not rewritten
    assert "cached=1" in capsys.readouterr().err
    # a fresh cache gives the same bytes (reproducible)
    ctx2 = dataclasses.replace(ctx, cache=Cache(tmp_path / "cache2"))
    out3 = airgap.build_airgap(ctx2, _results(ctx2, tmp_path), tmp_path / "dist2", specs_dir=_specs(tmp_path))
    assert out3.read_bytes() == out.read_bytes()


def test_build_airgap_names_a_missing_binary(tmp_path):
    ctx = _ctx(tmp_path)
    results = _results(ctx, tmp_path)
    results[0].result.outputs = tuple(o for o in results[0].result.outputs if o.name != "helper")
    with pytest.raises(BuildError, match="tool.toml: needs binary helper, which this build did not produce"):
        airgap.build_airgap(ctx, results, tmp_path / "dist", specs_dir=_specs(tmp_path))
    with pytest.raises(BuildError, match="none mode"):
        airgap.build_airgap(ctx, [], tmp_path / "dist", specs_dir=_specs(tmp_path))
    assert not (tmp_path / "dist" / "mke-airgap-images-linux-amd64.tar").exists()


def test_unpinned_arch_is_a_clear_error(tmp_path):
    ctx = dataclasses.replace(_ctx(tmp_path), platform=Platform.parse("arm64"))
    d = _specs(tmp_path)
    (d / "tool.toml").write_text((d / "tool.toml").read_text() + '[[deb]]\nurl = "http://deb.example/x_{arch}.deb"\n'
                                 f'sha256 = {{ amd64 = "{"0" * 64}" }}\n')
    with pytest.raises(RecipeError, match=r"deb\[0\].sha256.arm64: not pinned for arm64"):
        airgap.build_airgap(ctx, _results(ctx, tmp_path), tmp_path / "dist", specs_dir=d)
