"""OpenRC: ``/etc/init.d/mke-<role>``, an openrc-run script under supervise-daemon, driven with
``rc-service`` and ``rc-update`` (Alpine, Gentoo, Artix).

supervise-daemon keeps mke running (``respawn_delay=5``, ``respawn_max=0``: no limit), sends
SIGTERM to mke alone on stop (``retry``: SIGKILL after 60 s), and writes its stdout and
stderr to ``/var/log/mke-<role>.log``. OpenRC has no readiness protocol that every version
speaks, so ``rc-service mke-<role> start`` returns once mke runs, not once it is ready
(``mke status`` tells).

openrc-run passes ``command_args`` through ``eval`` after splitting it on blanks
(supervise-daemon.sh), so the script holds each argument shell-quoted inside one quoted
string. That round trip keeps every argument but those with a control character (a tab or
newline) or two spaces in a row, which ``check`` refuses; the executable's path must be
plain too. (The first split also expands ``*``, ``?`` and ``[`` against the working
directory, ``/``: a pattern that still holds its quote characters matches nothing there.)
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

from mke.errors import UsageError
from mke.service.base import InitSystem, ServiceSpec

_PLAIN_PATH = re.compile(r"/[A-Za-z0-9_@%+=:,./-]+")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]| {2}")
RUNLEVEL = "default"


def log_file(role: str) -> Path:
    return Path("/var/log") / f"mke-{role}.log"


class OpenRC(InitSystem):
    name = "OpenRC"
    tools = ("rc-service", "rc-update")
    file_mode = 0o700  # a script: executable, by root only

    @classmethod
    def runs_here(cls, root: Path) -> bool:
        return (root / "run/openrc").is_dir() or shutil.which("openrc-run") is not None

    def service_file(self, role: str) -> Path:
        return self.root / "etc/init.d" / f"mke-{role}"

    def check(self, spec: ServiceSpec) -> None:
        exe, *args = spec.command
        if not _PLAIN_PATH.fullmatch(exe):
            raise UsageError(f"the mke executable {exe!r}: OpenRC's scripts need a path of letters, digits and "
                             "_@%+=:,./- only; put mke in /usr/local/bin and run it from there")
        for a in args:
            if _UNSAFE.search(a):
                raise UsageError(f"{a!r}: OpenRC passes arguments through its shell once more, which would change "
                                 "one with a tab, a newline or two spaces in a row")

    def render(self, spec: ServiceSpec) -> str:
        exe, *args = spec.command
        what = "Kubernetes control plane" if spec.role == "controller" else "Kubernetes node"
        log = log_file(spec.role)
        return (
            "#!/sbin/openrc-run\n"
            + spec.header()
            + "\n"
            f"description={shlex.quote(f'mke {spec.role} ({what})')}\n"
            "supervisor=supervise-daemon\n"
            f"command={exe}\n"
            f"command_args={shlex.quote(' '.join(shlex.quote(a) for a in args))}\n"
            f"output_log={log}\n"
            f"error_log={log}\n"
            "respawn_delay=5\n"
            "respawn_max=0\n"
            "retry=TERM/60/KILL/5\n"
            "rc_ulimit='-n 1048576 -u unlimited -c unlimited'\n"
            "\n"
            "depend() {\n"
            "\tneed localmount\n"
            "\tafter net firewall\n"
            "\twant cgroups\n"
            "}\n"
        )

    def enable(self, role: str) -> None:
        self.run_tool("rc-update", "add", f"mke-{role}", RUNLEVEL)

    def start(self, role: str) -> None:
        self.run_tool("rc-service", f"mke-{role}", "start", hint=f"{log_file(role)} shows why")

    def stop(self, role: str) -> None:
        self.run_tool("rc-service", f"mke-{role}", "stop")

    def runlevels(self, role: str) -> list[str]:
        """The runlevels that start mke-<role> (their links in /etc/runlevels)."""
        levels = self.root / "etc/runlevels"
        if not levels.is_dir():
            return []
        return sorted(d.name for d in levels.iterdir() if (d / f"mke-{role}").is_symlink()
                      or (d / f"mke-{role}").exists())

    def disable(self, role: str) -> None:
        levels = self.runlevels(role)
        if levels:  # rc-update fails on a service that is in no runlevel
            self.run_tool("rc-update", "del", f"mke-{role}", *levels)


INIT_SYSTEM = OpenRC
