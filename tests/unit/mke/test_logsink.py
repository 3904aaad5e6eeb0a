"""mke/logsink.py: the line format, levels (given and detected), the stderr filter, per-component
files with rotation that neither loses nor interleaves lines."""

from __future__ import annotations

import io
import os
import stat
import threading
from pathlib import Path

import pytest

from mke.logsink import LogSink, RotatingLogFile, Rotation, detect_level, file_name, timestamp
from tests.support import logs

T = 1795840200.1234  # 2026-11-28T04:30:00.123Z


@pytest.mark.parametrize("line,level", [
    # klog: Kubernetes, konnectivity, kube-router
    ("I1128 04:30:00.120001    4242 controller.go:615] quota admission added evaluator", "info"),
    ("W1128 04:30:00.120001    4242 reflector.go:561] failed to list", "warn"),
    ("E1128 04:30:00.120001    4242 run.go:72] \"command failed\" err=\"x\"", "error"),
    ("F1128 04:30:00.120001    4242 server.go:1] cannot start", "error"),
    # logrus text: containerd, kine
    ('time="2026-11-28T04:30:00.120001Z" level=info msg="loading plugin"', "info"),
    ('time="2026-11-28T04:30:00Z" level=warning msg="failed to load plugin"', "warn"),
    ('time="2026-11-28T04:30:00Z" level=error msg="failed to pull"', "error"),
    ('time="2026-11-28T04:30:00Z" level=debug msg="event published"', "debug"),
    ('time="2026-11-28T04:30:00Z" level=trace msg="x"', "debug"),
    ('time="2026-11-28T04:30:00Z" level=fatal msg="x"', "error"),
    ('level="warn" msg="quoted"', "warn"),
    # zap JSON: etcd
    ('{"level":"warn","ts":"2026-11-28T04:30:00.120Z","caller":"etcdserver/x.go:1","msg":"slow fdatasync"}', "warn"),
    ('{"level":"info","ts":"2026-11-28T04:30:00.120Z","msg":"serving client traffic"}', "info"),
    ('{"level": "error", "msg": "x"}', "error"),
    ('{"level":"debug","msg":"x"}', "debug"),
    ('{"level":"panic","msg":"x"}', "error"),
    # a Go program dying
    ("panic: runtime error: invalid memory address", "error"),
    ("fatal error: concurrent map writes", "error"),
    # nothing that says a level
    ("Flag --foo has been deprecated", "info"),
    ("", "info"),
    ("I am not klog", "info"),
    ("W112 three digits", "info"),
    ("W11280 five digits", "info"),
    ("a level=warninger word, and sublevel=error", "info"),
    ('not json but "level":"error" inside', "info"),
    ("  goroutine 1 [running]:", "info"),
])
def test_detect_level(line, level):
    assert detect_level(line) == level


def test_timestamp_is_rfc3339_utc_with_milliseconds():
    assert timestamp(T) == "2026-11-28T04:30:00.123Z"
    assert timestamp(0.9999) == "1970-01-01T00:00:00.999Z"


def test_line_format_given_and_detected_levels():
    buf = io.StringIO()
    sink = LogSink(buf, clock=lambda: T)
    sink.line("mke", "node w1 Ready")
    sink.line("pki", "renewal check failed: x", level="error")
    sink.lines("bridge", ["a", "b"], level="warn")
    sink.output("etcd", ['{"level":"warn","msg":"slow"}', "plain"])
    assert buf.getvalue().splitlines() == [
        "2026-11-28T04:30:00.123Z info [mke] node w1 Ready",
        "2026-11-28T04:30:00.123Z error [pki] renewal check failed: x",
        "2026-11-28T04:30:00.123Z warn [bridge] a",
        "2026-11-28T04:30:00.123Z warn [bridge] b",
        '2026-11-28T04:30:00.123Z warn [etcd] {"level":"warn","msg":"slow"}',
        "2026-11-28T04:30:00.123Z info [etcd] plain",
    ]
    assert [line.level for line in logs.parse(buf.getvalue())] == ["info", "error", "warn", "warn", "warn", "info"]


