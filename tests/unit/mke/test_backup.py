"""mke/backup.py: archives made from a real PKI and a SQLite database (kine's schema), verified,
refused when truncated, altered or of another cluster, restored atomically, listed and pruned.

The etcd snapshot through etcd's API and ``etcdutl snapshot restore`` run against the real
binaries in tests/integration/test_backup.py; here a snapshot file carries etcd's trailing
sha256 the way etcd writes it, to check the verification of that checksum.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import zstandard

from mke import backup, der
from mke.backup import (
    COMPLETE,
    MANIFEST,
    STAGING,
    create_backup,
    finish_interrupted_restore,
    list_archives,
    prune,
    restore,
    verify,
)
from mke.config import default_config, load_config, parse_config, parse_duration, with_overrides
from mke.errors import BackupError, BusyError, ConfigError

REPO = Path(__file__).resolve().parents[3]
KINE = with_overrides(default_config(), **{"storage.type": "kine"})

KINE_SCHEMA = """CREATE TABLE kine (id INTEGER PRIMARY KEY AUTOINCREMENT, name INTEGER, created INTEGER,
  deleted INTEGER, create_revision INTEGER, prev_revision INTEGER, lease INTEGER, value BLOB, old_value BLOB)"""


def kine_db(path: Path, names: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(KINE_SCHEMA)
    for n in names:
        con.execute("INSERT INTO kine (name, created, deleted, create_revision, prev_revision, lease, value) "
                    "VALUES (?, 1, 0, 0, 0, 0, ?)", (n, b"v-" + n.encode()))
    con.commit()
    con.close()


def kine_names(path: Path) -> list[str]:
    con = sqlite3.connect(path)
    try:
        return [r[0] for r in con.execute("SELECT name FROM kine ORDER BY id")]
    finally:
        con.close()


@pytest.fixture
def controller(tmp_path: Path, make_pki) -> Path:
    """A stopped kine/SQLite controller's data dir: a real PKI and a database with two objects."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    make_pki(data / "pki", cluster="one")
    kine_db(data / "kine" / "state.db", ["/registry/a", "/registry/b"])
    return data


@pytest.fixture
def archive(controller: Path, tmp_path: Path) -> Path:
    return create_backup(controller, KINE, tmp_path / "out" / "b.tar.zst", node_name="ctl-1").path


