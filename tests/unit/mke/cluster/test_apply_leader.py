"""mke cluster apply right after it started controllers (mke/cluster/apply.py
``Apply.leader_after_start``): a controller seen ready that fails one readiness probe a moment
later (a restored or cold-started control plane settling, /readyz slower than its 2 s) is asked
again instead of failing the apply (the FIPS e2e run of stop 27 failed `mke cluster restore` so:
"control plane ready (5.0s)", then at once "no controller's API is ready"); a controller that
stays unready still fails, saying why. Stand-ins for the hosts: the real path is
tests/e2e/test_cluster_tool.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

import mke.cluster.apply as apply_mod
from mke.cluster.apply import Apply
from mke.cluster.ssh import Result
from mke.errors import ClusterReadyError


class Stub:
    leader_after_start = Apply.leader_after_start

    def __init__(self, answers: list[object]) -> None:
        self.answers = answers
        self.asked = 0
        self.status_runs = 0

    async def running_leader(self):
        self.asked += 1
        return self.answers.pop(0) if self.answers else None

    async def mke_run(self, st, *args, **kw):
        self.status_runs += 1
        return Result(exit_status=1, stdout="", stderr="mke: error: the Kubernetes API is not ready (/readyz: "
                                                                  "[-]etcd failed)\n")


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    real = asyncio.sleep
    monkeypatch.setattr(apply_mod.asyncio, "sleep", lambda s: real(0))
    monkeypatch.setattr(apply_mod, "LEADER_GRACE_SECONDS", 0.3)


FIRST = SimpleNamespace(host=SimpleNamespace(label="c1 (10.0.0.1)", data_dir="/var/lib/mke"))


def test_a_controller_that_flaps_once_after_it_was_ready_is_asked_again():
    leader = object()
    stub = Stub([None, None, leader])
    assert asyncio.run(stub.leader_after_start([FIRST])) is leader
    assert stub.asked == 3 and stub.status_runs == 0


def test_a_controller_that_stays_unready_fails_saying_why():
    stub = Stub([])
    with pytest.raises(ClusterReadyError) as e:
        asyncio.run(stub.leader_after_start([FIRST]))
    text = str(e.value)
    assert "c1 (10.0.0.1)" in text and "no controller's API is ready" in text and "[-]etcd failed" in text
    assert stub.asked >= 2 and stub.status_runs == 1
