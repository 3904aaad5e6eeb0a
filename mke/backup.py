"""Backups of a controller: one archive, verified before anything is restored (docs/backup.md).

An archive is a tar stream compressed with zstd (``.tar.zst``), 0600. Its first member is
``MANIFEST.json``: the format, when and by which mke it was made, the cluster it belongs to
(the server CA's public-key hash, what join tokens pin), the datastore and every other
member with its size, sha256 and mode. The other members:

- ``config.json``: the cluster configuration (the running server's, with its overrides);
- ``pki/...``: every CA with its key, the service-account keys, the Secrets encryption key,
  the certificates and kubeconfigs of this controller;
- the datastore: ``etcd/snapshot.db`` (taken through etcd's API, ``/v3/maintenance/snapshot``,
  with the sha256 etcd appends), or ``kine/state.db`` (SQLite's online backup API on the live
  database). MySQL and PostgreSQL are not in it: backing them up is the database's job.

``read_archive`` checks an archive completely (every member against the manifest, the
snapshot's own checksum, the CA against the cluster it names) before ``restore`` writes a
byte. A restore is assembled in ``<data-dir>/.restore/`` and committed by renames; a file
``COMPLETE`` in there makes an interrupted commit one that ``finish_interrupted_restore``
(called by ``mke restore`` and ``mke server``) rolls forward, and a staging dir without it is
removed. So an interrupted restore leaves either the old state or the new, never a mix.

Scheduled backups (``backup.interval`` in mke.yaml) are ``ScheduledBackups``, a thread of
the controller: one archive per interval into ``backup.directory``, the newest
``backup.retention`` scheduled ones kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from mke.errors import BackupError, BusyError, KubeAPIError, UsageError
from mke.node.files import fsync_dir

if TYPE_CHECKING:
    from mke.config import ClusterConfig
    from mke.logsink import LogSink

FORMAT = "mke-backup/1"
MANIFEST = "MANIFEST.json"
CONFIG = "config.json"
ETCD_SNAPSHOT = "etcd/snapshot.db"
SQLITE_DB = "kine/state.db"
SUFFIX = ".tar.zst"
SCHEDULED_PREFIX = "mke-snapshot-"  # scheduled archives: pruned to backup.retention
MANUAL_PREFIX = "mke-backup-"  # mke backup's: never pruned
STAGING = ".restore"  # in the data dir: a restore being assembled
COMPLETE = "COMPLETE"  # in STAGING: the restore is complete; commit (or finish committing) it
OLD = ".restore-old"  # in the data dir: what a committed restore replaced, removed at the end
REPLACED = ("pki", "etcd", "kine", "mke.yaml")  # what a restore replaces in the data dir
MAX_MANIFEST = 4 << 20
ETCD_SHA_LEN = 32
CHUNK = 1 << 20
BUMP_REVISION = 1_000_000_000  # etcdutl --bump-revision: newer than anything a client saw before


# ---------------------------------------------------------------- the manifest


@dataclasses.dataclass(frozen=True, kw_only=True)
class Entry:
    path: str
    size: int
    sha256: str
    mode: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Manifest:
    created: float
    mke_version: str
    node_name: str
    cluster: str  # ca_hash of pki/ca.crt: the cluster this archive belongs to
    storage: str  # etcd | kine
    database: str  # etcd | SQLite | MySQL/MariaDB | PostgreSQL
    datastore: str  # the member holding the datastore, "" when not included (the database's job)
    revision: int  # the datastore's revision when it was taken (0: unknown)
    scheduled: bool
    files: tuple[Entry, ...]

    def to_json(self) -> bytes:
        doc = {"format": FORMAT, **dataclasses.asdict(self)}
        return json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def parse(cls, data: bytes, where: str) -> Manifest:
        def bad(what: str) -> BackupError:
            return BackupError(f"{where}: {MANIFEST}: {what}; this is not an archive mke backup wrote, or it is damaged")

        try:
            doc = json.loads(data)
        except ValueError:
            raise bad("not JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            fmt = doc.get("format") if isinstance(doc, dict) else None
            raise bad(f"format {fmt!r}, expected {FORMAT!r}")
        try:
            files = tuple(Entry(path=str(f["path"]), size=int(f["size"]), sha256=str(f["sha256"]), mode=int(f["mode"]))
                          for f in doc["files"])
            m = cls(created=float(doc["created"]), mke_version=str(doc["mke_version"]),
                    node_name=str(doc["node_name"]), cluster=str(doc["cluster"]), storage=str(doc["storage"]),
                    database=str(doc["database"]), datastore=str(doc["datastore"]), revision=int(doc["revision"]),
                    scheduled=bool(doc["scheduled"]), files=files)
        except (KeyError, TypeError, ValueError) as e:
            raise bad(f"field {e} missing or malformed") from None
        for f in m.files:
            if not _safe_member(f.path) or f.path == MANIFEST or not re.fullmatch(r"[0-9a-f]{64}", f.sha256) \
                    or f.size < 0 or not 0 <= f.mode <= 0o777:
                raise bad(f"entry {f.path!r} is malformed")
        names = [f.path for f in m.files]
        if len(set(names)) != len(names):
            raise bad("an entry is listed twice")
        for need in (CONFIG, "pki/ca.crt", *([m.datastore] if m.datastore else [])):
            if need not in names:
                raise bad(f"no {need}")
        return m


def _safe_member(name: str) -> bool:
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and all(p not in ("", ".", "..") for p in parts)


# ---------------------------------------------------------------- taking a backup


def sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def etcd_snapshot(client_url: str, pki_dir: Path, dest: Path, *, timeout: float = 60.0) -> int:
    """Stream etcd's snapshot (``POST /v3/maintenance/snapshot`` on its JSON gateway) into
    ``dest``: newline-separated ``{"result":{"blob":<base64>,...}}`` messages until the stream
    ends, the last one being the sha256 of all before it, which is checked here. Returns the
    store's revision when the snapshot began (``/v3/maintenance/status``)."""
    import base64
    import urllib.parse

    from mke.kubeapi import Endpoint

    ep = Endpoint(server=client_url, ca_file=pki_dir / "etcd" / "ca.crt", cert_file=pki_dir / "etcd" / "client.crt",
                  key_file=pki_dir / "etcd" / "client.key")
    u = urllib.parse.urlsplit(client_url)
    conn = http.client.HTTPSConnection(u.hostname or "127.0.0.1", u.port or 2379, context=ep.ssl_context(),
                                       timeout=timeout)

    def post(path: str) -> http.client.HTTPResponse:
        conn.request("POST", path, body=b"{}", headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise KubeAPIError(f"etcd {client_url}{path}: HTTP {resp.status}: "
                               f"{' '.join(resp.read(300).decode(errors='replace').split())}")
        return resp

    h = hashlib.sha256()
    tail = b""  # the last 32 bytes seen: etcd's sha256 of what came before, once the stream ends
    try:
        try:
            status = json.loads(post("/v3/maintenance/status").read())
            revision = int((status.get("header") or {}).get("revision") or 0)
        except ValueError:
            raise KubeAPIError(f"etcd {client_url}: /v3/maintenance/status: the answer is not JSON") from None
        resp = post("/v3/maintenance/snapshot")
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            for line in resp:
                if not line.strip():
                    continue
                try:
                    msg = json.loads(line)
                except ValueError:
                    raise KubeAPIError(f"etcd {client_url}: snapshot: a message that is not JSON") from None
                if msg.get("error"):
                    err = msg["error"]
                    raise KubeAPIError(f"etcd {client_url}: snapshot: {err.get('message') if isinstance(err, dict) else err}")
                blob = base64.b64decode((msg.get("result") or {}).get("blob") or "")
                out.write(blob)
                data = tail + blob
                h.update(data[:-ETCD_SHA_LEN] if len(data) > ETCD_SHA_LEN else b"")
                tail = data[-ETCD_SHA_LEN:]
            out.flush()
            os.fsync(out.fileno())
    except (OSError, http.client.HTTPException) as e:
        dest.unlink(missing_ok=True)
        raise KubeAPIError(f"etcd {client_url}: snapshot: {e}; is mke server running here?") from e
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    finally:
        conn.close()
    if len(tail) != ETCD_SHA_LEN or h.digest() != tail:
        dest.unlink(missing_ok=True)
        raise KubeAPIError(f"etcd {client_url}: the snapshot stream ended early or its sha256 does not match; "
                           "nothing was written; try again")
    return revision


def sqlite_backup(db: Path, dest: Path, *,
                  hold: Callable[[], contextlib.AbstractContextManager[object]] | None = None) -> int:
    """Copy the live SQLite database ``db`` to ``dest`` with SQLite's online backup API (a
    consistent copy while kine writes); check it. Returns kine's revision in the copy. ``hold``
    is entered around the copy alone (continuous backup holds SQLite's write lock there, so that
    it knows which WAL frame the copy ends at; mke/wal_backup.py)."""
    import sqlite3

    if not db.is_file():
        raise BackupError(f"{db}: no kine database here (storage.type kine with SQLite keeps it there); is this "
                          "the controller's --data-dir?")
    try:
        src = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            os.close(fd)
            dst = sqlite3.connect(dest)
            try:
                with hold() if hold is not None else contextlib.nullcontext():
                    src.backup(dst)
                dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
                check = dst.execute("PRAGMA integrity_check").fetchone()[0]
                revision = int(dst.execute("SELECT COALESCE(MAX(id), 0) FROM kine").fetchone()[0])
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as e:
        dest.unlink(missing_ok=True)
        raise BackupError(f"{db}: SQLite backup failed: {e}") from e
    if check != "ok":
        dest.unlink(missing_ok=True)
        raise BackupError(f"{db}: the copy fails SQLite's integrity check ({check}); nothing was written")
    return revision


def archive_name(node: str, *, scheduled: bool, when: float | None = None) -> str:
    stamp = dt.datetime.fromtimestamp(time.time() if when is None else when, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{SCHEDULED_PREFIX if scheduled else MANUAL_PREFIX}{node}-{stamp}{SUFFIX}"


def default_directory(data_dir: Path, cfg: ClusterConfig) -> Path:
    return Path(cfg.backup.directory) if cfg.backup.directory else Path(data_dir) / "backups"


def _tar_add(tar: tarfile.TarFile, name: str, path: Path | None, data: bytes | None, mode: int, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.mode = mode
    info.mtime = int(mtime)
    info.uname = info.gname = "root"
    if data is not None:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        return
    assert path is not None
    info.size = path.stat().st_size
    with open(path, "rb") as f:
        tar.addfile(info, f)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Written:
    path: Path
    manifest: Manifest
    size: int
    seconds: float


def sqlite_path(data_dir: Path, cfg: ClusterConfig) -> Path:
    """kine's SQLite database: ``<data-dir>/kine/state.db``, or the file a ``sqlite://`` dataSource names."""
    if cfg.storage.kine.data_source:  # sqlite:///elsewhere
        return Path(cfg.storage.kine.data_source.split("://", 1)[1].split("?", 1)[0])
    return Path(data_dir) / "kine" / "state.db"


def create_backup(data_dir: Path, cfg: ClusterConfig, out: Path, *, node_name: str, scheduled: bool = False,
                  warn: Callable[[str], None] | None = None,
                  sqlite_hold: Callable[[], contextlib.AbstractContextManager[object]] | None = None) -> Written:
    """Write the archive ``out`` (0600, temp file + rename) for the controller on ``data_dir``.
    ``sqlite_hold``: see ``sqlite_backup`` (continuous backup's base snapshot)."""
    from mke import __version__
    from mke.config import config_to_dict
    from mke.pkifiles import PKIFiles
    from mke.storage.kine import DIALECTS, scheme

    t0 = time.monotonic()
    data_dir = Path(data_dir)
    pki = PKIFiles(data_dir / "pki")  # no cryptography: scheduled backups run inside mke server
    if not pki.crt("ca").is_file():
        raise BackupError(f"{pki.crt('ca')}: no cluster CA; is {data_dir} a controller's data dir (--data-dir)?")
    cluster = pki.ca_pin("ca")
    out = Path(out).absolute()
    if out.is_dir():
        raise UsageError(f"--out {out}: is a directory; name the archive file (e.g. {out / archive_name(node_name, scheduled=False)})")
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    work = out.parent / f".mke-backup-{os.getpid()}-{threading.get_ident()}.tmp"
    tmp_out = out.parent / f".{out.name}.{os.getpid()}-{threading.get_ident()}.tmp"
    try:
        work.mkdir(mode=0o700)
        files: list[tuple[str, Path | None, bytes | None, int]] = []
        # the datastore
        datastore, revision = "", 0
        if cfg.storage.type == "etcd":
            database = "etcd"
            snap = work / "snapshot.db"
            revision = etcd_snapshot(f"https://127.0.0.1:{cfg.storage.etcd.client_port}", pki.dir, snap)
            files.append((ETCD_SNAPSHOT, snap, None, 0o600))
            datastore = ETCD_SNAPSHOT
        else:
            database, shared = DIALECTS.get(scheme(cfg.storage.kine.data_source), ("?", True))
            if not shared:  # SQLite: on this host
                db = sqlite_path(data_dir, cfg)
                copy = work / "state.db"
                revision = sqlite_backup(db, copy, hold=sqlite_hold)
                files.append((SQLITE_DB, copy, None, 0o600))
                datastore = SQLITE_DB
            elif warn is not None:
                warn(f"storage.kine.dataSource is {database}: the archive holds no datastore; backing up the "
                     "database is the database's job (mysqldump, pg_dump); the PKI, keys and configuration are in it")
        # the configuration and the PKI
        files.append((CONFIG, None, json.dumps(config_to_dict(cfg), indent=1).encode(), 0o600))
        with pki.lock():  # never half a certificate rotation
            for p in sorted(pki.dir.rglob("*")):
                if p.is_file() and not p.is_symlink() and p.name != ".lock" and not p.name.endswith(".tmp"):
                    files.append((f"pki/{p.relative_to(pki.dir)}", None, p.read_bytes(), p.stat().st_mode & 0o777))
        entries = []
        for name, path, data, mode in files:
            if data is not None:
                digest, size = hashlib.sha256(data).hexdigest(), len(data)
            else:
                assert path is not None
                digest, size = sha256_file(path)
            entries.append(Entry(path=name, size=size, sha256=digest, mode=mode))
        created = time.time()
        manifest = Manifest(created=created, mke_version=__version__, node_name=node_name, cluster=cluster,
                            storage=cfg.storage.type, database=database, datastore=datastore, revision=revision,
                            scheduled=scheduled, files=tuple(entries))
        import zstandard

        fd = os.open(tmp_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as raw:
            cctx = zstandard.ZstdCompressor(level=3, write_checksum=True, threads=0)
            with cctx.stream_writer(raw, closefd=False) as z, tarfile.open(fileobj=z, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                _tar_add(tar, MANIFEST, None, manifest.to_json(), 0o600, created)
                for name, path, data, mode in files:
                    _tar_add(tar, name, path, data, mode, created)
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp_out, 0o600)
        os.replace(tmp_out, out)
        fsync_dir(out.parent)
    finally:
        tmp_out.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    return Written(path=out, manifest=manifest, size=out.stat().st_size, seconds=time.monotonic() - t0)


# ---------------------------------------------------------------- reading (and verifying) an archive


@contextlib.contextmanager
def _open_tar(path: Path) -> Iterator[tarfile.TarFile]:
    import zstandard

    try:
        raw = open(path, "rb")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    with raw:
        head = raw.read(4)
        raw.seek(0)
        if head != b"\x28\xb5\x2f\xfd":
            raise BackupError(f"{path}: not an mke backup (not zstd-compressed; mke backup writes .tar.zst archives)")
        dctx = zstandard.ZstdDecompressor()
        with dctx.stream_reader(raw, read_across_frames=True) as z:
            try:
                with tarfile.open(fileobj=z, mode="r|") as tar:
                    yield tar
            except (tarfile.TarError, zstandard.ZstdError, EOFError) as e:
                raise BackupError(f"{path}: truncated or damaged ({' '.join(str(e).split()) or type(e).__name__}); "
                                  "use another copy of the backup") from None


def read_manifest(path: Path) -> Manifest:
    """The archive's manifest only (``mke backup list``): its first member, nothing verified."""
    with _open_tar(path) as tar:
        return _first_manifest(tar, path)


def _first_manifest(tar: tarfile.TarFile, path: Path) -> Manifest:
    """The archive's first member, which must be its manifest (parsed, not yet checked against the rest)."""
    info = tar.next()
    if info is None or info.name != MANIFEST or not info.isfile() or info.size > MAX_MANIFEST:
        raise BackupError(f"{path}: its first member is not {MANIFEST}; not an archive mke backup wrote")
    f = tar.extractfile(info)
    assert f is not None
    return Manifest.parse(f.read(), str(path))


def read_archive(path: Path, dest: Path | None = None) -> Manifest:
    """Check every member of the archive against its manifest (size, sha256, nothing missing,
    nothing extra, no member twice); with ``dest``, also write each member under it (files
    0600 or as recorded, directories 0700). Raises BackupError naming the file and the member."""
    path = Path(path)
    with _open_tar(path) as tar:
        manifest = _first_manifest(tar, path)
        expected = {e.path: e for e in manifest.files}
        seen: set[str] = set()
        while (info := tar.next()) is not None:  # (iterating the TarFile would start again at the manifest)
            e = expected.get(info.name)
            if e is None or info.name in seen or not info.isfile():
                raise BackupError(f"{path}: member {info.name!r} is not in its manifest (or twice, or not a file); "
                                  "the archive was altered")
            seen.add(info.name)
            src = tar.extractfile(info)
            assert src is not None
            h = hashlib.sha256()
            size = 0
            out: IO[bytes] | None = None
            if dest is not None:
                target = dest / info.name
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                out = os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "wb")
            try:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    if out is not None:
                        out.write(chunk)
                if out is not None:
                    out.flush()
                    os.fsync(out.fileno())
            finally:
                if out is not None:
                    out.close()
            if size != e.size or h.hexdigest() != e.sha256:
                raise BackupError(f"{path}: member {info.name} does not match its checksum in the manifest "
                                  f"({size} bytes, sha256 {h.hexdigest()[:12]}…; expected {e.size} bytes, "
                                  f"{e.sha256[:12]}…): the archive is damaged or was altered; use another copy")
            if dest is not None:
                os.chmod(dest / info.name, e.mode & 0o644 if e.path.startswith("pki/") else 0o600)  # keys stay 0600
        missing = sorted(set(expected) - seen)
        if missing:
            raise BackupError(f"{path}: truncated: {len(missing)} member(s) of its manifest missing "
                              f"({', '.join(missing[:3])}); use another copy of the backup")
    return manifest


def check_contents(path: Path, manifest: Manifest, tree: Path) -> None:
    """What the checksums cannot say: the CA is the cluster the manifest names, the etcd snapshot
    carries etcd's own sha256 and the SQLite copy passes its integrity check."""
    from mke import der

    pin: str | None
    try:
        pin = der.ca_pin((tree / "pki" / "ca.crt").read_bytes())
    except (OSError, ValueError):
        pin = None
    if pin is None or pin != manifest.cluster:
        raise BackupError(f"{path}: pki/ca.crt is not the CA of cluster {manifest.cluster} its manifest names; "
                          "the archive was altered")
    if manifest.datastore == ETCD_SNAPSHOT:
        snap = tree / ETCD_SNAPSHOT
        h = hashlib.sha256()
        size = snap.stat().st_size
        if size <= ETCD_SHA_LEN:
            raise BackupError(f"{path}: {ETCD_SNAPSHOT} is too short to be an etcd snapshot")
        with open(snap, "rb") as f:
            left = size - ETCD_SHA_LEN
            while left:
                chunk = f.read(min(CHUNK, left))
                h.update(chunk)
                left -= len(chunk)
            if f.read() != h.digest():
                raise BackupError(f"{path}: {ETCD_SNAPSHOT} fails etcd's own sha256; the snapshot is damaged")
    if manifest.datastore == SQLITE_DB:
        import sqlite3

        try:
            con = sqlite3.connect(f"file:{tree / SQLITE_DB}?mode=ro", uri=True)
            try:
                check = con.execute("PRAGMA integrity_check").fetchone()[0]
                con.execute("SELECT COUNT(*) FROM kine").fetchone()
            finally:
                con.close()
        except sqlite3.Error as e:
            raise BackupError(f"{path}: {SQLITE_DB} is not a kine database: {e}") from None
        if check != "ok":
            raise BackupError(f"{path}: {SQLITE_DB} fails SQLite's integrity check: {check}")


def verify(path: Path) -> Manifest:
    """Read the whole archive and check it, writing nothing outside a temp dir it removes."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mke-verify-") as tmp:
        manifest = read_archive(path, Path(tmp))
        check_contents(path, manifest, Path(tmp))
    return manifest


# ---------------------------------------------------------------- restoring


def current_cluster(data_dir: Path) -> str | None:
    """The cluster whose state ``data_dir`` holds (its CA's hash), "" for a datastore without a
    CA, None when it holds no cluster."""
    from mke import der

    ca = Path(data_dir) / "pki" / "ca.crt"
    if ca.exists():
        try:
            return der.ca_pin(ca.read_bytes())
        except (OSError, ValueError):
            return ""
    if (Path(data_dir) / "etcd" / "member").exists() or (Path(data_dir) / "kine" / "state.db").exists():
        return ""
    return None


def finish_interrupted_restore(data_dir: Path, say: Callable[[str], None] | None = None) -> bool:
    """Roll an interrupted restore forward (its staging dir says COMPLETE), or drop one that was
    still being assembled. True when a restore was committed here."""
    data_dir = Path(data_dir)
    staging = data_dir / STAGING
    old = data_dir / OLD
    committed = False
    if (staging / COMPLETE).is_file():
        names = json.loads((staging / COMPLETE).read_text())["replace"]
        old.mkdir(mode=0o700, exist_ok=True)
        for name in REPLACED:
            new = staging / name
            cur = data_dir / name
            if name in names and not new.exists():
                continue  # moved already
            if cur.exists() or cur.is_symlink():
                os.replace(cur, old / name) if not (old / name).exists() else _remove(cur)
            if new.exists():
                os.replace(new, cur)
        fsync_dir(data_dir)
        committed = True
        if say is not None:
            say(f"restore committed in {data_dir} (pki, datastore, mke.yaml from the backup)")
    for leftover in (staging, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    return committed


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Restored:
    manifest: Manifest
    config_path: Path
    seconds: float


def restore(archive: Path, data_dir: Path, *, force: bool, node_name: str, bin_dir: Path | None,
            say: Callable[[str], None], replay: Callable[[Path], None] | None = None) -> Restored:
    """Verify ``archive``, then give ``data_dir`` its cluster: the PKI, the datastore (etcd: a
    fresh single-member cluster made by ``etcdutl snapshot restore``) and ``mke.yaml``.
    ``replay(db)`` brings the archive's SQLite copy forward in the staging dir before it is
    committed (continuous backup's WAL segments, checked by the caller before this is called)."""
    from mke.config import dump_config, parse_config
    from mke.node.binaries import BinaryResolver
    from mke.node.datadir import DataDirLock, holder_pid
    from mke.node.files import private_dir
    from mke.node.hostinfo import advertised_address, host_addresses, url_host

    t0 = time.monotonic()
    archive = Path(archive).absolute()
    data_dir = Path(data_dir).absolute()
    pid = holder_pid(data_dir)
    if pid is not None:
        raise BusyError(f"mke (pid {pid}) is running with data dir {data_dir}; stop it first (mke stop, or SIGTERM)")
    # 1. everything checked, nothing written: the data dir against the manifest, then the whole archive
    _refuse_data_dir(archive, data_dir, read_manifest(archive).cluster, force)
    manifest = verify(archive)
    say(f"{archive.name}: verified {len(manifest.files)} files, cluster {manifest.cluster[:19]}…, "
        f"{manifest.database} revision {manifest.revision}, taken {_when(manifest.created)} on {manifest.node_name}")
    lock = DataDirLock(data_dir)
    private_dir(data_dir)
    lock.acquire()
    try:
        finish_interrupted_restore(data_dir, say)
        _refuse_data_dir(archive, data_dir, manifest.cluster, force)  # again, under the lock
        staging = data_dir / STAGING
        private_dir(staging)
        try:
            tree = staging / "archive"
            read_archive(archive, tree)  # written this time; checked again on the way
            check_contents(archive, manifest, tree)
            try:
                cfg = parse_config(json.loads((tree / CONFIG).read_text()), f"{archive}: {CONFIG}")
            except ValueError as e:
                raise BackupError(f"{archive}: {CONFIG}: not JSON ({e})") from None
            os.replace(tree / "pki", staging / "pki")
            (staging / "mke.yaml").write_text(dump_config(cfg))
            os.chmod(staging / "mke.yaml", 0o600)
            if manifest.datastore == ETCD_SNAPSHOT:
                peer = cfg.storage.etcd.peer_address or advertised_address(cfg, host_addresses())
                peer_url = f"https://{url_host(peer)}:{cfg.storage.etcd.peer_port}"
                etcdutl = BinaryResolver(bin_dir or data_dir / "bin", user_bin_dir=bin_dir is not None).path("etcdutl")
                from mke.procenv import clean_env

                cmd = [str(etcdutl), "snapshot", "restore", str(tree / ETCD_SNAPSHOT), f"--name={node_name}",
                       f"--initial-cluster={node_name}={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
                       f"--data-dir={staging / 'etcd'}", f"--bump-revision={BUMP_REVISION}", "--mark-compacted"]
                res = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=600)
                if res.returncode != 0:
                    last = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
                    raise BackupError(f"etcdutl snapshot restore failed (exit {res.returncode}): {last[:300]}")
                os.chmod(staging / "etcd", 0o700)
            elif manifest.datastore == SQLITE_DB:
                if replay is not None:
                    replay(tree / SQLITE_DB)
                private_dir(staging / "kine")
                os.replace(tree / SQLITE_DB, staging / "kine" / "state.db")
            shutil.rmtree(tree)
            replace = ["pki", "mke.yaml", *(["etcd"] if manifest.datastore == ETCD_SNAPSHOT else []),
                       *(["kine"] if manifest.datastore == SQLITE_DB else [])]
            _sync_tree(staging)
            from mke.node.files import write_file_atomic

            write_file_atomic(staging / COMPLETE, json.dumps({"replace": replace}).encode(), 0o600)
            fsync_dir(staging)
        except BaseException:
            if not (staging / COMPLETE).exists():
                shutil.rmtree(staging, ignore_errors=True)
            raise
        # 2. commit: renames only
        finish_interrupted_restore(data_dir)
    finally:
        lock.release()
    return Restored(manifest=manifest, config_path=data_dir / "mke.yaml", seconds=time.monotonic() - t0)


def _refuse_data_dir(archive: Path, data_dir: Path, cluster: str, force: bool) -> None:
    have = current_cluster(data_dir)
    if have is None:
        return
    if have and have != cluster:
        raise BackupError(f"{archive}: is a backup of cluster {cluster}, but {data_dir} holds cluster "
                          f"{have}; refusing to mix them: run `mke reset` here first (or restore elsewhere)")
    if not force:
        raise BusyError(f"{data_dir} holds a cluster already ({have or 'a datastore'}); pass --force to replace "
                        "its PKI and datastore with the backup's (what it holds now is lost), or `mke reset` first")


def _sync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# ---------------------------------------------------------------- listing and pruning


@dataclasses.dataclass(frozen=True, kw_only=True)
class Listed:
    path: Path
    size: int
    manifest: Manifest | None
    problem: str = ""


def list_archives(directory: Path) -> list[Listed]:
    """The archives in ``directory``, oldest first (by the time in their manifest, else mtime)."""
    out = []
    try:
        paths = sorted(p for p in Path(directory).iterdir() if p.name.endswith(SUFFIX) and p.is_file())
    except FileNotFoundError:
        return []
    for p in paths:
        try:
            out.append(Listed(path=p, size=p.stat().st_size, manifest=read_manifest(p)))
        except (BackupError, UsageError, OSError) as e:
            out.append(Listed(path=p, size=p.stat().st_size if p.exists() else 0, manifest=None,
                              problem=str(e).removeprefix(f"{p}: ")))
    return sorted(out, key=lambda a: a.manifest.created if a.manifest else a.path.stat().st_mtime)


def prune(directory: Path, retention: int) -> list[Path]:
    """Delete the oldest scheduled archives beyond ``retention``; mke backup's own are kept."""
    scheduled = [a for a in list_archives(directory) if a.path.name.startswith(SCHEDULED_PREFIX)]
    gone = []
    for a in scheduled[:max(0, len(scheduled) - retention)]:
        a.path.unlink(missing_ok=True)
        gone.append(a.path)
    return gone


def remove_stale_temps(directory: Path) -> None:
    """Temp files and dirs of a backup whose process is gone (killed while it wrote)."""
    for p in Path(directory).glob(".*.tmp"):
        m = re.search(r"[.-](\d+)-\d+\.tmp$", p.name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            _remove(p)


# ---------------------------------------------------------------- scheduled backups


class ScheduledBackups:
    """The controller's thread: an archive every ``backup.interval`` into ``backup.directory``,
    pruned to ``backup.retention``. The first comes one interval after the newest scheduled
    archive there (at once when that is older), so restarts do not reset the clock."""

    def __init__(self, *, data_dir: Path, config: ClusterConfig, node_name: str, sink: LogSink,
                 stopping: threading.Event) -> None:
        self.data_dir = Path(data_dir)
        self.config = config
        self.node_name = node_name
        self.sink = sink
        self.stopping = stopping
        from mke.config import parse_duration

        self.interval = parse_duration(config.backup.interval) if config.backup.interval else 0.0
        self.directory = default_directory(self.data_dir, config)
        self.last: Written | None = None

    def say(self, text: str, level: str = "info") -> None:
        self.sink.line("backup", text, level=level)

    def start(self) -> threading.Thread | None:
        if not self.interval:
            return None
        from mke.storage.kine import DIALECTS, scheme

        if self.config.storage.type == "kine" and DIALECTS.get(scheme(self.config.storage.kine.data_source),
                                                               ("", False))[1]:
            self.say("backup.interval is set, but storage.kine.dataSource is a shared database: the archives would "
                     "hold the PKI only; backing up the database is its own job (no scheduled backups)", "warn")
            return None
        t = threading.Thread(target=self.loop, name="backups", daemon=True)
        t.start()
        return t

    def due_in(self) -> float:
        newest = [a.manifest.created for a in list_archives(self.directory)
                  if a.manifest is not None and a.path.name.startswith(SCHEDULED_PREFIX)]
        return max(0.0, (max(newest) + self.interval - time.time()) if newest else self.interval)

    def loop(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            remove_stale_temps(self.directory)
            wait = self.due_in()
        except OSError as e:
            self.say(f"{self.directory}: {e.strerror}; no scheduled backups", "error")
            return
        self.say(f"an archive every {self.config.backup.interval} into {self.directory}, the newest "
                 f"{self.config.backup.retention} kept; the next in {wait:.0f}s")
        while not self.stopping.wait(wait):
            self.run_once()
            wait = self.interval

    def run_once(self) -> Written | None:
        out = self.directory / archive_name(self.node_name, scheduled=True)
        n = 1
        while out.exists():  # two in one second (a restart): never replace an archive
            n += 1
            out = self.directory / archive_name(self.node_name, scheduled=True).replace(SUFFIX, f"-{n}{SUFFIX}")
        try:
            w = create_backup(self.data_dir, self.config, out, node_name=self.node_name, scheduled=True)
        except (BackupError, KubeAPIError, UsageError, OSError) as e:
            self.say(f"scheduled backup failed: {e}", "error")
            return None
        self.last = w
        self.say(f"wrote {w.path} ({w.size} bytes, {w.manifest.database} revision {w.manifest.revision}, "
                 f"{w.seconds:.1f}s)")
        try:
            for p in prune(self.directory, self.config.backup.retention):
                self.say(f"pruned {p.name} (backup.retention {self.config.backup.retention})")
        except OSError as e:
            self.say(f"pruning {self.directory}: {e}", "warn")
        return w