@pytest.mark.parametrize("level,shown", [("debug", ["debug", "info", "warn", "error"]), ("info", ["info", "warn", "error"]),
                                         ("warn", ["warn", "error"]), ("error", ["error"])])
def test_the_level_filters_stderr_but_files_get_everything(tmp_path, level, shown):
    buf = io.StringIO()
    sink = LogSink(buf, level=level, rotation=Rotation())
    sink.open_files(tmp_path / "logs")
    for lv in ("debug", "info", "warn", "error"):
        sink.line("c", f"a {lv} line", level=lv)
    sink.output("c", ["I1128 04:30:00.000000 1 x.go:1] klog info", "E1128 04:30:00.000000 1 x.go:1] klog error"])
    assert [line.level for line in logs.parse(buf.getvalue())] == [*shown, *[lv for lv in ("info", "error") if lv in shown]]
    in_file = logs.parse((tmp_path / "logs" / "c.log").read_text())
    assert [line.level for line in in_file] == ["debug", "info", "warn", "error", "info", "error"]


def test_unknown_level_is_refused():
    with pytest.raises(ValueError, match="log level 'verbose'"):
        LogSink(level="verbose")


def test_files_are_private_and_per_component(tmp_path):
    sink = LogSink(io.StringIO(), rotation=Rotation())
    d = tmp_path / "data" / "logs"
    assert sink.open_files(d)
    sink.line("kube-apiserver", "x")
    sink.line("mke", "y")
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert sorted(p.name for p in d.iterdir()) == ["kube-apiserver.log", "mke.log"]
    for p in d.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert logs.tagged((d / "kube-apiserver.log").read_text()) == ["[kube-apiserver] x"]


