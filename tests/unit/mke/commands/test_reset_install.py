"""mke reset (refuses while mke runs, stops leftovers, removes the data dir) and mke install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from mke.node.datadir import DataDirLock, holder_pid
from tests.support.initsystems import Host
from tests.support.jointokens import tokens

REPO = Path(__file__).resolve().parents[4]


def mke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mke", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def test_lock_and_holder(tmp_path: Path) -> None:
    assert holder_pid(tmp_path) is None
    lock = DataDirLock(tmp_path)
    lock.acquire()
    try:
        assert holder_pid(tmp_path) == os.getpid()
        res = mke("reset", "--data-dir", str(tmp_path))
        assert res.returncode == 11 and f"pid {os.getpid()}" in res.stderr
        assert tmp_path.exists()
        res = mke("status", "--data-dir", str(tmp_path))  # running, but no status yet
        assert res.returncode == 7 and "starting" in res.stdout  # not healthy until it runs
    finally:
        lock.release()
    assert holder_pid(tmp_path) is None
    assert mke("status", "--data-dir", str(tmp_path)).returncode == 11


def test_reset_stops_leftovers_and_removes_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "run").mkdir(parents=True)
    (data / "pki").mkdir()
    (data / "pki" / "ca.key").write_text("x")
    (data / "logs").mkdir(mode=0o700)  # mke.logsink's per-component files, rotated ones too
    for name in ("etcd.log", "etcd.log.1", "kubelet.log"):
        (data / "logs" / name).write_text("2026-11-28T04:30:00.123Z info [etcd] x\n")
    # a component left running by an mke that was kill -9'd: a copy of `sleep` named etcd
    etcd = tmp_path / "bin" / "etcd"
    etcd.parent.mkdir()
    shutil.copy(shutil.which("sleep") or "/bin/sleep", etcd)
    proc = subprocess.Popen([str(etcd), "60"], start_new_session=True)
    (data / "run" / "etcd.pid").write_text(f"{proc.pid}\n")
    # and a pid file naming an unrelated process, which must survive
    (data / "run" / "kube-apiserver.pid").write_text(f"{os.getpid()}\n")
    res = mke("reset", "--data-dir", str(data))
    assert res.returncode == 0, res.stderr
    assert "stopped etcd" in res.stderr
    assert proc.wait(timeout=5) is not None
    assert not data.exists()
    assert mke("reset", "--data-dir", str(data)).returncode == 0  # nothing to do


def test_install_writes_a_unit_and_keeps_the_token_off_the_command_line(tmp_path: Path) -> None:
    """The real command line (the token as an argument), on a stand-in for / with a fake systemctl
    (tests/support/initsystems.py: no systemd runs here)."""
    host = Host.make(tmp_path, "systemd")
    env = host.env()
    units = host.root / "etc/systemd/system"
    config = tmp_path / "mke.yaml"
    config.write_text("api:\n  port: 6443\n")
    res = mke("install", "controller", "--data-dir", str(tmp_path / "d"), "--config", str(config), env=env)
    assert res.returncode == 0, res.stderr
    text = (units / "mke-controller.service").read_text()
    assert f"server --config={config} --data-dir=" in text
    assert "KillMode=process" in text and "Restart=always" in text and "Type=notify" in text
    assert ((units / "mke-controller.service").stat().st_mode & 0o777) == 0o600  # CIS 4.1.1
    assert mke("install", "controller", env=env).returncode == 2  # exists
    token = tokens()["worker"]
    res = mke("install", "worker", token, "--data-dir", str(tmp_path / "d"), "--force", env=env)
    assert res.returncode == 0, res.stderr
    unit = (units / "mke-worker.service").read_text()
    assert token not in unit and "--token-file" in unit
    tf = tmp_path / "d" / "worker-token"
    assert tf.read_text().strip() == token and (tf.stat().st_mode & 0o777) == 0o600
    assert mke("install", "worker", "--force", env=env).returncode == 2  # no token
