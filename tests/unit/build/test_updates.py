"""``lock --update`` (build/updates.py): newer patch releases found on a Go module proxy whose
version list is incomplete, minor releases held unless asked, recipe files rewritten by
text, nothing written when pinning fails. The proxies are real: a GOPROXY tree on disk
(tests/support/goproxy.py) served as ``file://`` and over HTTP by a real server that answers
a version it does not serve as proxy.golang.org does here (403 "not available")."""

from __future__ import annotations

import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from build import updates
from build.cli import main
from build.errors import BuildError
from build.recipes import load_recipe
from tests.support.goproxy import publish

REPO = Path(__file__).resolve().parents[3]
GOHELLO = REPO / "tests" / "support" / "gohello"
MODULE = "example.com/mke-gohello"

RECIPE = '''schema = 1
name = "gohello"
# v1.2.3 is the release we ship
version = "1.2.3"
license = "Apache-2.0"
homepage = "https://example.com"
description = "test"

[[binary]]
name = "gohello"
roles = ["controller"]

[fetch]
available = false
reason = "test module only"

[source]
kind = "go"
module = "example.com/mke-gohello"
version = "v1.2.3"   # pinned
local_replace_version = "v1.2.3"
ldflags = ["-X main.version=v{version}", "-X main.minor=2"]
packages = { gohello = "example.com/mke-gohello" }
'''


def proxy_tree(root: Path, versions: list[str], listed: list[str]) -> Path:
    """A proxy serving ``versions`` whose @v/list names only ``listed`` (as the real one may)."""
    for v in versions:
        publish(root, GOHELLO, MODULE, v)
    (root / MODULE / "@v" / "list").write_text("".join(f"{v}\n" for v in listed))
    return root


@pytest.fixture
def served(tmp_path: Path) -> Path:
    return proxy_tree(tmp_path / "proxy", ["v1.2.3", "v1.2.4", "v1.2.6", "v1.2.7-rc.1", "v1.3.0", "v1.3.1"],
                      ["v1.2.3"])


