"""Strict reading of the toolchain's TOML files: recipes, builder and image specs, fips/toolchain.toml.

Every error is one line naming the file and the field (``recipes/etcd.toml:
source.modul: unknown key (did you mean 'module'?)``): unknown keys get a "did you mean"
hint, wrong types name what was expected, required fields are checked, templates may
use only the placeholders their field allows.

    check = TomlChecker(path)                   # RecipeError, or error=FipsSettingsError
    check.keys("source", table, allowed={...}, required={...})
    version = check.get("source", table, "version", str)
    tags = check.str_list("source", table, "tags", ())
"""

from __future__ import annotations

import dataclasses
import difflib
import string
import tomllib
from pathlib import Path
from typing import Any

from build.errors import BuildError, RecipeError

MISSING: Any = dataclasses.MISSING  # "no default": the field is required
_TYPE_NAMES = {str: "a string", bool: "true or false", int: "an integer", list: "an array", dict: "a table"}


def read_toml(path: Path, what: str, error: type[BuildError] = RecipeError) -> dict[str, Any]:
    """The document in ``path`` (``what`` names it in errors: "recipe", "builder spec", ...)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}: cannot read {what}: {e}") from e
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise error(f"{path}: invalid TOML: {e}") from None


def join(where: str, key: str | int) -> str:
    """The dotted name of ``key`` inside ``where``: ``source.tags``, ``binary[0]``."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


class TomlChecker:
    """Checks the tables of one TOML file; each method names ``where`` (the table's dotted name) in its errors."""

    def __init__(self, path: Path, error: type[BuildError] = RecipeError):
        self.path = path
        self.error = error

    def fail(self, where: str, msg: str) -> BuildError:
        """The error to raise for field ``where``."""
        return self.error(f"{self.path}: {where}: {msg}" if where else f"{self.path}: {msg}")

    def keys(self, where: str, table: dict, allowed: set[str], required: set[str] = frozenset()) -> None:
        """No key outside ``allowed`` (with a "did you mean" hint), every key of ``required`` present."""
        for key in table:
            if key not in allowed:
                hint = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
                tip = f" (did you mean {hint[0]!r}?)" if hint else f" (allowed: {', '.join(sorted(allowed))})"
                raise self.fail(join(where, key), f"unknown key{tip}")
        for key in sorted(required):
            if key not in table:
                raise self.fail(join(where, key), "missing required field")

    def get(self, where: str, table: dict, key: str, typ: type, default: Any = MISSING) -> Any:
        """``table[key]``, which must be a ``typ`` (a string must not be blank); ``default`` if absent."""
        if key not in table:
            if default is MISSING:
                raise self.fail(join(where, key), "missing required field")
            return default
        value = table[key]
        # bool is an int subclass; keep them apart
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise self.fail(join(where, key), f"expected {_TYPE_NAMES[typ]}, got {type(value).__name__} {value!r}")
        if typ is str and not value.strip():
            raise self.fail(join(where, key), "must not be empty")
        return value

    def str_list(self, where: str, table: dict, key: str, default: Any = MISSING) -> tuple[str, ...]:
        """An array of strings."""
        value = self.get(where, table, key, list, default)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.fail(join(join(where, key), i), f"expected a string, got {type(item).__name__} {item!r}")
        return tuple(value)

    def str_table(self, where: str, table: dict, key: str, default: Any = MISSING) -> tuple[tuple[str, str], ...]:
        """A table of strings, as sorted (key, value) pairs."""
        value = self.get(where, table, key, dict, default)
        if not isinstance(value, dict):
            return value
        for k, v in value.items():
            if not isinstance(v, str):
                raise self.fail(join(join(where, key), k), f"expected a string, got {type(v).__name__} {v!r}")
        return tuple(sorted(value.items()))

    def choice(self, where: str, value: str, choices: tuple[str, ...]) -> str:
        """``value``, which must be one of ``choices``."""
        if value not in choices:
            hint = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
            tip = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise self.fail(where, f"expected one of {', '.join(choices)}, got {value!r}{tip}")
        return value

    def template(self, where: str, template: str, allowed: frozenset[str]) -> str:
        """``template``, a ``str.format`` template using only the placeholders in ``allowed``."""
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as e:
            raise self.fail(where, f"bad template {template!r}: {e}") from None
        for _, field, spec, conv in parsed:
            if field is None:
                continue
            if field not in allowed or spec or conv:
                hint = difflib.get_close_matches(field, sorted(allowed), n=1, cutoff=0.6)
                tip = f" (did you mean {{{hint[0]}}}?)" if hint else ""
                raise self.fail(
                    where,
                    f"bad template {template!r}: unknown placeholder {{{field}}}{tip}; "
                    f"allowed: {', '.join('{' + a + '}' for a in sorted(allowed))}",
                )
        return template
