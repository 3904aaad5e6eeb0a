"""build/airgap.py: image specs (recipes/images/*.toml) and the air-gap bundle step."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from build import airgap
from build.cache import Cache, OutputFile
from build.errors import BuildError, RecipeError
from build.modes.base import BuildContext
from build.platform import Platform
from mke.images import oci
from tests.support.files import fake_binary as _binary

REPO = Path(__file__).resolve().parents[3]


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
    expected = {cfg.pause, cfg.coredns, cfg.metrics_server, cfg.konnectivity_agent}
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


# --------------------------------------------------------------------------- conformance image fields


@pytest.mark.parametrize("change,message", [
    ({"debian": {"suite": "bookworm"}}, "tool.toml: debian.packages: missing required field"),
    ({"debian": {"suite": "Bookworm!", "packages": ["x"]}}, "tool.toml: debian.suite: 'Bookworm!' is not a Debian suite"),
    ({"debian": {"suite": "bookworm", "packages": ["X y"]}}, "tool.toml: debian.packages[0]: 'X y' is not a Debian package name"),
    ({"debian": {"suite": "bookworm", "packages": []}}, "tool.toml: debian.packages: list at least one package"),
    ({"source_file": [{"component": "tool", "from": "../etc/passwd", "path": "/p"}]},
     "tool.toml: source_file[0].from: must be a relative path inside the module"),
    ({"source_file": [{"component": "tool", "from": "a/b", "path": "rel"}]},
     "tool.toml: source_file[0].path: must be an absolute path"),
    ({"text": [{"path": "/etc/x", "contents": "y"}]}, "tool.toml: text[0].contents: unknown key (did you mean 'content'?)"),
    ({"text": [{"path": "/etc/x", "content": "y", "mode": 0o17777}]}, "tool.toml: text[0].mode: expected a file mode"),
    ({"directory": [{"path": "/a/../b"}]}, "tool.toml: directory[0].path: must be an absolute path without"),
    ({"links": [{"target": "busybox", "dir": "/bin", "names": ["sh", "sh"]}]}, "tool.toml: links[0].names: a name is listed twice"),
    ({"links": [{"target": "busybox", "dir": "/bin", "names": ["a/b"]}]}, "tool.toml: links[0].names[0]: 'a/b' is not a file name"),
    ({"labels": {"a": 1}}, "tool.toml: labels.a: expected"),
    ({"workdir": "srv"}, "tool.toml: workdir: must be an absolute path"),
])
def test_conformance_spec_fields_fail_with_file_and_field(change, message):
    with pytest.raises(RecipeError) as e:
        airgap.parse_image_spec(Path("recipes/images/tool.toml"), {**GOOD_SPEC, **change})
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_component_is_required_only_for_a_versioned_ref():
    spec = {k: v for k, v in GOOD_SPEC.items() if k != "component"}
    with pytest.raises(RecipeError, match=r"tool.toml: component: required when ref uses \{version\}"):
        airgap.parse_image_spec(Path("recipes/images/tool.toml"), spec)
    fixed = airgap.parse_image_spec(Path("recipes/images/tool.toml"), {**spec, "ref": "registry.example/tool:1.8"})
    assert fixed.component == ""


def _archive_contents(path: Path) -> tuple[dict, set[str]]:
    """(image config, every path in its layers) of a one-image archive."""
    import gzip
    import io
    import tarfile

    with tarfile.open(path) as t:
        blob = {m.name.rsplit("/", 1)[1]: t.extractfile(m).read() for m in t if m.name.startswith("blobs/sha256/")}
    [entry] = oci.read_archive(path)
    names: set[str] = set()
    for digest in entry["layers"]:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob[digest.split(":")[1]]))) as layer:
            names |= {m.name.rstrip("/") for m in layer}
    return json.loads(blob[entry["config"].split(":")[1]]), names


def test_new_fields_stay_out_of_the_key_unless_set():
    spec = airgap.parse_image_spec(Path("recipes/images/tool.toml"), GOOD_SPEC)
    assert set(spec.as_dict()) == {"name", "ref", "component", "base", "entrypoint", "cmd", "user", "env",
                                   "exposed_ports", "files", "debs", "symlinks"}
    labelled = airgap.parse_image_spec(Path("recipes/images/tool.toml"), {**GOOD_SPEC, "labels": {"v": "2.55"}})
    assert labelled.as_dict()["labels"] == (("v", "2.55"),)


def _module_zip(ctx: BuildContext, module: str, version: str, files: dict[str, bytes]) -> str:
    import zipfile

    from build.gomod import escape_path, module_zip_h1

    z = ctx.cache.root / "gomod" / "cache" / "download" / escape_path(module) / "@v" / f"{version}.zip"
    z.parent.mkdir(parents=True)
    with zipfile.ZipFile(z, "w") as w:
        for name, data in files.items():
            w.writestr(f"{module}@{version}/{name}", data)
    return module_zip_h1(z)


def test_per_image_layout_with_source_files_texts_links_and_labels(tmp_path, capsys):
    from build.lockfile import Lockfile

    ctx = _ctx(tmp_path)
    h1 = _module_zip(ctx, "example.com/tool", "v1.2.3", {"html/cat.jpg": b"JPEG"})
    ctx = dataclasses.replace(ctx, lock=dataclasses.replace(Lockfile.empty(tmp_path / "lock"), source={
        "tool": (f"example.com/tool v1.2.3 {h1}", "example.com/tool v1.2.3/go.mod h1:" + "A" * 43 + "=")}))
    results = _results(ctx, tmp_path)
    results[0].recipe.source = SimpleNamespace(module="example.com/tool", version="v1.2.3")
    d = _specs(tmp_path)
    (d / "cat.toml").write_text(
        'schema = 1\nname = "cat"\nref = "registry.example/cat:1.8"\ncmd = ["serve"]\nworkdir = "/srv"\n'
        'labels = { "org.opencontainers.image.version" = "1.8" }\n'
        '[[file]]\nbinary = "tool"\npath = "/tool"\n'
        '[[source_file]]\ncomponent = "tool"\nfrom = "html/cat.jpg"\npath = "/srv/cat.jpg"\n'
        '[[text]]\npath = "/etc/motd"\ncontent = "hi"\n[[directory]]\npath = "/uploads"\nmode = 0o777\n'
        '[[links]]\ntarget = "tool"\ndir = "/bin"\nnames = ["a", "b"]\n')
    listing = airgap.build_airgap(ctx, results, tmp_path / "dist", specs_dir=d, layout="per-image")
    assert listing == tmp_path / "dist" / "images.json"
    doc = json.loads(listing.read_text())
    assert set(doc["images"]) == {"registry.example/tool:v1.2.3", "registry.example/cat:1.8"}
    cat = doc["images"]["registry.example/cat:1.8"]
    assert cat["file"] == "images/cat.tar"
    assert oci.read_archive(tmp_path / "dist" / cat["file"])[0]["manifest"] == cat["digest"]
    config, names = _archive_contents(tmp_path / "dist" / cat["file"])
    assert config["config"]["Labels"] == {"org.opencontainers.image.version": "1.8"}
    assert config["config"]["WorkingDir"] == "/srv"
    assert {"srv/cat.jpg", "etc/motd", "uploads", "bin/a", "bin/b", "tool"} <= names
    stamp = (tmp_path / "dist" / cat["file"]).stat().st_mtime_ns
    airgap.build_airgap(ctx, results, tmp_path / "dist", specs_dir=d, layout="per-image")
    assert (tmp_path / "dist" / cat["file"]).stat().st_mtime_ns == stamp  # no-op: nothing rewritten
    assert "cached=2" in capsys.readouterr().err
    # reproducible: a fresh cache gives byte-identical archives
    ctx1 = dataclasses.replace(ctx, cache=Cache(tmp_path / "cache1"))
    _module_zip(ctx1, "example.com/tool", "v1.2.3", {"html/cat.jpg": b"JPEG"})
    results1 = _results(ctx1, tmp_path)
    results1[0].recipe.source = results[0].recipe.source
    airgap.build_airgap(ctx1, results1, tmp_path / "dist1", specs_dir=d, layout="per-image")
    again = json.loads((tmp_path / "dist1" / "images.json").read_text())["images"]
    assert {r: (i["digest"], i["sha256"]) for r, i in again.items()} == {
        r: (i["digest"], i["sha256"]) for r, i in doc["images"].items()}
    # a module zip that no longer matches its pin is refused, naming the spec
    ctx2 = dataclasses.replace(ctx, cache=Cache(tmp_path / "cache2"))
    _module_zip(ctx2, "example.com/tool", "v1.2.3", {"html/cat.jpg": b"EVIL"})
    results2 = _results(ctx2, tmp_path)
    results2[0].recipe.source = results[0].recipe.source
    with pytest.raises(BuildError, match="cat.toml: source_file: .* hashes to h1:.*, the lock pins"):
        airgap.build_airgap(ctx2, results2, tmp_path / "dist2", specs_dir=d, layout="per-image")


def test_debian_set_without_pins_names_the_lock_command(tmp_path):
    from build.errors import LockfileError

    ctx = _ctx(tmp_path)
    d = _specs(tmp_path)
    (d / "bb.toml").write_text('schema = 1\nname = "bb"\nref = "r.example/bb:1"\n'
                               '[debian]\nsuite = "bookworm"\npackages = ["busybox-static"]\n')
    with pytest.raises(LockfileError, match="bb.toml: debian: .* pins no amd64 packages for image:bb; run "):
        airgap.build_airgap(ctx, _results(ctx, tmp_path), tmp_path / "dist", specs_dir=d, layout="per-image")
