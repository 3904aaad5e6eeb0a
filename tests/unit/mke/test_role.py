"""mke/node/role.py: a role's log goes to <data-dir>/logs once it owns the data dir, says its notes and
the signal that stopped it, and leaves nothing in the data dir when it never got that far."""

from __future__ import annotations

import io
import signal
import stat

from mke.commands import stop_on_signals
from mke.logsink import LogSink, Rotation
from mke.node.role import NodeRole
from tests.support import logs


class Role(NodeRole):
    role = "test"
    tick_every = 0.01

    def __init__(self, data_dir, sink, *, fail_before_lock: bool = False) -> None:
        super().__init__(data_dir, sink)
        self.fail_before_lock = fail_before_lock

    def prepare(self) -> None:
        self.say("checking the token")
        if self.fail_before_lock:
            raise RuntimeError("bad token")
        self.lock_data_dir()
        self.say("prepared")

    def start(self) -> None:
        self.sink.output("kubelet", ["W1128 04:30:00.000000 1 x.go:1] slow"])


def test_the_log_files_start_with_the_lock_and_tell_the_whole_start(tmp_path):
    buf = io.StringIO()
    data = tmp_path / "data"
    role = Role(data, LogSink(buf, level="warn", rotation=Rotation()))
    role.notes.append("sysinfo: WARN swap: on")
    stop_on_signals(role.stopping, role.signals)
    try:
        def ready(r: Role) -> None:
            signal.raise_signal(signal.SIGTERM)  # the handler only records it; the role says it when it stops

        role.run(on_ready=ready)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    d = data / "logs"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert [(x.level, x.tagged) for x in logs.parse((d / "mke.log").read_text())] == [
        ("info", "[mke] checking the token"),  # said before the data dir was ours: kept, then written first
        ("warn", "[mke] sysinfo: WARN swap: on"),
        ("info", "[mke] prepared"),
        ("info", "[mke] SIGTERM: stopping"),
    ]
    assert logs.tagged((d / "kubelet.log").read_text()) == ["[kubelet] W1128 04:30:00.000000 1 x.go:1] slow"]
    # stderr: --log-level warn
    assert logs.tagged(buf.getvalue()) == ["[mke] sysinfo: WARN swap: on", "[kubelet] W1128 04:30:00.000000 1 x.go:1] slow"]
    assert role.sink.logs_dir is None  # closed at stop


def test_a_start_refused_before_the_lock_writes_nothing(tmp_path):
    data = tmp_path / "data"
    role = Role(data, LogSink(io.StringIO(), rotation=Rotation()), fail_before_lock=True)
    try:
        role.run()
    except RuntimeError:
        pass
    assert not data.exists()


def test_a_second_role_on_the_same_sink_writes_into_the_first_ones_logs(tmp_path):
    """mke server --enable-worker: the worker (in <data-dir>/node) shares the server's sink and files."""
    sink = LogSink(io.StringIO(), rotation=Rotation())
    server = Role(tmp_path / "data", sink)
    server.prepare()
    worker = Role(tmp_path / "data" / "node", sink)
    worker.prepare()
    assert not (tmp_path / "data" / "node" / "logs").exists()
    worker.stop()
    assert sink.logs_dir == tmp_path / "data" / "logs"  # the worker did not close the server's files
    server.stop()
    assert sink.logs_dir is None
    assert logs.tagged((tmp_path / "data" / "logs" / "mke.log").read_text()).count("[mke] prepared") == 2
