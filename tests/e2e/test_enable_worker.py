"""`mke server --enable-worker`: one host runs the control plane and a tainted worker
(issue 4), then `mke reset` leaves nothing behind. Runs after test_cluster.py's cluster
is gone (fixtures are per module), in its own network namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.e2e.cluster import BASE, TESTAPP_IMAGE, E2ECluster, Proc, airgap_bundle, build_testapp_image
from tests.e2e.netns import InNetns

pytestmark = [pytest.mark.e2e, pytest.mark.root]


@pytest.fixture(scope="module")
def solo():
    from tests.e2e.conftest import _require, _stop_holder

    _require()
    c = E2ECluster()
    d = BASE / "solo"
    _stop_holder(d)
    c.network.create(["solo", "client"])
    if d.exists():
        subprocess.run(c.network.hosts["solo"].wrap(c.mke_cmd("solo", "reset", "--data-dir", str(d))),
                       capture_output=True, timeout=300, env={**os.environ, **c.env}, check=False)
    (d / "node" / "images").mkdir(parents=True, exist_ok=True)
    for img in (airgap_bundle(), build_testapp_image(BASE / "testapp-image.tar")):
        shutil.copyfile(img, d / "node" / "images" / img.name)
    cfg = BASE / "solo.yaml"
    cfg.write_text("api:\n  address: 10.200.0.1\n")
    argv = c.mke_cmd("solo", "server", "--enable-worker", "--config", str(cfg), "--data-dir", str(d), "--name", "solo",
                     bin_dir=True)
    t0 = time.monotonic()
    p = Proc("server --enable-worker", c.network.hosts["solo"], argv, BASE / "logs" / "solo.log", env=c.env).start()
    try:
        p.wait_for(r"control plane ready", 420)
        print(f"\n[e2e] mke server --enable-worker: ready (node included) after {time.monotonic() - t0:.1f}s",
              file=sys.stderr)
        text = c.run("solo", "kubeconfig", "admin", "--data-dir", str(d), "--server", "https://10.200.0.1:6443").stdout
        (BASE / "solo.conf").write_text(text)
        with InNetns("mke-e2e-client"):
            yield c, p, d
    finally:
        p.stop()
        if not os.environ.get("MKE_E2E_KEEP"):
            c.network.destroy()


def test_controller_is_a_tainted_node_that_runs_tolerating_pods(solo):
    from kubernetes import client, config

    from tests.e2e.test_cluster import wait_until

    c, proc, d = solo
    api = config.new_client_from_config(config_file=str(BASE / "solo.conf"))
    core = client.CoreV1Api(api)
    node = wait_until("node solo Ready", lambda: next((n for n in core.list_node().items if any(
        x.type == "Ready" and x.status == "True" for x in n.status.conditions or [])), None), timeout=120)
    assert node.metadata.name == "solo"
    assert [(t.key, t.effect) for t in node.spec.taints or []] == [("node-role.kubernetes.io/control-plane", "NoSchedule")]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "tolerant"},
           "spec": {"tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}],
                    "containers": [{"name": "app", "image": TESTAPP_IMAGE, "imagePullPolicy": "Never", "args": ["serve"]}]}}
    core.create_namespaced_pod("default", pod)
    wait_until("tolerating pod Running", lambda: core.read_namespaced_pod("tolerant", "default").status.phase == "Running",
               timeout=120)
    assert "serving" in wait_until("its log", lambda: core.read_namespaced_pod_log("tolerant", "default"), timeout=60)
    api.close()


def test_reset_after_enable_worker_leaves_nothing(solo):
    from mke.worker.cleanup import leftovers

    c, proc, d = solo
    assert proc.stop() == 0
    with InNetns("mke-e2e-solo"):
        r = subprocess.run(c.network.hosts["solo"].wrap(c.mke_cmd("solo", "reset", "--data-dir", str(d))),
                           capture_output=True, text=True, timeout=300, env={**os.environ, **c.env}, check=False)
        assert r.returncode == 0, r.stderr
        left = leftovers(d / "node", pod_logs="/var/log/pods")
    assert left == [] and not d.exists()
