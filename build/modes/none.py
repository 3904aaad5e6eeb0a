"""none mode: embed nothing; the mke runtime looks each binary up on PATH."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from build.action import Action
from build.modes.base import BuildContext
from build.recipes import Recipe


class NoneMode:
    name = "none"
    embeds = False

    def prepare(self, ctx: BuildContext, recipes: list[Recipe]) -> None:
        return None

    def action(self, ctx: BuildContext, recipe: Recipe) -> Action:
        return Action(mode=self.name, component=recipe.name, platform=str(ctx.platform), inputs={})

    def run(self, ctx: BuildContext, recipe: Recipe, action: Action, workdir: Path) -> tuple[dict[str, Path], dict[str, Any]]:
        raise AssertionError("none mode has no actions to run")
