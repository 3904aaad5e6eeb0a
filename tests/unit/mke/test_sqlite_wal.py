"""mke/sqlite_wal.py against WAL files SQLite itself wrote (Python's sqlite3, WAL mode, no automatic
checkpoint): every committed frame is found and its checksum agrees with SQLite's; a truncated frame,
a changed byte or a frame of another log ends the scan at the last complete transaction before it; a
restarted log follows the one before it; segments round-trip and refuse damage in one line."""

from __future__ import annotations

import hashlib
import sqlite3
import struct
from pathlib import Path

import pytest

from mke import sqlite_wal
from mke.errors import BackupError
from mke.sqlite_wal import FRAME_HEADER, WAL_HEADER, Segment, decode_segment, encode_segment, scan


def open_wal_db(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    return con


def write(con: sqlite3.Connection, n: int, size: int = 100) -> None:
    for _ in range(n):
        con.execute("INSERT INTO t (v) VALUES (randomblob(?))", (size,))


@pytest.fixture
def wal_db(tmp_path: Path):
    con = open_wal_db(tmp_path / "db")
    write(con, 5)
    yield tmp_path / "db", con
    con.close()


def test_scan_finds_every_transaction_sqlite_committed(wal_db):
    db, con = wal_db
    sc = scan(db.with_name("db-wal"))
    assert sc is not None and sc.stopped == ""
    assert sc.header.page_size == 4096
    commits = [f for f in sc.frames if f.commit_size]
    assert len(commits) == 6  # CREATE TABLE + 5 inserts, one transaction each
    assert sc.end == len(sc.frames) == (db.with_name("db-wal").stat().st_size - WAL_HEADER) // sc.header.frame_size


def test_scan_from_a_position_continues_the_checksum_chain(wal_db):
    db, con = wal_db
    first = scan(db.with_name("db-wal"))
    write(con, 3)
    more = scan(db.with_name("db-wal"), start=first.end, seed=first.end_checksum)
    assert more.frames and more.frames[0].index == first.end + 1
    assert sum(1 for f in more.frames if f.commit_size) == 3


def test_no_wal_is_none(tmp_path: Path):
    assert scan(tmp_path / "missing-wal") is None
    (tmp_path / "short-wal").write_bytes(b"\0" * 10)
    assert scan(tmp_path / "short-wal") is None


def copy_wal(db: Path, dest: Path, change=None) -> Path:
    data = bytearray(db.with_name("db-wal").read_bytes())
    if change:
        change(data)
    dest.write_bytes(bytes(data))
    return dest


def test_truncated_frame_ends_the_scan_at_the_transaction_before(wal_db, tmp_path: Path):
    db, con = wal_db
    full = scan(db.with_name("db-wal"))
    fs = full.header.frame_size
    cut = copy_wal(db, tmp_path / "cut-wal", lambda d: d.__delitem__(slice(len(d) - 100, None)))
    sc = scan(cut)
    assert sc.end == full.end - 1 and sc.frames[-1].commit_size
    assert "truncated" in sc.stopped
    assert len(cut.read_bytes()) == WAL_HEADER + full.end * fs - 100


def test_changed_byte_ends_the_scan_before_its_transaction(wal_db, tmp_path: Path):
    db, con = wal_db
    full = scan(db.with_name("db-wal"))
    fs = full.header.frame_size
    k = 3  # flip a byte in frame 3's page

    def flip(d: bytearray) -> None:
        d[WAL_HEADER + (k - 1) * fs + FRAME_HEADER + 200] ^= 0xFF

    sc = scan(copy_wal(db, tmp_path / "bad-wal", flip))
    assert sc.end < k and "frame 3: checksum mismatch" in sc.stopped


def test_frame_with_other_salts_ends_the_scan(wal_db, tmp_path: Path):
    db, con = wal_db
    full = scan(db.with_name("db-wal"))
    fs = full.header.frame_size

    def salt(d: bytearray) -> None:
        off = WAL_HEADER + 2 * fs + 8
        d[off:off + 4] = struct.pack(">I", (full.header.salt1 + 1) & 0xFFFFFFFF)

    sc = scan(copy_wal(db, tmp_path / "salt-wal", salt))
    assert sc.end <= 2 and "frame 3: salts" in sc.stopped and "another log" in sc.stopped


def test_damaged_header_is_refused(wal_db, tmp_path: Path):
    db, con = wal_db
    bad = copy_wal(db, tmp_path / "hdr-wal", lambda d: d.__setitem__(17, d[17] ^ 1))  # a salt byte
    with pytest.raises(BackupError, match="checksum does not match"):
        scan(bad)
    bad = copy_wal(db, tmp_path / "magic-wal", lambda d: d.__setitem__(0, 0))
    with pytest.raises(BackupError, match="magic"):
        scan(bad)


def test_a_restarted_log_follows_the_one_before(wal_db):
    db, con = wal_db
    before = scan(db.with_name("db-wal")).header
    assert con.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0] == 0
    write(con, 1)
    after = scan(db.with_name("db-wal"))
    assert after.header.follows(before) and not before.follows(after.header)
    assert after.frames[0].index == 1 and after.end >= 1
    assert after.header.salt1 == (before.salt1 + 1) & 0xFFFFFFFF
    # twice: frames of the log between are gone, and it no longer follows
    assert con.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0] == 0
    write(con, 1)
    assert not scan(db.with_name("db-wal")).header.follows(before)