class _Handler(http.server.SimpleHTTPRequestHandler):
    def send_error(self, code, message=None, explain=None):
        if code == 404:  # what proxy.golang.org answers here for a version it does not serve
            body = b"This module version is not available.\n"
            self.send_response(403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().send_error(code, message, explain)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_proxy(served: Path) -> Iterator[str]:
    handler = lambda *a, **kw: _Handler(*a, directory=str(served), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_newest_patch_is_found_past_a_gap_and_an_incomplete_list(served: Path) -> None:
    proxy = updates.Proxy(f"file://{served}")
    assert updates.newest(proxy, MODULE, "v1.2.3", allow_minor=False) == ("v1.2.6", "v1.3.1")
    assert updates.newest(proxy, MODULE, "v1.2.3", allow_minor=True) == ("v1.3.1", None)
    assert updates.newest(proxy, MODULE, "v1.2.6", allow_minor=False) == ("v1.2.6", "v1.3.1")
    assert updates.newest(proxy, MODULE, "v1.3.1", allow_minor=False) == ("v1.3.1", None)
    # a pseudo-version or pre-release is pinned on purpose: left as it is
    assert updates.newest(proxy, MODULE, "v1.2.7-rc.1", allow_minor=True) == ("v1.2.7-rc.1", None)


def test_over_http_a_403_not_available_is_a_missing_version(http_proxy: str) -> None:
    proxy = updates.Proxy(http_proxy)
    assert updates.newest(proxy, MODULE, "v1.2.3", allow_minor=False) == ("v1.2.6", "v1.3.1")
    assert proxy.exists(MODULE, "v1.2.4") and not proxy.exists(MODULE, "v1.2.5")


def test_an_unreachable_proxy_is_one_line_naming_it() -> None:
    proxy = updates.Proxy("http://127.0.0.1:9", timeout=3)
    with pytest.raises(BuildError) as e:
        updates.newest(proxy, MODULE, "v1.2.3", allow_minor=False)
    msg = str(e.value)
    assert "\n" not in msg and "http://127.0.0.1:9/example.com/mke-gohello/@v/list" in msg and "--goproxy" in msg


def test_goproxy_url_takes_the_first_usable_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOPROXY", "direct")
    assert updates.goproxy_url() == updates.DEFAULT_PROXY
    monkeypatch.setenv("GOPROXY", "https://goproxy.example/,direct")
    assert updates.goproxy_url() == "https://goproxy.example"
    assert updates.goproxy_url("file:///srv/proxy/") == "file:///srv/proxy"


def _recipes(tmp_path: Path, text: str = RECIPE) -> Path:
    d = tmp_path / "recipes"
    d.mkdir()
    (d / "gohello.toml").write_text(text)
    return d


def test_rewrite_keeps_comments_and_moves_the_derived_versions(served: Path, tmp_path: Path) -> None:
    d = _recipes(tmp_path)
    recipe = load_recipe(d / "gohello.toml")
    proxy = updates.Proxy(f"file://{served}")
    text = updates.rewrite(recipe, RECIPE, "v1.2.6", proxy)
    assert text == (RECIPE.replace('version = "1.2.3"', 'version = "1.2.6"')
                    .replace('version = "v1.2.3"   # pinned', 'version = "v1.2.6"   # pinned')
                    .replace('local_replace_version = "v1.2.3"', 'local_replace_version = "v1.2.6"'))
    assert "# v1.2.3 is the release we ship" in text  # comments are not touched
    minor = updates.rewrite(recipe, RECIPE.replace("main.minor=2", "gitMinor=2"), "v1.3.1", proxy)
    assert '"-X gitMinor=3"' in minor and 'version = "1.3.1"' in minor
    # a recipe whose own version is not its module's (pause, built from k8s.io/kubernetes) keeps it
    own = RECIPE.replace('version = "1.2.3"', 'version = "3.10"', 1)
    assert 'version = "3.10"' in updates.rewrite(recipe, own, "v1.2.6", proxy)


def test_lock_update_dry_run_prints_the_table_and_writes_nothing(served: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    d = _recipes(tmp_path)
    before = (d / "gohello.toml").read_text()
    assert main(["lock", "--recipes-dir", str(d), "--update", "--dry-run", "--goproxy", f"file://{served}"]) == 0
    out = capsys.readouterr().out
    assert "gohello    example.com/mke-gohello  v1.2.3  v1.2.6  patch; v1.3.1 held (newer minor: --allow-minor)" in out
    assert "--dry-run: nothing written" in out
    assert (d / "gohello.toml").read_text() == before and not (d / "recipes.lock").exists()


def test_apply_writes_the_recipe_only_after_the_pins(served: Path, tmp_path: Path) -> None:
    d = _recipes(tmp_path)
    proxy = updates.Proxy(f"file://{served}")
    plan = updates.plan([load_recipe(d / "gohello.toml")], proxy, allow_minor=False)

    def failing_pin(recipes):
        assert [r.source.version for r in recipes] == ["v1.2.6"]
        raise BuildError("go: example.com/mke-gohello@v1.2.6: verifying module: checksum mismatch")

    with pytest.raises(BuildError):
        updates.apply(plan, tmp_path / "recipes.lock", pin=failing_pin)
    assert (d / "gohello.toml").read_text() == RECIPE  # nothing written
    pinned = []
    updates.apply(plan, tmp_path / "recipes.lock", pin=pinned.extend)
    assert [r.version for r in pinned] == ["1.2.6"]
    assert load_recipe(d / "gohello.toml").source.version == "v1.2.6"
    # again: nothing newer, nothing to do
    again = updates.plan([load_recipe(d / "gohello.toml")], proxy, allow_minor=False)
    assert [u.changed for u in again] == [False]


def test_nothing_newer_says_so(served: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _recipes(tmp_path, RECIPE.replace("1.2.3", "1.3.1"))
    assert main(["lock", "--recipes-dir", str(d), "--update", "--goproxy", f"file://{served}"]) == 0
    assert "nothing to change" in capsys.readouterr().out
    shutil.rmtree(d)
