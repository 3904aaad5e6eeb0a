"""mke ctr / mke crictl: the worker's socket (and ctr's namespace) unless the user chose their own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mke.commands import flag_given
from mke.commands.crictl import crictl_argv
from mke.commands.ctr import VALUE_FLAGS as CTR_FLAGS
from mke.commands.ctr import ctr_argv
from mke.errors import UsageError
from mke.node.datadir import worker_data_dirs
from mke.worker.context import WorkerPaths as ContextWorkerPaths
from mke.worker.paths import WorkerPaths, running_worker

REPO = Path(__file__).resolve().parents[4]
SOCK = Path("/d/run/containerd/containerd.sock")


def sock() -> Path:
    return SOCK


def no_socket() -> Path:
    raise AssertionError("the socket was looked for although the user chose one")


@pytest.mark.parametrize("rest,env,expected", [
    (["images", "ls"], {}, ["--address", str(SOCK), "--namespace", "k8s.io", "images", "ls"]),
    (["-n", "default", "images", "ls"], {}, ["--address", str(SOCK), "-n", "default", "images", "ls"]),
    (["--namespace=default", "images", "ls"], {}, ["--address", str(SOCK), "--namespace=default", "images", "ls"]),
    (["images", "ls", "--namespace", "default"], {}, ["--address", str(SOCK), "images", "ls", "--namespace", "default"]),
    (["images", "ls"], {"CONTAINERD_NAMESPACE": "x"}, ["--address", str(SOCK), "images", "ls"]),
    # -a after the command is that command's own flag (ctr tasks kill -a: --all)
    (["tasks", "kill", "-a", "c1"], {}, ["--address", str(SOCK), "--namespace", "k8s.io", "tasks", "kill", "-a", "c1"]),
    # a global flag's value is not the command: -a still stands before it
    (["--timeout", "5s", "-n", "x", "images", "ls"], {}, ["--address", str(SOCK), "--timeout", "5s", "-n", "x", "images", "ls"]),
    ([], {}, ["--address", str(SOCK), "--namespace", "k8s.io"]),
])
def test_ctr_gets_the_workers_socket_and_namespace(rest, env, expected):
    assert ctr_argv(rest, env, sock) == expected


@pytest.mark.parametrize("rest,env", [
    (["-a", "/run/other.sock", "images", "ls"], {}),
    (["--address=/run/other.sock", "images", "ls"], {}),
    (["images", "ls", "--address", "/run/other.sock"], {}),
    (["images", "ls"], {"CONTAINERD_ADDRESS": "/run/other.sock"}),
])
def test_ctr_keeps_the_users_address(rest, env):
    argv = ctr_argv(rest, env, no_socket)
    assert "--address" not in argv[:2] and argv[-len(rest):] == rest


@pytest.mark.parametrize("rest,env,expected", [
    (["ps"], {}, ["--runtime-endpoint", f"unix://{SOCK}", "--image-endpoint", f"unix://{SOCK}", "ps"]),
    (["-i", "unix:///x", "images"], {}, ["--runtime-endpoint", f"unix://{SOCK}", "-i", "unix:///x", "images"]),
    (["images"], {"IMAGE_SERVICE_ENDPOINT": "unix:///x"}, ["--runtime-endpoint", f"unix://{SOCK}", "images"]),
    (["-D", "--timeout", "5s", "ps", "-r"], {}, ["--runtime-endpoint", f"unix://{SOCK}", "--image-endpoint",
                                                 f"unix://{SOCK}", "-D", "--timeout", "5s", "ps", "-r"]),
])
def test_crictl_gets_the_workers_socket(rest, env, expected):
    assert crictl_argv(rest, env, sock) == expected


@pytest.mark.parametrize("rest,env", [
    (["-r", "unix:///run/crio/crio.sock", "ps"], {}),
    (["--runtime-endpoint=unix:///run/crio/crio.sock", "ps"], {}),
    (["ps"], {"CONTAINER_RUNTIME_ENDPOINT": "unix:///run/crio/crio.sock"}),
])
def test_crictl_keeps_the_users_endpoint(rest, env):
    assert crictl_argv(rest, env, no_socket) == rest


def test_flag_given_stops_at_the_command_and_at_double_dash():
    assert flag_given(["-a", "x", "images"], "--address", "-a", CTR_FLAGS)
    assert not flag_given(["images", "-a", "x"], "--address", "-a", CTR_FLAGS)
    assert flag_given(["images", "--address", "x"], "--address", "-a", CTR_FLAGS, long_anywhere=True)
    assert not flag_given(["images", "--address", "x"], "--address", "-a", CTR_FLAGS)
    assert not flag_given(["--", "-a", "x"], "--address", "-a", CTR_FLAGS)
    assert not flag_given(["--namespace", "-a", "images"], "--address", "-a", CTR_FLAGS)  # -a is --namespace's value
    assert flag_given(["--debug", "-a=x", "images"], "--address", "-a", CTR_FLAGS)


def test_worker_paths_are_one_class_wherever_imported():
    assert ContextWorkerPaths is WorkerPaths
    assert WorkerPaths(Path("/d")).containerd_socket == SOCK


def listen(path: Path) -> socket.socket:
    """A unix socket at ``path`` (bound through a short relative name: tmp paths can be long)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        s.bind(path.name)
    finally:
        os.chdir(cwd)
    return s


