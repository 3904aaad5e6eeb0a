"""What mke needs from the host's service manager, the same for systemd and OpenRC.

An ``InitSystem`` knows where a service file goes (``service_file``), what it says
(``render``: the command of ``mke server`` or ``mke worker`` with the flags given to
``mke install``), what it cannot carry (``check``), and the verbs: ``enable`` (after the
file is written), ``start``, ``stop``, ``disable`` and ``forget`` (after it is removed).
The verbs run the service manager's own tool (``systemctl``, ``rc-service``,
``rc-update``), found on ``PATH``.

Every file mke install writes starts with a header that records what it wrote:
``# Written by mke install ...``, the data dir, and the token file it wrote (when it did).
``mke uninstall`` removes a service file only when it has that header, and then only the
token file the header names (``Record``): never the data dir (``mke reset`` does that).

The paths are those of the host (``/etc/systemd/system``, ``/run/systemd/system``,
``/etc/init.d``, ``/run/openrc``), under ``$MKE_INIT_ROOT`` when that is set: a directory
that stands for ``/`` (the unit tests'; the tools are still the ones on ``PATH``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from mke.errors import ServiceError, UsageError

ROOT_ENV = "MKE_INIT_ROOT"
ROLES = {"controller": "server", "worker": "worker"}  # role -> the mke command the service runs

HEADER = "# Written by mke install"
DATA_DIR_KEY = "# mke-data-dir: "
TOKEN_FILE_KEY = "# mke-token-file: "


def host_root() -> Path:
    """``/``, or ``$MKE_INIT_ROOT`` (an existing absolute directory) standing for it."""
    value = os.environ.get(ROOT_ENV, "")
    if not value:
        return Path("/")
    path = Path(value)
    if not path.is_absolute() or not path.is_dir():
        raise UsageError(f"${ROOT_ENV}={value}: not an absolute directory (it stands for / in tests)")
    return path


def service_name(role: str) -> str:
    return f"mke-{role}"


@dataclass(frozen=True, kw_only=True)
class ServiceSpec:
    """One service: the role, the full command it runs (executable first), the data dir, and the
    token file mke install wrote for it (None when it wrote none)."""

    role: str
    command: tuple[str, ...]
    data_dir: Path
    token_file: Path | None = None

    @property
    def name(self) -> str:
        return service_name(self.role)

    def header(self) -> str:
        """The comment lines that start the service file: whose it is and what mke install wrote."""
        lines = [f"{HEADER} {self.role}; `mke uninstall {self.role}` removes this file"
                 + (" and the token file below" if self.token_file else "") + ", never the data dir.",
                 f"{DATA_DIR_KEY}{self.data_dir}"]
        if self.token_file is not None:
            lines.append(f"{TOKEN_FILE_KEY}{self.token_file}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Record:
    """What the header of a service file says mke install wrote."""

    data_dir: Path | None
    token_file: Path | None


def read_record(path: Path, role: str) -> Record | None:
    """The record in ``path``'s header; None when mke install did not write the file. A token
    file is taken only as mke install names it (``<data-dir>/<role>-token``)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    head = [line for line in lines[:6] if line.startswith("#")]
    if not any(line.startswith(f"{HEADER} {role};") for line in head):
        return None
    data_dir = token_file = None
    for line in head:
        if line.startswith(DATA_DIR_KEY):
            data_dir = Path(line[len(DATA_DIR_KEY):])
        elif line.startswith(TOKEN_FILE_KEY):
            token_file = Path(line[len(TOKEN_FILE_KEY):])
    if token_file is not None and (not token_file.is_absolute() or token_file.name != f"{role}-token"
                                   or (data_dir is not None and token_file.parent != data_dir)):
        token_file = None  # not what mke install writes: leave it alone
    return Record(data_dir, token_file)


class InitSystem:
    """A service manager mke can install itself into (one subclass per kind, registered in
    ``mke.service.REGISTRY``)."""

    name: ClassVar[str]  # how a message names it: "systemd", "OpenRC"
    tools: ClassVar[tuple[str, ...]]  # what must be on PATH
    file_mode: ClassVar[int]  # of the service file

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def runs_here(cls, root: Path) -> bool:
        raise NotImplementedError

    def service_file(self, role: str) -> Path:
        raise NotImplementedError

    def render(self, spec: ServiceSpec) -> str:
        raise NotImplementedError

    def check(self, spec: ServiceSpec) -> None:
        """Refuse (UsageError) what this service manager's files cannot carry faithfully."""

    def enable(self, role: str) -> None:
        raise NotImplementedError

    def start(self, role: str) -> None:
        raise NotImplementedError

    def stop(self, role: str) -> None:
        raise NotImplementedError

    def disable(self, role: str) -> None:
        raise NotImplementedError

    def forget(self, role: str) -> None:
        """After the service file is removed (systemd: daemon-reload)."""

    def waits_for_ready(self) -> bool:
        """Whether ``start`` returns only once mke said it is ready."""
        return False

    # -- shared

    def installed_roles(self) -> list[str]:
        return [r for r in ROLES if self.service_file(r).exists()]

    def tool(self, name: str) -> str:
        path = shutil.which(name)
        if path is None:
            raise ServiceError(f"{self.name} runs this host but {name} is not on PATH "
                               f"({os.environ.get('PATH', '')}); put it there and run this again")
        return path

    def require_tools(self) -> None:
        for t in self.tools:
            self.tool(t)

    def run_tool(self, *argv: str, hint: str = "") -> None:
        """Run ``argv`` (its first word found on PATH); a failure is one ServiceError line naming the
        command, its exit status and the last line it said."""
        from mke.procenv import clean_env

        proc = subprocess.run([self.tool(argv[0]), *argv[1:]], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, env=clean_env(), check=False)
        if proc.returncode != 0:
            said = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
            raise ServiceError(f"{' '.join(argv)} failed (exit {proc.returncode})"
                               + (f": {said[-1].strip()}" if said else "") + (f"; {hint}" if hint else ""))
