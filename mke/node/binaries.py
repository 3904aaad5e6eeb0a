"""Where the binaries a node runs come from: --bin-dir, the payload staged by digest, or PATH."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mke.errors import StagingError


class BinaryResolver:
    """Finds the binaries components run.

    In order: ``--bin-dir`` given by the user (binaries placed there by hand, e.g. a
    none-mode build), then the running mke's payload staged into the bin dir
    (``mke.staging.stage``), then PATH. Results are cached; ``prefetch`` stages a
    role's binaries in one go (the payload decodes them in parallel).
    """

    def __init__(self, bin_dir: Path, *, user_bin_dir: bool = False, say: Callable[[str], None] | None = None) -> None:
        self.bin_dir = Path(bin_dir).absolute()  # components run with the data dir as cwd
        self.user_bin_dir = user_bin_dir
        self.say = say  # staging's messages (default: mke.staging's, on stderr); a node's go to its log
        self._paths: dict[str, Path] = {}

    def _in_user_dir(self, name: str) -> Path | None:
        if not self.user_bin_dir:
            return None
        p = self.bin_dir / name
        return p if p.is_file() and os.access(p, os.X_OK) else None

    def prefetch(self, names: Iterable[str]) -> None:
        todo = [n for n in dict.fromkeys(names) if n not in self._paths]
        for n in list(todo):
            p = self._in_user_dir(n)
            if p is not None:
                self._paths[n] = p
                todo.remove(n)
        if not todo:
            return
        try:
            from mke import staging
            from mke.payload_format import running_payload

            payload = running_payload()
            if payload is not None and any(b.embedded for b in payload.manifest.binaries):
                kw = {"say": self.say} if self.say is not None else {}
                for s in staging.stage(payload, todo, self.bin_dir, **kw):
                    self._paths[s.name] = Path(s.path).absolute()
                return
        except ImportError:  # a runtime without the staging module: PATH only
            pass
        for n in todo:
            found = shutil.which(n)
            if not found:
                where = f"{self.bin_dir} or PATH" if self.user_bin_dir else "PATH"
                raise StagingError(f"{n}: not found in {where} and this mke embeds no binaries; "
                                   f"put {n} on PATH or pass --bin-dir DIR")
            self._paths[n] = Path(found).absolute()

    def embedded(self, names: Iterable[str]) -> list[str]:
        """Those of ``names`` this node can stage: in the user's --bin-dir, or embedded in the payload.

        For what is optional (the host tools a payload may carry): a none-mode build then
        leaves them to the host's PATH.
        """
        wanted = list(dict.fromkeys(names))
        if self.user_bin_dir:
            return [n for n in wanted if self._in_user_dir(n) is not None]
        payload = self._payload()
        have = {b.name for b in payload.manifest.binaries if b.embedded} if payload is not None else set()
        return [n for n in wanted if n in have]

    def patches(self, name: str) -> tuple[str, ...]:
        """mke's changes to ``name``'s upstream source, as the payload manifest records them
        (``[[source.patch]]``); () for a binary from --bin-dir or PATH, whose source is unknown."""
        payload = self._payload() if self._in_user_dir(name) is None else None
        if payload is None:
            return ()
        return next((b.patches for b in payload.manifest.binaries if b.name == name and b.embedded), ())

    @staticmethod
    def _payload() -> Any:
        """The running mke's payload (``mke.payload_format.running_payload``), or None: run from
        source, or a runtime without the payload module."""
        try:
            from mke.payload_format import running_payload

            return running_payload()
        except ImportError:
            return None

    def path(self, name: str) -> Path:
        if name not in self._paths:
            self.prefetch([name])
        return self._paths[name]

    def known(self) -> dict[str, Path]:
        return dict(self._paths)