@pytest.mark.parametrize("where", ["worker", "server --enable-worker"])
def test_running_worker_finds_either_socket(tmp_path, where):
    d = tmp_path / "data"
    wd = worker_data_dirs(d)[0 if where == "worker" else 1]
    assert running_worker(d) is None
    (wd / "run" / "containerd").mkdir(parents=True)
    (wd / "run" / "containerd" / "containerd.sock").write_text("not a socket\n")
    assert running_worker(d) is None
    (wd / "run" / "containerd" / "containerd.sock").unlink()
    with listen(WorkerPaths(wd).containerd_socket):
        assert running_worker(d) == WorkerPaths(wd)


def fake_tool(bin_dir: Path, name: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / name).write_text("#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done\n")
    (bin_dir / name).chmod(0o755)


def mke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MKE_", "CONTAINERD_", "CONTAINER_RUNTIME", "IMAGE_"))}
    return subprocess.run([sys.executable, "-m", "mke", *args], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**base, "PYTHONPATH": str(REPO), **(env or {})})


@pytest.mark.parametrize("where", ["worker", "server --enable-worker"])
def test_the_commands_exec_the_tool_with_the_socket(tmp_path, where):
    d = tmp_path / "data"
    wd = worker_data_dirs(d)[0 if where == "worker" else 1]
    fake_tool(tmp_path / "bin", "ctr")
    fake_tool(tmp_path / "bin", "crictl")
    sock_path = WorkerPaths(wd).containerd_socket
    with listen(sock_path):
        r = mke("ctr", "--data-dir", str(d), "--bin-dir", str(tmp_path / "bin"), "images", "ls")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["--address", str(sock_path), "--namespace", "k8s.io", "images", "ls"]
        r = mke("crictl", "--data-dir", str(d), "--bin-dir", str(tmp_path / "bin"), "--", "-D", "ps")
        assert r.returncode == 0, r.stderr
        ep = f"unix://{sock_path}"
        assert r.stdout.split() == ["--runtime-endpoint", ep, "--image-endpoint", ep, "-D", "ps"]
    # the user's own endpoint (crictl's flags after --, mke's before): no socket needed at all
    r = mke("crictl", "--data-dir", str(d), "--bin-dir", str(tmp_path / "bin"), "--", "-r", "unix:///x", "ps")
    assert r.returncode == 0 and r.stdout.split() == ["-r", "unix:///x", "ps"], r.stderr
    r = mke("ctr", "--data-dir", str(d), "--bin-dir", str(tmp_path / "bin"), "images", "ls",
            env={"CONTAINERD_ADDRESS": "/run/elsewhere.sock"})
    assert r.returncode == 0 and r.stdout.split() == ["--namespace", "k8s.io", "images", "ls"], r.stderr


@pytest.mark.parametrize("tool,hint", [("ctr", "--address SOCKET or $CONTAINERD_ADDRESS"),
                                       ("crictl", "--runtime-endpoint unix://SOCKET or $CONTAINER_RUNTIME_ENDPOINT")])
def test_no_socket_is_one_line(tmp_path, tool, hint):
    d = tmp_path / "data"
    r = mke(tool, "--data-dir", str(d), "ps")
    assert r.returncode == UsageError.exit_code
    assert r.stderr == (f"mke: error: no containerd socket at {d}/run/containerd/containerd.sock (nor "
                        f"{d}/node/run/containerd/containerd.sock): run this on a worker (as root, with its "
                        f"--data-dir), or give {tool} {hint.split(' ', 1)[0]} {hint.split(' ', 1)[1]}\n")
    assert not d.exists()
