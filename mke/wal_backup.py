"""Continuous backup of kine's SQLite database: a base snapshot plus every WAL frame since, shipped
every ``backup.continuous.interval`` (docs/backup.md, "Continuous backup"). Designed after Litestream
(generations, a base snapshot, WAL frames shipped in order, a read transaction held so SQLite cannot
reuse the log under the shipper); written here, in Python, with no code of it.

The backup directory holds generations, one directory each, named ``<UTC time>-<random>`` so that
they sort by age::

    <directory>/<generation>/generation.json   where the base ends in the WAL (header, frame, checksum)
    <directory>/<generation>/base.tar.zst      an mke backup archive (PKI, configuration, kine/state.db)
    <directory>/<generation>/wal/<seq>.seg     WAL frames after the base, complete transactions only

A generation is made in a temp dir and renamed into place, and every segment is written to a temp
file, fsynced and renamed, so a reader sees whole files only; a crash leaves at most temp files, which
the next start removes.

How the shipper stays in step with SQLite's own checkpoints. kine (SQLite) checkpoints by itself: it
copies WAL frames into the database file, and once every frame is copied the next writer starts the
log again from the top, overwriting frames. Two ways to cope exist: notice the restart afterwards and
take a new base, or make sure no restart can come before the frames are shipped. mke does the second,
and checks for the first:

- The shipper always holds a read transaction, on one of two read-only connections, taking the new
  one before ending the old one. SQLite restarts the log only when no reader holds a mark on it (a
  writer needs every read-mark lock 1..N exclusively), so while the shipper holds one no frame is
  overwritten, shipped or not. The only time its read transaction uses no mark (lock 0: the log was
  completely checkpointed when it began) is when every frame of the log was already shipped; lock 0
  also keeps every checkpoint from copying frames, so frames written after it cannot be checkpointed
  and dropped before the next round ships them.
- Holding marks keeps SQLite's automatic checkpoints from ever completing, so the log would grow for
  as long as writes come. Once it holds ``CHECKPOINT_FRAMES`` frames the shipper checkpoints itself:
  it takes the write lock (``BEGIN IMMEDIATE``: kine's writers wait, they have a 30 s busy timeout),
  ships the rest, drops its read mark, runs ``PRAGMA wal_checkpoint(PASSIVE)``, begins its read
  transaction again and releases the write lock. The next writer starts the log again.
- Every round compares the log's header with the one it shipped last: a new log must be the one
  SQLite starts after one restart (salt-1 plus one, same page size).
  Anything else (mke was not running, the WAL was deleted when the last connection closed, someone
  ran a checkpoint in TRUNCATE mode twice) means frames may be missing, and the shipper starts a new
  generation with a new base snapshot. The same happens at every start of ``mke server``.

The base snapshot (SQLite's online backup API, through ``mke.backup.create_backup``) is taken under
the write lock, so the frame it ends at is known exactly, and the read transaction that protects the
frames after it begins before the lock is released.

A restore takes the newest generation (or a named one), checks every segment and the chain between
them (sha256 of each file; each frame's salts and cumulative checksum; each segment starting where the
one before ended, or at frame 1 of the log SQLite started next), refuses in one line before writing
anything when one is damaged, and then replays the frames into the base's copy of the database as a
checkpoint does: each page written at its place, the file cut to the size the commit frame gives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mke import sqlite_wal
from mke.errors import BackupError, UsageError
from mke.node.files import fsync_dir, write_file_atomic

if TYPE_CHECKING:
    import sqlite3

    from mke.config import ClusterConfig
    from mke.logsink import LogSink

GENERATION_FORMAT = "mke-wal-generation/1"
GENERATION_JSON = "generation.json"
BASE = "base.tar.zst"
SEGMENTS = "wal"
SEGMENT_SUFFIX = ".seg"
CHECKPOINT_FRAMES = 1000  # as SQLite's wal_autocheckpoint: about 4 MiB of 4 KiB pages
MAX_SEGMENT_FRAMES = 4096  # one segment file holds at most this many frames (more go into the next)
WRITE_LOCK_TIMEOUT = 5.0  # seconds the shipper waits for SQLite's write lock before trying next round
GEN_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")


def default_directory(data_dir: Path, cfg: ClusterConfig) -> Path:
    d = cfg.backup.continuous.directory
    return Path(d) if d else Path(data_dir) / "backups" / "wal"


# ---------------------------------------------------------------- generations on disk


@dataclasses.dataclass(frozen=True, kw_only=True)
class Generation:
    dir: Path
    id: str
    created: float
    node_name: str
    base_sha256: str
    wal_header: sqlite_wal.WalHeader | None  # the log the base ends in (None: there was no WAL)
    position: int  # the last frame of that log in the base
    seed: tuple[int, int]  # the running checksum at that frame
    revision: int

    @property
    def base(self) -> Path:
        return self.dir / BASE

    def segments(self) -> list[Path]:
        try:
            return sorted(p for p in (self.dir / SEGMENTS).iterdir()
                          if p.name.endswith(SEGMENT_SUFFIX) and not p.name.startswith("."))
        except FileNotFoundError:
            return []

    def to_json(self) -> bytes:
        return json.dumps({"format": GENERATION_FORMAT, "id": self.id, "created": self.created,
                           "node_name": self.node_name, "base": BASE, "base_sha256": self.base_sha256,
                           "wal_header": self.wal_header.raw.hex() if self.wal_header else "",
                           "position": self.position, "seed": list(self.seed), "revision": self.revision},
                          indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def load(cls, d: Path) -> Generation:
        where = d / GENERATION_JSON
        try:
            doc = json.loads(where.read_bytes())
            if doc.get("format") != GENERATION_FORMAT:
                raise BackupError(f"{where}: format {doc.get('format')!r}, expected {GENERATION_FORMAT!r}")
            hdr = sqlite_wal.parse_header(bytes.fromhex(doc["wal_header"])) if doc["wal_header"] else None
            return cls(dir=d, id=str(doc["id"]), created=float(doc["created"]), node_name=str(doc["node_name"]),
                       base_sha256=str(doc["base_sha256"]), wal_header=hdr, position=int(doc["position"]),
                       seed=(int(doc["seed"][0]), int(doc["seed"][1])), revision=int(doc["revision"]))
        except FileNotFoundError:
            raise BackupError(f"{d}: no {GENERATION_JSON}; not a generation of a continuous backup "
                              "(or one still being made)") from None
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise BackupError(f"{where}: malformed ({type(e).__name__}: {e}); the generation is damaged") from None


def generations(directory: Path) -> list[Generation]:
    """The complete generations in ``directory``, oldest first (those that fail to load are skipped)."""
    out = []
    try:
        dirs = sorted(p for p in Path(directory).iterdir() if GEN_RE.match(p.name) and p.is_dir())
    except FileNotFoundError:
        return []
    for d in dirs:
        with contextlib.suppress(BackupError):
            out.append(Generation.load(d))
    return out


def prune(directory: Path, retention: int, keep: str) -> list[Path]:
    """Remove the oldest generations beyond ``retention`` (never ``keep``, the one being shipped),
    and temp dirs of a process that is gone."""
    gone = []
    gens = [g for g in generations(directory) if g.id != keep]
    for g in gens[:max(0, len(gens) + 1 - retention)]:
        shutil.rmtree(g.dir)
        gone.append(g.dir)
    for p in Path(directory).glob(".*.tmp"):
        m = re.search(r"\.(\d+)\.tmp$", p.name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return gone


# ---------------------------------------------------------------- checking and replaying


@dataclasses.dataclass(frozen=True, kw_only=True)
class Checked:
    generation: Generation
    segments: int
    transactions: int
    frames: int
    last_shipped: float  # when the newest segment was written (the base's time when there is none)


def _walk(gen: Generation) -> Iterator[tuple[Path, sqlite_wal.Segment]]:
    """Every segment of ``gen`` in order, decoded and checked against the one before; BackupError
    naming the file at the first that is damaged, out of order or does not follow."""
    header, pos, seed = gen.wal_header, gen.position, gen.seed
    for n, path in enumerate(gen.segments(), start=1):
        try:
            seg = sqlite_wal.decode_segment(path.read_bytes())
        except BackupError as e:
            raise BackupError(f"{path}: {e}; move it and the segments after it out of {path.parent} to restore up "
                              "to the one before (what they hold is lost)") from None
        if seg.generation != gen.id or seg.seq != n or path.name != segment_name(n):
            raise BackupError(f"{path}: is segment {seg.seq} of generation {seg.generation}, expected segment {n} "
                              f"of {gen.id}: a segment is missing, renamed or from elsewhere")
        if header is not None and seg.header.raw == header.raw:
            ok = seg.first == pos + 1 and seg.seed == seed
        else:
            ok = (header is None or seg.header.follows(header)) and seg.first == 1 and seg.seed == seg.header.checksum
        if not ok:
            raise BackupError(f"{path}: does not continue where the segment before it ended (frame {pos} of its "
                              "WAL); a segment is missing or the backup was altered")
        header, pos, seed = seg.header, seg.last, seg.end_checksum
        yield path, seg


def check_generation(gen: Generation) -> Checked:
    """Check the base archive's file digest and every segment, writing nothing."""
    from mke.backup import SQLITE_DB, read_manifest, sha256_file

    digest, _size = sha256_file(gen.base) if gen.base.is_file() else ("", 0)
    if digest != gen.base_sha256:
        raise BackupError(f"{gen.base}: missing, or not the base snapshot {GENERATION_JSON} names (sha256 differs); "
                          "the generation is damaged: restore an older one with --generation")
    if read_manifest(gen.base).datastore != SQLITE_DB:
        raise BackupError(f"{gen.base}: holds no kine/SQLite database; not a continuous backup's base")
    segs = txs = frames = 0
    last = gen.created
    for _path, seg in _walk(gen):
        segs += 1
        frames += len(seg.frames)
        txs += sum(1 for f in seg.frames if f.commit_size)
        last = seg.shipped
    return Checked(generation=gen, segments=segs, transactions=txs, frames=frames, last_shipped=last)


