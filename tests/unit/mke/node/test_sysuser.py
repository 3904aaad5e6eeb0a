"""mke/node/sysuser.py on account files in a temporary /etc (never the host's own)."""

from __future__ import annotations

import fcntl
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from mke.errors import HostError
from mke.node import sysuser


@pytest.fixture()
def etc(tmp_path: Path) -> Path:
    d = tmp_path / "etc"
    d.mkdir()
    (d / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n"
                              "systemd-network:x:998:998:systemd Network Management:/:/usr/sbin/nologin\n"
                              "alice:x:1000:1000:Alice:/home/alice:/bin/bash\n")
    (d / "group").write_text("root:x:0:\nshadow:x:42:\nsystemd-network:x:998:\nalice:x:1000:\n"
                             "messagebus:x:997:")  # no newline at the end: kept valid
    (d / "shadow").write_text("root:*:20000:0:99999:7:::\n")
    (d / "shadow").chmod(0o640)
    (d / "gshadow").write_text("root:*::\n")
    (d / "gshadow").chmod(0o640)
    return d


def test_an_existing_user_is_used_as_it_is(etc: Path) -> None:
    before = {p.name: p.read_bytes() for p in etc.iterdir()}
    acct = sysuser.ensure_system_user("alice", etc)
    assert acct == sysuser.Account("alice", 1000, 1000, created=False)
    assert {p.name: p.read_bytes() for p in etc.iterdir() if p.name != ".pwd.lock"} == before


def test_a_missing_user_is_added_as_a_system_account_with_the_highest_free_id(etc: Path) -> None:
    modes = {n: stat.S_IMODE((etc / n).stat().st_mode) for n in ("passwd", "group", "shadow", "gshadow")}
    acct = sysuser.ensure_system_user("etcd", etc)
    # 999 is free in passwd but 997 and 998 are taken (group / both): one number for both
    assert acct == sysuser.Account("etcd", 999, 999, created=True)
    passwd = (etc / "passwd").read_text().splitlines()
    name, pw, uid, gid, gecos, home, shell = passwd[-1].split(":")
    assert (name, pw, uid, gid, home) == ("etcd", "x", "999", "999", "/nonexistent")
    assert "mke" in gecos and shell.endswith(("nologin", "false"))
    assert (etc / "group").read_text().splitlines()[-2:] == ["messagebus:x:997:", "etcd:x:999:"]
    assert (etc / "shadow").read_text().splitlines()[-1].startswith("etcd:!*:")
    assert (etc / "gshadow").read_text().splitlines()[-1] == "etcd:!::"
    assert {n: stat.S_IMODE((etc / n).stat().st_mode) for n in modes} == modes  # modes kept
    assert sorted(p.name for p in etc.iterdir()) == [".pwd.lock", "group", "gshadow", "passwd", "shadow"]
    # and found again, not added twice
    assert sysuser.ensure_system_user("etcd", etc) == sysuser.Account("etcd", 999, 999)
    assert (etc / "passwd").read_text().count("etcd:") == 1
    assert sysuser.name_of(999, "passwd", etc) == "etcd" and sysuser.name_of(999, "group", etc) == "etcd"


def test_a_group_of_that_name_is_joined(etc: Path) -> None:
    with open(etc / "group", "a") as f:
        f.write("\netcd:x:555:\n")
    acct = sysuser.ensure_system_user("etcd", etc)
    assert acct is not None and acct.gid == 555 and acct.uid == 999
    assert (etc / "group").read_text().count("etcd:") == 1


def test_no_account_files_or_a_read_only_etc_means_none(tmp_path: Path, etc: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    assert sysuser.ensure_system_user("etcd", bare) is None
    assert list(bare.iterdir()) == []  # nothing made there
    if os.geteuid() != 0:  # root writes through any mode: a read-only mount is the real case
        etc.chmod(0o555)
        assert sysuser.ensure_system_user("etcd", etc) is None


def test_bad_names_and_files_are_one_line(etc: Path) -> None:
    for bad in ("Etcd", "etcd:x", "../x", "", "a" * 33):
        with pytest.raises(HostError, match="not a valid user name"):
            sysuser.ensure_system_user(bad, etc)
    (etc / "passwd").write_text("etcd:x:abc:0::/:/bin/sh\n")
    with pytest.raises(HostError, match=r"passwd: the entry of etcd has a non-numeric id"):
        sysuser.ensure_system_user("etcd", etc)


def test_it_waits_for_the_shadow_utils_lock(etc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another tool (useradd, vipw) holds lckpwdf's lock: mke waits, then adds the user; it
    gives up with one line when the lock stays taken."""
    fd = os.open(etc / ".pwd.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    # fcntl locks are per process: the holder must be another process
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        os.write(w, b"x")
        time.sleep(1.0)
        os._exit(0)
    os.read(r, 1)
    t0 = time.monotonic()
    try:
        acct = sysuser.ensure_system_user("etcd", etc)
    finally:
        os.waitpid(pid, 0)
    assert acct is not None and acct.created
    assert time.monotonic() - t0 >= 0.5
    pid = os.fork()
    if pid == 0:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        os.write(w, b"x")
        time.sleep(3.0)
        os._exit(0)
    os.read(r, 1)
    monkeypatch.setattr(sysuser, "LOCK_WAIT", 0.3)
    try:
        with pytest.raises(HostError, match=r"\.pwd\.lock: another program holds"):
            sysuser.ensure_system_user("kine", etc)
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert "kine" not in (etc / "passwd").read_text()


def test_two_at_once_add_the_user_once(etc: Path) -> None:
    results: list[sysuser.Account | None] = []
    threads = [threading.Thread(target=lambda: results.append(sysuser.ensure_system_user("etcd", etc)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (etc / "passwd").read_text().count("\netcd:") == 1
    assert len({(a.uid, a.gid) for a in results if a}) == 1
