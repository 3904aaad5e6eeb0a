"""Two recipes that share one upstream artifact (etcd and etcdutl: the etcd release tarball)
fetch it in parallel: each unpacks it while holding the URL's lock, and removes it after, so
neither sees it removed under it (it failed in CI-like runs: "cannot unpack tar.gz: No such
file"). A real HTTP server (tests/support/mirror.py) serves the file."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

from build.download import Downloader
from tests.support.mirror import MirrorServer


def test_a_shared_artifact_is_never_removed_under_another_reader(tmp_path: Path) -> None:
    root = tmp_path / "upstream"
    (root / "example.com" / "rel").mkdir(parents=True)
    body = b"release tarball " * 4096
    (root / "example.com" / "rel" / "etcd.tar.gz").write_bytes(body)
    sha = hashlib.sha256(body).hexdigest()
    url = "https://example.com/rel/etcd.tar.gz"
    read: dict[str, bytes] = {}
    errors: list[BaseException] = []

    def reader(name: str, hold: float) -> None:
        try:
            d = Downloader(tmp_path / "downloads", mirror=mirror.url)
            with d.downloaded(url, sha256=sha, component=name, remove=True) as path:
                time.sleep(hold)  # unpacking
                read[name] = path.read_bytes()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    with MirrorServer(root) as mirror:
        threads = [threading.Thread(target=reader, args=("etcd", 0.5)),
                   threading.Thread(target=reader, args=("etcdutl", 0.0))]
        threads[0].start()
        time.sleep(0.1)
        threads[1].start()
        for t in threads:
            t.join(30)
    assert errors == [] and read == {"etcd": body, "etcdutl": body}
    assert not [p for p in (tmp_path / "downloads").iterdir() if p.suffix not in (".lock",)]  # removed after use
