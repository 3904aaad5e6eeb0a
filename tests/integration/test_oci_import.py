"""mke/images/oci.py archives accepted by the real consumers: ``docker load`` + ``docker run`` (docker
marker) and ``ctr images import`` into a throwaway containerd from dist/ (root marker).

The image packs tests/e2e/testapp, built with the host's Go (skipped without Go)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from mke.images import oci
from tests.support.binaries import real_bin_dir

REPO = Path(__file__).resolve().parents[2]
REF = "mke.test/oci-import:v1"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    if not shutil.which("go"):
        pytest.skip("go is not installed (needed to build the test binary)")
    d = tmp_path_factory.mktemp("oci")
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GOPROXY": "off", "GOTOOLCHAIN": "local"}
    subprocess.run(["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(d / "testapp"), "."],
                   cwd=REPO / "tests" / "e2e" / "testapp", env=env, check=True)
    layers = [oci.build_layer(oci.base_entries(), d / "blobs"),
              oci.build_layer([oci.binary_entry("/testapp", d / "testapp", capabilities=["CAP_NET_BIND_SERVICE"])],
                              d / "blobs")]
    image = oci.build_image(REF, layers, oci.ImageConfig(entrypoint=("/testapp",), cmd=("echo", "from", "the", "image"),
                                                         user="65532:65532"), d / "blobs")
    oci.write_archive([image], d / "image.tar")
    return d / "image.tar", image


@pytest.mark.docker
def test_docker_loads_and_runs_the_archive(archive):
    path, image = archive
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        pytest.skip("no Docker engine")
    out = subprocess.run(["docker", "load", "-i", str(path)], capture_output=True, text=True, check=True).stdout
    try:
        assert f"Loaded image: {REF}" in out
        run = subprocess.run(["docker", "run", "--rm", REF], capture_output=True, text=True, check=True)
        assert run.stdout.strip() == "from the image"
        image_id = subprocess.run(["docker", "image", "inspect", REF, "--format", "{{.Id}}"], capture_output=True,
                                  text=True, check=True).stdout.strip()
        assert image_id == image.config.digest  # docker's image ID is our config digest
    finally:
        subprocess.run(["docker", "rmi", REF], capture_output=True, check=False)


@pytest.mark.root
def test_ctr_imports_the_archive_with_file_capabilities(archive, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (containerd)")
    bin_dir, why = real_bin_dir()  # the docker-mode build (cached), or MKE_TEST_BIN_DIR
    if bin_dir is None:
        pytest.skip(f"no real containerd: {why}")
    if not (bin_dir / "containerd").exists() or not (bin_dir / "ctr").exists():
        pytest.fail(f"{bin_dir} has no containerd/ctr ({why})")
    path, image = archive
    sock = tmp_path / "c.sock"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'version = 3\nroot = "{tmp_path}/root"\nstate = "{tmp_path}/state"\n'
                   f'[grpc]\n  address = "{sock}"\n')
    proc = subprocess.Popen([str(bin_dir / "containerd"), "--config", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    ctr = [str(bin_dir / "ctr"), "--address", str(sock), "--namespace", "k8s.io"]
    mnt = tmp_path / "mnt"
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.1)
        subprocess.run([*ctr, "images", "import", str(path)], capture_output=True, text=True, check=True)
        listed = subprocess.run([*ctr, "images", "list"], capture_output=True, text=True, check=True).stdout
        assert REF in listed and image.manifest.digest in listed
        mnt.mkdir()
        subprocess.run([*ctr, "images", "mount", REF, str(mnt)], capture_output=True, check=True)
        try:
            assert os.getxattr(mnt / "testapp", "security.capability") == oci.file_capabilities(["CAP_NET_BIND_SERVICE"])
            assert (mnt / "tmp").stat().st_mode & 0o7777 == 0o1777
        finally:
            subprocess.run([*ctr, "images", "unmount", str(mnt)], capture_output=True, check=False)
    finally:
        proc.terminate()
        proc.wait(15)
        from mke.worker.cleanup import mounts_under, unmount_all

        unmount_all([tmp_path])  # the snapshots and containerd's mount manager (under state/)
        assert mounts_under([tmp_path]) == []
