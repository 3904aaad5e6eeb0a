"""mke/supervisor.py with real child processes (sleep, python)."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from mke.logsink import LogSink
from mke.supervisor import ProcessSpec, Supervisor
from tests.support import logs

SLEEP = shutil.which("sleep") or "/bin/sleep"
PY = sys.executable


def wait_for(pred, timeout: float = 10.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture()
def sink() -> tuple[LogSink, io.StringIO]:
    buf = io.StringIO()
    return LogSink(buf), buf


def make(tmp_path: Path, sink: LogSink, name: str, *args: str, **kw: object) -> Supervisor:
    return Supervisor(ProcessSpec(name=name, args=tuple(args), **kw), run_dir=tmp_path / "run", sink=sink)


def test_start_pidfile_own_group_and_stop(tmp_path: Path, sink) -> None:
    s = make(tmp_path, sink[0], "sleeper", SLEEP, "60")
    s.start()
    try:
        pid = s.pid
        assert pid and alive(pid)
        assert s.pid_file.read_text().split()[0] == str(pid)
        assert os.getpgid(pid) == pid and os.getsid(pid) == pid  # own session and group
        assert s.state() == "running"
    finally:
        s.stop()
    assert not alive(pid)
    assert not s.pid_file.exists()
    assert s.state() == "stopped"
    s.stop()  # again: harmless


def test_output_is_tagged_per_line(tmp_path: Path, sink) -> None:
    # hello is flushed before oops is written: stdout to a pipe is block-buffered unless PYTHONUNBUFFERED
    code = ("import sys; print('hello', flush=True); print('E1128 04:30:00.000001 1 x.go:1] oops', file=sys.stderr, "
            "flush=True); print('debug here', flush=True); import time; time.sleep(30)")
    s = make(tmp_path, sink[0], "talker", PY, "-c", code)
    s.start()
    try:
        wait_for(lambda: "debug here" in sink[1].getvalue())
        got = logs.parse(sink[1].getvalue())
        assert [(g.level, g.tagged) for g in got] == [
            ("info", "[talker] hello"), ("error", "[talker] E1128 04:30:00.000001 1 x.go:1] oops"),
            ("info", "[talker] debug here")]  # each line's level from its format (klog's E: error)
        assert list(s.tail)[:2] == ["hello", "E1128 04:30:00.000001 1 x.go:1] oops"]
    finally:
        s.stop()


def test_restart_with_exponential_backoff(tmp_path: Path, sink) -> None:
    s = make(tmp_path, sink[0], "crasher", PY, "-c", "raise SystemExit(3)", backoff_initial=0.05, backoff_max=0.4)
    s.start()
    try:
        wait_for(lambda: s.restarts >= 5, timeout=20)
    finally:
        s.stop()
    said = [line.text for line in logs.parse(sink[1].getvalue()) if line.level == "warn" and line.tag == "crasher"]
    delays = [float(x) for x in re.findall(r"exited with code 3 after [\d.]+s; restarting in ([\d.]+)s", "\n".join(said))]
    assert delays[:5] == [0.05, 0.1, 0.2, 0.4, 0.4], delays
    assert s.last_exit == 3


def test_kill_9_of_child_restarts_it(tmp_path: Path, sink) -> None:
    s = make(tmp_path, sink[0], "victim", SLEEP, "60", backoff_initial=0.05)
    s.start()
    try:
        first = s.pid
        assert first
        os.kill(first, signal.SIGKILL)
        second = wait_for(lambda: s.pid if s.pid not in (None, first) else None)
        assert alive(second) and s.restarts == 1
        assert s.pid_file.read_text().split()[0] == str(second)
        assert any(line.level == "warn" and line.text.startswith("killed by signal 9 after ")
                   for line in logs.parse(sink[1].getvalue()))
    finally:
        s.stop()


def test_stop_escalates_to_sigkill(tmp_path: Path, sink) -> None:
    code = ("import signal, time, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('armed', flush=True); time.sleep(60)")
    s = make(tmp_path, sink[0], "stubborn", PY, "-c", code, stop_timeout=0.5)
    s.start()
    wait_for(lambda: "armed" in sink[1].getvalue())
    pid = s.pid
    t0 = time.monotonic()
    s.stop()
    took = time.monotonic() - t0
    assert not alive(pid)
    assert 0.4 < took < 5, took


def test_stop_kills_the_whole_process_group(tmp_path: Path, sink) -> None:
    code = (f"import subprocess, time; p = subprocess.Popen([{SLEEP!r}, '60']); print(p.pid, flush=True); "
            "time.sleep(60)")
    s = make(tmp_path, sink[0], "parent", PY, "-c", code)
    s.start()
    grandchild = int(wait_for(lambda: next(iter(s.tail), None)))
    assert alive(grandchild)
    s.stop()
    wait_for(lambda: not alive(grandchild), timeout=3)


def test_stale_process_from_a_killed_mke_is_stopped(tmp_path: Path, sink) -> None:
    old = make(tmp_path, sink[0], "etcd", SLEEP, "60")
    old.start()
    old_pid = old.pid
    assert old_pid
    # mke was kill -9'd: nobody calls old.stop(); a new mke starts the same component.
    new = make(tmp_path, sink[0], "etcd", SLEEP, "60")
    new.start()
    try:
        assert not alive(old_pid)
        assert new.pid != old_pid and alive(new.pid)
        assert f"stopping pid {old_pid} left by an earlier run" in sink[1].getvalue()
    finally:
        new.stop()
        old._stopping.set()


def test_pidfile_of_another_program_is_not_signalled(tmp_path: Path, sink) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "etcd.pid").write_text(f"{os.getpid()}\n")  # a recycled pid: this test process
    s = make(tmp_path, sink[0], "etcd", SLEEP, "60")
    s.start()
    try:
        assert s.running
    finally:
        s.stop()
    assert alive(os.getpid())


def test_a_reused_pid_running_the_same_binary_is_not_signalled(tmp_path: Path, sink) -> None:
    """Pid files survive reboots: a process of the same binary under a recorded pid, but started at
    another time (or in another boot), is somebody else's (issue 14.4)."""
    import subprocess

    from mke.node import process

    other = subprocess.Popen([SLEEP, "60"])  # the same binary the component runs
    try:
        (tmp_path / "run").mkdir()
        started = int(process.start_time(other.pid) or 0)
        (tmp_path / "run" / "etcd.pid").write_text(f"{other.pid} {started + 1} {process.boot_id()}\n")
        assert process.recorded_process(tmp_path / "run" / "etcd.pid") is None
        s = make(tmp_path, sink[0], "etcd", SLEEP, "60")
        s.start()
        try:
            assert s.running and s.pid != other.pid
        finally:
            s.stop()
        assert other.poll() is None  # still running: never signalled
        (tmp_path / "run" / "etcd.pid").write_text(f"{other.pid} {started} another-boot\n")
        assert process.recorded_process(tmp_path / "run" / "etcd.pid") is None
        (tmp_path / "run" / "etcd.pid").write_text(f"{other.pid} {started} {process.boot_id()}\n")
        assert process.recorded_process(tmp_path / "run" / "etcd.pid") == other.pid  # that very process
    finally:
        other.kill()
        other.wait()


