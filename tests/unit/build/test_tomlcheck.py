"""build/tomlcheck.py: one-line errors naming the file and the field (recipes, specs, fips/toolchain.toml)."""

from __future__ import annotations

from pathlib import Path

import pytest

from build.errors import FipsSettingsError, RecipeError
from build.tomlcheck import TomlChecker, join, read_toml

F = Path("x.toml")


def test_read_toml(tmp_path):
    with pytest.raises(RecipeError, match=r"nope.toml: no such recipe file$"):
        read_toml(tmp_path / "nope.toml", "recipe file")
    (tmp_path / "bad.toml").write_text("a = [")
    with pytest.raises(FipsSettingsError, match=r"bad.toml: invalid TOML: "):
        read_toml(tmp_path / "bad.toml", "FIPS toolchain file", FipsSettingsError)
    (tmp_path / "latin1.toml").write_bytes(b"a = '\xe9'")
    with pytest.raises(RecipeError, match=r"latin1.toml: cannot read image spec: 'utf-8' codec"):
        read_toml(tmp_path / "latin1.toml", "image spec")
    (tmp_path / "ok.toml").write_text("[source]\nversion = 'v1'\n")
    assert read_toml(tmp_path / "ok.toml", "recipe file") == {"source": {"version": "v1"}}


def test_keys():
    c = TomlChecker(F)
    with pytest.raises(RecipeError, match=r"^x.toml: source.modul: unknown key \(did you mean 'module'\?\)$"):
        c.keys("source", {"modul": 1}, {"module", "version"})
    with pytest.raises(RecipeError, match=r"^x.toml: zzz: unknown key \(allowed: module, version\)$"):
        c.keys("", {"zzz": 1}, {"module", "version"})
    with pytest.raises(RecipeError, match=r"^x.toml: source.version: missing required field$"):
        c.keys("source", {"module": "m"}, {"module", "version"}, {"version"})


def test_get_types():
    c = TomlChecker(F, error=FipsSettingsError)
    t = {"n": 1, "b": True, "s": " ", "l": ["a", 2], "m": {"k": 1}}
    assert c.get("", t, "n", int) == 1 and c.get("", t, "missing", int, 7) == 7
    with pytest.raises(FipsSettingsError, match=r"b: expected an integer, got bool True"):
        c.get("", t, "b", int)
    with pytest.raises(FipsSettingsError, match=r"t.s: must not be empty"):
        c.get("t", t, "s", str)
    with pytest.raises(FipsSettingsError, match=r"l\[1\]: expected a string, got int 2"):
        c.str_list("", t, "l")
    with pytest.raises(FipsSettingsError, match=r"m.k: expected a string, got int 1"):
        c.str_table("", t, "m")
    assert c.str_table("", {"m": {"b": "2", "a": "1"}}, "m") == (("a", "1"), ("b", "2"))


def test_choice_and_template():
    c = TomlChecker(F)
    assert c.choice("kind", "go", ("go", "c")) == "go"
    with pytest.raises(RecipeError, match=r"kind: expected one of go, c, got 'og' \(did you mean 'go'\?\)"):
        c.choice("kind", "og", ("go", "c"))
    assert c.template("url", "https://x/{version}", frozenset({"version"})) == "https://x/{version}"
    with pytest.raises(RecipeError, match=r"url: bad template .*unknown placeholder \{verison\} \(did you mean \{version\}\?\)"):
        c.template("url", "https://x/{verison}", frozenset({"version"}))
    assert join("source", "tags") == "source.tags" and join("binary", 0) == "binary[0]" and join("", "name") == "name"
