"""Real PostgreSQL and MariaDB servers on loopback, from Debian's packages, for kine.

Each context manager starts a fresh server in a temporary directory (its own user can
enter it), creates a ``kine`` database and user, yields a :class:`Database` and always
stops the server and removes the directory. Used by the integration tests' fixtures
(tests/integration/test_server.py) and by the scale benchmark (tests/bench/bench_scale.py).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


class DatabaseUnavailable(Exception):
    """The database server is not installed here; the message says what to install."""


@dataclass(frozen=True)
class Database:
    dsn: str  # kine's --endpoint
    size: Callable[[], int]  # bytes the kine database takes on disk


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _db_dir(kind: str) -> Path:
    """A directory the database's own user can enter (tmp dirs are 0700 root)."""
    d = Path(tempfile.mkdtemp(prefix=f"mke-test-{kind}-"))
    os.chmod(d, 0o755)
    return d


def _wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not start within {timeout:.0f}s")


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def postgres_server() -> Iterator[Database]:
    bindir = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)
    if bindir is None or shutil.which("runuser") is None:
        raise DatabaseUnavailable("PostgreSQL is not installed (apt-get install postgresql)")
    d = _db_dir("pg")
    proc = None
    try:
        data = d / "data"
        data.mkdir()
        shutil.chown(data, "postgres", "postgres")
        port = _free_port()
        run_as = ["runuser", "-u", "postgres", "--"]
        subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                       check=True, capture_output=True)
        proc = subprocess.Popen([*run_as, str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p",
                                 str(port), "-k", str(data)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(lambda: subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                                     capture_output=True).returncode == 0, 30, "postgres")
        psql = [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
        subprocess.run([*psql, "-c", "CREATE USER kine PASSWORD 'kinepw'", "-c", "CREATE DATABASE kine OWNER kine"],
                       check=True, capture_output=True)

        def size() -> int:
            out = subprocess.run([*psql, "-tAc", "SELECT pg_database_size('kine')"], capture_output=True, text=True,
                                 check=True).stdout
            return int(out.strip())

        yield Database(f"postgres://kine:kinepw@127.0.0.1:{port}/kine?sslmode=disable", size)
    finally:
        if proc is not None:
            _stop(proc, 30)
        shutil.rmtree(d, ignore_errors=True)


@contextmanager
def mariadb_server() -> Iterator[Database]:
    mariadbd = shutil.which("mariadbd") or shutil.which("mysqld") or (
        "/usr/sbin/mariadbd" if os.path.exists("/usr/sbin/mariadbd") else None)
    install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    if not mariadbd or not install:
        raise DatabaseUnavailable("MariaDB is not installed (apt-get install mariadb-server)")
    d = _db_dir("mariadb")
    proc = None
    try:
        data = d / "data"
        data.mkdir()
        shutil.chown(data, "mysql", "mysql")
        sock = data / "mysqld.sock"  # written by the mysql user
        port = _free_port()
        subprocess.run([install, "--no-defaults", f"--datadir={data}", "--user=mysql",
                        "--auth-root-authentication-method=normal", "--skip-test-db"], check=True, capture_output=True)
        proc = subprocess.Popen([mariadbd, "--no-defaults", f"--datadir={data}", "--user=mysql", f"--port={port}",
                                 "--bind-address=127.0.0.1", f"--socket={sock}", f"--pid-file={data / 'mariadbd.pid'}",
                                 "--skip-name-resolve"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = [shutil.which("mariadb") or shutil.which("mysql") or "mysql", f"--socket={sock}", "-uroot"]
        _wait(lambda: subprocess.run([*client, "-e", "select 1"], capture_output=True).returncode == 0, 60, "mariadb")
        subprocess.run([*client, "-e", "CREATE DATABASE kine; CREATE USER 'kine'@'127.0.0.1' IDENTIFIED BY 'kinepw'; "
                        "GRANT ALL ON kine.* TO 'kine'@'127.0.0.1';"], check=True, capture_output=True)

        def size() -> int:
            out = subprocess.run([*client, "-N", "-e", "SELECT COALESCE(SUM(data_length + index_length), 0) FROM "
                                  "information_schema.tables WHERE table_schema = 'kine'"],
                                 capture_output=True, text=True, check=True).stdout
            return int(out.strip() or 0)

        yield Database(f"mysql://kine:kinepw@tcp(127.0.0.1:{port})/kine", size)
    finally:
        if proc is not None:
            _stop(proc, 60)
        shutil.rmtree(d, ignore_errors=True)
