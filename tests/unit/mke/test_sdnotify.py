"""mke/node/sdnotify.py and where mke uses it (mke/node/role.py): systemd's notify protocol,
checked against a real AF_UNIX datagram socket each test binds, as a path and as an
``@name`` in the abstract namespace, with the sender's credentials as systemd reads them
(``NotifyAccess=main``: the pid must be mke's own).

The readiness hook is the real one: ``NodeRole.run`` of a real ``Controller`` and a real
``Worker``; only their ``prepare``/``start`` are replaced (no PKI, no binaries, no
components but two stand-ins under the real ComponentManager), since nothing may start here.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mke.components.base import Component
from mke.components.manager import ComponentManager
from mke.errors import ComponentError
from mke.node.sdnotify import Notifier, socket_address
from mke.procenv import clean_env


class Receiver:
    """The service manager's end: a bound datagram socket that records each message's sender pid."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if kind == "path":
            self.env = str(tmp / "notify.sock")
            self.sock.bind(self.env)
        else:
            self.env = f"@mke-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + self.env[1:])
        self.sock.setblocking(False)

    def messages(self) -> list[tuple[str, int]]:
        """Every datagram received so far: (text, sender pid)."""
        out = []
        while True:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except BlockingIOError:
                return out
            pid = next(struct.unpack("iII", d[:12])[0] for level, kind, d in anc
                       if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS)
            out.append((data.decode(), pid))

    def fields(self) -> list[str]:
        msgs = self.messages()
        assert all(pid == os.getpid() for _, pid in msgs), "a message from another process than mke's own"
        return [line for text, _ in msgs for line in text.splitlines()]


