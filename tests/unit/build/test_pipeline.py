"""build/pipeline.py: what the dist manifest records."""

from __future__ import annotations

import json

from build.cache import Cache
from build.modes.base import BuildContext
from build.pipeline import write_dist
from build.platform import Platform


def _manifest(tmp_path, name: str, **ctx) -> dict:
    c = BuildContext(cache=Cache(tmp_path / "cache"), lock=None, platform=Platform.parse("amd64"), **ctx)
    return json.loads(write_dist(c, "docker", [], tmp_path / name).read_text())


def test_a_fips_build_records_its_go_fips_mode(tmp_path):
    """Issue 17 item 3: --fips-go reaches the bundle's payload through the dist manifest."""
    assert _manifest(tmp_path, "boring", fips=True, options={"opt_fips_go": "boring"})["fips_go"] == "boring"
    assert _manifest(tmp_path, "default", fips=True)["fips_go"] == "native"  # fips/toolchain.toml's default
    plain = _manifest(tmp_path, "plain", options={"opt_fips_go": "boring"})
    assert plain["fips"] is False and "fips_go" not in plain
