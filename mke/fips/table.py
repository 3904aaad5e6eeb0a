"""The per-binary FIPS table (``mke fips check``, the FIPS build) and its JSON document."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mke.fips.policy import BinaryReport

TABLE_COLUMNS = ("BINARY", "GO", "GOFIPS140", "FIPS140 DEFAULT", "FIPS MODULE (FUNCTIONS)", "STATIC", "FIPS")


def _yes(b: bool) -> str:
    return "yes" if b else "no"


def table_rows(reports: Iterable[BinaryReport]) -> list[tuple[str, ...]]:
    rows = [TABLE_COLUMNS]
    for r in reports:
        if r.exempt:
            module = "exempt (not Go, no crypto)"
        elif r.go_version is None:
            module = "-"
        else:
            module = f"{r.module} ({r.module_functions})" if r.module_functions else r.module
        rows.append((
            r.name,
            r.go_version or "not Go",
            r.gofips140 or ("boringcrypto" if r.goexperiment and "boringcrypto" in r.goexperiment else "-"),
            r.fips140_default or "-",
            module,
            _yes(r.static),
            _yes(r.ok),
        ))
    return rows


def format_table(reports: Iterable[BinaryReport]) -> str:
    """The per-binary table, then one line per problem."""
    reports = list(reports)
    rows = table_rows(reports)
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in rows]
    for r in reports:
        lines += [f"  {r.name}: {p}" for p in r.problems]
    return "\n".join(lines)


def reports_document(reports: Iterable[BinaryReport], **extra: Any) -> dict[str, Any]:
    reports = list(reports)
    return {**extra, "ok": all(r.ok for r in reports), "binaries": [r.to_document() for r in reports]}
