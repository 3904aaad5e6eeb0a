"""Small files for the unit tests of the image and bundle writers."""

from __future__ import annotations

from pathlib import Path


def fake_binary(tmp_path: Path, name: str, content: bytes = b"\x7fELF fake binary") -> Path:
    """An executable ``tmp_path/src/<name>`` whose bytes differ per name (not a program that runs)."""
    p = tmp_path / "src" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(content + name.encode())
    p.chmod(0o755)
    return p
