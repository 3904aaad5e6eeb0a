"""Continuous backup of kine/SQLite restored on another host (issue 15, item 4: the recovery point),
with the real static dist/mke on kernel-only hosts (tests/e2e/bareroot.py).

Host ``a`` (10.200.0.1) runs ``mke server`` with ``storage.type: kine`` and
``backup.continuous.interval: 1s`` into /var/wal, outside its data dir. A client in its own network
namespace creates ConfigMaps back to back over HTTPS and records when each 201 came
(tests/support/writeloop.py). After a random 8-20 s every process of host ``a`` (mke and all it
started: everything in the host's mount namespace) gets SIGKILL at once, as a crash would. The WAL
directory is copied into host ``b`` (10.200.0.2: another network namespace, its own bare root), as a
disk moved to a new machine or a network filesystem would be; there ``mke restore /var/wal``, then
``mke server`` as restore says, with nothing changed in the restored mke.yaml (api.address is empty:
the host's own address; mke server reissues the certificates that named a's address). The restored
API is read at b's address with the Python kubernetes client: every write acknowledged more than
interval + 0.5 s before the kill must be there, with no gap among the restored ones. It prints
``acknowledged N, restored M, lost L, oldest lost S s before the kill`` and writes the figures to
``<base>/figures.json``.

What the kill is not: a power loss. SIGKILL leaves the page cache to the kernel, so writes a's
SQLite had not yet fsynced survive on a's disk; the backup's own segments are fsynced before they
count (mke/wal_backup.py), which is what a lost machine would leave.

Run alone: ``flock /var/tmp/mke-e2e.lock env MKE_E2E_SKIP_BUILD=1 MKE_E2E_NO_CONFORMANCE=1 nox -s e2e --
-k wal -s``. Everything lives under /var/tmp/mke-e2e-wal and in netns ``mke-wal-*``; the teardown
kills or stops every process it or mke started, resets both hosts and removes every mount.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e.bareroot import BareRoot
from tests.e2e.cluster import CONFIG, DATA, HOST_ENV, E2ECluster, Proc, clean_slate, dump
from tests.e2e.netns import InNetns, Network
from tests.support.wait import wait_until
from tests.support.writeloop import WriteLoop, recovery_point

pytestmark = [pytest.mark.e2e, pytest.mark.root]

BASE = Path(os.environ.get("MKE_E2E_DIR", "/var/tmp/mke-e2e")).with_name("mke-e2e-wal")
PREFIX = "mke-wal-"
INTERVAL = 1.0  # backup.continuous.interval, seconds
WAL = Path("/var/wal")  # on each host, outside the data dir
PORT = 6443
A, B = "10.200.0.1", "10.200.0.2"  # Network.create numbers the hosts in order: a, b, client


def in_host(root: BareRoot) -> list[int]:
    """Pids of the live processes in ``root``'s mount namespace (its mke and everything mke started)."""
    ns = os.stat(root.nsfile)
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            st = os.stat(p / "ns" / "mnt")
            state = (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if (st.st_dev, st.st_ino) == (ns.st_dev, ns.st_ino) and state != "Z":
            out.append(int(p.name))
    return out


def crash(root: BareRoot, mke: Proc) -> tuple[float, float, int]:
    """SIGKILL every process of the host at once, as a crash: (monotonic and wall time of the kill, how many)."""
    pids = in_host(root)
    assert mke.pid in pids, f"mke (pid {mke.pid}) is not in {root.name}'s mount namespace: {pids}"
    t, wall = time.monotonic(), time.time()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert mke.popen is not None
    mke.popen.wait(30)

    def gone() -> bool:
        rest = in_host(root)
        for pid in rest:  # one started between the listing and the kill (none is expected: mke went first)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return not rest

    wait_until(f"every process of {root.name} gone", gone, timeout=30, interval=0.2)
    return t, wall, len(pids)


def configmaps(kubeconfig: Path, netns: str, prefix: str) -> set[str]:
    """The names of ``prefix``-* ConfigMaps in default, listed 500 at a time from the client namespace."""
    from kubernetes import client, config

    with InNetns(netns):
        api = config.new_client_from_config(config_file=str(kubeconfig))
        try:
            core = client.CoreV1Api(api)
            names: set[str] = set()
            token = None
            while True:
                page = core.list_namespaced_config_map("default", limit=500, _continue=token)
                names |= {c.metadata.name for c in page.items if c.metadata.name.startswith(prefix + "-")}
                token = page.metadata._continue
                if not token:
                    return names
        finally:
            api.close()


def test_kill_9_during_writes_then_restore_on_another_host() -> None:
    from tests.e2e.conftest import require

    require()
    clean_slate(BASE, Network(prefix=PREFIX))
    (BASE / "logs").mkdir(parents=True)
    c = E2ECluster(base=BASE, network=Network(prefix=PREFIX))
    client_ns = f"{PREFIX}client"
    figures: dict[str, object] = {"interval_s": INTERVAL}
    loop: WriteLoop | None = None
    a: Proc | None = None
    try:
        c.create(["a", "b"], ["client"])
        assert (c.host("a").address, c.host("b").address) == (A, B)
        ra, rb = c.roots["a"], c.roots["b"]
        # -- host a: kine on SQLite, shipped every second to /var/wal; api.address empty (the host's own)
        ra.outside(CONFIG).write_text(f"storage:\n  type: kine\nbackup:\n  continuous:\n    interval: {INTERVAL:.0f}s\n"
                                      f"    directory: {WAL}\n")
        t0 = time.monotonic()
        a = Proc("controller a", c.host("a"), ["/mke", "server", "--config", str(CONFIG), "--data-dir", str(DATA),
                                               "--name", "a"], BASE / "logs" / "a.log", env=HOST_ENV).start()
        c.controller = a
        a.wait_for(r"control plane ready", 300)
        a.wait_for(r"wal-backup.*base snapshot", 120)
        figures["a_ready_s"] = round(time.monotonic() - t0, 1)

        # -- the write loop from the client host; the kill at a random moment
        loop = WriteLoop(A, PORT, ra.outside(DATA / "pki"), "wal", enter=lambda: InNetns(client_ns))
        loop.start()
        run_for = random.Random().uniform(8.0, 20.0)
        time.sleep(run_for)
        killed_at, killed_wall, killed = crash(ra, a)
        loop.join()
        acked = [(n, t) for n, t in loop.acked if t <= killed_at]
        figures.update(writes_s=round(run_for, 1), processes_killed=killed, client_errors=loop.errors)
        assert len(acked) > 50, f"only {len(acked)} writes acknowledged in {run_for:.1f}s: the loop did not run"
        assert not list(rb.outside(WAL).parent.glob("wal")) and not rb.outside(DATA).exists()

        # -- the backup directory moves to host b, as a disk would
        shutil.copytree(ra.outside(WAL), rb.outside(WAL), copy_function=shutil.copy2)
        gens = sorted(p for p in rb.outside(WAL).iterdir() if not p.name.startswith("."))
        figures.update(generations=len(gens), segments_newest=len(list(gens[-1].glob("wal/*.seg"))),
                       wal_bytes=sum(f.stat().st_size for f in rb.outside(WAL).rglob("*") if f.is_file()))
        t1 = time.monotonic()
        r = c.run("b", "restore", str(WAL), "--name", "b", timeout=600)
        figures["restore_s"] = round(time.monotonic() - t1, 1)
        figures["restore_said"] = r.stderr.strip().splitlines()
        shipped = re.search(r"shipped up to (\S+ \S+)Z", r.stderr)
        assert shipped, r.stderr
        when = dt.datetime.strptime(shipped.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=dt.UTC)
        figures["newest_segment_age_at_kill_s"] = round(killed_wall - when.timestamp(), 3)
        print(f"\n[wal-backup] mke restore on b:\n{r.stderr.strip()}\n{r.stdout.strip()}", file=sys.stderr)
        assert f"mke server --config {DATA / 'mke.yaml'} --name b" in r.stdout, r.stdout
        restored_cfg = yaml.safe_load(rb.outside(DATA / "mke.yaml").read_text())
        assert not restored_cfg.get("api", {}).get("address"), restored_cfg["api"]  # b advertises its own address

        # -- host b: mke server on the restored data dir, as restore says
        t2 = time.monotonic()
        b = Proc("controller b", c.host("b"), ["/mke", "server", "--config", str(DATA / "mke.yaml"), "--data-dir",
                                               str(DATA), "--name", "b"], BASE / "logs" / "b.log", env=HOST_ENV).start()
        c.joined["b"] = b
        b.wait_for(r"control plane ready", 300)
        figures["b_ready_after_restore_s"] = round(time.monotonic() - t2, 1)
        kubeconfig = BASE / "admin-b.conf"
        kubeconfig.write_text(c.run("b", "kubeconfig", "admin", "--data-dir", str(DATA),
                                    "--server", f"https://{B}:{PORT}").stdout)
        os.chmod(kubeconfig, 0o600)
        present = wait_until("the restored API on b answering", lambda: configmaps(kubeconfig, client_ns, "wal"),
                             timeout=120)
        rp = recovery_point(acked, present, killed_at)
        figures.update(acknowledged=rp.acknowledged, restored=rp.restored, lost=len(rp.lost),
                       oldest_lost_s=round(rp.oldest_lost_s, 3), newest_lost_s=round(rp.newest_lost_s, 3),
                       gaps=len(rp.gaps), unacknowledged_restored=rp.restored - (rp.acknowledged - len(rp.lost)))
        print(f"[wal-backup] killed {killed} processes of a after {run_for:.1f}s of writes; {rp.line()} "
              f"(interval {INTERVAL:.0f}s; restored but never acknowledged: {figures['unacknowledged_restored']}); "
              f"{figures['generations']} generation(s), {figures['segments_newest']} segments in the newest; "
              f"the newest segment {figures['newest_segment_age_at_kill_s']}s old at the kill; "
              f"mke restore {figures['restore_s']}s; b ready {figures['b_ready_after_restore_s']}s after it",
              file=sys.stderr)
        assert not rp.gaps, f"writes lost in between: {rp.gaps[:5]}"
        assert rp.oldest_lost_s <= INTERVAL + 0.5, f"a write acknowledged {rp.oldest_lost_s:.2f}s before the kill was lost"

        # -- b is a working control plane: it takes writes at its own address
        from kubernetes import client, config

        with InNetns(client_ns):
            api = config.new_client_from_config(config_file=str(kubeconfig))
            try:
                client.CoreV1Api(api).create_namespaced_config_map(
                    "default", {"metadata": {"name": "after-restore"}, "data": {"k": "v"}})
            finally:
                api.close()
    finally:
        (BASE / "figures.json").write_text(dump(figures))
        if loop is not None:
            loop.join()
        if a is not None and a.alive() and "a" in c.roots:
            crash(c.roots["a"], a)
        c.teardown()
    left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _root_under(p, BASE)]
    assert not left, f"processes left under {BASE}: {[p.name for p in left]}"
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    assert PREFIX not in ns, ns
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(BASE) not in mounts, [ln for ln in mounts.splitlines() if str(BASE) in ln]
    print(f"[wal-backup] figures: {json.dumps(figures)}", file=sys.stderr)


def _root_under(proc: Path, base: Path) -> bool:
    try:
        return str(Path(proc / "root").resolve()).startswith(str(base) + "/")
    except OSError:
        return False
