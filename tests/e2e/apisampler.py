"""The API sampled while nodes restart (tests/e2e/test_upgrade.py, test_cluster_tool.py).

A thread GETs one ConfigMap every 200 ms from each controller in turn (1 s timeout each), from
inside the test's client network namespace. A round counts as answered when any controller
answered (a client with every address, as behind a load balancer). It keeps the longest gap
between answers per controller (its own restart included) and for ``any``, and the number of
rounds that no controller answered.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.e2e.netns import InNetns


class Sampler(threading.Thread):
    def __init__(self, netns: str, kubeconfig: Path, controllers: dict[str, str], configmap: str,
                 namespace: str = "default") -> None:
        super().__init__(daemon=True)
        from kubernetes import client, config

        self.netns = netns
        self.configmap, self.namespace = configmap, namespace
        self.apis = {}
        for name, addr in controllers.items():
            api = config.new_client_from_config(config_file=str(kubeconfig))
            api.configuration.host = f"https://{addr}:6443"
            self.apis[name] = client.CoreV1Api(api)
        self.stop = threading.Event()
        self.samples = 0
        self.failed = 0
        self.gap = dict.fromkeys([*controllers, "any"], 0.0)

    def run(self) -> None:
        with InNetns(self.netns):
            last_ok = {name: time.monotonic() for name in self.gap}
            while not self.stop.is_set():
                t = time.monotonic()
                answered = False
                for name, core in self.apis.items():
                    try:
                        core.read_namespaced_config_map(self.configmap, self.namespace, _request_timeout=1.0)
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

    def finish(self) -> dict[str, object]:
        """Stop sampling; the figures (samples, unanswered rounds, longest gaps in seconds)."""
        self.stop.set()
        self.join(10)
        return {"samples": self.samples, "samples_unanswered": self.failed,
                "longest_gap_seconds": {k: round(v, 2) for k, v in self.gap.items()}}
