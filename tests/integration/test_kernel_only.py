"""The promise in CI's default run: one kernel-only host (a network namespace and a bare root
holding nothing but the default ``dist/mke``; tests/e2e/bareroot.py) runs
``mke server --enable-worker``: every kube-system pod Running from images the node built
itself, a pod answering through a Service and its DNS name, and ``mke reset`` leaves
nothing behind. The long form, three hosts, is ``nox -s e2e`` (tests/e2e)."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.bareroot import BareRoot, missing_host_tools, release_nsdir
from tests.e2e.cluster import HOST_ENV, TESTAPP_IMAGE, Proc, build_testapp_image
from tests.e2e.netns import InNetns, Network
from tests.support.wait import wait_until

pytestmark = [pytest.mark.root, pytest.mark.docker, pytest.mark.slow]

DATA = Path("/var/lib/mke")


@pytest.fixture(scope="module")
def solo(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("needs root (network and mount namespaces): CI runs it as root")
    for tool in missing_host_tools():
        pytest.fail(f"{tool} is not installed; ./scripts/bootstrap.sh installs what the tests need")
    from tests.support.bundles import default_bundle

    mke = default_bundle()
    base = tmp_path_factory.mktemp("kernel-only")
    net = Network(prefix="mke-ko-")  # not the e2e cluster's namespaces
    net.create(["solo", "client"])
    root = BareRoot(name="solo", base=base / "roots", netns=net.hosts["solo"].netns, mke=mke)
    procs: list[Proc] = []
    try:
        root.create()
        net.hosts["solo"].bare = root
        assert root.check_bare() == []
        images = root.outside(DATA / "node" / "images")
        images.mkdir(parents=True)
        shutil.copyfile(build_testapp_image(base / "testapp.tar"), images / "testapp.tar")
        root.outside("/var/mke.yaml").write_text("api:\n  address: 10.200.0.1\n")
        argv = ["/mke", "server", "--enable-worker", "--config", "/var/mke.yaml", "--data-dir", str(DATA),
                "--name", "solo"]
        t0 = time.monotonic()
        server = Proc("server --enable-worker", net.hosts["solo"], argv, base / "solo.log", env=HOST_ENV).start()
        procs.append(server)
        server.wait_for(r"control plane ready", 600)
        print(f"\n[kernel-only] mke server --enable-worker ready after {time.monotonic() - t0:.1f}s", file=sys.stderr)
        import subprocess

        conf = subprocess.run(root.wrap(["/mke", "kubeconfig", "admin", "--data-dir", str(DATA), "--server",
                                         "https://10.200.0.1:6443"]), capture_output=True, text=True, env=HOST_ENV,
                              timeout=60, check=True).stdout
        (base / "admin.conf").write_text(conf)
        with InNetns(net.hosts["client"].netns):
            yield {"root": root, "net": net, "server": server, "base": base, "t0": t0, "mke": mke}
    finally:
        for p in procs:
            p.stop()
        if root.outside(DATA).exists():
            import subprocess

            subprocess.run(root.wrap(["/mke", "reset", "--data-dir", str(DATA)]), capture_output=True, env=HOST_ENV,
                           timeout=300, check=False)
        root.remove()
        release_nsdir(base / "roots")
        net.destroy()


def test_one_file_makes_a_working_node_on_a_kernel_only_host(solo):
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(solo["base"] / "admin.conf"))
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    node = wait_until("node solo Ready", lambda: next((n for n in core.list_node().items if any(
        c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])), None), timeout=240)
    assert [(t.key, t.effect) for t in node.spec.taints or []] == [("node-role.kubernetes.io/control-plane", "NoSchedule")]

    def system_running():
        pods = core.list_namespaced_pod("kube-system").items
        bad = [p.metadata.name for p in pods if p.status.phase != "Running"
               or not all(c.ready for c in p.status.container_statuses or [])]
        return pods if pods and not bad else None

    pods = wait_until("every kube-system pod Running", system_running, timeout=300)
    print(f"[kernel-only] every kube-system pod ({len(pods)}) Running {time.monotonic() - solo['t0']:.1f}s after start",
          file=sys.stderr)
    assert not [e.message for e in core.list_event_for_all_namespaces().items if e.reason == "Pulling"]
    tolerate = [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]
    apps.create_namespaced_deployment("default", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "app"}}, "template": {
            "metadata": {"labels": {"app": "app"}},
            "spec": {"tolerations": tolerate, "containers": [{
                "name": "app", "image": TESTAPP_IMAGE, "imagePullPolicy": "Never", "args": ["serve"],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 2}}]}}}})
    core.create_namespaced_service("default", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "app"},
                                               "spec": {"selector": {"app": "app"},
                                                        "ports": [{"port": 80, "targetPort": 8080}]}})
    pod = wait_until("the app pod ready", lambda: next((p.metadata.name for p in core.list_namespaced_pod(
        "default", label_selector="app=app").items if all(c.ready for c in p.status.container_statuses or [])), None),
        timeout=240)
    from tests.e2e.test_cluster import exec_in

    body = wait_until("HTTP through the Service's DNS name", lambda: exec_in(api, pod, "/testapp", "get",
                                                                            "http://app.default.svc.cluster.local/"), timeout=240)
    assert body.split()[0] == pod
    api.close()


def test_reset_leaves_the_host_as_it_was(solo):
    import subprocess

    root = solo["root"]
    assert solo["server"].stop() == 0
    r = subprocess.run(root.wrap(["/mke", "reset", "--data-dir", str(DATA)]), capture_output=True, text=True,
                       env=HOST_ENV, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    check = subprocess.run(root.wrap(["/mke", "reset", "--check", "--data-dir", str(DATA)]), capture_output=True,
                           text=True, env=HOST_ENV, timeout=120, check=False)
    assert check.returncode == 0 and check.stdout == "", check.stdout + check.stderr
    from tests.e2e.cluster import netfilter_leftovers

    assert netfilter_leftovers(solo["net"].hosts["solo"].netns, solo["mke"].parent / "linux-amd64" / "bin") == []
    # nothing but runtime/ (mke's own program, staged again to run `reset --check`)
    assert [p.name for p in root.outside(DATA).iterdir()] == ["runtime"]
    assert not (root.root / "etc").exists()  # the /etc files mke made for kubelet and containerd are gone too
    assert root.check_bare() == []
