"""SQLite's write-ahead log, read and checked as SQLite's own recovery does (sqlite.org/fileformat2.html#walformat),
and the segment files continuous backup ships WAL frames in (docs/backup.md, "Continuous backup").

A WAL file is a 32-byte header (magic, format version, page size, checkpoint sequence, two salts, a
checksum of the first 24 bytes) followed by frames: a 24-byte frame header (page number, the database
size in pages for the last frame of a transaction (a "commit frame"), else 0, the two salts, a checksum)
and one page. The checksum is cumulative: each frame's covers its first 8 header bytes and its page,
seeded with the previous frame's (the header's for frame 1). A frame belongs to the log only when its
salts are the header's and its checksum matches; a transaction is committed when its commit frame is
valid. Frames after the last valid commit frame are not part of the database (a writer still writing,
or a transaction rolled back): ``scan`` stops there. When SQLite starts the log again from the top (a
"restart", after a checkpoint copied every frame into the database), the new header has salt-1 plus one,
a new random salt-2 and the checkpoint sequence plus one; frames of the old log left behind carry the
old salts and no longer count.

No library reads WAL frames (Python's sqlite3 exposes none of it), so this is written here, following
the file-format document; it is ~100 lines and has no dependency.

A segment (``encode_segment``/``decode_segment``) is continuous backup's unit: one file holding
complete transactions of one WAL, contiguous frames, with everything needed to check them alone and in
sequence: the WAL header they belong to, the index of the first frame and the checksum before it, the
generation and sequence number, and a sha256 of the whole file at its end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from mke.errors import BackupError  # here without the file's name: callers prefix it

WAL_MAGIC_LE = 0x377F0682  # checksums over little-endian words
WAL_MAGIC_BE = 0x377F0683  # checksums over big-endian words
WAL_VERSION = 3007000
WAL_HEADER = 32
FRAME_HEADER = 24
MASK = 0xFFFFFFFF
SEGMENT_MAGIC = b"MKEWAL01"
SEGMENT_FORMAT = "mke-wal-segment/1"
MAX_SEGMENT_HEADER = 1 << 16


def checksum(data: bytes, seed: tuple[int, int], big_endian: bool) -> tuple[int, int]:
    """SQLite's WAL checksum of ``data`` (a multiple of 8 bytes), continuing from ``seed``. In Python
    this costs ~0.4 ms per 4 KiB page (2 cores of this machine class): fine for checking a restore,
    too slow to keep up with a busy kine, so the shipper does not call it per frame (``read_committed``)."""
    if len(data) % 8:
        raise BackupError(f"checksummed data must be a multiple of 8 bytes, got {len(data)}")
    return checksum_loop(data, seed, big_endian)


def checksum_loop(data: bytes, seed: tuple[int, int], big_endian: bool) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    s0, s1 = seed
    it = iter(words)
    for x0 in it:
        s0 = (s0 + x0 + s1) & MASK
        s1 = (s1 + next(it) + s0) & MASK
    return s0, s1


@dataclasses.dataclass(frozen=True, kw_only=True)
class WalHeader:
    raw: bytes
    big_endian: bool
    page_size: int
    checkpoint_seq: int
    salt1: int
    salt2: int
    checksum: tuple[int, int]

    @property
    def salts(self) -> tuple[int, int]:
        return self.salt1, self.salt2

    @property
    def frame_size(self) -> int:
        return FRAME_HEADER + self.page_size

    def follows(self, prev: WalHeader) -> bool:
        """True when this log is the one SQLite starts right after ``prev`` (one restart, nothing between):
        salt-1 plus one, which SQLite keeps in the shared wal-index. (The checkpoint sequence is not
        compared: each connection counts its own, and kine writes through several.)"""
        return self.salt1 == (prev.salt1 + 1) & MASK and self.page_size == prev.page_size


def parse_header(raw: bytes) -> WalHeader:
    if len(raw) < WAL_HEADER:
        raise BackupError(f"WAL header: {len(raw)} bytes, expected {WAL_HEADER}")
    raw = bytes(raw[:WAL_HEADER])
    magic, version, page_size, seq, salt1, salt2, c0, c1 = struct.unpack(">8I", raw)
    if magic not in (WAL_MAGIC_LE, WAL_MAGIC_BE):
        raise BackupError(f"WAL header: magic {magic:#010x} is not SQLite's")
    if version != WAL_VERSION:
        raise BackupError(f"WAL header: format version {version}, expected {WAL_VERSION}")
    if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        raise BackupError(f"WAL header: page size {page_size} is not a power of two 512-65536")
    big = magic == WAL_MAGIC_BE
    if checksum(raw[:24], (0, 0), big) != (c0, c1):
        raise BackupError("WAL header: its checksum does not match")
    return WalHeader(raw=raw, big_endian=big, page_size=page_size, checkpoint_seq=seq, salt1=salt1, salt2=salt2,
                     checksum=(c0, c1))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Frame:
    index: int  # 1-based position in its WAL
    page: int
    commit_size: int  # database size in pages after this transaction; 0: not a commit frame
    checksum: tuple[int, int]
    raw: bytes  # frame header + page

    @property
    def data(self) -> bytes:
        return self.raw[FRAME_HEADER:]


def check_frame(hdr: WalHeader, raw: bytes, index: int, seed: tuple[int, int]) -> Frame:
    """The frame ``raw`` at ``index`` if it is valid after ``seed``; BackupError saying why not."""
    if len(raw) != hdr.frame_size:
        raise BackupError(f"frame {index}: truncated ({len(raw)} of {hdr.frame_size} bytes)")
    page, commit, s1, s2, c0, c1 = struct.unpack(">6I", raw[:FRAME_HEADER])
    if (s1, s2) != hdr.salts:
        raise BackupError(f"frame {index}: salts {s1:#x}/{s2:#x} are not its WAL header's "
                             f"({hdr.salt1:#x}/{hdr.salt2:#x}): a frame of another log")
    if page == 0:
        raise BackupError(f"frame {index}: page number 0")
    got = checksum(raw[FRAME_HEADER:], checksum(raw[:8], seed, hdr.big_endian), hdr.big_endian)
    if got != (c0, c1):
        raise BackupError(f"frame {index}: checksum mismatch (the frame is damaged, or not the one that follows)")
    return Frame(index=index, page=page, commit_size=commit, checksum=got, raw=bytes(raw))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scan:
    header: WalHeader
    frames: tuple[Frame, ...]  # complete transactions only: the last one is a commit frame (or none at all)
    end: int  # index of the last committed frame (the start position when there are none)
    end_checksum: tuple[int, int]  # the running checksum at ``end``
    stopped: str  # why the scan stopped after ``end`` ("" at the end of the file)


def scan(path: Path, *, start: int = 0, seed: tuple[int, int] | None = None, header: WalHeader | None = None,
         max_frames: int | None = None) -> Scan | None:
    """SQLite's recovery rule as a reader (what a WAL file holds, checking every checksum); the shipper
    reads the live log through the wal-index instead (``read_committed``: cheaper), and the unit tests
    use this to check that, and the segment checks, against logs SQLite wrote.

    The committed frames of the WAL file ``path`` after frame ``start`` (whose running checksum is
    ``seed``; from the top of the log when ``start`` is 0). None when there is no WAL (no file, or
    shorter than a header). With ``header``, frames are read against that header (the caller's
    checked copy of the file's first 32 bytes); otherwise the file's header is read and checked."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    with f:
        if header is None:
            raw = f.read(WAL_HEADER)
            if len(raw) < WAL_HEADER:
                return None
            header = parse_header(raw)
        if start == 0:
            seed = header.checksum
        assert seed is not None
        f.seek(WAL_HEADER + start * header.frame_size)
        frames: list[Frame] = []
        pending: list[Frame] = []
        running, end, end_sum, why = seed, start, seed, ""
        index = start
        while max_frames is None or len(frames) + len(pending) < max_frames:
            raw = f.read(header.frame_size)
            if not raw:
                break
            index += 1
            try:
                fr = check_frame(header, raw, index, running)
            except BackupError as e:
                why = str(e)
                break
            running = fr.checksum
            pending.append(fr)
            if fr.commit_size:
                frames.extend(pending)
                pending.clear()
                end, end_sum = index, running
        if pending and not why:
            why = f"frames {pending[0].index}-{pending[-1].index}: a transaction without its commit frame (yet)"
    return Scan(header=header, frames=tuple(frames), end=end, end_checksum=end_sum, stopped=why)


# ---------------------------------------------------------------- the live log, as the wal-index says

WAL_INDEX_HEADER = 48  # WalIndexHdr; SQLite keeps two copies at the start of the -shm file


@dataclasses.dataclass(frozen=True, kw_only=True)
class WalIndex:
    """What SQLite's wal-index (the ``-shm`` file) says about the live log: the last committed frame
    (``mx_frame``), the running checksum there, and the log's salts."""

    mx_frame: int
    frame_checksum: tuple[int, int]
    salts: tuple[int, int]
    page_size: int


def read_wal_index(source: Path | int) -> WalIndex | None:
    """The wal-index header of ``source`` (the database's ``-shm``: a path, or a descriptor open on it),
    read as SQLite's readers do: both copies equal, initialised and matching their checksum (native
    byte order); None when there is none or a writer is changing it right now (try again later).

    A process that holds SQLite locks on the -shm (a read transaction) must pass a descriptor it
    keeps open: closing any descriptor of a file drops every POSIX lock the process holds on it,
    SQLite's read marks included (fcntl(2)); opening and closing the path each round did exactly that."""
    if isinstance(source, int):
        raw = os.pread(source, 2 * WAL_INDEX_HEADER, 0)
    else:
        try:
            with open(source, "rb") as f:
                raw = f.read(2 * WAL_INDEX_HEADER)
        except FileNotFoundError:
            return None
    if len(raw) < 2 * WAL_INDEX_HEADER or raw[:WAL_INDEX_HEADER] != raw[WAL_INDEX_HEADER:]:
        return None
    version, _u, _change, is_init, _big, size, mx, _npage, fc0, fc1 = struct.unpack("=3IBBH4I", raw[:32])
    c0, c1 = struct.unpack("=2I", raw[40:48])
    if version != WAL_VERSION or not is_init or checksum_loop(raw[:40], (0, 0), _native_big_endian()) != (c0, c1):
        return None
    salt1, salt2 = struct.unpack(">2I", raw[32:40])  # the WAL header's bytes, copied as they are
    page_size = (size & 0xFF00) | ((size & 0x0001) << 16)
    return WalIndex(mx_frame=mx, frame_checksum=(fc0, fc1), salts=(salt1, salt2), page_size=page_size)


def _native_big_endian() -> bool:
    import sys

    return sys.byteorder == "big"


def read_committed(path: Path, hdr: WalHeader, start: int, index: WalIndex) -> tuple[Frame, ...]:
    """Frames ``start+1 .. index.mx_frame`` of the WAL file ``path``, all committed (the wal-index
    says so), read without recomputing each checksum: each frame's salts must be its log's and the
    last must be a commit frame whose checksum is the one the wal-index holds, which SQLite computed
    over every frame before it. Restores check every frame's checksum (``decode_segment``).
    BackupError when the file does not agree (the log was started again meanwhile)."""
    if index.salts != hdr.salts:
        raise BackupError("the wal-index and the WAL file's header name different logs (a restart under way)")
    n = index.mx_frame - start
    if n <= 0:
        return ()
    fs = hdr.frame_size
    with open(path, "rb") as f:
        f.seek(WAL_HEADER + start * fs)
        data = f.read(n * fs)
    if len(data) != n * fs:
        raise BackupError(f"the WAL file ends before frame {index.mx_frame}, the last committed one")
    frames = []
    for i in range(n):
        raw = data[i * fs:(i + 1) * fs]
        page, commit, s1, s2, c0, c1 = struct.unpack(">6I", raw[:FRAME_HEADER])
        if (s1, s2) != hdr.salts:
            raise BackupError(f"frame {start + i + 1}: salts of another log (the log was started again)")
        frames.append(Frame(index=start + i + 1, page=page, commit_size=commit, checksum=(c0, c1), raw=raw))
    if not frames[-1].commit_size or frames[-1].checksum != index.frame_checksum:
        raise BackupError(f"frame {index.mx_frame}: not the commit frame the wal-index names")
    return tuple(frames)


# ---------------------------------------------------------------- segments


@dataclasses.dataclass(frozen=True, kw_only=True)
class Segment:
    generation: str
    seq: int  # 1, 2, ... within its generation
    shipped: float  # when it was written (time.time())
    header: WalHeader  # the WAL these frames are of
    first: int  # index of the first frame in that WAL
    seed: tuple[int, int]  # the running checksum before the first frame
    frames: tuple[Frame, ...]

    @property
    def last(self) -> int:
        return self.first + len(self.frames) - 1

    @property
    def end_checksum(self) -> tuple[int, int]:
        return self.frames[-1].checksum


def encode_segment(seg: Segment) -> bytes:
    meta = json.dumps({"format": SEGMENT_FORMAT, "generation": seg.generation, "seq": seg.seq, "shipped": seg.shipped,
                       "wal_header": seg.header.raw.hex(), "first": seg.first, "seed": list(seg.seed),
                       "frames": len(seg.frames)}, sort_keys=True).encode()
    body = SEGMENT_MAGIC + struct.pack(">I", len(meta)) + meta + b"".join(f.raw for f in seg.frames)
    return body + hashlib.sha256(body).digest()


def decode_segment(data: bytes) -> Segment:
    """A segment's frames, every one checked (the file's sha256, the header, each frame's salts and
    checksum in sequence, the last frame a commit); BackupError (one line) otherwise."""
    if len(data) < len(SEGMENT_MAGIC) + 4 + 32 or not data.startswith(SEGMENT_MAGIC):
        raise BackupError("not a WAL segment mke wrote (no MKEWAL01 magic), or truncated to nothing")
    body, digest = data[:-32], data[-32:]
    if hashlib.sha256(body).digest() != digest:
        raise BackupError("its sha256 does not match: truncated or altered")
    (n,) = struct.unpack(">I", body[8:12])
    if n > MAX_SEGMENT_HEADER or 12 + n > len(body):
        raise BackupError("its header length is out of range")
    try:
        meta = json.loads(body[12:12 + n])
        if meta.get("format") != SEGMENT_FORMAT:
            raise BackupError(f"format {meta.get('format')!r}, expected {SEGMENT_FORMAT!r}")
        hdr = parse_header(bytes.fromhex(meta["wal_header"]))
        first, count, seq = int(meta["first"]), int(meta["frames"]), int(meta["seq"])
        seed = (int(meta["seed"][0]) & MASK, int(meta["seed"][1]) & MASK)
        generation, shipped = str(meta["generation"]), float(meta["shipped"])
    except (ValueError, KeyError, TypeError, IndexError) as e:
        if isinstance(e, BackupError):
            raise
        raise BackupError(f"its header is malformed ({type(e).__name__}: {e})") from None
    frames_raw = body[12 + n:]
    if first < 1 or count < 1 or len(frames_raw) != count * hdr.frame_size:
        raise BackupError(f"{len(frames_raw)} bytes of frames, expected {count} frames of {hdr.frame_size} "
                             f"from frame {first}")
    frames = []
    running = seed
    for i in range(count):
        fr = check_frame(hdr, frames_raw[i * hdr.frame_size:(i + 1) * hdr.frame_size], first + i, running)
        running = fr.checksum
        frames.append(fr)
    if not frames[-1].commit_size:
        raise BackupError(f"its last frame ({frames[-1].index}) is not a commit frame: an incomplete transaction")
    return Segment(generation=generation, seq=seq, shipped=shipped, header=hdr, first=first, seed=seed,
                   frames=tuple(frames))


def transactions(frames: tuple[Frame, ...] | list[Frame]) -> Iterator[list[Frame]]:
    """The frames grouped by transaction, each group ending with its commit frame."""
    group: list[Frame] = []
    for fr in frames:
        group.append(fr)
        if fr.commit_size:
            yield group
            group = []
