"""The case runner's parts shared by the two bad-input tables (issue 19.1):
tests/unit/build/test_bad_input.py (the toolchain) and tests/unit/mke/test_bad_input.py (the runtime).

A case names files to create under its ``tmp_path`` (``{tmp}`` in its text), runs a command,
and asserts one error line naming the fault, no traceback, and nothing written under
``tmp_path`` (``snapshot`` before and after).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path


def sub(text: str, tmp: Path) -> str:
    """``{tmp}`` -> the case's directory."""
    return text.replace("{tmp}", str(tmp))


def write_files(files: Mapping[str, object], tmp: Path, render: Callable[[object], str | bytes] | None = None) -> None:
    """Create each ``relative path: content`` under ``tmp``: None makes a directory, bytes and str
    are written as they are, anything else goes through ``render`` first."""
    for rel, content in files.items():
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            p.mkdir()
            continue
        if not isinstance(content, (str, bytes)):
            assert render is not None, f"{rel}: no way to write {content!r}"
            content = render(content)
        p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with its mode, size and mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, n))
            out[os.path.relpath(os.path.join(dirpath, n), root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def assert_one_line(stderr: str, prefix: str, fragment: str) -> str:
    """stderr is exactly one line starting with ``prefix`` and containing ``fragment``; no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), f"not one {prefix!r} line:\n{stderr}"
    assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]
