"""mke backup / mke restore with 10,000 objects (issue 15's report), etcd and kine on SQLite.

A real controller (``python -m mke server``, the real etcd/kine and kube-apiserver, free ports)
gets ``MKE_BENCH_OBJECTS`` ConfigMaps (default 10,000, 300 characters of random base64 data each,
8 writers),
then:

- ``mke backup --out``: time and archive size, against the datastore's own snapshot alone
  taken the same way, a moment before (etcd: the ``/v3/maintenance/snapshot`` stream mke uses;
  SQLite: the online backup API); the ratio is what the archive (PKI, configuration,
  manifests, checksums, zstd) costs on top;
- ``mke reset`` + ``mke restore``: time, against the datastore's own restore alone (etcd:
  ``etcdutl snapshot restore`` of that snapshot; SQLite: a copy of the file);
- the restored controller is started and must list every ConfigMap (a bench that restores
  fewer objects than it made fails: the figure would be meaningless).

Needs root and the binaries ($MKE_TEST_BIN_DIR or the docker-mode build,
tests/support/binaries.py); prints why it skips otherwise. Run alone:
``nox -s bench -- bench_backup``.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import sqlite3
import ssl
import subprocess
import tempfile
import threading
import time
from pathlib import Path

OBJECTS = int(os.environ.get("MKE_BENCH_OBJECTS", "10000"))
WRITERS = 8
PAYLOAD_BYTES = 225  # random, as base64: 300 characters that compress as little as real data's worst


def _create(server, count: int) -> float:
    """``count`` ConfigMaps bench-0 ... in namespace default, WRITERS keep-alive connections; seconds."""
    pki = server.data_dir / "pki"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    errors: list[str] = []
    next_i = iter(range(count))
    lock = threading.Lock()

    def writer() -> None:
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=60)
        try:
            while True:
                with lock:
                    i = next(next_i, None)
                if i is None or errors:
                    return
                body = json.dumps({"metadata": {"name": f"bench-{i}", "labels": {"bench": "backup"}},
                                   "data": {"k": base64.b64encode(os.urandom(PAYLOAD_BYTES)).decode()}})
                for _attempt in range(5):
                    try:
                        conn.request("POST", "/api/v1/namespaces/default/configmaps", body,
                                     {"Content-Type": "application/json"})
                        r = conn.getresponse()
                        r.read()
                    except (OSError, http.client.HTTPException):
                        conn.close()
                        time.sleep(0.5)
                        continue
                    if r.status in (201, 409):  # 409: a retried create that had gone through
                        break
                    if r.status == 429 or r.status >= 500:
                        time.sleep(0.5)
                        continue
                    errors.append(f"bench-{i}: HTTP {r.status}")
                    return
                else:
                    errors.append(f"bench-{i}: no answer after 5 tries")
                    return
        finally:
            conn.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=writer) for _ in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"creating the ConfigMaps: {errors[0]}")
    return time.monotonic() - t0


def _count(server) -> int:
    out = subprocess.run([str(server.bin_dir / "kubectl"), "--kubeconfig", str(server.data_dir / "pki" / "admin.conf"),
                          "get", "configmaps", "-n", "default", "-l", "bench=backup", "--chunk-size=2000",
                          "-o", "name"], capture_output=True, text=True, timeout=300, check=True).stdout
    return len(out.split())


def _raw_snapshot(server, storage: str, dest: Path) -> float:
    t0 = time.monotonic()
    if storage == "etcd":
        from mke.backup import etcd_snapshot

        port = server.config["storage"]["etcd"]["clientPort"]
        etcd_snapshot(f"https://127.0.0.1:{port}", server.data_dir / "pki", dest, timeout=300)
    else:
        src = sqlite3.connect(f"file:{server.data_dir / 'kine' / 'state.db'}?mode=ro", uri=True)
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
    return time.monotonic() - t0


def _raw_restore(bins: Path, storage: str, snap: Path, work: Path) -> float:
    t0 = time.monotonic()
    if storage == "etcd":
        subprocess.run([str(bins / "etcdutl"), "snapshot", "restore", str(snap), "--data-dir", str(work / "etcd"),
                        "--name", "bench", "--initial-cluster", "bench=https://127.0.0.1:2380",
                        "--initial-advertise-peer-urls", "https://127.0.0.1:2380"],
                       capture_output=True, check=True, timeout=600)
    else:
        work.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(snap, work / "state.db")
    return time.monotonic() - t0


def _one(report, bins: Path, storage: str, tmp: Path) -> None:
    from tests.integration.test_backup import config
    from tests.integration.test_server import MkeServer

    cfg = config(storage)
    cfg.pop("backup")  # no scheduled backups during the measurement
    (tmp / storage).mkdir()
    server = MkeServer(tmp / storage, bins, cfg)
    server.config = cfg  # type: ignore[attr-defined]
    archive, snap = tmp / f"{storage}.tar.zst", tmp / f"{storage}.snapshot"
    try:
        server.start()
        made = _create(server, OBJECTS)
        print(f"  {storage}: {OBJECTS} ConfigMaps created in {made:.1f}s ({OBJECTS / made:.0f}/s)", flush=True)
        raw_s = _raw_snapshot(server, storage, snap)
        t0 = time.monotonic()
        server.mke("backup", "--out", str(archive))
        backup_s = time.monotonic() - t0
    finally:
        server.stop()
    size, raw_size = archive.stat().st_size, snap.stat().st_size
    print(f"  {storage}: archive {size / 2**20:.1f} MiB (the datastore's snapshot alone {raw_size / 2**20:.1f} MiB, "
          f"uncompressed), mke backup {backup_s:.2f}s", flush=True)
    report.ratio(f"mke backup, {OBJECTS} objects, {storage}", backup_s,
                 "etcd's snapshot stream alone" if storage == "etcd" else "SQLite's online backup alone", raw_s)
    raw_restore_s = _raw_restore(bins, storage, snap, tmp / f"{storage}-raw-restore")
    server.mke("reset")
    t0 = time.monotonic()
    server.mke("restore", str(archive), "--bin-dir", str(bins))
    restore_s = time.monotonic() - t0
    report.ratio(f"mke restore, {OBJECTS} objects, {storage}", restore_s,
                 "etcdutl snapshot restore alone" if storage == "etcd" else "a copy of the SQLite file", raw_restore_s)
    server.config_path = server.data_dir / "mke.yaml"
    try:
        ready_s = server.start()
        n = _count(server)
    finally:
        server.stop()
    print(f"  {storage}: restored controller ready in {ready_s:.1f}s, {n} of {OBJECTS} ConfigMaps back", flush=True)
    server.mke("reset")
    if n != OBJECTS:
        raise RuntimeError(f"{storage}: the restored controller lists {n} of the {OBJECTS} ConfigMaps backed up")


def run(report) -> None:
    from tests.integration.test_server import find_bin_dir

    bins = find_bin_dir()
    if os.geteuid() != 0 or bins is None or not all(os.access(bins / n, os.X_OK)
                                                   for n in ("etcd", "etcdutl", "kine", "kube-apiserver", "kubectl")):
        print("skipped: needs root and etcd, etcdutl, kine, kube-apiserver, kubectl ($MKE_TEST_BIN_DIR or the "
              "docker-mode build: run as root with Docker)")
        return
    with tempfile.TemporaryDirectory(prefix="mke-bench-backup-") as tmp:
        for storage in ("etcd", "kine"):
            _one(report, bins, storage, Path(tmp))