def test_child_gets_a_clean_environment(tmp_path: Path, sink, monkeypatch) -> None:
    """What dist/mke's entry set or kept aside (mke/start.py) never reaches a component."""
    monkeypatch.setenv("MKE_EXE_FD", "3")
    monkeypatch.setenv("MKE_ENTRY_SAVED_LD_PRELOAD", "/opt/lib/libx.so")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/lib")
    code = ("import os; print('ENV', os.environ.get('MKE_EXE_FD'), os.environ.get('LD_PRELOAD'), "
            "os.environ.get('LD_LIBRARY_PATH'), os.environ.get('EXTRA'), flush=True)")
    s = Supervisor(ProcessSpec(name="env", args=(PY, "-c", code), env={"EXTRA": "1"}, backoff_initial=30),
                   run_dir=tmp_path / "run", sink=sink[0])
    s.start()
    try:
        line = wait_for(lambda: next((t for t in s.tail if t.startswith("ENV")), None))
    finally:
        s.stop()
    assert line == "ENV None /opt/lib/libx.so /opt/lib 1"


def test_missing_binary_is_a_component_error(tmp_path: Path, sink) -> None:
    from mke.errors import ComponentError

    s = make(tmp_path, sink[0], "ghost", str(tmp_path / "no-such-binary"))
    with pytest.raises(ComponentError, match="ghost: cannot start"):
        s.start()


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a child's user needs root")
def test_a_child_runs_as_the_user_it_is_given_with_no_other_groups(tmp_path: Path, sink) -> None:
    """ProcessSpec.user: the child's real and effective ids are that user's, and it keeps none of
    mke's supplementary groups (etcd as its own user: CIS 1.1.12)."""
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="mke-ids-", dir="/tmp"))  # pytest's tmp dirs are root's 0700
    shared.chmod(0o777)  # the child writes its ids here as nobody
    out = shared / "ids"
    # a host binary: the test's own python may sit below a directory nobody cannot enter
    s = make(tmp_path, sink[0], "ids", "/bin/sh", "-c",
             f"grep -E '^(Uid|Gid|Groups):' /proc/self/status > {out}.tmp && mv {out}.tmp {out}; sleep 60",
             user=(65534, 65533))
    s.start()
    try:
        wait_for(lambda: out.exists())
    finally:
        s.stop()
        text = out.read_text() if out.exists() else ""
        shutil.rmtree(shared)
    fields = {line.split(":")[0]: line.split(":")[1].split() for line in text.splitlines()}
    assert fields == {"Uid": ["65534"] * 4, "Gid": ["65533"] * 4, "Groups": []}