def replay(gen: Generation, db: Path) -> int:
    """Apply every segment of ``gen`` to ``db`` (the base's copy of the database), as a checkpoint
    does; then make it a one-file database again and check it. Returns kine's revision in it."""
    import sqlite3

    with open(db, "r+b") as f:
        page_size = int.from_bytes(_read_at(f, 16, 2), "big")
        page_size = 65536 if page_size == 1 else page_size
        for path, seg in _walk(gen):
            if seg.header.page_size != page_size:
                raise BackupError(f"{path}: pages of {seg.header.page_size} bytes, the base database's are "
                                  f"{page_size}; not this generation's database")
            for tx in sqlite_wal.transactions(seg.frames):
                for fr in tx:
                    f.seek((fr.page - 1) * page_size)
                    f.write(fr.data)
                f.truncate(tx[-1].commit_size * page_size)
        f.flush()
        os.fsync(f.fileno())
    try:
        con = sqlite3.connect(db, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=DELETE")  # the replayed page 1 says WAL: one file again
            check = con.execute("PRAGMA integrity_check").fetchone()[0]
            revision = int(con.execute("SELECT COALESCE(MAX(id), 0) FROM kine").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error as e:
        raise BackupError(f"{gen.dir}: the replayed database is not a kine database: {e}") from None
    if check != "ok":
        raise BackupError(f"{gen.dir}: the replayed database fails SQLite's integrity check: {check}")
    return revision


def _read_at(f: Any, offset: int, n: int) -> bytes:
    f.seek(offset)
    return f.read(n)


def pick_generation(directory: Path, name: str | None) -> Generation:
    gens = generations(directory)
    if name:
        for g in gens:
            if g.id == name:
                return g
        raise UsageError(f"--generation {name}: not a complete generation in {directory} "
                         f"(have: {', '.join(g.id for g in gens) or 'none'})")
    if not gens:
        raise BackupError(f"{directory}: no complete generation of a continuous backup here "
                          "(backup.continuous.directory of the controller)")
    return gens[-1]


def segment_name(seq: int) -> str:
    return f"{seq:010d}{SEGMENT_SUFFIX}"


# ---------------------------------------------------------------- shipping


class WalShipper:
    """Ships one database's WAL into generations (the mechanism; ``ContinuousBackup`` is the thread).
    Not thread-safe: one thread calls ``new_generation``, ``sync`` and ``close``."""

    def __init__(self, *, db: Path, directory: Path, make_base: Callable[..., Any], node_name: str,
                 checkpoint_frames: int = CHECKPOINT_FRAMES) -> None:
        self.db = Path(db)
        self.wal = self.db.with_name(self.db.name + "-wal")
        self.shm = self.db.with_name(self.db.name + "-shm")
        self.shm_fd: int | None = None
        self.directory = Path(directory)
        self.make_base = make_base  # (out: Path, hold: context manager factory) -> revision
        self.node_name = node_name
        self.checkpoint_frames = checkpoint_frames
        self.readers: list[sqlite3.Connection] = []
        self.held = -1  # index into readers of the one holding a read transaction
        self.writer: sqlite3.Connection | None = None  # takes the write lock (BEGIN IMMEDIATE)
        self.checkpointer: sqlite3.Connection | None = None
        self.gen: Generation | None = None
        self.header: sqlite_wal.WalHeader | None = None
        self.pos = 0
        self.seed: tuple[int, int] = (0, 0)
        self.seq = 0
        self.checkpoints = 0
        self.broken = ""  # why the WAL no longer continues what was shipped ("" while it does)
        self.lock_seconds = 0.0  # total time the write lock was held (base snapshots, checkpoints)

    # -- connections

    def _connect(self, ro: bool) -> sqlite3.Connection:
        import sqlite3

        uri = f"file:{self.db}?mode={'ro' if ro else 'rw'}"
        return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=WRITE_LOCK_TIMEOUT,
                               check_same_thread=False)

    def open(self) -> None:
        if not self.readers:
            self.readers = [self._connect(True), self._connect(True)]
            self.writer = self._connect(False)
            self.checkpointer = self._connect(False)
            self.readers[0].execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # the -shm exists now
            # kept open until close(): closing a descriptor of the -shm would drop this process's
            # POSIX locks on it, the read marks that keep SQLite from restarting the log (fcntl(2))
            self.shm_fd = os.open(self.shm, os.O_RDONLY | os.O_CLOEXEC)

    def close(self) -> None:
        for c in [*self.readers, self.writer, self.checkpointer]:
            if c is not None:
                with contextlib.suppress(Exception):
                    c.close()
        self.readers, self.writer, self.checkpointer, self.held = [], None, None, -1
        if self.shm_fd is not None:
            os.close(self.shm_fd)
            self.shm_fd = None

    def _shm(self) -> int:
        assert self.shm_fd is not None, "open() first"
        return self.shm_fd

    def _hold_read(self) -> None:
        """Begin a read transaction on the other reader, then end the one held (never none held)."""
        nxt = 1 if self.held == 0 else 0
        r = self.readers[nxt]
        r.execute("BEGIN")
        r.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        if self.held >= 0:
            self.readers[self.held].execute("COMMIT")
        self.held = nxt

    def _release_read(self) -> None:
        if self.held >= 0:
            self.readers[self.held].execute("COMMIT")
            self.held = -1

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        assert self.writer is not None
        self.writer.execute("BEGIN IMMEDIATE")
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.writer.execute("ROLLBACK")  # it wrote nothing
            self.lock_seconds += time.monotonic() - t0

    # -- generations

    def new_generation(self) -> Generation:
        """A base snapshot (under the write lock: the WAL position it ends at is exact) in a new generation."""
        self.close()
        self.open()
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        now = time.time()
        gid = f"{dt.datetime.fromtimestamp(now, dt.UTC).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"
        tmp = self.directory / f".{gid}.{os.getpid()}.tmp"
        tmp.mkdir(mode=0o700)
        at: dict[str, Any] = {}

        @contextlib.contextmanager
        def hold() -> Iterator[None]:
            with self._write_lock():
                at["end"] = self._log_end()  # nothing is being written: the copy ends exactly there
                yield  # the copy
                self._hold_read()  # the frames after the base are protected before writers go on

        try:
            revision = self.make_base(tmp / BASE, hold)
            from mke.backup import sha256_file

            header, position, seed = at["end"]
            gen = Generation(dir=self.directory / gid, id=gid, created=now, node_name=self.node_name,
                             base_sha256=sha256_file(tmp / BASE)[0], wal_header=header, position=position,
                             seed=seed, revision=revision)
            (tmp / SEGMENTS).mkdir(mode=0o700)
            write_file_atomic(tmp / GENERATION_JSON, gen.to_json(), 0o600, durable=True)
            os.rename(tmp, gen.dir)
            fsync_dir(self.directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.gen, self.header, self.pos, self.seed, self.seq = gen, gen.wal_header, gen.position, gen.seed, 0
        self.broken = ""
        return gen

    # -- one round

    def sync(self) -> int:
        """Ship the transactions committed since the last round; returns the frames shipped. When the
        WAL no longer continues what was shipped, ``broken`` says why and nothing more is shipped
        until ``new_generation``."""
        assert self.gen is not None
        if self.broken:
            return 0
        shipped = self._ship()
        if self.broken:
            return shipped
        self._hold_read()
        if self.pos >= self.checkpoint_frames:
            shipped += self.checkpoint()
        return shipped

    def _file_header(self) -> sqlite_wal.WalHeader | None:
        try:
            with open(self.wal, "rb") as f:
                raw = f.read(sqlite_wal.WAL_HEADER)
        except FileNotFoundError:
            return None
        if len(raw) < sqlite_wal.WAL_HEADER:
            return None  # no log yet (or truncated by a checkpoint)
        return sqlite_wal.parse_header(raw)

    def _log_end(self) -> tuple[sqlite_wal.WalHeader | None, int, tuple[int, int]]:
        """Under the write lock: the log, its last committed frame and the checksum there (None, 0
        when the log holds no frame: whatever log comes next starts at its frame 1)."""
        index = sqlite_wal.read_wal_index(self._shm())
        hdr = self._file_header()
        if index is None or hdr is None or index.mx_frame == 0:
            return None, 0, (0, 0)
        if index.salts != hdr.salts:
            raise BackupError(f"{self.shm}: names another log than {self.wal} under the write lock")
        return hdr, index.mx_frame, index.frame_checksum

    def _ship(self) -> int:
        assert self.gen is not None
        index = sqlite_wal.read_wal_index(self._shm())
        if index is None or index.mx_frame == 0:
            return 0  # no committed frame (or a writer changing the wal-index right now: next round)
        try:
            hdr = self._file_header()
        except BackupError as e:
            self.broken = f"{self.wal}: {e}"
            return 0
        if hdr is None or hdr.salts != index.salts:
            return 0  # a restart under way: the file's header comes with its first frame
        if self.header is None or hdr.raw != self.header.raw:
            if self.header is not None and not hdr.follows(self.header):
                self.broken = (f"{self.wal}: a new log (salt-1 {hdr.salt1:#x}) that does not follow the shipped one "
                               f"(salt-1 {self.header.salt1:#x})")
                return 0
            self.header, self.pos, self.seed = hdr, 0, hdr.checksum
        frames = sqlite_wal.read_committed(self.wal, self.header, self.pos, index)
        total = 0
        while frames:
            # a segment: whole transactions, MAX_SEGMENT_FRAMES or more only for one huge transaction
            cut = 0
            for i, fr in enumerate(frames):
                if fr.commit_size:
                    cut = i + 1
                    if cut >= MAX_SEGMENT_FRAMES:
                        break
            part, frames = frames[:cut], frames[cut:]
            self.seq += 1
            seg = sqlite_wal.Segment(generation=self.gen.id, seq=self.seq, shipped=time.time(), header=self.header,
                                     first=self.pos + 1, seed=self.seed, frames=part)
            write_file_atomic(self.gen.dir / SEGMENTS / segment_name(self.seq), sqlite_wal.encode_segment(seg), 0o600,
                              durable=True)
            self.pos, self.seed = part[-1].index, part[-1].checksum
            total += len(part)
        return total

    def checkpoint(self) -> int:
        """Ship the rest under the write lock, then let SQLite copy the log into the database
        (PASSIVE) with no read mark of ours in the way, so that the next writer starts it again."""
        import sqlite3

        assert self.checkpointer is not None
        try:
            with self._write_lock():
                shipped = self._ship()
                self._release_read()
                try:
                    self.checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                finally:
                    self._hold_read()
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                return 0  # kine is writing a long transaction: next round
            raise
        self.checkpoints += 1
        return shipped


class ContinuousBackup:
    """The controller's thread (``backup.continuous`` in mke.yaml): a new generation at start and
    every ``snapshotInterval``, the WAL shipped every ``interval``, the newest ``retention``
    generations kept. Errors are log lines; the next round tries again."""

    def __init__(self, *, data_dir: Path, config: ClusterConfig, node_name: str, sink: LogSink,
                 stopping: threading.Event) -> None:
        from mke.backup import sqlite_path
        from mke.config import parse_duration

        c = config.backup.continuous
        self.data_dir = Path(data_dir)
        self.config = config
        self.node_name = node_name
        self.sink = sink
        self.stopping = stopping
        self.interval = parse_duration(c.interval) if c.interval else 0.0
        self.snapshot_every = parse_duration(c.snapshot_interval)
        self.retention = c.retention
        self.directory = default_directory(self.data_dir, config)
        self.db = sqlite_path(self.data_dir, config)

    def say(self, text: str, level: str = "info") -> None:
        self.sink.line("wal-backup", text, level=level)

    def start(self) -> threading.Thread | None:
        if not self.interval:
            return None
        t = threading.Thread(target=self.loop, name="wal-backup", daemon=True)
        t.start()
        return t

    def make_base(self, out: Path, hold: Callable[[], contextlib.AbstractContextManager[object]]) -> int:
        from mke.backup import create_backup

        w = create_backup(self.data_dir, self.config, out, node_name=self.node_name, sqlite_hold=hold)
        return w.manifest.revision

    def loop(self) -> None:
        import sqlite3

        shipper = WalShipper(db=self.db, directory=self.directory, make_base=self.make_base, node_name=self.node_name)
        need_base, failures, next_base, next_round = True, 0, 0.0, 0.0
        try:
            while not self.stopping.is_set():
                try:
                    if need_base or time.monotonic() >= next_base:
                        if not self.db.is_file():
                            self.stopping.wait(1.0)
                            continue
                        t0 = time.monotonic()
                        gen = shipper.new_generation()
                        need_base, next_base = False, time.monotonic() + self.snapshot_every
                        next_round = time.monotonic() + self.interval
                        self.say(f"generation {gen.id}: base snapshot (revision {gen.revision}, WAL frame "
                                 f"{gen.position}) in {time.monotonic() - t0:.1f}s; shipping the WAL every "
                                 f"{self.config.backup.continuous.interval} into {self.directory}")
                        for p in prune(self.directory, self.retention, keep=gen.id):
                            self.say(f"pruned generation {p.name} (backup.continuous.retention {self.retention})")
                    if self.stopping.wait(max(0.0, next_round - time.monotonic())):
                        shipper.sync()  # the last round of a clean stop
                        break
                    # rounds start `interval` apart: the time a round takes is not added to the wait (it
                    # was: the recovery point was interval plus two rounds, 1.2 s at 1s in the e2e test)
                    next_round = time.monotonic() + self.interval
                    shipper.sync()
                    failures = 0
                    if shipper.broken:
                        self.say(f"{shipper.broken}; frames may be missing: starting a new generation", "warn")
                        need_base = True
                except (sqlite3.Error, OSError, BackupError, UsageError) as e:
                    failures += 1
                    self.say(f"shipping the WAL failed: {' '.join(str(e).split())}", "error")
                    if failures >= 3:
                        need_base = True  # start over from a new base snapshot
                    self.stopping.wait(min(30.0, self.interval * failures))
        except Exception as e:  # noqa: BLE001 - a thread's last word: say it, never a silent death
            self.say(f"continuous backup stopped: {type(e).__name__}: {e}", "error")
        finally:
            shipper.close()
