"""mke/wal_backup.py with a real SQLite database in WAL mode (kine's schema) and a real PKI: a writer
commits while the shipper ships; SQLite checkpoints and restarts its log by itself (a tiny
wal_autocheckpoint) and the shipper checkpoints too; the restore (base archive + every segment
replayed) holds exactly the rows that were committed before the last round. Damaged, missing and
foreign segments are refused in one line before anything is written; a log that does not follow
what was shipped starts a new generation; old generations are pruned.

The real kine binary, kube-apiserver and kill -9 are in tests/integration/test_backup_wal.py (same
host) and tests/e2e/test_wal_backup.py (restored on another host)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from mke import wal_backup
from mke.backup import create_backup, restore
from mke.config import default_config, parse_config
from mke.errors import BackupError, ConfigError
from mke.wal_backup import WalShipper, check_generation, generations, pick_generation, prune, replay
from tests.unit.mke.test_backup import KINE, kine_db, kine_names


def insert(con: sqlite3.Connection, name: str) -> None:
    con.execute("INSERT INTO kine (name, created, deleted, create_revision, prev_revision, lease, value) "
                "VALUES (?, 1, 0, 0, 0, 0, randomblob(300))", (name,))


@pytest.fixture
def controller(tmp_path: Path, make_pki) -> Path:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    make_pki(data / "pki", cluster="one")
    kine_db(data / "kine" / "state.db", ["/registry/a"])
    return data


@pytest.fixture
def writer(controller: Path):
    con = sqlite3.connect(controller / "kine" / "state.db", isolation_level=None, timeout=30)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=10")  # SQLite checkpoints (and restarts its log) often by itself
    yield con
    con.close()


def make_shipper(controller: Path, directory: Path, checkpoint_frames: int = 1000) -> WalShipper:
    def make_base(out: Path, hold) -> int:
        return create_backup(controller, KINE, out, node_name="ctl-1", sqlite_hold=hold).manifest.revision

    return WalShipper(db=controller / "kine" / "state.db", directory=directory, make_base=make_base,
                      node_name="ctl-1", checkpoint_frames=checkpoint_frames)


def restored_names(gen, tmp_path: Path, name: str = "restored") -> list[str]:
    check_generation(gen)
    dest = tmp_path / name
    restore(gen.base, dest, force=False, node_name="ctl-2", bin_dir=None, say=lambda s: None,
            replay=lambda db: replay(gen, db))
    return kine_names(dest / "kine" / "state.db")


def test_ship_then_restore_has_every_committed_row(controller: Path, writer, tmp_path: Path):
    shipper = make_shipper(controller, tmp_path / "wal")
    try:
        insert(writer, "/registry/before-base")
        gen = shipper.new_generation()
        assert gen.revision == 2 and (gen.dir / "generation.json").is_file()
        names = ["/registry/a", "/registry/before-base"]
        for round_ in range(5):
            for i in range(20):
                insert(writer, f"/registry/r{round_}-{i}")
                names.append(f"/registry/r{round_}-{i}")
            shipper.sync()
        insert(writer, "/registry/never-shipped")  # after the last round: lost, as documented
        assert len(gen.segments()) >= 5
    finally:
        shipper.close()
    assert restored_names(gen, tmp_path) == names


def test_concurrent_writer_checkpoints_and_restarts(controller: Path, writer, tmp_path: Path):
    """A writer thread and a writer process commit as fast as they can while the shipper ships every
    20 ms and checkpoints every 50 frames, for at least 3 s and until the log has been restarted;
    SQLite's own checkpoints run every 10 frames. Every row committed before the last
    round is in the restore, none is missing in between."""
    shipper = make_shipper(controller, tmp_path / "wal", checkpoint_frames=50)
    gen = shipper.new_generation()
    acked: list[str] = []
    stop = threading.Event()

    def loop() -> None:  # its own connection, as kine's are
        con = sqlite3.connect(controller / "kine" / "state.db", isolation_level=None, timeout=30)
        con.execute("PRAGMA wal_autocheckpoint=10")
        i = 0
        while not stop.is_set():
            insert(con, f"/registry/w{i:06d}")
            acked.append(f"/registry/w{i:06d}")
            i += 1
            time.sleep(0.001)
        con.close()

    t = threading.Thread(target=loop)
    t.start()
    # and another process, as kine is one: SQLite's locks between processes are POSIX locks on the
    # -shm, which this process must never drop (closing any descriptor of the file would)
    script = ("import os,sqlite3,sys,time\n"
              f"con = sqlite3.connect({str(controller / 'kine' / 'state.db')!r}, isolation_level=None, timeout=30)\n"
              "con.execute('PRAGMA wal_autocheckpoint=10')\n"
              f"stop = {str(tmp_path / 'stop')!r}\n"
              "end = time.monotonic() + 60\ni = 0\n"
              "while time.monotonic() < end and not os.path.exists(stop):\n"
              "    con.execute('INSERT INTO kine (name, created, deleted, create_revision, prev_revision, lease, value) '\n"
              "                'VALUES (?, 1, 0, 0, 0, 0, randomblob(300))', (f'/registry/p{i:06d}',))\n"
              "    print(f'/registry/p{i:06d}', flush=True)\n"
              "    i += 1\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    def logs() -> set[int]:
        return {wal_backup.sqlite_wal.decode_segment(p.read_bytes()).header.salt1 for p in gen.segments()}

    try:
        # at least 3 s, and on until SQLite has restarted the log under the shipper at least once
        # and the thread has committed 200 rows (on a loaded machine the busy process may keep the
        # write lock most of the time), 45 s at most
        start = time.monotonic()
        checked = start
        while time.monotonic() - start < 45:
            shipper.sync()
            time.sleep(0.02)
            if time.monotonic() - start >= 3 and time.monotonic() - checked >= 0.5:
                checked = time.monotonic()
                if len(acked) > 200 and len(logs()) > 1:
                    break
    finally:
        stop.set()
        (tmp_path / "stop").touch()
        t.join()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    other = out.split()
    shipper.sync()
    shipper.close()
    assert shipper.checkpoints > 0
    headers = logs()
    assert len(headers) > 1, "the log was never restarted in 45 s: the test did not test restarts"
    assert len(acked) > 200
    print(f"{len(acked)} rows, {len(gen.segments())} segments, {shipper.checkpoints} checkpoints, "
          f"{len(headers)} logs")
    names = restored_names(gen, tmp_path)
    assert len(other) > 200 and sorted(names) == sorted(["/registry/a", *acked, *other])


def test_a_log_that_does_not_follow_breaks_the_chain(controller: Path, writer, tmp_path: Path):
    shipper = make_shipper(controller, tmp_path / "wal")
    shipper.new_generation()
    insert(writer, "/registry/x")
    shipper.sync()
    shipper.close()  # mke stopped: nothing holds the log
    for i in range(2):  # two restarts while nobody shipped
        insert(writer, f"/registry/gap{i}")
        writer.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
    insert(writer, "/registry/y")
    shipper.open()
    assert shipper.sync() == 0 and "does not follow the shipped one" in shipper.broken
    assert shipper.sync() == 0  # nothing more until a new generation
    gen2 = shipper.new_generation()  # what the thread does then
    insert(writer, "/registry/z")
    shipper.sync()
    shipper.close()
    assert restored_names(gen2, tmp_path)[-4:] == ["/registry/gap0", "/registry/gap1", "/registry/y", "/registry/z"]


@pytest.fixture
def shipped(controller: Path, writer, tmp_path: Path):
    shipper = make_shipper(controller, tmp_path / "wal")
    gen = shipper.new_generation()
    for r in range(4):
        insert(writer, f"/registry/s{r}")
        shipper.sync()
    shipper.close()
    assert len(gen.segments()) == 4
    return gen


def assert_refused_before_writing(gen, tmp_path: Path, fragment: str) -> None:
    with pytest.raises(BackupError) as e:
        check_generation(gen)
    assert fragment in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "restored").exists()


def test_truncated_segment_is_refused(shipped, tmp_path: Path):
    seg = shipped.segments()[2]
    seg.write_bytes(seg.read_bytes()[:-10])
    assert_refused_before_writing(shipped, tmp_path, f"{seg}: its sha256 does not match")


def test_tampered_segment_is_refused(shipped, tmp_path: Path):
    seg = shipped.segments()[1]
    data = bytearray(seg.read_bytes())
    data[200] ^= 1
    seg.write_bytes(bytes(data))
    assert_refused_before_writing(shipped, tmp_path, f"{seg}:")


def test_missing_or_foreign_segment_is_refused(shipped, tmp_path: Path):
    segs = shipped.segments()
    segs[1].unlink()
    assert_refused_before_writing(shipped, tmp_path, "a segment is missing")
    segs[2].rename(segs[1])  # renamed into the gap: its header says seq 3
    assert_refused_before_writing(shipped, tmp_path, "is segment 3 of generation")


def test_damaged_base_is_refused(shipped, tmp_path: Path):
    data = bytearray(shipped.base.read_bytes())
    data[-5] ^= 1
    shipped.base.write_bytes(bytes(data))
    assert_refused_before_writing(shipped, tmp_path, "not the base snapshot generation.json names")


def test_restore_without_segments_is_the_base(controller: Path, writer, tmp_path: Path):
    shipper = make_shipper(controller, tmp_path / "wal")
    gen = shipper.new_generation()
    shipper.close()
    assert check_generation(gen).segments == 0
    assert restored_names(gen, tmp_path) == ["/registry/a"]


def test_generations_pick_and_prune(controller: Path, writer, tmp_path: Path):
    shipper = make_shipper(controller, tmp_path / "wal")
    ids = []
    for _ in range(3):
        ids.append(shipper.new_generation().id)
        time.sleep(0.01)
    shipper.close()
    (tmp_path / "wal" / ".20260101T000000Z-deadbeef.999999999.tmp").mkdir()  # a killed process's
    assert [g.id for g in generations(tmp_path / "wal")] == sorted(ids)
    assert pick_generation(tmp_path / "wal", None).id == max(ids)
    gone = prune(tmp_path / "wal", 2, keep=max(ids))
    assert [p.name for p in gone] == sorted(ids)[:1]
    assert [g.id for g in generations(tmp_path / "wal")] == sorted(ids)[1:]
    assert not list((tmp_path / "wal").glob(".*.tmp"))
    with pytest.raises(Exception, match="not a complete generation"):
        pick_generation(tmp_path / "wal", "nope")
    with pytest.raises(BackupError, match="no complete generation"):
        pick_generation(tmp_path / "empty", None)


@pytest.mark.parametrize(("doc", "fragment"), [
    ({"backup": {"continuous": {"interval": "1s"}}}, "this datastore is etcd"),
    ({"storage": {"type": "kine", "kine": {"dataSource": "mysql://u:p@tcp(db:3306)/k"}},
      "backup": {"continuous": {"interval": "1s"}}}, "this datastore is MySQL/MariaDB"),
    ({"storage": {"type": "kine"}, "backup": {"continuous": {"interval": "500ms"}}}, "is not a duration"),
    ({"storage": {"type": "kine"}, "backup": {"continuous": {"interval": "2h"}}}, "out of range"),
    ({"storage": {"type": "kine"}, "backup": {"continuous": {"interval": "1s", "retention": 0}}}, "1-1000"),
    ({"storage": {"type": "kine"}, "backup": {"continuous": {"snapshotInterval": "10s"}}}, "shorter than 1m"),
    ({"storage": {"type": "kine"}, "backup": {"continuous": {"directory": "rel"}}}, "not an absolute path"),
    ({"storage": {"type": "kine"}, "backup": {"continuous": {"intervall": "1s"}}}, "did you mean 'interval'"),
])
def test_config_is_checked(doc, fragment):
    with pytest.raises(ConfigError) as e:
        parse_config(doc, "mke.yaml")
    assert fragment in str(e.value) and "backup.continuous" in str(e.value)


def test_config_accepts_kine_sqlite():
    cfg = parse_config({"storage": {"type": "kine"}, "backup": {"continuous": {"interval": "2s", "retention": 3}}},
                       "mke.yaml")
    assert cfg.backup.continuous.interval == "2s" and cfg.backup.continuous.retention == 3
    assert default_config().backup.continuous.interval == ""
    assert wal_backup.default_directory(Path("/d"), cfg) == Path("/d/backups/wal")


def test_the_controller_thread_ships_and_ships_once_more_at_a_clean_stop(controller: Path, writer, tmp_path: Path):
    from mke.logsink import LogSink

    lines: list[tuple[str, str]] = []

    class Sink(LogSink):
        def line(self, tag: str, text: str, *, level: str = "info") -> None:
            lines.append((level, text))

    cfg = parse_config({"storage": {"type": "kine"}, "backup": {"continuous": {
        "interval": "1s", "directory": str(tmp_path / "wal")}}}, "mke.yaml")
    stopping = threading.Event()
    cb = wal_backup.ContinuousBackup(data_dir=controller, config=cfg, node_name="ctl-1", sink=Sink(), stopping=stopping)
    t = cb.start()
    assert t is not None
    try:
        wait = time.monotonic() + 30
        while not generations(tmp_path / "wal") and time.monotonic() < wait:
            time.sleep(0.05)
        insert(writer, "/registry/shipped-by-a-round")
        time.sleep(1.5)
        insert(writer, "/registry/shipped-at-stop")
    finally:
        stopping.set()
        t.join(timeout=30)
    assert not t.is_alive()
    assert not [x for x in lines if x[0] != "info"], lines
    assert any("base snapshot" in text for _, text in lines)
    gen = pick_generation(tmp_path / "wal", None)
    assert restored_names(gen, tmp_path)[-2:] == ["/registry/shipped-by-a-round", "/registry/shipped-at-stop"]


def test_rounds_start_an_interval_apart_however_long_a_round_takes(controller: Path, tmp_path: Path, monkeypatch):
    """The wait between rounds is what is left of the interval after the round: a round that takes
    0.15 s of a 0.25 s interval must not make rounds 0.4 s apart (what is lost at a crash is the
    interval plus the rounds' time; the e2e test lost a write 1.21 s old with interval 1s)."""
    starts: list[float] = []

    class SlowShipper:
        broken = ""

        def __init__(self, **_kw: object) -> None:
            pass

        def new_generation(self):
            return types.SimpleNamespace(id="gen", revision=1, position=0)

        def sync(self) -> int:
            starts.append(time.monotonic())
            time.sleep(0.15)
            return 0

        def close(self) -> None:
            pass

    monkeypatch.setattr(wal_backup, "WalShipper", SlowShipper)
    (tmp_path / "wal").mkdir()
    cfg = parse_config({"storage": {"type": "kine"}, "backup": {"continuous": {
        "interval": "1s", "directory": str(tmp_path / "wal")}}}, "mke.yaml")
    stopping = threading.Event()
    cb = wal_backup.ContinuousBackup(data_dir=controller, config=cfg, node_name="ctl-1",
                                     sink=types.SimpleNamespace(line=lambda *a, **k: None), stopping=stopping)
    cb.interval = 0.25
    t = cb.start()
    assert t is not None
    time.sleep(1.6)
    stopping.set()
    t.join(timeout=10)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)][:-1]  # the last: the round of the stop
    assert len(gaps) >= 2, starts
    assert max(gaps) < 0.33, [round(g, 3) for g in gaps]


