"""Joining the static entry and the payload into one ELF executable.

The payload becomes the section ``mkepayload`` of a copy of the entry program
(``objcopy --add-section``): a non-allocated section, so the kernel maps nothing of it, and
``strip`` keeps it. Both readers find it by section name (build/entry/payload.go,
mke/payload_format.py). The result is checked: a static ELF executable (no PT_INTERP, no
PT_DYNAMIC, so no DT_NEEDED) whose payload reads back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from build.errors import BundleError
from mke import payload_format as pf
from mke.elf import ElfFile


def objcopy_version() -> str:
    tool = shutil.which("objcopy")
    if tool is None:
        raise BundleError("objcopy not found; install binutils (scripts/bootstrap.sh does)")
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "unknown"


def _objcopy(*args: str) -> None:
    tool = shutil.which("objcopy")
    if tool is None:
        raise BundleError("objcopy not found; install binutils (scripts/bootstrap.sh does)")
    proc = subprocess.run([tool, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BundleError(f"objcopy {' '.join(args[:2])} failed: {(proc.stderr or proc.stdout).strip()}")


def join(entry: Path, payload: Path, out: Path) -> pf.Payload:
    """Write ``out`` (0755, atomically): ``entry`` with ``payload`` as its section mkepayload."""
    with tempfile.TemporaryDirectory(prefix="join-", dir=out.parent) as wd:
        joined = Path(wd) / "joined"
        shutil.copyfile(entry, joined)
        _objcopy("--add-section", f"{pf.SECTION_NAME}={payload}", "--set-section-flags",
                 f"{pf.SECTION_NAME}=contents,readonly", str(joined))
        result = check_joined(joined)
        os.chmod(joined, 0o755)
        os.replace(joined, out)
    return result._replace(path=str(out), label=str(out))


def check_joined(path: Path) -> pf.Payload:
    """``path`` is a static executable whose payload section is found by name and reads back."""
    try:
        info = ElfFile.open(path)
    except ValueError as e:
        raise BundleError(f"{path}: not a readable ELF file ({e})") from e
    if info is None or not info.executable:
        raise BundleError(f"{path}: not an ELF executable")
    if not info.static or info.dynamic:
        raise BundleError(f"{path}: not static (it has PT_INTERP or PT_DYNAMIC): the entry must need no "
                          "dynamic loader and no shared library")
    payload = pf.Payload.open(path)
    if payload is None:
        raise BundleError(f"{path}: the {pf.SECTION_NAME} section is missing or does not read back")
    return payload
