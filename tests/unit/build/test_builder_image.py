"""build/builder_image.py without an engine: the pinned spec, its digest/tag, Go toolchain unpacking."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from build.builder_image import IMAGE_REPO, goproxy_base, load_builder_spec, unpack_go
from build.errors import RecipeError

REPO = Path(__file__).resolve().parents[3]
SPEC = REPO / "recipes" / "builders" / "go-builder.toml"


def test_real_spec_loads_and_pins_everything() -> None:
    spec = load_builder_spec(SPEC)
    assert spec.go_version.startswith("go1.")
    assert "libseccomp-dev" in spec.packages and "gcc-aarch64-linux-gnu" in spec.packages
    assert dict(spec.versions)["libseccomp-dev"]
    assert all(len(d.sha256) == 64 for d in spec.debs)
    amd64 = spec.go_zip("amd64")
    assert amd64.h1.startswith("h1:") and len(amd64.sha256) == 64
    assert spec.go_module_version("amd64") == f"v0.0.1-{spec.go_version}.linux-amd64"


def test_tag_is_the_digest_of_the_inputs(tmp_path: Path) -> None:
    spec = load_builder_spec(SPEC)
    assert spec.tag == f"{IMAGE_REPO}:{spec.digest()[:20]}"
    assert load_builder_spec(SPEC).digest() == spec.digest()  # stable
    changed = tmp_path / "go-builder.toml"
    changed.write_text(SPEC.read_text().replace('"patch", ', ""))
    assert load_builder_spec(changed).digest() != spec.digest()
    # comments and the description do not change the image
    same = tmp_path / "same.toml"
    same.write_text("# another comment\n" + SPEC.read_text().replace('description = "', 'description = "x '))
    assert load_builder_spec(same).digest() == spec.digest()


def test_missing_host_arch_pin_is_an_error() -> None:
    spec = load_builder_spec(SPEC)
    with pytest.raises(RecipeError, match=r"go.zip.riscv64: no pinned Go toolchain"):
        spec.go_zip("riscv64")


@pytest.mark.parametrize("edit, message", [
    (("[rootfs]", "[rootfs]\nsuit = 'x'"), r"rootfs.suit: unknown key \(did you mean 'suite'\?\)"),
    (('mirror = "http://deb.debian.org/debian"', 'mirror = "ftp://x"'), r"rootfs.mirror: must be an http\(s\) URL"),
    (('sha256 = "4e740b9d', 'sha256 = "XX740b9d'), r"deb\[0\].sha256: not a sha256 hex digest"),
    (('version = "go1.26.11"', 'version = "1.26.11"'), r"go.version: expected a Go release"),
    (('h1 = "h1:', 'h1 = "'), r"go.zip.amd64.h1: expected a go.sum hash"),
])
def test_bad_specs_name_file_and_field(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    p = tmp_path / "bad.toml"
    text = SPEC.read_text()
    assert edit[0] in text
    p.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(RecipeError, match=f"bad.toml: {message}"):
        load_builder_spec(p)


def test_unpack_go_sets_exec_bits_and_strips_the_prefix(tmp_path: Path) -> None:
    prefix = "golang.org/toolchain@v0.0.1-go1.99.0.linux-amd64"
    z = tmp_path / "go.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr(f"{prefix}/bin/go", "#!/bin/sh\n")
        f.writestr(f"{prefix}/pkg/tool/linux_amd64/compile", "x")
        f.writestr(f"{prefix}/src/fmt/print.go", "package fmt")
        f.writestr("elsewhere/file", "ignored")
    unpack_go(z, tmp_path / "go", prefix)
    assert os.access(tmp_path / "go" / "bin" / "go", os.X_OK)
    assert os.access(tmp_path / "go" / "pkg" / "tool" / "linux_amd64" / "compile", os.X_OK)
    assert not os.access(tmp_path / "go" / "src" / "fmt" / "print.go", os.X_OK)
    assert not (tmp_path / "go" / "elsewhere").exists()


def test_goproxy_base(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOPROXY", "https://goproxy.internal/,direct")
    assert goproxy_base() == "https://goproxy.internal"
    monkeypatch.setenv("GOPROXY", "file:///tmp/proxy,off")
    assert goproxy_base() == "https://proxy.golang.org"
