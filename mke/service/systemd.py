"""systemd: ``/etc/systemd/system/mke-<role>.service``, driven with ``systemctl``.

The unit is ``Type=notify`` with ``NotifyAccess=main``: ``systemctl start`` returns once
mke itself sends ``READY=1`` (mke/node/sdnotify.py: a controller when its control plane is
ready, a worker when its node is Ready), and only mke's own process is heard, never a
component it starts (containerd would say READY=1 for itself). ``KillMode=process``: a
stop sends SIGTERM to mke alone, which stops its components in order; containers keep
running across a restart, as with k3s and k0s. ``Delegate=yes`` leaves the cgroups below
to kubelet and containerd. ``TimeoutStartSec=0``: a first start stages binaries and
imports images, and mke fails a component that does not become ready by itself.
"""

from __future__ import annotations

import string
from pathlib import Path

from mke.service.base import InitSystem, ServiceSpec

_SAFE = frozenset(string.ascii_letters + string.digits + "_@%+=:,./-")


def quote(word: str) -> str:
    """One word of ``ExecStart=`` that systemd reads back as ``word``: ``%`` and ``$`` doubled
    (specifiers and environment variables are expanded in every word), and, unless the word is
    only ``[A-Za-z0-9_@%+=:,./-]``, double quotes with C escapes for ``\\``, ``"`` and control
    characters (systemd.service(5), "Command lines")."""
    word = word.replace("%", "%%").replace("$", "$$")
    if word and all(c in _SAFE for c in word):
        return word
    out = []
    for c in word:
        if c in '\\"':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


class Systemd(InitSystem):
    name = "systemd"
    tools = ("systemctl",)
    file_mode = 0o600  # CIS 4.1.1: the kubelet service file 0600

    @classmethod
    def runs_here(cls, root: Path) -> bool:
        return (root / "run/systemd/system").is_dir()  # sd_booted(3)

    def service_file(self, role: str) -> Path:
        return self.root / "etc/systemd/system" / f"mke-{role}.service"

    def render(self, spec: ServiceSpec) -> str:
        what = "Kubernetes control plane" if spec.role == "controller" else "Kubernetes node"
        return (
            spec.header()
            + "\n[Unit]\n"
            f"Description=mke {spec.role} ({what})\n"
            "Wants=network-online.target\n"
            "After=network-online.target\n\n"
            "[Service]\n"
            "Type=notify\n"
            "NotifyAccess=main\n"
            f"ExecStart={' '.join(quote(w) for w in spec.command)}\n"
            "Restart=always\n"
            "RestartSec=5\n"
            "KillMode=process\n"
            "Delegate=yes\n"
            "LimitNOFILE=1048576\n"
            "LimitNPROC=infinity\n"
            "LimitCORE=infinity\n"
            "TasksMax=infinity\n"
            "TimeoutStartSec=0\n"
            "TimeoutStopSec=60\n\n"
            "[Install]\n"
            "WantedBy=multi-user.target\n"
        )

    def unit(self, role: str) -> str:
        return f"mke-{role}.service"

    def enable(self, role: str) -> None:
        self.run_tool("systemctl", "daemon-reload")
        self.run_tool("systemctl", "enable", self.unit(role))

    def start(self, role: str) -> None:
        self.run_tool("systemctl", "start", self.unit(role),
                      hint=f"journalctl -u {self.unit(role)} shows why")

    def stop(self, role: str) -> None:
        self.run_tool("systemctl", "stop", self.unit(role))

    def disable(self, role: str) -> None:
        self.run_tool("systemctl", "disable", self.unit(role))

    def forget(self, role: str) -> None:
        self.run_tool("systemctl", "daemon-reload")

    def waits_for_ready(self) -> bool:
        return True


INIT_SYSTEM = Systemd