def test_an_existing_file_is_appended_to_and_made_private(tmp_path):
    d = tmp_path / "logs"
    d.mkdir(mode=0o755)
    (d / "etcd.log").write_text("2026-11-28T04:30:00.123Z info [etcd] from the last run\n")
    os.chmod(d / "etcd.log", 0o644)
    sink = LogSink(io.StringIO(), rotation=Rotation(), clock=lambda: T)
    sink.open_files(d)
    sink.line("etcd", "this run")
    assert logs.tagged((d / "etcd.log").read_text()) == ["[etcd] from the last run", "[etcd] this run"]
    assert stat.S_IMODE((d / "etcd.log").stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_lines_said_before_the_data_dir_is_ours_go_to_the_files_first(tmp_path):
    buf = io.StringIO()
    sink = LogSink(buf, level="warn", rotation=Rotation())
    sink.line("mke", "checking the token")  # below the stderr level: kept for the file all the same
    sink.line("mke", "no worker settings", level="warn")
    assert not (tmp_path / "logs").exists()
    assert sink.open_files(tmp_path / "logs")
    sink.line("mke", "joined")
    assert logs.tagged((tmp_path / "logs" / "mke.log").read_text()) == [
        "[mke] checking the token", "[mke] no worker settings", "[mke] joined"]
    assert logs.tagged(buf.getvalue()) == ["[mke] no worker settings"]
    assert not sink.open_files(tmp_path / "other")  # open already: the embedded worker shares the server's files
    assert not (tmp_path / "other").exists()


def test_without_rotation_there_are_no_files_and_nothing_is_kept(tmp_path):
    sink = LogSink(io.StringIO())
    sink.line("mke", "x")
    assert not sink.open_files(tmp_path / "logs")
    assert not (tmp_path / "logs").exists()


def test_close_files_then_stderr_only(tmp_path):
    buf = io.StringIO()
    sink = LogSink(buf, rotation=Rotation())
    sink.open_files(tmp_path / "logs")
    sink.line("mke", "one")
    sink.close_files()
    sink.line("mke", "two")
    assert logs.tagged((tmp_path / "logs" / "mke.log").read_text()) == ["[mke] one"]
    assert logs.tagged(buf.getvalue()) == ["[mke] one", "[mke] two"]


@pytest.mark.parametrize("tag,name", [("kube-apiserver", "kube-apiserver.log"), ("../../etc/passwd", "_.._etc_passwd.log"),
                                      ("a b/c", "a_b_c.log"), ("..", "_.log"), ("", "_.log")])
def test_file_names_never_leave_the_logs_dir(tag, name):
    assert file_name(tag) == name


def test_rotation_keeps_n_files_and_whole_lines(tmp_path):
    f = RotatingLogFile(tmp_path / "c.log", Rotation(max_bytes=100, max_files=3))
    lines = [f"line {i:03d} {'x' * 20}\n".encode() for i in range(40)]  # 30 bytes each: 3 per file
    for i in range(0, 40, 2):
        f.write(lines[i:i + 2])
    f.close()
    files = [tmp_path / "c.log", *(tmp_path / f"c.log.{n}" for n in (1, 2, 3))]
    assert not (tmp_path / "c.log.4").exists()
    for p in files:
        assert p.stat().st_size <= 100 and p.read_bytes().endswith(b"\n")
    kept = b"".join(p.read_bytes() for p in reversed(files))
    assert kept == b"".join(lines[-len(kept) // 30:])  # the newest lines, in order, none cut
    assert len(kept) // 30 >= 3 * 3 + 1


def test_a_line_longer_than_the_limit_gets_a_file_of_its_own(tmp_path):
    f = RotatingLogFile(tmp_path / "c.log", Rotation(max_bytes=10, max_files=2))
    f.write([b"short\n", b"a line far longer than ten bytes\n", b"next\n"])
    f.close()
    assert (tmp_path / "c.log.2").read_bytes() == b"short\n"
    assert (tmp_path / "c.log.1").read_bytes() == b"a line far longer than ten bytes\n"
    assert (tmp_path / "c.log").read_bytes() == b"next\n"


def test_threads_writing_through_rotations_lose_and_interleave_nothing(tmp_path):
    """8 threads, 300 blocks of 3 lines each, into one component's file rotating every ~2 KiB:
    every line is in the files exactly once, and each block's lines stay together and in order."""
    sink = LogSink(io.StringIO(), level="error", rotation=Rotation(max_bytes=2048, max_files=1000))
    sink.open_files(tmp_path / "logs")

    def writer(t: int) -> None:
        for b in range(300):
            sink.lines("busy", [f"t{t} b{b} part{p}" for p in range(3)])

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    d = tmp_path / "logs"
    rotated = sorted(d.glob("busy.log.*"), key=lambda p: -int(p.suffix[1:]))
    assert len(rotated) > 10
    texts = [line.text for p in [*rotated, d / "busy.log"] for line in logs.parse(p.read_text())]
    assert len(texts) == 8 * 300 * 3 and len(set(texts)) == len(texts)
    for i in range(0, len(texts), 3):  # blocks are whole: a rotation falls between lines, never inside a block's run
        t, b, _ = texts[i].split()
        assert texts[i:i + 3] == [f"{t} {b} part{p}" for p in range(3)]
    for t in range(8):  # each thread's blocks in the order it wrote them
        mine = [int(x.split()[1][1:]) for x in texts if x.startswith(f"t{t} ") and x.endswith("part0")]
        assert mine == list(range(300))


def test_a_file_that_cannot_be_written_is_said_once_and_retried(tmp_path):
    buf = io.StringIO()
    sink = LogSink(buf, rotation=Rotation(), clock=lambda: T)
    d = tmp_path / "logs"
    sink.open_files(d)
    (d / "kubelet.log").mkdir()  # the file cannot be opened
    sink.line("kubelet", "one")
    sink.line("kubelet", "two")
    said = logs.parse(buf.getvalue())
    assert [(line.level, line.tag) for line in said] == [("info", "kubelet"), ("error", "mke"), ("info", "kubelet")]
    assert f"cannot write {d / 'kubelet.log'}" in said[1].text
    (d / "kubelet.log").rmdir()
    sink.line("kubelet", "three")
    assert logs.tagged((d / "kubelet.log").read_text()) == ["[kubelet] three"]


def test_rotation_settings_are_checked():
    with pytest.raises(ValueError):
        Rotation(max_bytes=0)
    with pytest.raises(ValueError):
        Rotation(max_files=0)


def test_a_closed_stream_does_not_break_the_caller(tmp_path: Path):
    buf = io.StringIO()
    sink = LogSink(buf)
    buf.close()
    sink.line("mke", "nobody reads this")  # no exception