def members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with open(path, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as z, \
            tarfile.open(fileobj=z, mode="r|") as tar:
        return [(i, tar.extractfile(i).read()) for i in tar]  # type: ignore[union-attr]


def rewrite(path: Path, out: Path, change) -> Path:
    """``out``: ``path``'s members, each (info, data) passed through ``change`` (None drops it)."""
    raw = io.BytesIO()
    with zstandard.ZstdCompressor().stream_writer(raw, closefd=False) as z, tarfile.open(fileobj=z, mode="w|") as tar:
        for info, data in members(path):
            r = change(info, data)
            if r is None:
                continue
            info, data = r
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out.write_bytes(raw.getvalue())
    return out


def no_temps(*dirs: Path) -> None:
    for d in dirs:
        left = [p.name for p in d.rglob("*") if p.name.endswith(".tmp") or p.name in (STAGING, backup.OLD)]
        assert not left, left


# ---------------------------------------------------------------- the archive


def test_archive_holds_manifest_first_config_pki_and_database(archive: Path, controller: Path):
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    got = members(archive)
    assert got[0][0].name == MANIFEST
    m = json.loads(got[0][1])
    assert m["format"] == "mke-backup/1" and m["storage"] == "kine" and m["database"] == "SQLite"
    assert m["datastore"] == "kine/state.db" and m["revision"] == 2 and m["scheduled"] is False
    assert m["cluster"] == der.ca_pin((controller / "pki" / "ca.crt").read_bytes())
    names = [i.name for i, _ in got[1:]]
    assert names == [f["path"] for f in m["files"]]
    for must in ("config.json", "pki/ca.crt", "pki/ca.key", "pki/sa.key", "pki/secrets-encryption.key",
                 "pki/etcd/ca.key", "pki/admin.conf", "kine/state.db"):
        assert must in names, must
    by = {f["path"]: f for f in m["files"]}
    for info, data in got[1:]:
        assert hashlib.sha256(data).hexdigest() == by[info.name]["sha256"]
    assert by["pki/ca.key"]["mode"] == 0o600
    assert parse_config(json.loads({i.name: d for i, d in got}["config.json"])) == KINE
    no_temps(archive.parent)


def test_verify_reads_it_whole(archive: Path):
    m = verify(archive)
    assert m.revision == 2 and len(m.files) > 20


def test_sqlite_backup_is_a_consistent_copy_while_a_writer_holds_the_database(controller: Path, tmp_path: Path):
    db = controller / "kine" / "state.db"
    writer = sqlite3.connect(db)
    writer.execute("INSERT INTO kine (name, value) VALUES ('/registry/uncommitted', x'00')")  # open transaction
    copy = tmp_path / "copy.db"
    assert backup.sqlite_backup(db, copy) == 2
    writer.commit()
    writer.close()
    assert kine_names(copy) == ["/registry/a", "/registry/b"]
    assert not Path(f"{copy}-wal").exists()


# ---------------------------------------------------------------- refused archives: one line each


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_truncated_archive_is_refused(archive: Path, tmp_path: Path, keep: float):
    cut = tmp_path / "cut.tar.zst"
    data = archive.read_bytes()
    cut.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(BackupError, match=r"truncated|damaged") as e:
        verify(cut)
    assert str(e.value).startswith(f"{cut}: ") and "\n" not in str(e.value)


def test_member_changed_is_refused(archive: Path, tmp_path: Path):
    bad = rewrite(archive, tmp_path / "bad.tar.zst",
                  lambda i, d: (i, d.replace(b"v-/registry/a", b"v-/registry/A")) if i.name == "kine/state.db" else (i, d))
    with pytest.raises(BackupError, match="member kine/state.db does not match its checksum"):
        verify(bad)


def test_member_dropped_or_added_is_refused(archive: Path, tmp_path: Path):
    dropped = rewrite(archive, tmp_path / "d.tar.zst", lambda i, d: None if i.name == "pki/sa.key" else (i, d))
    with pytest.raises(BackupError, match=r"truncated: 1 member\(s\) of its manifest missing \(pki/sa.key\)"):
        verify(dropped)

    def add(i, d):
        if i.name == "config.json":
            i.name = "pki/extra.key"
        return i, d
    added = rewrite(archive, tmp_path / "a.tar.zst", add)
    with pytest.raises(BackupError, match="member 'pki/extra.key' is not in its manifest"):
        verify(added)


def test_manifest_rewritten_to_fit_another_ca_is_refused(archive: Path, tmp_path: Path, make_pki):
    """The checksums say nothing when someone rewrites the manifest too: the CA must still be the
    cluster the manifest names (and the other cluster's CA is not)."""
    other = make_pki(tmp_path / "other", cluster="two")
    ca2 = other.crt("ca").read_bytes()
    man = json.loads(members(archive)[0][1])
    for f in man["files"]:
        if f["path"] == "pki/ca.crt":
            f["sha256"], f["size"] = hashlib.sha256(ca2).hexdigest(), len(ca2)

    def swap(i, d):
        return (i, json.dumps(man).encode()) if i.name == MANIFEST else (i, ca2) if i.name == "pki/ca.crt" else (i, d)
    bad = rewrite(archive, tmp_path / "swapped.tar.zst", swap)
    with pytest.raises(BackupError, match="pki/ca.crt is not the CA of cluster"):
        verify(bad)


def test_not_a_manifest_first_or_another_format_is_refused(archive: Path, tmp_path: Path):
    def rename(i, d):
        if i.name == MANIFEST:
            i.name = "x.json"
        return i, d
    with pytest.raises(BackupError, match="first member is not MANIFEST.json"):
        verify(rewrite(archive, tmp_path / "n.tar.zst", rename))
    with pytest.raises(BackupError, match="format 'mke-backup/9'"):
        verify(rewrite(archive, tmp_path / "f.tar.zst", lambda i, d: (i, d.replace(b"mke-backup/1", b"mke-backup/9"))
                       if i.name == MANIFEST else (i, d)))
    with pytest.raises(BackupError, match=r"entry '\.\./evil' is malformed"):
        verify(rewrite(archive, tmp_path / "e.tar.zst", lambda i, d: (i, d.replace(b'"config.json"', b'"../evil"'))
                       if i.name == MANIFEST else (i, d)))


def test_etcd_snapshot_checksum_is_checked(tmp_path: Path, make_pki):
    """A snapshot ends with the sha256 of what comes before it (etcd's server/storage/mvcc
    snapshot trailer); one flipped byte inside is refused even when the manifest is rewritten."""
    tree = tmp_path / "tree"
    pki = make_pki(tree / "pki", cluster="one")
    body = os.urandom(10000)
    (tree / "etcd").mkdir()
    (tree / "etcd" / "snapshot.db").write_bytes(body + hashlib.sha256(body).digest())
    m = backup.Manifest(created=0, mke_version="x", node_name="n", cluster=der.ca_pin(pki.crt("ca").read_bytes()), storage="etcd",
                        database="etcd", datastore="etcd/snapshot.db", revision=1, scheduled=False, files=())
    backup.check_contents(tmp_path / "a", m, tree)
    (tree / "etcd" / "snapshot.db").write_bytes(body[:-1] + b"x" + hashlib.sha256(body).digest())
    with pytest.raises(BackupError, match="fails etcd's own sha256"):
        backup.check_contents(tmp_path / "a", m, tree)


# ---------------------------------------------------------------- restore


def test_restore_into_an_empty_data_dir(archive: Path, controller: Path, tmp_path: Path):
    target = tmp_path / "fresh"
    said: list[str] = []
    r = restore(archive, target, force=False, node_name="ctl-1", bin_dir=None, say=said.append)
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    for p in (controller / "pki").rglob("*"):
        if p.is_file() and p.name != ".lock":
            q = target / "pki" / p.relative_to(controller / "pki")
            assert q.read_bytes() == p.read_bytes(), p
            assert stat.S_IMODE(q.stat().st_mode) == stat.S_IMODE(p.stat().st_mode), p
    assert kine_names(target / "kine" / "state.db") == ["/registry/a", "/registry/b"]
    assert stat.S_IMODE((target / "kine").stat().st_mode) == 0o700
    assert load_config(r.config_path) == KINE
    assert stat.S_IMODE(r.config_path.stat().st_mode) == 0o600
    assert "verified" in said[0]
    no_temps(target)


def test_restore_brings_back_the_first_objects_not_the_later_ones(archive: Path, controller: Path):
    kine_db_add(controller / "kine" / "state.db", "/registry/later")
    restore(archive, controller, force=True, node_name="ctl-1", bin_dir=None, say=lambda s: None)
    assert kine_names(controller / "kine" / "state.db") == ["/registry/a", "/registry/b"]
    no_temps(controller)


def kine_db_add(db: Path, name: str) -> None:
    con = sqlite3.connect(db)
    con.execute("INSERT INTO kine (name, value) VALUES (?, x'00')", (name,))
    con.commit()
    con.close()


def test_restore_onto_a_cluster_needs_force(archive: Path, controller: Path):
    before = (controller / "kine" / "state.db").read_bytes()
    with pytest.raises(BusyError, match="holds a cluster already .* pass --force"):
        restore(archive, controller, force=False, node_name="ctl-1", bin_dir=None, say=lambda s: None)
    assert (controller / "kine" / "state.db").read_bytes() == before
    no_temps(controller)


def test_restore_of_another_clusters_backup_is_refused_even_with_force(archive: Path, tmp_path: Path, make_pki):
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    make_pki(other / "pki", cluster="two")
    ca = (other / "pki" / "ca.crt").read_bytes()
    with pytest.raises(BackupError, match=r"is a backup of cluster sha256:\w+, but .* holds cluster sha256:\w+; "
                                          r"refusing to mix them: run `mke reset`"):
        restore(archive, other, force=True, node_name="ctl-1", bin_dir=None, say=lambda s: None)
    assert (other / "pki" / "ca.crt").read_bytes() == ca and not (other / "kine").exists()
    no_temps(other)


def test_damaged_archive_writes_nothing(archive: Path, tmp_path: Path):
    cut = tmp_path / "cut.tar.zst"
    cut.write_bytes(archive.read_bytes()[:-200])
    target = tmp_path / "fresh"
    with pytest.raises(BackupError):
        restore(cut, target, force=False, node_name="ctl-1", bin_dir=None, say=lambda s: None)
    assert not target.exists()


def test_restore_refused_while_mke_runs(archive: Path, controller: Path):
    from mke.node.datadir import DataDirLock

    lock = DataDirLock(controller)
    lock.acquire()
    try:
        with pytest.raises(BusyError, match=f"is running with data dir {controller}"):
            restore(archive, controller, force=True, node_name="ctl-1", bin_dir=None, say=lambda s: None)
    finally:
        lock.release()


def test_interrupted_commit_rolls_forward_and_unfinished_staging_is_dropped(controller: Path, tmp_path: Path):
    staging = controller / STAGING
    (staging / "pki").mkdir(parents=True)
    (staging / "pki" / "ca.crt").write_text("new")
    (staging / "mke.yaml").write_text("{}\n")
    (staging / COMPLETE).write_text(json.dumps({"replace": ["pki", "mke.yaml"]}))
    # killed after the old pki was moved aside, before mke.yaml was placed: a mix, rolled forward
    (controller / backup.OLD).mkdir()
    os.replace(controller / "pki", controller / backup.OLD / "pki")
    os.replace(staging / "pki", controller / "pki")
    assert finish_interrupted_restore(controller)
    assert (controller / "pki" / "ca.crt").read_text() == "new" and (controller / "mke.yaml").exists()
    assert not (controller / "kine").exists()  # the datastore the backup did not have is not kept beside it
    no_temps(controller)
    (staging / "pki").mkdir(parents=True)  # killed while assembling: dropped, nothing replaced
    assert not finish_interrupted_restore(controller)
    assert not staging.exists() and (controller / "pki" / "ca.crt").read_text() == "new"


# ---------------------------------------------------------------- create: atomic; list and prune


def test_failed_backup_leaves_nothing(controller: Path, tmp_path: Path):
    (controller / "kine" / "state.db").unlink()
    out = tmp_path / "out"
    with pytest.raises(BackupError, match="no kine database"):
        create_backup(controller, KINE, out / "b.tar.zst", node_name="ctl-1")
    assert list(out.iterdir()) == []


def test_list_and_prune_keep_manual_archives(controller: Path, tmp_path: Path):
    d = tmp_path / "backups"
    made = []
    for i in range(4):
        made.append(create_backup(controller, KINE, d / f"{backup.SCHEDULED_PREFIX}ctl-1-{i}.tar.zst",
                                  node_name="ctl-1", scheduled=True).path)
    manual = create_backup(controller, KINE, d / "mke-backup-ctl-1-x.tar.zst", node_name="ctl-1").path
    (d / "junk.tar.zst").write_bytes(b"junk")
    listed = list_archives(d)
    assert [a.path for a in listed if a.manifest] == [*made, manual]
    assert [a.problem for a in listed if not a.manifest] == ["not an mke backup (not zstd-compressed; mke backup "
                                                               "writes .tar.zst archives)"]
    assert prune(d, 2) == made[:2]
    assert sorted(p.name for p in d.iterdir()) == sorted([made[2].name, made[3].name, manual.name, "junk.tar.zst"])


def test_scheduled_backups_take_prune_and_wait_for_the_interval(controller: Path, tmp_path: Path):
    import threading

    from mke.logsink import LogSink

    cfg = with_overrides(KINE, **{"backup.interval": "1h", "backup.retention": 1,
                                  "backup.directory": str(tmp_path / "sched")})
    sink = LogSink()
    s = backup.ScheduledBackups(data_dir=controller, config=cfg, node_name="ctl-1", sink=sink,
                                stopping=threading.Event())
    assert s.due_in() == 3600
    first = s.run_once()
    second = s.run_once()
    assert first and second and first.path != second.path
    assert [p.name for p in (tmp_path / "sched").iterdir()] == [second.path.name]  # retention 1
    assert second.manifest.scheduled and second.path.name.startswith("mke-snapshot-ctl-1-")
    assert 3590 < s.due_in() <= 3600


def test_config_backup_section():
    cfg = parse_config({"backup": {"interval": "1h30m", "retention": 3, "directory": "/srv/b"}})
    assert parse_duration(cfg.backup.interval) == 5400
    for bad, where in (({"interval": "5s"}, "backup.interval"), ({"interval": "1x"}, "backup.interval"),
                       ({"retention": True}, "backup.retention"), ({"directory": "rel"}, "backup.directory"),
                       ({"intervall": "1h"}, "did you mean 'interval'")):
        with pytest.raises(ConfigError, match=where):
            parse_config({"backup": bad})


def test_cli_backup_list_and_restore_check(archive: Path, tmp_path: Path):
    """The real command line: `mke restore --check` and `mke backup list` (no root needed for either)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "mke", "restore", "--check", str(archive)], capture_output=True,
                       text=True, cwd=REPO, env=env)
    assert r.returncode == 0 and ": OK: " in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-m", "mke", "backup", "list", "--dir", str(archive.parent), "--data-dir",
                        str(tmp_path / "d")], capture_output=True, text=True, cwd=REPO, env=env)
    assert r.returncode == 0, r.stderr
    assert "b.tar.zst" in r.stdout and "SQLite" in r.stdout and "manual" in r.stdout
