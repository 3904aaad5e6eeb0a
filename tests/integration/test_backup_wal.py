"""Continuous backup of kine/SQLite (issue 15.4) against a real controller: the real kine and
kube-apiserver binaries, ``python -m mke server`` with ``backup.continuous``. A write loop creates
ConfigMaps through the Kubernetes API and records when each was acknowledged; at a random moment the
controller (mke and every process it started) is killed with SIGKILL, as a host crash would; the
backup directory is restored with ``mke restore DIR`` into another data dir (the "other host": a
different data dir on this host, with the same ports, since the first controller is dead), and the
restored controller is started and asked for the newest object. Reported: acknowledged writes lost and
how old the oldest of them was at the kill (target: none older than the interval), and no write
lost in between (every write acknowledged before the newest restored one is there).

Also: a truncated or tampered segment is refused in one line (exit 19) before anything is written;
and the write overhead: the same write loop against a controller without continuous backup.

Needs root and the binaries (tests/support/binaries.py). Takes the e2e lock: it starts controllers.
"""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import signal
import sqlite3
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mke.errors import BackupError
from tests.integration.test_backup import kubectl, one_error_line
from tests.integration.test_server import MkeServer, children_of, find_bin_dir, require, wait_for
from tests.support.ports import free_ports
from tests.support.writeloop import WriteLoop, recovery_point

pytestmark = [pytest.mark.root, pytest.mark.slow]

INTERVAL = 1.0  # backup.continuous.interval of the test, seconds
LOCK = Path("/var/tmp/mke-e2e.lock")


@pytest.fixture(autouse=True)
def e2e_lock() -> Iterator[None]:
    with open(LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def config(wal_dir: Path | None) -> dict[str, Any]:
    api, mke_api, agent, admin, health = free_ports(5)
    cfg: dict[str, Any] = {
        "api": {"port": api, "mkeAPIPort": mke_api},
        "storage": {"type": "kine"},
        "konnectivity": {"agentPort": agent, "adminPort": admin, "healthPort": health},
    }
    if wal_dir is not None:
        cfg["backup"] = {"continuous": {"interval": f"{int(INTERVAL)}s", "directory": str(wal_dir)}}
    return cfg


def kill_9(server: MkeServer) -> float:
    """SIGKILL mke and every process it started for this data dir, as one crash; the time of the kill."""
    assert server.proc is not None
    components = [c["pid"] for c in server.status().get("components", []) if c.get("pid")]
    pids = [server.proc.pid, *components, *children_of(server.data_dir)]
    t = time.monotonic()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in components:  # each component leads its own process group (the supervisor's)
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    server.proc.wait(timeout=30)
    server.proc = None

    def alive(pid: int) -> bool:  # a zombie waiting for init to reap it is dead
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False

    def gone() -> bool:
        return not any(alive(p) for p in [*components, *children_of(server.data_dir)])

    wait_for(gone, 30, "the killed components to be gone")
    return t


def restored_configmaps(db: Path, prefix: str) -> set[str]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT name FROM kine WHERE name LIKE ? AND deleted = 0",
                           (f"/registry/configmaps/default/{prefix}-%",)).fetchall()
    finally:
        con.close()
    return {r[0].rsplit("/", 1)[1] for r in rows}


def wait_for_generation(server: MkeServer) -> None:
    wait_for(lambda: "wal-backup" in server.log_path.read_text() and "base snapshot" in server.log_path.read_text(),
             60, "the first generation of the continuous backup", interval=0.5)


