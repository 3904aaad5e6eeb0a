"""What every build mode implements, and the context a build runs in."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol

from build.action import Action
from build.cache import Cache
from build.lockfile import Lockfile
from build.platform import Platform
from build.recipes import Recipe


@dataclasses.dataclass(frozen=True, kw_only=True)
class BuildContext:
    cache: Cache
    lock: Lockfile
    platform: Platform
    jobs: int = 2
    mirror: str | None = None
    allow_unpinned: bool = False
    fips: bool = False
    source_date_epoch: int = 0
    repo_root: Path = Path(".")
    # Mode-specific options (e.g. docker: go build cache volume name, keep containers).
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


class Mode(Protocol):
    name: str
    embeds: bool  # False for none mode: nothing goes into the payload

    def prepare(self, ctx: BuildContext, recipes: list[Recipe]) -> None:
        """One-time setup before any action (e.g. docker: engine check, builder image)."""

    def action(self, ctx: BuildContext, recipe: Recipe) -> Action:
        """Describe the work for ``recipe``: every input that changes its outputs."""

    def run(self, ctx: BuildContext, recipe: Recipe, action: Action, workdir: Path) -> tuple[dict[str, Path], dict[str, Any]]:
        """Produce the binaries in ``workdir``; return ({binary name: path}, metadata).

        Called only on a cache miss, under the action's lock. The pipeline verifies
        (static ELF, arch, --version) and stores the files; the mode need not.
        """
