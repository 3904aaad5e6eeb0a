"""Tell the service manager how mke is doing: systemd's notify protocol (sd_notify(3)).

A service of ``Type=notify`` gets ``$NOTIFY_SOCKET``: an ``AF_UNIX`` datagram socket, a
path (``/run/systemd/notify``) or, starting with ``@``, a name in the abstract namespace.
Each datagram is newline-separated ``KEY=VALUE`` lines: ``READY=1`` (start-up finished:
``systemctl start`` returns), ``STATUS=...`` (one line that ``systemctl status`` shows),
``STOPPING=1``, ``WATCHDOG=1``. systemd reads the sender's pid from the socket's
credentials: the unit mke install writes has ``NotifyAccess=main``, so only mke's own
process is heard, never a component it starts (containerd sends its own ``READY=1`` when
it finds the variable). ``mke.procenv.clean_env`` keeps these variables from children,
and ``Notifier.from_environ`` takes them out of mke's own environment too.

Without ``$NOTIFY_SOCKET`` (not started by systemd, or by OpenRC) every call is a no-op.
A message that cannot be sent is reported by ``send`` returning False; mke goes on.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"
#: What the service manager addresses to mke's own process; no child of mke may inherit them.
ENV_NAMES = (SOCKET_ENV, WATCHDOG_USEC_ENV, WATCHDOG_PID_ENV)


def socket_address(value: str) -> str | None:
    """The ``AF_UNIX`` address of a ``$NOTIFY_SOCKET`` value: a path, or ``@name`` in the
    abstract namespace (a leading NUL); None for what this module does not speak (``vsock:``,
    a relative path)."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


class Notifier:
    """Where this process's notifications go (``address`` None: nowhere, every call a no-op)."""

    def __init__(self, address: str | None = None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self.error: str | None = None  # the last send that failed: why

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None, *, take: bool = True) -> Notifier:
        """The notifier ``environ`` (default: os.environ) names; with ``take`` the variables are
        removed from it (sd_notify's ``unset_environment``), so that nothing mke starts later sees
        them. A watchdog addressed to another pid (``$WATCHDOG_PID``) is not ours."""
        env = os.environ if environ is None else environ
        value = env.get(SOCKET_ENV, "")
        usec_text, pid_text = env.get(WATCHDOG_USEC_ENV, ""), env.get(WATCHDOG_PID_ENV, "")
        if take:
            for name in ENV_NAMES:
                env.pop(name, None)
        usec = int(usec_text) if usec_text.isdigit() and int(usec_text) > 0 else None
        if pid_text and pid_text != str(os.getpid()):
            usec = None
        return cls(socket_address(value) if value else None, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields in one datagram; True when it went out (False: no socket, or
        it failed, and ``error`` says why). A field holds no newline: a STATUS keeps its first line."""
        if self.address is None or not fields:
            return False
        lines = [f.splitlines()[0] if f.splitlines() else f for f in fields]
        data = ("\n".join(lines) + "\n").encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(data, self.address)
        except OSError as e:
            shown = self.address.replace("\0", "@", 1)
            self.error = f"${SOCKET_ENV} {shown}: {e.strerror or e}"
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.watchdog_usec is not None and self.send("WATCHDOG=1")

    def watchdog_interval(self, default: float) -> float:
        """How long to wait between two ``WATCHDOG=1`` at most: half the service's
        ``WatchdogSec=`` (as sd_watchdog_enabled(3) advises), or ``default`` without one."""
        if self.watchdog_usec is None:
            return default
        return min(default, self.watchdog_usec / 2e6)
