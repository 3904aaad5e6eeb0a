"""``mke token create|list|invalidate``."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from mke.errors import NotImplementedYet

    raise NotImplementedYet("mke token is not implemented yet")
