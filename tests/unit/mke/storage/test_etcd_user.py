"""etcd as its own user (storage.etcd.user, CIS 1.1.12): the account, who owns what, the copies
of its certificates and keys and how they follow the pki dir. A temporary /etc stands in for
the host's (the test must not add users to the machine it runs on); ids are chown'd for real."""

from __future__ import annotations

import io
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mke.components.context import ControllerContext
from mke.config import parse_config
from mke.errors import ConfigError
from mke.logsink import LogSink
from mke.node import sysuser
from mke.node.binaries import BinaryResolver
from mke.node.files import private_dir
from mke.storage.etcd import Etcd
from tests.support.binaries import traversable_tmp

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


@pytest.fixture()
def tmp_path() -> Iterator[Path]:
    """A directory every user may pass through (pytest's own are below a 0700 root directory,
    which etcd's user could not enter: mke would run etcd as root there, as the last test shows)."""
    with traversable_tmp("mke-etcd-user-") as d:
        yield d


@pytest.fixture()
def etc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "etc"
    d.mkdir()
    (d / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (d / "group").write_text("root:x:0:\n")
    monkeypatch.setattr(sysuser, "ETC", d)
    return d


def make(tmp_path: Path, user: str | None = None) -> tuple[Etcd, io.StringIO]:
    data = tmp_path / "data"
    private_dir(data)
    bin_dir = data / "bin"
    bin_dir.mkdir(exist_ok=True, mode=0o755)
    (bin_dir / "etcd").write_text(f"#!{sys.executable}\n")
    (bin_dir / "etcd").chmod(0o755)
    pki = data / "pki" / "etcd"
    private_dir(pki)
    for stem in ("ca", "server", "peer", "client"):
        (pki / f"{stem}.crt").write_text(f"{stem} certificate 1\n")
        (pki / f"{stem}.key").write_text(f"{stem} key 1\n")
        (pki / f"{stem}.key").chmod(0o600)
    buf = io.StringIO()
    cfg = parse_config({"storage": {"etcd": {"user": user}}} if user else {})
    ctx = ControllerContext(config=cfg, data_dir=data, node_name="ctl-1", api_address="192.0.2.10",
                            binaries=BinaryResolver(bin_dir, user_bin_dir=True), sink=LogSink(buf))
    return Etcd(ctx), buf


def flags(e: Etcd) -> dict[str, str]:
    return dict(a.lstrip("-").split("=", 1) for a in e.args() if "=" in a)


def owner(p: Path) -> tuple[int, int]:
    st = p.stat()
    return st.st_uid, st.st_gid


def test_etcd_runs_as_its_own_user_with_copies_of_its_keys_and_the_pki_stays_roots(tmp_path: Path, etc: Path) -> None:
    e, buf = make(tmp_path)
    e.data_dir.mkdir(mode=0o700)
    (e.data_dir / "member").mkdir()
    (e.data_dir / "member" / "snap.db").write_bytes(b"restored as root")  # e.g. by mke restore
    e.init()
    acct = sysuser.lookup("etcd", etc)
    assert acct is not None and e.run_as == (acct.uid, acct.gid) and acct.uid != 0
    assert "added the system user etcd" in buf.getvalue()
    data = e.ctx.data_dir
    # the data dir: root's, etcd's group may pass through (not list)
    assert owner(data) == (0, acct.gid) and stat.S_IMODE(data.stat().st_mode) == 0o710
    # etcd's data dir, all of it: etcd's (CIS 1.1.11 / 1.1.12)
    for p in [e.data_dir, *e.data_dir.rglob("*")]:
        assert owner(p) == e.run_as, p
    assert stat.S_IMODE(e.data_dir.stat().st_mode) == 0o700
    # its copies: etcd's, keys 0600; the pki dir and its files stay root's (CIS 1.1.19-1.1.21)
    assert owner(e.tls_dir) == e.run_as and stat.S_IMODE(e.tls_dir.stat().st_mode) == 0o700
    assert sorted(p.name for p in e.tls_dir.iterdir()) == ["ca.crt", "peer.crt", "peer.key", "server.crt", "server.key"]
    for p in e.tls_dir.iterdir():
        assert owner(p) == e.run_as
        assert stat.S_IMODE(p.stat().st_mode) == (0o600 if p.suffix == ".key" else 0o644)
    for p in (data / "pki").rglob("*"):
        assert owner(p) == (0, 0), p
    assert (e.tls_dir / "server.key").read_text() == "server key 1\n"
    f = flags(e)
    assert f["cert-file"] == str(e.tls_dir / "server.crt") and f["peer-key-file"] == str(e.tls_dir / "peer.key")
    assert f["trusted-ca-file"] == f["peer-trusted-ca-file"] == str(e.tls_dir / "ca.crt")
    assert e.process_spec().user == e.run_as
    # what a restart would have to re-read is named by the originals in the pki dir
    read = {str(p.relative_to(data / "pki")): reloaded for p, reloaded in e.files_read().items()}
    assert read == {"etcd/ca.crt": False, "etcd/server.crt": True, "etcd/server.key": True,
                    "etcd/peer.crt": True, "etcd/peer.key": True}
    # a later start finds the user and changes nothing
    e2, buf2 = make(tmp_path)
    e2.init()
    assert e2.run_as == e.run_as and "added" not in buf2.getvalue() and "gave" not in buf2.getvalue()


def test_the_copies_follow_a_renewal_and_a_new_ca_restarts_etcd(tmp_path: Path, etc: Path) -> None:
    e, buf = make(tmp_path)
    e.init()
    e.started_files = e.files_state()
    pki = e.ctx.data_dir / "pki" / "etcd"
    for name in ("server.crt", "server.key"):  # rotated: written as root, 0600 for the key
        (pki / name).write_text(name + " 2\n")
    assert e.needs_restart() == []  # etcd reloads its pair on each handshake ...
    assert (e.tls_dir / "server.key").read_text() == "server.key 2\n"  # ... from its copy, updated
    assert owner(e.tls_dir / "server.key") == e.run_as
    assert "copied the renewed server.crt, server.key" in buf.getvalue()
    (pki / "ca.crt").write_text("ca certificate 2\n")
    assert e.needs_restart() == ["etcd/ca.crt"]  # read only at start
    assert (e.tls_dir / "ca.crt").read_text() == "ca certificate 2\n"


def test_root_on_purpose_and_on_a_host_without_account_files(tmp_path: Path, etc: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    e, _ = make(tmp_path)
    e.init()
    assert e.run_as is not None
    # storage.etcd.user: root: etcd's data dir goes back to root, its copies go
    e2, buf = make(tmp_path, user="root")
    e2.init()
    assert e2.run_as is None and e2.process_spec().user is None
    assert all(owner(p) == (0, 0) for p in [e2.data_dir, *e2.data_dir.rglob("*")])
    assert not e2.tls_dir.exists()
    data = e2.ctx.data_dir
    assert owner(data) == (0, 0) and stat.S_IMODE(data.stat().st_mode) == 0o700
    assert flags(e2)["key-file"] == str(e2.ctx.data_dir / "pki" / "etcd" / "server.key")
    assert buf.getvalue() == ""
    # a bare root filesystem: root, said once as a warning that names the way out
    bare = tmp_path / "bare-etc"
    bare.mkdir()
    monkeypatch.setattr(sysuser, "ETC", bare)
    e3, buf3 = make(tmp_path)
    e3.init()
    assert e3.run_as is None
    assert "runs as root" in buf3.getvalue() and "storage.etcd.user: root" in buf3.getvalue()
    # the /etc/passwd and /etc/group a worker wrote on that bare host: not extended (mke reset
    # removes them only unchanged)
    from mke.worker.host import SYSTEM_FILES

    for name in ("passwd", "group"):
        (bare / name).write_text(SYSTEM_FILES[f"etc/{name}"])
    e4, buf4 = make(tmp_path)
    e4.init()
    assert e4.run_as is None and "runs as root" in buf4.getvalue()
    assert [(bare / n).read_text() for n in ("passwd", "group")] == [SYSTEM_FILES["etc/passwd"], SYSTEM_FILES["etc/group"]]


def test_a_bad_user_name_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"storage\.etcd\.user.*'Etcd!' is not a user name"):
        parse_config({"storage": {"etcd": {"user": "Etcd!"}}})


def test_a_data_dir_the_user_cannot_reach_runs_etcd_as_root_and_says_where(tmp_path: Path, etc: Path) -> None:
    """--data-dir below a directory only root may enter (/root, pytest's tmp): etcd's user could
    not reach its data dir, so etcd runs as root and the warning names the directory."""
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    e, buf = make(closed)
    e.init()
    assert e.run_as is None and e.process_spec().user is None
    assert f"cannot reach {closed} (mode 0700)" in buf.getvalue()
    assert "storage.etcd.user: root" in buf.getvalue()
