"""The e2e cluster, started once per module: kernel-only hosts (a network namespace and a
bare root each, tests/e2e/bareroot.py), a controller and two workers, all from ``dist/mke``.

Needs root, the static ``dist/mke`` of the default build (``nox -s e2e`` builds it unless
``MKE_E2E_SKIP_BUILD=1``) and ``go`` on the test machine for the test image. Logs and
roots are under ``$MKE_E2E_DIR`` (default /var/tmp/mke-e2e); ``MKE_E2E_KEEP=1`` leaves the
cluster running after the tests for a look around.

``MKE_E2E_FIPS=1`` (or ``nox -s e2e-fips``) runs the same tests on the FIPS build,
``dist/mke-fips`` (``nox -s build-fips``; docs/fips.md): every host's /mke is that file. Every
test applies to both builds (test_tls_probe.py asserts more on the FIPS one); a test that could
not would call ``pytest.skip("not on the FIPS build (MKE_E2E_FIPS=1): <why>")`` when
``fips_build()``, never skip without saying why. Without the file the run stops in one line
naming the session that makes it.
"""

from __future__ import annotations

import os
import sys
import time

import pytest

from tests.e2e.bareroot import missing_host_tools
from tests.e2e.cluster import BASE, E2ECluster, build_hint, build_testapp_image, clean_slate, dump, fips_build, mke_file
from tests.e2e.netns import InNetns, Network

BARE = ["ctl", "w1", "w2", "bad"]


def pytest_collection_modifyitems(config, items):
    e2e = [item for item in items if "tests/e2e/" in str(item.fspath)]
    for item in e2e:
        item.add_marker(pytest.mark.e2e)
        item.add_marker(pytest.mark.root)
    if e2e and fips_build() and not mke_file().exists():  # one line for the run, not one error per test
        raise pytest.UsageError(missing_build())


def missing_build() -> str:
    session = "e2e-fips" if fips_build() else "e2e"
    return (f"{mke_file()} is missing{' (MKE_E2E_FIPS=1: the FIPS build)' if fips_build() else ''}: run "
            f"`{build_hint()}` (nox -s {session} does it unless MKE_E2E_SKIP_BUILD=1)")


def require() -> None:
    if os.geteuid() != 0:
        pytest.skip("the e2e tests need root (network and mount namespaces, cgroups)")
    for tool in missing_host_tools():
        pytest.fail(f"{tool} is not installed; the e2e tests need it on the test machine")
    exe = mke_file()
    if not exe.exists():
        pytest.fail(missing_build(), pytrace=False)
    from mke.elf import ElfFile

    elf = ElfFile.open(exe)
    if elf is None or not elf.static:  # the kernel-only hosts need the static one
        pytest.fail(f"{exe} is not a static executable; build it again with `{build_hint()}`", pytrace=False)


@pytest.fixture(scope="module")
def cluster():
    require()
    clean_slate(BASE, Network())
    BASE.mkdir(parents=True)
    (BASE / "logs").mkdir()
    t0 = time.monotonic()
    c = E2ECluster()
    c.create(BARE, ["client"])
    testapp = build_testapp_image(BASE / "testapp-image.tar")
    print(f"\n[e2e] kernel-only hosts {', '.join(BARE)}: each root holds only /mke ({mke_file()}"
          f"{', the FIPS build' if fips_build() else ''})", file=sys.stderr)
    try:
        c.start_controller()
        c.wait_controller()
        print(f"[e2e] controller ready after {time.monotonic() - t0:.1f}s", file=sys.stderr)
        tokens = {name: c.token() for name in ("w1", "w2")}  # one per node: a worker token binds to its first
        for name in ("w1", "w2"):
            c.start_worker(name, tokens[name], [testapp])
        for name in ("w1", "w2"):
            c.ready_seconds[name] = c.wait_worker_ready(name)
        c.images = [testapp]  # type: ignore[attr-defined]
        c.token_text = tokens["w1"]  # type: ignore[attr-defined]
        print(f"[e2e] workers Ready: {dump(c.ready_seconds)} (cluster up in {time.monotonic() - t0:.1f}s)",
              file=sys.stderr)
        with InNetns("mke-e2e-client"):
            yield c
    finally:
        if not os.environ.get("MKE_E2E_KEEP"):
            c.teardown()
        print(f"[e2e] total {time.monotonic() - t0:.0f}s; logs in {BASE / 'logs'}", file=sys.stderr)


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