def test_kill_9_during_writes_then_restore_elsewhere(tmp_path: Path) -> None:
    bins = require(find_bin_dir(), "kine", "kube-apiserver", "kubectl")
    wal_dir = tmp_path / "wal"
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    server = MkeServer(tmp_path / "a", bins, config(wal_dir))
    rng = random.Random()
    loop: WriteLoop | None = None
    try:
        server.start()
        wait_for_generation(server)
        loop = WriteLoop("127.0.0.1", server.port, server.data_dir / "pki", "wal")
        loop.start()
        run_for = rng.uniform(8.0, 20.0)  # the random moment
        time.sleep(run_for)
        killed_at = kill_9(server)
        loop.join()
    finally:
        if loop is not None:
            loop.join()
        if server.proc is not None:
            kill_9(server)
    acked = [(n, t) for n, t in loop.acked if t <= killed_at]
    assert len(acked) > 50, f"only {len(acked)} writes acknowledged: the loop did not run"

    # a damaged copy of the backup is refused in one line, before anything is written
    other = MkeServer(tmp_path / "b", bins, yaml.safe_load(server.config_path.read_text()))
    bad = tmp_path / "wal-bad"
    shutil.copytree(wal_dir, bad)
    gen_dir = sorted(p for p in bad.iterdir() if not p.name.startswith("."))[-1]
    segs = sorted((gen_dir / "wal").glob("*.seg"))
    assert len(segs) >= 3, segs
    segs[1].write_bytes(segs[1].read_bytes()[:-7])
    one_error_line(other.mke("restore", str(bad), "--bin-dir", str(bins), check=False), BackupError.exit_code,
                   f"{segs[1]}: its sha256 does not match")
    data = bytearray(segs[0].read_bytes())
    data[len(data) // 2] ^= 0x40
    segs[0].write_bytes(bytes(data))
    one_error_line(other.mke("restore", "--check", str(bad), check=False), BackupError.exit_code, f"{segs[0]}:")
    assert not other.data_dir.exists()

    # restore on the "other host"
    t0 = time.monotonic()
    r = other.mke("restore", str(wal_dir), "--bin-dir", str(bins))
    restore_s = time.monotonic() - t0
    assert "start it with: mke server" in r.stdout, r.stdout
    present = restored_configmaps(other.data_dir / "kine" / "state.db", "wal")
    rp = recovery_point(acked, present, killed_at)
    lost, gaps, oldest_lost_age = rp.lost, rp.gaps, rp.oldest_lost_s
    gens = sorted(p for p in wal_dir.iterdir() if not p.name.startswith("."))
    segs = len(list(gens[-1].glob("wal/*.seg")))
    print(f"\n[wal-backup] killed after {run_for:.1f}s of writes; acknowledged {len(acked)}, restored "
          f"{len(present)} (written after the kill's last ack: {len(present) - (len(acked) - len(lost))}), "
          f"lost {len(lost)}, the oldest lost acknowledged {oldest_lost_age:.2f}s before the kill "
          f"(interval {INTERVAL:.0f}s); {len(gens)} generation(s), {segs} segments in the newest; restore "
          f"{restore_s:.1f}s", flush=True)
    assert not gaps, f"writes lost in between: {gaps[:5]}"
    assert oldest_lost_age <= INTERVAL + 0.5, f"a write acknowledged {oldest_lost_age:.2f}s before the kill was lost"

    # the restored controller starts on the replayed database and serves the newest object
    other.config_path = other.data_dir / "mke.yaml"
    try:
        other.start()
        newest = rp.newest_restored
        assert newest is not None
        assert kubectl(other, "get", "configmap", newest, "-o", "jsonpath={.data.k}").stdout == "v" * 200
        kubectl(other, "create", "configmap", "after-restore")
    finally:
        other.stop()
    assert other.mke("reset").returncode == 0


def measure(tmp_path: Path, bins: Path, wal_dir: Path | None, seconds: float) -> dict[str, float]:
    tmp_path.mkdir()
    server = MkeServer(tmp_path, bins, config(wal_dir))
    try:
        server.start()
        if wal_dir is not None:
            wait_for_generation(server)
        time.sleep(3)  # let the start-up writes settle
        loop = WriteLoop("127.0.0.1", server.port, server.data_dir / "pki", "bench")
        loop.start()
        time.sleep(seconds)
        loop.join()
    finally:
        server.stop()
    assert server.mke("reset").returncode == 0
    lat = sorted(loop.latencies)
    return {"writes_per_s": len(lat) / seconds, "p50_ms": 1000 * statistics.median(lat),
            "p99_ms": 1000 * lat[int(len(lat) * 0.99)], "errors": loop.errors}


def test_write_overhead(tmp_path: Path) -> None:
    """The same write loop (one client, sequential creates) for 30 s against a controller without and
    one with continuous backup (interval 1s)."""
    bins = require(find_bin_dir(), "kine", "kube-apiserver", "kubectl")
    seconds = float(os.environ.get("MKE_WAL_BENCH_SECONDS", "30"))
    off = measure(tmp_path / "off", bins, None, seconds)
    on = measure(tmp_path / "on", bins, tmp_path / "wal", seconds)
    print(f"\n[wal-backup] write loop {seconds:.0f}s: without: {off['writes_per_s']:.1f} writes/s, p50 "
          f"{off['p50_ms']:.1f} ms, p99 {off['p99_ms']:.1f} ms; with (interval 1s): {on['writes_per_s']:.1f} writes/s, "
          f"p50 {on['p50_ms']:.1f} ms, p99 {on['p99_ms']:.1f} ms", flush=True)
    assert off["errors"] == 0 and on["errors"] == 0
    assert on["writes_per_s"] > 0.5 * off["writes_per_s"]
