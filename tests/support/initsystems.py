"""Stand-ins for the service managers mke installs itself into (mke/service/), for unit tests:
no systemd or OpenRC runs where they run, so

- ``Host`` makes a directory that stands for ``/`` (``$MKE_INIT_ROOT``) with the marks of
  systemd (``run/systemd/system``) or OpenRC (``run/openrc``), and fake ``systemctl``,
  ``rc-service`` and ``rc-update`` scripts first on ``PATH`` that only record their argv;
- ``exec_start_argv`` reads a unit's ``ExecStart=`` back as systemd does (specifiers, quotes,
  C escapes, ``$$``), refusing what systemd would expand or reject;
- ``openrc_argv`` asks a real ``sh`` what openrc-run's ``eval`` makes of a script's
  ``command`` and ``command_args`` (as sh/supervise-daemon.sh passes them).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

TOOLS = ("systemctl", "rc-service", "rc-update")


@dataclass
class Host:
    root: Path  # stands for /
    bin: Path  # the fake tools
    log: Path  # one line per call: the tool's name and its arguments

    @classmethod
    def make(cls, tmp: Path, kind: str | None) -> Host:
        """``kind``: "systemd", "openrc" or None (neither runs)."""
        root, bin_dir = tmp / "root", tmp / "fake-bin"
        root.mkdir()
        bin_dir.mkdir()
        if kind == "systemd":
            (root / "run/systemd/system").mkdir(parents=True)
        elif kind == "openrc":
            (root / "run/openrc").mkdir(parents=True)
            (root / "etc/runlevels/default").mkdir(parents=True)
        host = cls(root, bin_dir, tmp / "calls.log")
        for tool in TOOLS:
            host.fake(tool)
        return host

    def fake(self, tool: str, *, exit_code: int = 0, says: str = "") -> None:
        """(Re)write the fake ``tool``: records its argv, says ``says`` on stderr, exits ``exit_code``."""
        p = self.bin / tool
        p.write_text("#!/bin/sh\n"
                     f"# A fake {tool}: no service manager runs in the unit tests; it records its argv.\n"
                     f"echo \"{tool} $*\" >> '{self.log}'\n"
                     + (f"echo '{says}' >&2\n" if says else "")
                     + f"exit {exit_code}\n")
        p.chmod(0o755)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def env(self) -> dict[str, str]:
        """``PATH`` holds only the fakes: the host's own systemctl must never run in a test."""
        return {"MKE_INIT_ROOT": str(self.root), "PATH": str(self.bin)}


_C_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r", "s": " ", "a": "\a", "b": "\b",
              "f": "\f", "v": "\v"}


def exec_start_argv(unit: str) -> list[str]:
    """The argv systemd runs for the unit's one ``ExecStart=`` line (systemd.service(5), "Command
    lines"): ``%%`` is ``%`` (any other specifier is refused here), words are split on blanks with
    single or double quotes and C escapes, and ``$$`` is ``$`` (a variable would be expanded:
    refused here)."""
    lines = [line for line in unit.split("\n") if line.startswith("ExecStart=")]
    assert len(lines) == 1, lines
    value = lines[0][len("ExecStart="):]
    assert not value.endswith("\\"), "a continued line"

    def specifier(m: re.Match[str]) -> str:
        assert m.group(1) == "%", f"specifier %{m.group(1)} would be expanded"
        return "%"

    value = re.sub(r"%(.)", specifier, value)
    words: list[str] = []
    i, n = 0, len(value)
    while True:
        while i < n and value[i] in " \t":
            i += 1
        if i >= n:
            break
        word, quote = [], None
        while i < n and (quote or value[i] not in " \t"):
            c = value[i]
            if c == "\\":
                e = value[i + 1]
                if e == "x":
                    word.append(chr(int(value[i + 2:i + 4], 16)))
                    i += 4
                    continue
                assert e in _C_ESCAPES, f"escape \\{e}"
                word.append(_C_ESCAPES[e])
                i += 2
            elif quote and c == quote:
                quote = None
                i += 1
            elif not quote and c in "\"'":
                quote = c
                i += 1
            else:
                word.append(c)
                i += 1
        assert quote is None, f"unbalanced quoting in {value!r}"
        words.append("".join(word))

    def dollar(m: re.Match[str]) -> str:
        assert m.group(0) == "$$", f"{m.group(0)} would be expanded"
        return "$"

    return [re.sub(r"\$(\$|\{?\w*)", dollar, w) for w in words]


def openrc_argv(script: Path) -> list[str]:
    """The argv supervise-daemon gets for the script: ``eval ... $command -- $command_args`` run by
    sh, from ``/`` (openrc-run's working directory)."""
    code = 'show() { for a; do printf "%s\\0" "$a"; done; }; . "$1"; eval show $command -- $command_args'
    out = subprocess.run(["/bin/sh", "-c", code, "sh", str(script)], cwd="/", capture_output=True, check=True).stdout
    return out.decode().split("\0")[:-1]
