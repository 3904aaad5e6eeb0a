"""Reading what a LogSink wrote (mke/logsink.py): ``<time> <level> [<tag>] <text>``, every line checked."""

from __future__ import annotations

import re
from dataclasses import dataclass

LINE = re.compile(r"^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<level>debug|info|warn|error) "
                  r"\[(?P<tag>[^\]]+)\] (?P<text>.*)$")


@dataclass(frozen=True)
class LogLine:
    time: str
    level: str
    tag: str
    text: str

    @property
    def tagged(self) -> str:
        """``[tag] text``: the line without its time and level."""
        return f"[{self.tag}] {self.text}"


def parse(text: str) -> list[LogLine]:
    """Every line of ``text``, each of which must be a well-formed log line."""
    out = []
    for line in text.splitlines():
        m = LINE.match(line)
        assert m, f"not a log line (<RFC 3339 time> <level> [<tag>] <text>): {line!r}"
        out.append(LogLine(**m.groupdict()))
    return out


def tagged(text: str) -> list[str]:
    """``[tag] text`` of every line (each checked for its time and level)."""
    return [line.tagged for line in parse(text)]
