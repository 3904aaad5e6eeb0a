"""build/lockfile.py: strict loading, sorted atomic saves."""

import json

import pytest

from build.errors import LockfileError
from build.lockfile import Lockfile

SUM = "github.com/x/y v1.0.0 h1:" + "A" * 43 + "="


def test_roundtrip(tmp_path):
    lf = Lockfile.empty(tmp_path / "l").with_artifact("etcd", "linux/amd64", "https://e/x", "a" * 64)
    lf = lf.with_source("etcd", (SUM,))
    lf.save()
    again = Lockfile.load(tmp_path / "l")
    assert again.artifact_digest("etcd", "linux/amd64", "https://e/x") == "a" * 64
    assert again.artifact_digest("etcd", "linux/arm64", "https://e/x") is None
    assert again.gosum("etcd") == (SUM,)
    text = (tmp_path / "l").read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


@pytest.mark.parametrize("doc,msg", [
    ({"schema": 2}, "schema: expected 1, got 2"),
    ({"schema": 1, "extra": 1}, "unknown key 'extra'"),
    ({"schema": 1, "fetch": {"e": {"linux/amd64": {"u": "xyz"}}}}, "not a sha256 hex digest"),
    ({"schema": 1, "source": {"e": ["nonsense"]}}, "not a go.sum line"),
])
def test_bad_lock(tmp_path, doc, msg):
    p = tmp_path / "recipes.lock"
    p.write_text(json.dumps(doc))
    with pytest.raises(LockfileError, match=msg):
        Lockfile.load(p)


def test_missing_and_invalid(tmp_path):
    with pytest.raises(LockfileError, match="run `nox -s lock`"):
        Lockfile.load(tmp_path / "nope")
    (tmp_path / "bad").write_text("{")
    with pytest.raises(LockfileError, match="not valid JSON"):
        Lockfile.load(tmp_path / "bad")


def test_repository_lock_pins_every_go_module():
    from pathlib import Path

    from build.recipes import load_recipes

    repo = Path(__file__).resolve().parents[3]
    lock = Lockfile.load(repo / "recipes" / "recipes.lock")
    for r in load_recipes(repo / "recipes").values():
        if r.source.kind == "debian":  # pinned by URL in the "debian" section (tests/unit/build/test_debsrc.py)
            continue
        lines = lock.gosum(r.name)
        assert any(line.startswith(f"{r.source.module} {r.source.version} h1:") for line in lines), r.name
