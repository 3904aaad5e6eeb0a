"""`mke backup` / `mke restore` against a real controller (etcd, or kine on SQLite), with the real
etcd, etcdutl, kine and kube-apiserver binaries: objects made before the backup come back after
`mke reset` + `mke restore`, those made after do not; Secrets still decrypt (the encryption key
came back); the CA is the same; bad archives and busy data dirs are refused in one line;
scheduled backups are taken and pruned.

Needs root and the binaries ($MKE_TEST_BIN_DIR or the docker-mode build, tests/support/binaries.py).
Every port is a free one, so it does not collide with another controller on this host.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mke.errors import BackupError
from tests.integration.test_server import MkeServer, require, wait_for
from tests.support.binaries import reachable_bin_dir, traversable_tmp
from tests.support.ports import free_ports

pytestmark = [pytest.mark.root, pytest.mark.slow]


def config(storage: str) -> dict[str, Any]:
    api, mke_api, client, peer, agent, admin, health = free_ports(7)
    return {
        "api": {"port": api, "mkeAPIPort": mke_api},
        "storage": {"type": storage, "etcd": {"clientPort": client, "peerPort": peer}},
        "konnectivity": {"agentPort": agent, "adminPort": admin, "healthPort": health},
        "backup": {"interval": "10s", "retention": 2},
    }


def kubectl(server: MkeServer, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(server.bin_dir / "kubectl"), "--kubeconfig", str(server.data_dir / "pki" / "admin.conf"),
                        *args], capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def names(server: MkeServer, kind: str) -> set[str]:
    out = kubectl(server, "get", kind, "-n", "default", "-o", "jsonpath={.items[*].metadata.name}").stdout
    return set(out.split())


def one_error_line(r: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == code, f"exit {r.returncode}, expected {code}: {r.stderr}"
    assert len(lines) == 1 and lines[0].startswith("mke: error: ") and fragment in lines[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.fixture()
def open_tmp() -> Iterator[Path]:
    with traversable_tmp("mke-backup-") as d:
        yield d


@pytest.mark.parametrize("storage", ["etcd", "kine"])
def test_backup_reset_restore(storage: str, open_tmp: Path) -> None:
    """etcd runs as its own user here (a data dir and binaries it may reach): the restored data
    dir, written by root, is given back to it at the next start."""
    from tests.integration.test_server import find_bin_dir

    tmp_path = open_tmp
    bins = reachable_bin_dir(require(find_bin_dir(), "etcd", "etcdutl", "kine", "kube-apiserver", "kubectl"),
                             tmp_path / "bin")
    server = MkeServer(tmp_path, bins, config(storage))
    archive = tmp_path / "b.tar.zst"
    try:
        server.start()
        kubectl(server, "create", "configmap", "first", "--from-literal=k=before")
        kubectl(server, "create", "secret", "generic", "first-secret", "--from-literal=password=s3cret")
        ca = (server.data_dir / "pki" / "ca.crt").read_bytes()

        t0 = time.monotonic()
        r = server.mke("backup", "--out", str(archive))
        backup_s = time.monotonic() - t0
        assert r.stdout.startswith(f"wrote {archive}: "), r.stdout
        assert stat.S_IMODE(archive.stat().st_mode) == 0o600
        check = server.mke("restore", "--check", str(archive)).stdout
        assert ": OK: " in check and ("etcd revision" if storage == "etcd" else "SQLite revision") in check

        kubectl(server, "create", "configmap", "later", "--from-literal=k=after")
        # scheduled: one every 10s, the newest 2 kept (the first comes at once: none is there yet)
        wait_for(lambda: "pruned" in server.log_path.read_text(), 60, "a scheduled backup pruned", interval=1)
        listing = server.mke("backup", "list").stdout
        assert listing.count("mke-snapshot-") == 2 and "scheduled" in listing, listing
        listed = json.loads(server.mke("backup", "list", "--json").stdout)
        assert {a["storage"] for a in listed} == {"etcd" if storage == "etcd" else "SQLite"}

        # a running controller: refused, nothing touched
        one_error_line(server.mke("restore", str(archive), "--force", check=False), 11, "is running with data dir")
    finally:
        server.stop()

    # onto the stopped cluster: refused without --force
    one_error_line(server.mke("restore", str(archive), check=False), 11, "pass --force")
    # a damaged copy: refused before anything is written
    cut = tmp_path / "cut.tar.zst"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    one_error_line(server.mke("restore", str(cut), "--force", check=False), BackupError.exit_code, "truncated or damaged")

    assert server.mke("reset").returncode == 0
    assert not server.data_dir.exists()
    t0 = time.monotonic()
    r = server.mke("restore", str(archive), "--bin-dir", str(bins))
    restore_s = time.monotonic() - t0
    assert f"mke server --config {server.data_dir / 'mke.yaml'}" in r.stdout, r.stdout
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((server.data_dir / "pki" / "ca.key").stat().st_mode) == 0o600
    assert (server.data_dir / "pki" / "ca.crt").read_bytes() == ca
    restored_cfg = yaml.safe_load((server.data_dir / "mke.yaml").read_text())
    assert restored_cfg["storage"]["type"] == storage
    assert restored_cfg["api"]["port"] == server.port
    assert not (server.data_dir / ".restore").exists()

    server.config_path = server.data_dir / "mke.yaml"  # start it as mke restore says
    try:
        server.start()
        assert "first" in names(server, "configmap")
        assert "later" not in names(server, "configmap")
        pw = kubectl(server, "get", "secret", "first-secret", "-o", "jsonpath={.data.password}").stdout
        assert base64.b64decode(pw) == b"s3cret"  # decrypted with the restored key
        kubectl(server, "create", "configmap", "after-restore")  # and it takes writes
        if storage == "etcd":
            etcd_uid = int(Path(f"/proc/{server.component_pid('etcd')}/status").read_text()
                           .split("\nUid:\t", 1)[1].split()[0])
            assert etcd_uid != 0 and (server.data_dir / "etcd" / "member").stat().st_uid == etcd_uid
            members = json.loads(server.mke("etcd", "member-list", "--json").stdout)
            assert len(members) == 1 and members[0]["name"]
            rev = json.loads(kubectl(server, "get", "configmap", "after-restore", "-o", "json").stdout)
            assert int(rev["metadata"]["resourceVersion"]) > 1_000_000_000  # --bump-revision
    finally:
        server.stop()
    print(f"\n[backup] {storage}: archive {archive.stat().st_size} bytes, backup {backup_s:.1f}s, "
          f"restore {restore_s:.1f}s", flush=True)
    assert server.mke("reset").returncode == 0


def test_wrong_cluster_is_refused(tmp_path: Path) -> None:
    """A backup of cluster A restored into a data dir of cluster B: refused even with --force."""
    from tests.integration.test_server import find_bin_dir

    bins = require(find_bin_dir(), "kine", "kube-apiserver", "kubectl")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = MkeServer(tmp_path / "a", bins, config("kine")), MkeServer(tmp_path / "b", bins, config("kine"))
    archive = tmp_path / "a.tar.zst"
    try:
        a.start()
        a.mke("backup", "--out", str(archive))
    finally:
        a.stop()
    try:
        b.start()
    finally:
        b.stop()
    ca_b = (b.data_dir / "pki" / "ca.crt").read_bytes()
    one_error_line(b.mke("restore", str(archive), "--force", check=False), BackupError.exit_code, "refusing to mix them")
    assert (b.data_dir / "pki" / "ca.crt").read_bytes() == ca_b
    for s in (a, b):
        assert s.mke("reset").returncode == 0
    assert not os.path.exists(a.data_dir) and not os.path.exists(b.data_dir)