def test_no_thread_without_an_interval(controller: Path, tmp_path: Path):
    cb = wal_backup.ContinuousBackup(data_dir=controller, config=KINE, node_name="ctl-1", sink=None,  # type: ignore[arg-type]
                                     stopping=threading.Event())
    assert cb.start() is None


def run_mke(*args: str) -> subprocess.CompletedProcess[str]:
    repo = Path(__file__).resolve().parents[3]
    return subprocess.run([sys.executable, "-m", "mke", *args], capture_output=True, text=True, cwd=repo,
                          env={**os.environ, "PYTHONPATH": str(repo)}, timeout=120)


def test_cli_restore_of_a_directory(shipped, tmp_path: Path):
    """The real command line: `mke restore --check DIR`, `mke restore DIR` into another data dir, and a
    damaged segment refused in one line (exit 19) with nothing written."""
    wal = shipped.dir.parent
    r = run_mke("restore", "--check", str(wal))
    assert r.returncode == 0 and f"{wal}: OK: generation {shipped.id}: base revision" in r.stdout, r.stderr
    assert "+ 4 segments (4 transactions" in r.stdout
    dest = tmp_path / "other-host"
    r = run_mke("restore", str(wal), "--data-dir", str(dest), "--name", "ctl-2")
    assert r.returncode == 0, r.stderr
    assert f"start it with: mke server --config {dest / 'mke.yaml'}" in r.stdout
    assert "kine revision 5" in r.stderr
    assert kine_names(dest / "kine" / "state.db")[-4:] == [f"/registry/s{i}" for i in range(4)]
    assert sorted(p.name for p in (dest / "kine").iterdir()) == ["state.db"]

    seg = shipped.segments()[3]
    seg.write_bytes(seg.read_bytes()[:-1])
    dest2 = tmp_path / "third-host"
    r = run_mke("restore", str(wal), "--data-dir", str(dest2))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == BackupError.exit_code and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"mke: error: {seg}: its sha256 does not match") and "Traceback" not in r.stderr
    assert not dest2.exists()
    r = run_mke("restore", str(wal), "--generation", "20990101T000000Z-00000000", "--check")
    assert r.returncode != 0 and "not a complete generation" in r.stderr and len(r.stderr.strip().splitlines()) == 1
