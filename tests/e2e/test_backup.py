"""Backup and restore of a running cluster (issue 15.3), with the real static dist/mke on
kernel-only hosts: objects made before `mke backup` come back after `mke reset` + `mke restore`
on the controller, those made after do not; the workers, which kept running, reconnect to the
restored control plane without a new token (same CAs, same keys), a worker restarted afterwards
rejoins without one too, and `kubectl logs` works again (konnectivity agents reconnect).

etcd (the default storage) here; kine on SQLite: tests/integration/test_backup.py.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.cluster import DATA, HOST_ENV, TESTAPP_IMAGE, Proc
from tests.e2e.test_cluster import node_ready, report
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.root]

NS = "default"
ARCHIVE = "/var/backup.tar.zst"  # on ctl, outside the data dir that mke reset removes


def configmaps(core) -> set[str]:
    return {c.metadata.name for c in core.list_namespaced_config_map(NS).items}


def test_backup_reset_restore_with_workers(cluster, kube, core):
    from kubernetes import client

    apps = client.AppsV1Api(kube)
    # -- before the backup: a ConfigMap and a Deployment whose pod runs on a worker
    core.create_namespaced_config_map(NS, {"metadata": {"name": "before-backup"}, "data": {"k": "v"}})
    apps.create_namespaced_deployment(NS, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bk", "namespace": NS},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "bk"}},
                 "template": {"metadata": {"labels": {"app": "bk"}}, "spec": {"containers": [
                     {"name": "bk", "image": TESTAPP_IMAGE, "imagePullPolicy": "Never", "args": ["serve"]}]}}}})

    def bk_pod():
        pods = core.list_namespaced_pod(NS, label_selector="app=bk").items
        running = [p for p in pods if p.status.phase == "Running"]
        return running[0] if running else None

    pod = wait_until("the bk pod Running", bk_pod, timeout=240)
    t0 = time.monotonic()
    out = cluster.run("ctl", "backup", "--out", ARCHIVE, "--data-dir", str(DATA)).stdout
    report("mke backup (etcd, a running 3-node cluster)", out.strip())
    report("seconds for mke backup", round(time.monotonic() - t0, 1))

    # -- after the backup: another ConfigMap, which the restore must not bring back
    core.create_namespaced_config_map(NS, {"metadata": {"name": "after-backup"}, "data": {"k": "v"}})
    assert {"before-backup", "after-backup"} <= configmaps(core)

    # -- the controller goes: stopped, then reset (its data dir removed); the workers keep running
    assert cluster.controller is not None and cluster.controller.stop() == 0
    r = cluster.run("ctl", "restore", ARCHIVE, "--data-dir", str(DATA), "--name", "ctl", check=False)
    assert r.returncode == 11 and "pass --force" in r.stderr, r.stderr  # a cluster is there: refused
    cluster.run("ctl", "reset", "--data-dir", str(DATA), timeout=300)
    assert not cluster.data_dir("ctl").joinpath("pki").exists()

    t0 = time.monotonic()
    r = cluster.run("ctl", "restore", ARCHIVE, "--data-dir", str(DATA), "--name", "ctl", timeout=300)
    report("seconds for mke restore", round(time.monotonic() - t0, 1))
    assert f"mke server --config {DATA / 'mke.yaml'}" in r.stdout, r.stdout

    # -- the restored controller, started as mke restore says
    log = cluster.base / "logs" / "ctl.log"
    since = len(log.read_text(errors="replace")) if log.exists() else 0
    t0 = time.monotonic()
    cluster.controller = Proc("controller", cluster.host("ctl"),
                              ["/mke", "server", "--config", str(DATA / "mke.yaml"), "--data-dir", str(DATA),
                               "--name", "ctl"], log, env=HOST_ENV).start()
    cluster.controller.wait_for(r"control plane ready", 300, since=since)
    report("seconds from mke server to ready after the restore", round(time.monotonic() - t0, 1))

    cms = wait_until("the API answers", lambda: configmaps(core), timeout=60)
    assert "before-backup" in cms and "after-backup" not in cms, cms

    # -- the workers never stopped: their kubelets reconnect with the certificates they had
    restored_at = time.time()

    def heartbeat_after_restore(name: str) -> bool:
        lease = client.CoordinationV1Api(kube).read_namespaced_lease(name, "kube-node-lease")
        return node_ready(core, name) and lease.spec.renew_time.timestamp() > restored_at

    for name in ("w1", "w2"):
        wait_until(f"{name} Ready and renewing its lease after the restore",
                   lambda n=name: heartbeat_after_restore(n), timeout=180)
    report("seconds until both workers heartbeat to the restored controller", round(time.time() - restored_at, 1))

    # -- kubectl logs through the restored konnectivity-server and the agents that reconnected
    pod = wait_until("the bk pod Running", bk_pod, timeout=180)
    out = wait_until("kubectl logs of the bk pod", lambda: cluster.run(
        "ctl", "kubectl", "--data-dir", str(DATA), "--", "logs", pod.metadata.name, check=False).stdout, timeout=180)
    assert "testapp serving on :8080" in out

    # -- a worker restarted now rejoins without a token too
    w = cluster.workers["w2"]
    assert w.stop() == 0
    since = len(w.text())
    cluster.start_worker("w2", None, [])
    cluster.wait_worker_ready("w2", since=since)
    wait_until("w2 Ready", lambda: node_ready(core, "w2"), timeout=120)
