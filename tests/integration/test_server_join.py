"""Elastic control plane: controllers in their own network namespaces join with a controller token.

Each controller is a network namespace with a veth into a bridge (10.201.0.0/24, nothing
leaves the machine). Needs root, `ip`, `nsenter` and real binaries (see test_server.py).

etcd quorum, as checked here: with 2 members, stopping either one loses quorum (2 of 2
needed), so the other's API stops being ready until it comes back; with 3 members, one
can stop and the other two keep serving.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_server import CORE, find_bin_dir, require, terminate, wait_for

REPO = Path(__file__).resolve().parents[2]
PREFIX = "mke-join-"
SUBNET = "10.201.0"

pytestmark = [pytest.mark.root, pytest.mark.slow]


def ip(*args: str, ns: str | None = None, check: bool = True) -> None:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if check and res.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {res.stderr.strip()}")


class Controller:
    def __init__(self, name: str, index: int, root: Path, bin_dir: Path) -> None:
        self.name, self.address = name, f"{SUBNET}.{index}"
        self.netns = PREFIX + name
        self.data_dir = root / name
        self.bin_dir = bin_dir
        self.log = root / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def wrap(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.netns}", "--", *argv]

    def mke(self, *args: str) -> str:
        res = subprocess.run(self.wrap([sys.executable, "-m", "mke", *args, "--data-dir", str(self.data_dir)]),
                             capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert res.returncode == 0, res.stderr
        return res.stdout

    def start(self, token: str | None = None, *extra: str) -> None:
        argv = [sys.executable, "-m", "mke", "server", "--data-dir", str(self.data_dir), "--bin-dir",
                str(self.bin_dir), "--name", self.name, *extra]
        if token:
            tf = self.data_dir.parent / f"{self.name}.token"
            tf.write_text(token)
            argv += ["--token-file", str(tf)]
        self.proc = subprocess.Popen(self.wrap(argv), stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})

    def api(self, path: str, method: str = "GET", body: dict[str, Any] | None = None) -> tuple[int, str]:
        pki = self.data_dir / "pki"
        cmd = ["curl", "-s", "--max-time", "5", "-w", "\n%{http_code}", "--cacert", str(pki / "ca.crt"), "--cert",
               str(pki / "admin.crt"), "--key", str(pki / "admin.key"), "-X", method]
        if body is not None:
            cmd += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
        res = subprocess.run(self.wrap([*cmd, f"https://127.0.0.1:6443{path}"]), capture_output=True, text=True)
        out, _, code = res.stdout.rpartition("\n")
        return int(code or 0), out

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"mke server on {self.name} exited: {self.log.read_text()[-3000:]}")
        try:
            st = json.loads((self.data_dir / "run" / "status.json").read_text())
        except (OSError, ValueError):
            return False
        return st.get("phase") == "running" and self.api("/readyz")[0] == 200

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None


@pytest.fixture()
def controllers() -> Iterator[list[Controller]]:
    bins = require(find_bin_dir(), "etcd", *CORE)
    import tempfile

    # short: containerd's sockets under <data-dir>/node/run must stay below 104 bytes
    root = Path(tempfile.mkdtemp(prefix="mkej-"))
    if not shutil.which("nsenter") or not shutil.which("ip"):
        pytest.skip("needs ip and nsenter")
    names = ["c1", "c2", "c3"]
    sw = PREFIX + "sw"
    for n in [*names, "sw"]:
        ip("netns", "del", PREFIX + n, check=False)
    ip("netns", "add", sw)
    ip("link", "add", "br0", "type", "bridge", ns=sw)
    ip("link", "set", "br0", "up", ns=sw)
    ctls = []
    for i, n in enumerate(names, start=1):
        c = Controller(n, i, root, bins)
        ip("netns", "add", c.netns)
        ip("link", "add", "eth0", "netns", c.netns, "type", "veth", "peer", "name", f"v-{n}", "netns", sw)
        ip("link", "set", f"v-{n}", "master", "br0", "up", ns=sw)
        ip("addr", "add", f"{c.address}/24", "dev", "eth0", ns=c.netns)
        ip("link", "set", "lo", "up", ns=c.netns)
        ip("link", "set", "eth0", "up", ns=c.netns)
        ip("route", "add", "default", "via", f"{SUBNET}.254", ns=c.netns)
        ctls.append(c)
    try:
        yield ctls
    finally:
        for c in reversed(ctls):
            c.stop()
        for n in [*names, "sw"]:
            ip("netns", "del", PREFIX + n, check=False)
        shutil.rmtree(root, ignore_errors=True)


def members(c: Controller) -> list[str]:
    return [line.split("\t")[0] + (" learner" if line.endswith("learner") else "")
            for line in c.mke("etcd", "member-list").splitlines()]


def test_controllers_join_and_quorum(controllers: list[Controller]) -> None:
    c1, c2, c3 = controllers
    c1.start()
    wait_for(c1.ready, 120, "c1")
    token = c1.mke("token", "create", "--role=controller", "--expiry=1h").strip()

    # A worker token is refused by the join API.
    worker_token = c1.mke("token", "create", "--role=worker").strip()
    bad = subprocess.run(c2.wrap([sys.executable, "-m", "mke", "server", worker_token, "--data-dir",
                                  str(c2.data_dir) + "-bad", "--bin-dir", str(c2.bin_dir)]),
                         capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                         timeout=60)
    assert bad.returncode == 6 and "worker token, not a controller token" in bad.stderr

    c2.start(token)
    wait_for(c2.ready, 180, "c2")
    wait_for(lambda: sorted(members(c1)) == ["c1", "c2"], 120, "c2 promoted to a voting etcd member")

    # Objects written through one controller are read through the other.
    code, _ = c1.api("/api/v1/namespaces/default/configmaps", "POST",
                     {"metadata": {"name": "shared"}, "data": {"k": "v"}})
    assert code == 201
    code, out = c2.api("/api/v1/namespaces/default/configmaps/shared")
    assert code == 200 and json.loads(out)["data"] == {"k": "v"}
    # Secrets too: they are encrypted at rest, with the key c2 got from c1 when it joined.
    key = Path("pki") / "secrets-encryption.key"
    assert (c2.data_dir / key).read_bytes() == (c1.data_dir / key).read_bytes()
    code, _ = c2.api("/api/v1/namespaces/default/secrets", "POST",
                     {"metadata": {"name": "shared"}, "stringData": {"k": "from-c2"}})
    assert code == 201
    code, out = c1.api("/api/v1/namespaces/default/secrets/shared")
    assert code == 200 and json.loads(out)["data"] == {"k": "ZnJvbS1jMg=="}  # base64 of from-c2

    # 2 members: stopping c1 loses quorum, c2's API is not ready; back when c1 returns.
    c1.stop()
    wait_for(lambda: c2.api("/readyz")[0] != 200, 60, "c2 to lose quorum")
    c1.start()
    wait_for(c1.ready, 180, "c1 again")
    wait_for(c2.ready, 120, "c2 again")

    # 3 members: one may stop.
    token3 = c1.mke("token", "create", "--role=controller").strip()
    c3.start(token3)
    wait_for(c3.ready, 240, "c3")
    wait_for(lambda: sorted(members(c2)) == ["c1", "c2", "c3"], 120, "c3 promoted")
    c1.stop()
    time.sleep(10)
    wait_for(lambda: c2.api("/readyz")[0] == 200, 60, "c2 with 2 of 3 members")
    code, out = c3.api("/api/v1/namespaces/default/configmaps/shared")
    assert code == 200 and json.loads(out)["data"] == {"k": "v"}
    code, out = c3.api("/api/v1/namespaces/default/secrets/shared")
    assert code == 200 and json.loads(out)["data"] == {"k": "ZnJvbS1jMg=="}
    code, _ = c2.api("/api/v1/namespaces/default/configmaps", "POST",
                     {"metadata": {"name": "after-c1-left"}, "data": {"x": "y"}})
    assert code == 201

    # c1 leaves for good: remove its member from c2, then 2 members remain.
    out = c2.mke("etcd", "leave", "--peer-url", f"https://{c1.address}:2380")
    assert "removed etcd member c1" in out
    assert sorted(members(c2)) == ["c2", "c3"]


def test_enable_worker_registers_a_tainted_ready_node(controllers: list[Controller], tmp_path: Path) -> None:
    c1 = controllers[0]
    require(c1.bin_dir, "kubelet", "containerd", "containerd-shim-runc-v2", "runc", "bridge", "host-local",
            "loopback", "portmap")
    cfg = tmp_path / "mke.yaml"
    cfg.write_text("network: {provider: bridge}\n")
    c1.start(None, "--enable-worker", "--config", str(cfg))
    try:
        wait_for(c1.ready, 180, "c1 with a worker")

        def node_ready() -> dict[str, Any] | None:
            code, out = c1.api(f"/api/v1/nodes/{c1.name}")
            if code != 200:
                return None
            node = json.loads(out)
            conds = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
            return node if conds.get("Ready") == "True" else None

        node = wait_for(node_ready, 240, "the node to be Ready", interval=2)
        taints = node["spec"].get("taints", [])
        assert {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"} in [
            {k: t[k] for k in ("key", "effect")} for t in taints]
    finally:
        c1.stop()
    res = subprocess.run([sys.executable, "-m", "mke", "reset", "--data-dir", str(c1.data_dir)], capture_output=True,
                         text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr
    assert not c1.data_dir.exists()