def segment_of(db: Path) -> Segment:
    sc = scan(db.with_name("db-wal"))
    return Segment(generation="g", seq=1, shipped=1.0, header=sc.header, first=1, seed=sc.header.checksum,
                   frames=sc.frames)


def test_segment_round_trip(wal_db):
    db, _ = wal_db
    seg = segment_of(db)
    back = decode_segment(encode_segment(seg))
    assert back == seg and back.last == seg.frames[-1].index


def test_truncated_segment_is_refused(wal_db):
    data = encode_segment(segment_of(wal_db[0]))
    for cut in (len(data) - 1, len(data) // 2, 20, 0):
        with pytest.raises(BackupError, match="sha256 does not match|truncated"):
            decode_segment(data[:cut])


def test_tampered_segment_is_refused_even_with_its_digest_recomputed(wal_db):
    data = bytearray(encode_segment(segment_of(wal_db[0])))
    data[-32 - 50] ^= 0x01  # a byte of the last frame's page
    with pytest.raises(BackupError, match="sha256"):
        decode_segment(bytes(data))
    body = bytes(data[:-32])
    with pytest.raises(BackupError, match="checksum mismatch"):
        decode_segment(body + hashlib.sha256(body).digest())


def test_segment_ending_inside_a_transaction_is_refused(wal_db):
    db, con = wal_db
    con.execute("BEGIN")
    write(con, 300, size=3000)  # spills frames to the WAL before the commit
    sc = sqlite_wal.scan(db.with_name("db-wal"))
    con.execute("COMMIT")
    full = sqlite_wal.scan(db.with_name("db-wal"))
    tail = [f for f in full.frames if f.index > sc.end]
    assert len(tail) > 2
    seg = Segment(generation="g", seq=1, shipped=1.0, header=full.header, first=sc.end + 1, seed=sc.end_checksum,
                  frames=tuple(tail[:-1]))
    with pytest.raises(BackupError, match="not a commit frame"):
        decode_segment(encode_segment(seg))


def test_checksum_agrees_with_big_endian_headers():
    raw = struct.pack(">6I", sqlite_wal.WAL_MAGIC_BE, sqlite_wal.WAL_VERSION, 4096, 0, 7, 9)
    c = sqlite_wal.checksum(raw, (0, 0), True)
    hdr = sqlite_wal.parse_header(raw + struct.pack(">2I", *c))
    assert hdr.big_endian and hdr.salts == (7, 9)
    with pytest.raises(BackupError, match="checksum"):
        sqlite_wal.parse_header(raw + struct.pack(">2I", *sqlite_wal.checksum(raw, (0, 0), False)))


def test_wal_index_names_the_last_commit_and_its_checksum(wal_db):
    db, con = wal_db
    write(con, 4)
    index = sqlite_wal.read_wal_index(db.with_name("db-shm"))
    sc = scan(db.with_name("db-wal"))
    assert index is not None and index.page_size == 4096
    assert (index.mx_frame, index.frame_checksum, index.salts) == (sc.end, sc.end_checksum, sc.header.salts)
    frames = sqlite_wal.read_committed(db.with_name("db-wal"), sc.header, 3, index)
    assert [f.raw for f in frames] == [f.raw for f in sc.frames[3:]]


def test_read_committed_refuses_a_file_that_disagrees(wal_db, tmp_path: Path):
    db, con = wal_db
    index = sqlite_wal.read_wal_index(db.with_name("db-shm"))
    sc = scan(db.with_name("db-wal"))
    fs = sc.header.frame_size
    cut = copy_wal(db, tmp_path / "cut-wal", lambda d: d.__delitem__(slice(len(d) - fs, None)))
    with pytest.raises(BackupError, match="ends before frame"):
        sqlite_wal.read_committed(cut, sc.header, 0, index)
    other = copy_wal(db, tmp_path / "salt-wal",
                     lambda d: d.__setitem__(slice(WAL_HEADER + fs + 8, WAL_HEADER + fs + 12), b"\0\0\0\1"))
    with pytest.raises(BackupError, match="frame 2: salts of another log"):
        sqlite_wal.read_committed(other, sc.header, 0, index)
    assert con.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0] == 0
    write(con, 1)
    with pytest.raises(BackupError, match="different logs"):
        sqlite_wal.read_committed(db.with_name("db-wal"), sc.header, 0, sqlite_wal.read_wal_index(db.with_name("db-shm")))


def test_no_wal_index_when_the_copies_differ(wal_db, tmp_path: Path):
    db, _ = wal_db
    data = bytearray(db.with_name("db-shm").read_bytes())
    data[16] ^= 1  # mxFrame of the first copy: a writer in the middle of an update
    (tmp_path / "x-shm").write_bytes(bytes(data))
    assert sqlite_wal.read_wal_index(tmp_path / "x-shm") is None
    assert sqlite_wal.read_wal_index(tmp_path / "missing-shm") is None
