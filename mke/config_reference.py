"""docs/configuration.md, generated from the config model (mke/config.py): every key of mke.yaml
with its type, its default and what the model says about it (the section's docstring, the
field's trailing comment). ``mke config reference`` prints it; a unit test keeps the file current.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from typing import Any

from mke import config as c

HEADER = """# mke.yaml reference

Generated from the config model (`mke/config.py`) by `mke config reference`; do not edit by
hand (`tests/unit/mke/test_config_reference.py` fails when this file is out of date).
Every key is optional. `mke config create` prints the defaults as YAML; `mke config validate
FILE` reports every error, one line each naming its field. Registry names in `registries`
are map keys (`registries.mirrors.<host>`, `registries.configs.<host>`).
"""


def _doc(cls: type) -> str:
    """A section's docstring on one line (not the signature dataclasses make up for a class without one)."""
    doc = inspect.getdoc(cls) or ""
    return "" if doc.startswith(f"{cls.__name__}(") else " ".join(doc.split()).replace("``", "`")


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if hint is str:
        return "string"
    if hint is int:
        return "integer"
    if hint is bool:
        return "boolean"
    if origin is tuple:
        return "list of " + _type_name(typing.get_args(hint)[0]) + "s"
    if origin in (dict, typing.Mapping) or str(origin).endswith("Mapping'>"):
        args = typing.get_args(hint)
        return f"map of {_type_name(args[0])} to {_type_name(args[1])}" if args else "map"
    if dataclasses.is_dataclass(hint):
        return "section"
    return getattr(hint, "__name__", str(hint))


def _default(value: Any) -> str:
    if value in ("", (), {}, None):
        return "(empty)"
    return "`" + json.dumps(c.config_to_dict(value)) + "`"


def rows(cls: type, prefix: str, defaults: Any) -> list[tuple[str, str, str, str]]:
    hints = typing.get_type_hints(cls, vars(c))
    out: list[tuple[str, str, str, str]] = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.metadata['key']}"
        hint = hints[f.name]
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(hint):
            out.append((key, "section", "", _doc(hint)))
            out += rows(hint, key + ".", value)
            continue
        args = typing.get_args(hint)
        if args and len(args) == 2 and dataclasses.is_dataclass(args[1]):  # host -> section
            out.append((key, f"map of {_type_name(args[0])} to section", "(empty)",
                        f.metadata.get("doc") or _doc(args[1])))
            out += rows(args[1], f"{key}.<name>.", args[1]())
            continue
        out.append((key, _type_name(hint), _default(value), f.metadata.get("doc", "")))
    return out


def reference() -> str:
    lines = [HEADER, "| key | type | default | notes |", "|---|---|---|---|"]
    for key, typ, default, note in rows(c.ClusterConfig, "", c.default_config()):
        note = note.replace("|", "\\|")
        lines.append(f"| `{key}` | {typ} | {default} | {note} |")
    return "\n".join(lines) + "\n"
