"""mke install --detached (mke/service/detached.py): a real process started in a session of its own,
found by the data dir's lock it holds, stopped by SIGTERM; nothing restarts it."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from mke.errors import ServiceError
from mke.service import ServiceSpec
from mke.service.detached import Detached

# Stands in for mke server: takes <data-dir>/run/mke.lock as mke does (flock, its pid inside), runs until SIGTERM.
HOLDER = """
import fcntl, os, signal, sys, time
run = os.path.join(sys.argv[1], "run"); os.makedirs(run, exist_ok=True)
fd = os.open(os.path.join(run, "mke.lock"), os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX); os.pwrite(fd, f"{os.getpid()}\\n".encode(), 0)
print("holding", os.getsid(0) == os.getpid(), flush=True)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
while True: time.sleep(1)
"""


@pytest.fixture
def init(tmp_path):
    return Detached(tmp_path / "root")


def install(init: Detached, tmp_path: Path, code: str) -> Path:
    from mke.node.files import write_file_atomic

    data = tmp_path / "data"
    spec = ServiceSpec(role="controller", command=(sys.executable, "-c", code, str(data)), data_dir=data)
    write_file_atomic(init.service_file("controller"), init.render(spec).encode(), init.file_mode)
    init.enable("controller")
    return data


def test_start_runs_it_detached_and_stop_ends_it(init, tmp_path):
    from mke.node.datadir import holder_pid

    log = init.root / "var/log/mke-controller.log"  # /var/log/mke-<role>.log, under the stand-in for /
    assert not Detached.runs_here(init.root)
    data = install(init, tmp_path, HOLDER)
    assert Detached.runs_here(init.root) and init.installed_roles() == ["controller"]
    init.start("controller")
    pid = holder_pid(data)
    assert pid and pid != os.getpid()
    assert os.getsid(pid) == pid  # a session of its own: it outlives the shell that started it
    init.start("controller")  # running already: nothing happens
    assert holder_pid(data) == pid
    deadline = time.monotonic() + 10
    while "holding True" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "holding True" in log.read_text()
    init.stop("controller")
    assert holder_pid(data) is None
    init.stop("controller")  # stopped already: nothing happens


def test_a_command_that_exits_at_once_is_one_line_with_its_last_words(init, tmp_path):
    install(init, tmp_path, "import sys; print('mke: error: the config is bad'); sys.exit(3)")
    with pytest.raises(ServiceError) as e:
        init.start("controller")
    assert "exited at once (exit 3): mke: error: the config is bad" in str(e.value)
    assert len(str(e.value).splitlines()) == 1
