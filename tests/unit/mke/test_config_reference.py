"""docs/configuration.md is generated from the config model and must stay current (issue 19.9)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mke import config as c
from mke.config_reference import reference, rows

REPO = Path(__file__).resolve().parents[3]


def test_docs_configuration_md_is_current():
    doc = REPO / "docs" / "configuration.md"
    assert doc.read_text() == reference(), "run: PYTHONPATH=. python -m mke config reference > docs/configuration.md"


def test_every_key_is_in_the_reference_with_a_note():
    keys = {key for key, *_ in rows(c.ClusterConfig, "", c.default_config())}

    def walk(cls: type, prefix: str) -> list[str]:
        out = []
        for f in dataclasses.fields(cls):
            key = prefix + f.metadata["key"]
            section = c._SECTIONS.get(f.type) if isinstance(f.type, str) else None
            out += [key, *walk(section, key + ".")] if section else [key]
        return out

    assert set(walk(c.ClusterConfig, "")) <= keys
    undocumented = [key for key, typ, _, note in rows(c.ClusterConfig, "", c.default_config()) if not note]
    assert undocumented == []
