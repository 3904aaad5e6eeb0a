"""Registry mirrors end to end: the real containerd (the embedded 2.4.2) started with the config and
hosts files mke writes (mke/worker/containerd.py, registries.py) pulls through a mirror.

The "registry" is tests/support/ociregistry.py, a small real HTTP(S) server implementing the
pull half of the OCI distribution API (GET /v2/, manifests, blobs), serving an image written
by mke/images/oci.py, until the distribution registry binary is a recipe. Two mirrors: one
over plain HTTP (``http://`` endpoint) and one over HTTPS with a private CA (``configs`` with
``caFile``). The images are named after registries under ``.test``, which never resolve:
a pull can only succeed through a mirror. The pulls are CRI ``PullImage`` calls, kubelet's
path (tests/support/cri.py, a hand-written gRPC call: grpc and crictl are not available),
so containerd's own config (the CRI plugin's ``registry.config_path``) finds the hosts files.

Needs root (containerd, overlayfs) and the real binaries (MKE_TEST_BIN_DIR, or the
docker-mode build of tests/support/binaries.py).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from mke.config import parse_registries
from mke.images import oci
from mke.node.binaries import BinaryResolver
from mke.pki import ClusterPKI, PKIRequest
from mke.worker import host
from mke.worker.containerd import Containerd
from mke.worker.context import WorkerContext, WorkerOptions, WorkerPaths
from mke.worker.join import WorkerSettings
from tests.support import cri
from tests.support.binaries import real_bin_dir
from tests.support.ociregistry import OCIRegistry

PLAIN = "plain.mke.test/library/hello:v1"
SECURE = "secure.mke.test/tools/hello:v2"


def _image(ref: str, text: str, work: Path) -> oci.Image:
    layer = oci.build_layer([oci.Entry(path="/hello.txt", data=text.encode())], work)
    return oci.build_image(ref, [layer], oci.ImageConfig(cmd=("/hello",)), work)


def pulled(server: OCIRegistry, ref: str, image: oci.Image) -> bool:
    """``server`` served the manifest of ``ref`` and its layer."""
    name, tag = oci.split_ref(ref)
    repo = name.split("/", 1)[1]
    got = server.pulled()
    return f"/v2/{repo}/manifests/{tag}" in got and f"/v2/{repo}/blobs/{image.layers[0].blob.digest}" in got


@pytest.fixture
def bin_dir() -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root (containerd)")
    d, why = real_bin_dir()
    if d is None:
        pytest.skip(f"no real containerd: {why}")
    if not (d / "containerd").exists() or not (d / "ctr").exists():
        pytest.fail(f"{d} has no containerd/ctr ({why})")
    return d


@pytest.mark.root
def test_containerd_pulls_through_http_and_https_mirrors(bin_dir, tmp_path):
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    plain_image = _image(PLAIN, "through the plain mirror\n", blobs)
    secure_image = _image(SECURE, "through the TLS mirror\n", blobs)
    pki = ClusterPKI(tmp_path / "pki")  # a CA of our own and a serving certificate for 127.0.0.1
    pki.ensure(PKIRequest(node_name="registry", api_address="127.0.0.1"))

    with OCIRegistry([plain_image]) as plain, \
            OCIRegistry([secure_image], cert=pki.crt("apiserver"), key=pki.key("apiserver")) as secure:
        registries = parse_registries({
            "mirrors": {"plain.mke.test": {"endpoints": [plain.url]},
                        "secure.mke.test": {"endpoints": [secure.url]}},
            "configs": {secure.address: {"caFile": str(pki.crt("ca"))}},
        }, "test")
        ctx = WorkerContext(
            paths=WorkerPaths(tmp_path / "data"),
            options=WorkerOptions(node_name="w1", registries=registries),
            settings=WorkerSettings.from_data({"networkProvider": "bridge"}, "test"),
            cgroups=host.detect_cgroups(),
            binaries=BinaryResolver(bin_dir, user_bin_dir=True),
            api_url="https://127.0.0.1:6443",
        )
        component = Containerd(ctx)
        component.init()  # containerd.toml and the hosts files, as a worker writes them
        hosts = ctx.paths.registry_hosts_dir
        assert sorted(p.name for p in hosts.iterdir()) == sorted(["plain.mke.test", "secure.mke.test",
                                                                  secure.address])

        sock = ctx.paths.containerd_socket
        log = tmp_path / "containerd.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([str(bin_dir / "containerd"), *component.args()], stdout=out, stderr=out,
                                    start_new_session=True, env={"PATH": ctx.bin_path_env()})
        try:
            for _ in range(150):
                if sock.exists() or proc.poll() is not None:
                    break
                time.sleep(0.1)
            assert sock.exists(), f"containerd did not start: {log.read_text()[-2000:]}"

            def pull(ref: str) -> str | None:
                image_id = cri.pull_image(sock, ref)
                assert proc.poll() is None, log.read_text()[-2000:]
                return image_id

            assert pull(PLAIN) == plain_image.config.digest, log.read_text()[-3000:]
            assert pulled(plain, PLAIN, plain_image) and not secure.pulled(), plain.requests

            # the TLS mirror's hosts file without its CA: the mirror is refused, the upstream never resolves
            own = hosts / "secure.mke.test" / "hosts.toml"
            written = own.read_text()
            assert f'ca = "{pki.crt("ca")}"' in written
            own.write_text(f'server = "https://secure.mke.test"\n[host."{secure.url}"]\n'
                           '  capabilities = ["pull", "resolve"]\n')
            assert pull(SECURE) is None
            assert "certificate signed by unknown authority" in log.read_text()
            assert not secure.pulled()

            component.write_registry_hosts()  # mke puts its own file back; containerd reads it on the next pull
            assert own.read_text() == written
            assert pull(SECURE) == secure_image.config.digest, log.read_text()[-3000:]
            assert pulled(secure, SECURE, secure_image)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            from mke.worker.cleanup import mounts_under, unmount_all

            unmount_all([tmp_path])
            assert mounts_under([tmp_path]) == []