@pytest.fixture(params=["path", "abstract"])
def receiver(request, tmp_path: Path, monkeypatch) -> Iterator[Receiver]:
    r = Receiver(request.param, tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", r.env)
    yield r
    r.sock.close()


def test_the_datagram_reaches_a_path_and_an_abstract_socket(receiver: Receiver):
    n = Notifier.from_environ()
    assert n.enabled and "NOTIFY_SOCKET" not in os.environ  # taken: no child inherits it
    assert n.ready("all good")
    assert n.status("two\nlines")  # one STATUS line: the first
    assert n.stopping()
    assert receiver.messages() == [("READY=1\nSTATUS=all good\n", os.getpid()), ("STATUS=two\n", os.getpid()),
                                   ("STOPPING=1\n", os.getpid())]


def test_without_a_socket_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier.from_environ()
    assert not n.enabled and not n.ready() and not n.watchdog() and n.error is None
    assert n.watchdog_interval(5.0) == 5.0


def test_addresses():
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abc") == "\0abc"
    assert socket_address("vsock:2:1234") is None and socket_address("relative/sock") is None
    assert socket_address("@") is None


def test_a_socket_that_is_gone_is_reported_not_raised(tmp_path):
    n = Notifier(str(tmp_path / "gone.sock"))
    assert not n.send("READY=1")
    assert n.error is not None and "gone.sock" in n.error


def test_watchdog_variables_are_taken_and_only_ours_count():
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid()), "PATH": "/bin"}
    n = Notifier.from_environ(env)
    assert env == {"PATH": "/bin"} and n.watchdog_usec == 3_000_000 and n.watchdog_interval(5.0) == 1.5
    other = Notifier.from_environ({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_usec is None  # addressed to another process


def test_children_never_get_the_notify_variables():
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "2", "LISTEN_FDS": "1",
           "PATH": "/bin"}
    assert clean_env(env) == {"PATH": "/bin"}


# --------------------------------------------------------------------------- the readiness hook


class StandIn(Component):
    """A component that is ready at once; ``probe`` runs when the manager asks whether it is."""

    def __init__(self, name: str, probe=None) -> None:
        self.name = name
        self.probe = probe

    def ready(self) -> bool:
        if self.probe:
            self.probe()
        return True


def bring_up_with_stand_ins(role, receiver: Receiver, seen: dict[str, list[str]]) -> None:
    """Replace the role's prepare/start: the data dir's lock, then two stand-ins under the real manager."""

    def start() -> None:
        last = StandIn("last", probe=lambda: seen.setdefault("before-ready", []).extend(receiver.fields()))
        role.manager = ComponentManager([[StandIn("first")], [last]], on_change=role.write_status,
                                        stopping=role.stopping, poll_interval=0.01)
        role.manager.start()

    role.prepare = role.lock_data_dir
    role.start = start


def run_until_ready(role, receiver: Receiver) -> tuple[dict[str, list[str]], list[str]]:
    seen: dict[str, list[str]] = {}
    bring_up_with_stand_ins(role, receiver, seen)

    def on_ready(_role) -> None:
        seen["at-on-ready"] = receiver.fields()
        role.stopping.set()

    role.run(on_ready=on_ready)
    return seen, seen["before-ready"] + seen["at-on-ready"] + receiver.fields()


def test_the_controller_says_ready_once_its_control_plane_is(receiver: Receiver, tmp_path):
    from mke.config import default_config
    from mke.controller import Controller

    ctl = Controller(default_config(), data_dir=tmp_path / "data", name="ctl-1")
    seen, fields = run_until_ready(ctl, receiver)
    assert "READY=1" not in seen["before-ready"] + seen["at-on-ready"]  # not while starting, not before on_ready
    assert fields[0] == "STATUS=starting the controller"
    assert "STATUS=starting: 1 of 2 components ready; waiting for last" in fields
    ready = fields.index("READY=1")
    assert fields[ready + 1] == f"STATUS=control plane ready; API https://{ctl.ctx.api_address}:6443"
    assert fields[ready + 2:] == ["STOPPING=1", "STATUS=stopping"]
    assert "NOTIFY_SOCKET" not in os.environ


def test_the_worker_says_ready_once_its_node_is(receiver: Receiver, tmp_path):
    from mke.worker.context import WorkerOptions
    from mke.worker.node import Worker

    w = Worker(data_dir=tmp_path / "data", options=WorkerOptions(node_name="w1"), say=lambda m: None)
    seen, fields = run_until_ready(w, receiver)
    assert "READY=1" not in seen["before-ready"] + seen["at-on-ready"]
    ready = fields.index("READY=1")
    assert fields[ready + 1] == "STATUS=node w1 Ready"
    assert fields[-2:] == ["STOPPING=1", "STATUS=stopping"]


def test_a_failed_start_says_why_and_never_ready(receiver: Receiver, tmp_path):
    from mke.worker.context import WorkerOptions
    from mke.worker.node import Worker

    w = Worker(data_dir=tmp_path / "data", options=WorkerOptions(node_name="w1"), say=lambda m: None)
    w.prepare = w.lock_data_dir

    def start() -> None:
        raise ComponentError("kubelet did not become ready: exited 1")

    w.start = start
    with pytest.raises(ComponentError):
        w.run()
    fields = receiver.fields()
    assert "READY=1" not in fields
    assert fields[-2:] == ["STOPPING=1", "STATUS=failed: kubelet did not become ready: exited 1"]


def test_the_watchdog_is_fed_while_running(receiver: Receiver, tmp_path, monkeypatch):
    from mke.worker.context import WorkerOptions
    from mke.worker.node import Worker

    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # WatchdogSec=0.1s: fed every 0.05 s
    w = Worker(data_dir=tmp_path / "data", options=WorkerOptions(node_name="w1"), say=lambda m: None)
    bring_up_with_stand_ins(w, receiver, {})
    w.run(on_ready=lambda _w: threading.Timer(0.4, w.stopping.set).start())
    assert receiver.fields().count("WATCHDOG=1") >= 3


def test_a_role_inside_another_says_nothing(receiver: Receiver, tmp_path):
    """The controller's embedded worker is brought up, never run(): only the process's own role speaks."""
    from mke.worker.context import WorkerOptions
    from mke.worker.node import Worker

    w = Worker(data_dir=tmp_path / "data", options=WorkerOptions(node_name="w1"), say=lambda m: None)
    bring_up_with_stand_ins(w, receiver, {})
    w.bring_up()
    w.stop()
    assert receiver.fields() == [] and os.environ.get("NOTIFY_SOCKET") == receiver.env
