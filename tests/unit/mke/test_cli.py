"""mke/cli.py: errors end as one line and their own exit code, from the real command line.

Run as ``python -m mke`` from this checkout (the same ``main()`` that dist/mke runs).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def mke(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MKE_")}
    return subprocess.run([sys.executable, "-m", "mke", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=False, env={**base, "PYTHONPATH": str(REPO), **env})


@pytest.mark.parametrize("data_dir,reason", [
    ("/etc/passwd", "/etc/passwd: exists and is not a directory"),  # a file where the data dir must be
    ("/sys/mke-test", "/sys/mke-test: (Operation not permitted|Permission denied)"),  # sysfs: no mkdir, even for root
])
def test_os_error_is_one_line_naming_the_path(data_dir, reason):
    r = mke("server", "--data-dir", data_dir, "--ignore-sysinfo")  # the host checks would refuse /sys first
    assert r.returncode == 13, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and re.fullmatch(f"mke: error: {reason}", lines[0]), r.stderr


def test_os_error_with_debug_shows_the_traceback():
    r = mke("--debug", "server", "--data-dir", "/etc/passwd", "--ignore-sysinfo")
    assert r.returncode == 1 and "Traceback" in r.stderr and "FileExistsError" in r.stderr


def test_project_errors_keep_their_codes():
    r = mke("frobnicate")
    assert r.returncode == 2 and r.stderr.startswith("mke: error: mke: argument COMMAND: invalid choice")
    r = mke("version", MKE_PAYLOAD="/nonexistent/mke")
    assert r.returncode == 4 and r.stderr.strip() == "mke: error: $MKE_PAYLOAD=/nonexistent/mke: no such file"


@pytest.mark.parametrize("content,reason", [
    ("", "is empty; put the token from `mke token create` in it"),
    ("  \n\t\n", "is empty; put the token from `mke token create` in it"),
    (None, "No such file or directory"),
])
def test_server_with_an_unusable_token_file_refuses_instead_of_bootstrapping(tmp_path, content, reason):
    """An operator who meant to join a controller must not get a second cluster of its own."""
    tf = tmp_path / "token"
    if content is not None:
        tf.write_text(content)
    data = tmp_path / "data"
    r = mke("server", "--token-file", str(tf), "--data-dir", str(data))
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == f"mke: error: --token-file {tf}{' ' if content is not None else ': '}{reason}"
    assert not data.exists()  # nothing written, no etcd started


def test_kubectl_without_an_admin_kubeconfig_says_so(tmp_path):
    """Not kubectl's 'connection to the server localhost:8080 was refused'."""
    r = mke("kubectl", "--data-dir", str(tmp_path), "--", "get", "nodes")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (f"mke: error: no admin kubeconfig at {tmp_path}/pki/admin.conf: run this on a controller "
                                "(as root, with its --data-dir), or give kubectl --kubeconfig FILE or $KUBECONFIG")


@pytest.mark.parametrize("argv", [
    ["reset", "--data-dir", "/"], ["reset", "--data-dir", "/etc"], ["reset", "--data-dir", "/var/lib/"],
    ["server", "--data-dir", "/var/lib"], ["worker", "--data-dir", "/usr", "mke1.x"],
    ["worker", "--pod-logs-dir", "/var/log", "mke1.x"],
])
def test_a_directory_of_the_host_itself_is_refused(argv):
    """`mke reset --data-dir /` used to stop, unmount and delete whatever it found there (issue 14.4)."""
    r = mke(*argv)
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and "a directory of the host itself; mke needs one of its own" in line, line


def test_reset_refuses_a_directory_that_is_not_mkes(tmp_path):
    mine = tmp_path / "precious"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work\n")
    (mine / "run").mkdir()
    (mine / "run" / "sshd.pid").write_text(f"{os.getpid()}\n")
    r = mke("reset", "--data-dir", str(mine))
    assert r.returncode == 2 and "does not look like an mke data dir" in r.stderr, r.stderr
    assert (mine / "thesis.tex").read_text() == "years of work\n" and (mine / "run" / "sshd.pid").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    r = mke("reset", "--data-dir", str(empty))
    assert r.returncode == 0 and "is empty; nothing to do" in r.stderr and empty.is_dir()


def test_debug_is_accepted_after_the_subcommand_too():
    """`mke server --debug ...` used to fail with 'unrecognized arguments' (as a traceback, exit 1)."""
    r = mke("server", "--data-dir", "/etc/passwd", "--debug", "--ignore-sysinfo")
    assert r.returncode == 1 and "FileExistsError" in r.stderr  # the traceback --debug asks for
    r = mke("server", "--data-dir", "/etc/passwd", "--ignore-sysinfo")
    assert r.returncode == 13 and "Traceback" not in r.stderr
    r = mke("kubectl", "--data-dir", "/nonexistent", "--", "get", "pods", "--debug")  # kubectl's, not mke's
    assert r.returncode == 2 and "Traceback" not in r.stderr and "no admin kubeconfig" in r.stderr


def test_version_flag():
    from mke import __version__

    r = mke("--version")
    assert r.returncode == 0 and r.stdout == f"mke {__version__}\n", r.stderr
