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
