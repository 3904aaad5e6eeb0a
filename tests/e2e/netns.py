"""Test hosts as network namespaces on one machine.

A "switch" namespace holds a Linux bridge; every host (controller, workers, and the test
client) is a namespace with a veth pair into the switch and its own address in
``10.200.0.0/24``. Nothing touches the machine's own network namespace, and no packet
leaves the machine. Each host gets a default route to an address nobody has, so
components that look for "the default interface" find one, while traffic to the
outside goes nowhere.

Processes run with ``nsenter --net=/run/netns/<name>``: only the network namespace
changes, so their mounts live in the machine's mount namespace, where ``mke reset`` can
find and remove them (``ip netns exec`` would hide them in a private mount namespace).
The test process itself enters the client namespace (``enter``: setns on the calling
thread) so that the Kubernetes client's sockets reach the API.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from dataclasses import dataclass, field
from typing import Any

CLONE_NEWNET = 0x40000000
PREFIX = "mke-e2e-"
SUBNET = "10.200.0"
GATEWAY = f"{SUBNET}.254"  # nobody has it: the default route leads nowhere


def ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc


@dataclass
class Host:
    name: str  # short name, e.g. "ctl"
    address: str
    bare: Any = None  # a tests.e2e.bareroot.BareRoot: the host's own mount namespace and root
    prefix: str = PREFIX

    @property
    def netns(self) -> str:
        return self.prefix + self.name

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` run in this host: its network namespace, and its bare root when it has one."""
        if self.bare is not None:
            return self.bare.wrap(argv)
        return ["nsenter", f"--net=/run/netns/{self.netns}", "--", *argv]


@dataclass
class Network:
    """Hosts named ``<prefix><name>``; a test that runs beside the e2e cluster picks its own prefix."""

    hosts: dict[str, Host] = field(default_factory=dict)
    prefix: str = PREFIX

    @property
    def switch(self) -> str:
        return self.prefix + "switch"

    def add(self, name: str, index: int) -> Host:
        h = Host(name=name, address=f"{SUBNET}.{index}", prefix=self.prefix)
        ns = h.netns
        ip("netns", "add", ns)
        veth_host, veth_sw = "eth0", f"v-{name}"[:15]
        ip("link", "add", veth_host, "netns", ns, "type", "veth", "peer", "name", veth_sw, "netns", self.switch)
        ip("link", "set", veth_sw, "master", "br0", "up", ns=self.switch)
        ip("addr", "add", f"{h.address}/24", "dev", veth_host, ns=ns)
        ip("link", "set", "lo", "up", ns=ns)
        ip("link", "set", veth_host, "up", ns=ns)
        ip("route", "add", "default", "via", GATEWAY, ns=ns)
        self.hosts[name] = h
        return h

    def create(self, names: list[str]) -> Network:
        self.destroy()  # leftovers of an interrupted run
        ip("netns", "add", self.switch)
        ip("link", "add", "br0", "type", "bridge", ns=self.switch)
        ip("link", "set", "br0", "up", ns=self.switch)
        for i, n in enumerate(names, start=1):
            self.add(n, i)
        return self

    def destroy(self) -> None:
        existing = ip("netns", "list", check=False).stdout.split()
        for ns in existing:
            if ns.startswith(self.prefix):
                ip("netns", "delete", ns, check=False)


class InNetns(contextlib.AbstractContextManager):
    """Move the calling thread into a named network namespace, and back on exit."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._home: int | None = None

    def _setns(self, fd: int) -> None:
        if self._libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns: {os.strerror(err)}")

    def __enter__(self) -> InNetns:
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        fd = os.open(f"/run/netns/{self.netns}", os.O_RDONLY)
        try:
            self._setns(fd)
        finally:
            os.close(fd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._home is not None:
            self._setns(self._home)
            os.close(self._home)
            self._home = None
