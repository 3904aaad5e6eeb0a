"""mke cluster upgrade's planning (mke/cluster/upgrade.py): the order, the batches, the hosts
skipped at the target digest, and stopping at the first host that fails with the rest untouched.
The rolling upgrade itself runs against real hosts in tests/e2e/test_cluster_tool.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mke.cluster.spec import ClusterSpec, parse_cluster
from mke.cluster.upgrade import default_batch, heartbeat, newer, plan_upgrade, rfc3339, run_plan, with_v
from mke.errors import ClusterDrainError, ClusterReadyError

OLD, NEW = "a" * 64, "b" * 64


def spec(*roles: str, parallel: int = 5) -> ClusterSpec:
    hosts = [{"address": f"10.0.0.{i + 1}", "role": r, "name": f"{r[0]}{i + 1}"} for i, r in enumerate(roles)]
    return parse_cluster({"hosts": hosts, "workersInParallel": parallel}, "cluster.yaml", Path("/"))


def names(plan) -> list[list[str]]:
    return [[h.name for h in step] for step in plan.steps]


def test_controllers_one_at_a_time_first_then_workers_in_batches():
    s = spec("worker", "controller", "worker", "controller+worker", "controller", "worker", "worker")
    plan = plan_upgrade(s, dict.fromkeys(range(7), OLD), NEW, batch=2)
    # controllers (controller+worker among them) in the file's order, each alone; workers after, 2 at a time
    assert names(plan) == [["c2"], ["c4"], ["c5"], ["w1", "w3"], ["w6", "w7"]]
    assert plan.skipped == ()


def test_the_default_batch_is_a_tenth_of_the_workers_at_least_one():
    assert [default_batch(n) for n in (0, 1, 9, 10, 25, 100)] == [1, 1, 1, 1, 2, 10]
    s = spec("controller", *["worker"] * 25)
    plan = plan_upgrade(s, {}, NEW)
    assert [len(step) for step in plan.steps] == [1] + [2] * 12 + [1]


def test_hosts_at_the_target_digest_are_skipped_and_say_why():
    s = spec("controller", "controller", "worker", "worker")
    plan = plan_upgrade(s, {0: NEW, 1: OLD, 2: NEW, 3: None}, NEW, batch=5)
    assert names(plan) == [["c2"], ["w4"]]  # None: the running file is not known: upgraded
    assert [(h.name, why) for h, why in plan.skipped] == [
        ("c1", f"runs the target file already (sha256 {NEW[:12]})"),
        ("w3", f"runs the target file already (sha256 {NEW[:12]})")]
    assert plan_upgrade(s, dict.fromkeys(range(4), NEW), NEW).steps == ()


def test_a_failure_stops_the_upgrade_and_leaves_every_later_host_untouched():
    s = spec("controller", "controller", "controller", "worker", "worker", "worker")
    plan = plan_upgrade(s, {}, NEW, batch=2)
    touched: list[str] = []

    async def upgrade_one(h):
        touched.append(h.name)
        if h.name == "c2":
            raise ClusterReadyError(h.label, "healthy after the restart", "not after 600s: ...")

    out = asyncio.run(run_plan(plan, upgrade_one))
    assert touched == ["c1", "c2"]
    assert [h.name for h in out.done] == ["c1"]
    assert out.failed is not None and out.failed[0].name == "c2"
    assert isinstance(out.failed[1], ClusterReadyError)
    assert [h.name for h in out.untouched] == ["c3", "w4", "w5", "w6"]


def test_a_batch_finishes_its_other_hosts_then_stops_with_the_first_failure():
    s = spec("controller", "worker", "worker", "worker", "worker")
    plan = plan_upgrade(s, {}, NEW, batch=2)

    async def upgrade_one(h):
        await asyncio.sleep(0.01 if h.name == "w2" else 0.05)
        if h.name in ("w2", "w3"):
            raise ClusterDrainError(h.label, f"drain node {h.name}", "not drained after 300s")

    out = asyncio.run(run_plan(plan, upgrade_one))
    assert [h.name for h in out.done] == ["c1"]
    assert out.failed is not None and out.failed[0].name == "w2"  # the first of the batch, in the file's order
    assert [h.name for h in out.untouched] == ["w4", "w5"]


def test_an_interrupt_is_not_taken_for_a_host_failure():
    plan = plan_upgrade(spec("controller"), {}, NEW)

    async def upgrade_one(h):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(run_plan(plan, upgrade_one))


def test_node_heartbeat_and_versions():
    node = {"status": {"conditions": [{"type": "MemoryPressure", "status": "False"},
                                      {"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-11-28T13:00:05Z"}],
                       "nodeInfo": {"kubeletVersion": "v1.36.5"}}}
    assert heartbeat(node) == (True, "2026-11-28T13:00:05Z", "v1.36.5")
    assert heartbeat(None) == (False, "", None)
    assert newer("2026-11-28T13:00:05Z", "2026-11-28T13:00:04Z")
    assert not newer("2026-11-28T13:00:04Z", "2026-11-28T13:00:04Z")
    assert newer("2026-11-28T13:00:04Z", "")  # no heartbeat before: any is newer
    assert not newer("", "2026-11-28T13:00:04Z")
    assert rfc3339(1795875005.7) == "2026-11-28T14:10:05Z"
    assert with_v("1.36.5") == "v1.36.5" and with_v("v1.37.0") == "v1.37.0" and with_v(None) is None
