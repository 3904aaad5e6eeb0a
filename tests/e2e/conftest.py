"""The e2e cluster, started once per session: network namespaces, a controller, two workers.

Needs root, the docker-mode binaries (``nox -s e2e`` builds or reuses them, with the
air-gap bundle) and ``go`` on the host for the test image. Logs and data dirs are under
``$MKE_E2E_DIR`` (default /var/tmp/mke-e2e); ``MKE_E2E_KEEP=1`` leaves the cluster running
after the tests for a look around (stop it with ``nox -s e2e -- --co`` ... or by hand).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.cluster import BASE, E2ECluster, airgap_bundle, build_testapp_image, dump
from tests.e2e.netns import InNetns


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.root)


def _require() -> None:
    if os.geteuid() != 0:
        pytest.skip("the e2e tests need root (network namespaces, mounts, cgroups)")
    for tool in ("ip", "nsenter", "iptables", "go"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed; the e2e tests need it")
    if not airgap_bundle().exists():
        pytest.fail(f"{airgap_bundle()} is missing: run `nox -s build -- --mode=docker --airgap` "
                    "(nox -s e2e does it unless MKE_E2E_SKIP_BUILD=1)")


@pytest.fixture(scope="module")
def cluster():
    _require()
    c = E2ECluster()
    # a clean slate: an interrupted run may have left a cluster behind
    if BASE.exists():
        from mke.worker.cleanup import reset_worker

        for name in ("w1", "w2", "ctl"):  # mke processes of an earlier run (MKE_E2E_KEEP=1): stop by pid
            _stop_holder(BASE / name)
        c.network.create(["ctl", "w1", "w2", "bad", "client"])
        for name in ("w1", "w2", "bad"):
            if (BASE / name).exists():
                _in_host(c, name, lambda n=name: reset_worker(BASE / n))
        shutil.rmtree(BASE, ignore_errors=True)
    BASE.mkdir(parents=True)
    (BASE / "logs").mkdir()
    t0 = time.monotonic()
    c.network.create(["ctl", "w1", "w2", "bad", "client"])
    testapp = build_testapp_image(BASE / "testapp-image.tar")
    images = [airgap_bundle(), testapp]
    print(f"\n[e2e] mke: {' '.join(c.mke)}; bin dir: {c.bin_dir or '(staged from the payload)'}", file=sys.stderr)
    c.start_controller()
    c.wait_controller()
    print(f"[e2e] controller ready after {time.monotonic() - t0:.1f}s", file=sys.stderr)
    token = c.token()
    for name in ("w1", "w2"):
        c.start_worker(name, token, images)
    for name in ("w1", "w2"):
        c.ready_seconds[name] = c.wait_worker_ready(name)
    c.images = images  # type: ignore[attr-defined]
    c.token_text = token  # type: ignore[attr-defined]
    print(f"[e2e] workers Ready: {dump(c.ready_seconds)} (cluster up in {time.monotonic() - t0:.1f}s)", file=sys.stderr)
    try:
        with InNetns("mke-e2e-client"):
            yield c
    finally:
        if not os.environ.get("MKE_E2E_KEEP"):
            c.stop_all()
            for name in ("w1", "w2", "bad"):
                _in_host(c, name, lambda n=name: reset_worker_quiet(BASE / n))
            c.network.destroy()
        print(f"[e2e] total {time.monotonic() - t0:.0f}s; logs in {BASE / 'logs'}", file=sys.stderr)


def _stop_holder(data_dir: Path) -> None:
    """SIGTERM the mke that holds ``data_dir``'s lock (left running by MKE_E2E_KEEP=1), SIGKILL after 60 s."""
    import signal

    from mke.node.datadir import holder_pid

    pid = holder_pid(data_dir)
    if not pid or pid < 0:
        return
    os.kill(pid, signal.SIGTERM)
    for _ in range(600):
        if holder_pid(data_dir) is None:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def reset_worker_quiet(path: Path) -> list[str]:
    from mke.worker.cleanup import reset_worker

    return reset_worker(path) if path.exists() else []


def _in_host(c: E2ECluster, name: str, fn):
    """Run ``fn`` in host ``name``'s network namespace (this thread only)."""
    with InNetns(c.network.hosts[name].netns if name in c.network.hosts else f"mke-e2e-{name}"):
        return fn()


@pytest.fixture(scope="module")
def kube(cluster):
    """kubernetes.client.ApiClient for the admin kubeconfig (sockets made in the client namespace)."""
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    yield api
    api.close()


@pytest.fixture(scope="module")
def core(kube):
    from kubernetes import client

    return client.CoreV1Api(kube)
