"""Build modes: how a recipe's binaries are produced (fetch, docker, none)."""

from __future__ import annotations

from build.errors import UsageError
from build.modes.base import Mode

MODES = ("fetch", "docker", "none")


def get_mode(name: str) -> Mode:
    if name == "fetch":
        from build.modes.fetch import FetchMode

        return FetchMode()
    if name == "docker":
        from build.modes.docker import DockerMode

        return DockerMode()
    if name == "none":
        from build.modes.none import NoneMode

        return NoneMode()
    raise UsageError(f"unknown mode {name!r}: choose one of {', '.join(MODES)}")
