"""``mke cluster upgrade``: a rolling upgrade of every host to one mke file (docs/cluster.md).

1. connect, probe every host; each must run mke already (``mke cluster apply`` first); the
   target file's Kubernetes version is checked against the cluster's (one minor at a time)
2. plan (``plan_upgrade``, pure): a host whose running mke started from the target file is
   skipped, and says so; the controllers one at a time, in the file's order, then the workers in
   batches (``--batch``, default 10 % of them, at least 1): kube-apiserver first, kubelets after,
   as Kubernetes' version-skew policy wants (mke.skew refuses the other order at start anyway)
3. each host: the file uploaded when its digest differs; a node (worker, controller+worker)
   cordoned and drained through the API (mke.cluster.drain: evictions, so PodDisruptionBudgets
   hold); ``mke stop`` + ``mke start``; waited on until the mke there runs the target file,
   a controller's /readyz answers and its etcd member is a voting member again, a node is Ready
   with a heartbeat newer than the restart and the target's kubelet version; then uncordoned
4. the first host that fails stops the upgrade (``run_plan``): the hosts after it are not
   touched (not even uploaded to); the exit code is the phase's (22 upload, 26 drain, 23
   restart, 24 not healthy in time)

The API is reached through a controller's SSH connection (mke.cluster.api), never the one
being restarted when there is another.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mke.cluster.api import ApiTunnel
from mke.cluster.apply import NODE_READY_SECONDS, Apply, HostState, Progress, bounded, file_digest
from mke.cluster.drain import NodeDrainer
from mke.cluster.spec import ClusterSpec, HostSpec
from mke.errors import (
    ClusterDrainError,
    ClusterError,
    ClusterJoinError,
    ClusterPreflightError,
    ClusterReadyError,
    KubeAPIError,
)

DRAIN_SECONDS = 300.0
HEALTHY_SECONDS = NODE_READY_SECONDS


# -- the plan (pure: tests/unit/mke/cluster/test_upgrade.py)

@dataclass(frozen=True)
class UpgradePlan:
    """What ``upgrade`` does: ``steps`` run in order (a step's hosts together), ``skipped`` say why."""

    steps: tuple[tuple[HostSpec, ...], ...]
    skipped: tuple[tuple[HostSpec, str], ...] = ()

    @property
    def hosts(self) -> list[HostSpec]:
        return [h for step in self.steps for h in step]


def default_batch(workers: int) -> int:
    """Workers upgraded at once by default: 10 % of them, at least one (k0sctl's default disruption)."""
    return max(1, math.floor(workers * 0.1))


def plan_upgrade(spec: ClusterSpec, running: dict[int, str | None], target: str, *,
                 batch: int | None = None) -> UpgradePlan:
    """The plan for hosts whose running mke started from the file with the digest ``running[index]``
    (None: unknown, so upgraded) to the file with digest ``target``: controllers (controller+worker
    included) one per step in the file's order, then workers ``batch`` per step."""
    skipped: list[tuple[HostSpec, str]] = []
    todo_c: list[HostSpec] = []
    todo_w: list[HostSpec] = []
    for h in spec.hosts:
        if running.get(h.index) == target:
            skipped.append((h, f"runs the target file already (sha256 {target[:12]})"))
        elif h.controller:
            todo_c.append(h)
        else:
            todo_w.append(h)
    size = batch or default_batch(len(spec.workers))
    steps = [(h,) for h in todo_c] + [tuple(todo_w[i:i + size]) for i in range(0, len(todo_w), size)]
    return UpgradePlan(tuple(steps), tuple(skipped))


@dataclass
class Outcome:
    done: list[HostSpec] = field(default_factory=list)
    failed: tuple[HostSpec, BaseException] | None = None
    untouched: list[HostSpec] = field(default_factory=list)


async def run_plan(plan: UpgradePlan, upgrade_one: Callable[[HostSpec], Awaitable[None]]) -> Outcome:
    """Each step's hosts together, steps in order; stop after the first step with a failure (its
    other hosts finish first). The hosts of later steps are untouched."""
    out = Outcome()
    for i, step in enumerate(plan.steps):
        results = await asyncio.gather(*(upgrade_one(h) for h in step), return_exceptions=True)
        for h, r in zip(step, results, strict=True):
            if isinstance(r, BaseException):
                if not isinstance(r, Exception):
                    raise r  # KeyboardInterrupt, CancelledError: not a host's failure
                if out.failed is None:
                    out.failed = (h, r)
            else:
                out.done.append(h)
        if out.failed is not None:
            out.untouched = [h for later in plan.steps[i + 1:] for h in later]
            break
    return out


def heartbeat(node: dict[str, Any] | None) -> tuple[bool, str, str | None]:
    """(Ready, the Ready condition's lastHeartbeatTime, kubeletVersion) of a Node object."""
    if node is None:
        return False, "", None
    for c in node.get("status", {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True", str(c.get("lastHeartbeatTime") or ""), \
                node.get("status", {}).get("nodeInfo", {}).get("kubeletVersion")
    return False, "", node.get("status", {}).get("nodeInfo", {}).get("kubeletVersion")


def newer(a: str, b: str) -> bool:
    """RFC 3339 time ``a`` after ``b`` ("" is before everything)."""
    def parse(t: str) -> datetime | None:
        try:
            return datetime.fromisoformat(t.replace("Z", "+00:00"))
        except ValueError:
            return None
    ta, tb = parse(a), parse(b)
    return ta is not None and (tb is None or ta > tb)


def rfc3339(ts: float) -> str:
    """A Unix time as Kubernetes writes times (seconds, UTC)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def target_versions(path: Any) -> dict[str, str]:
    """{binary: version} from the target file's payload manifest ({} when it has none)."""
    from mke.payload_format import Payload

    p = Payload.open(path)
    return {b.name: b.version for b in p.manifest.binaries if b.version} if p is not None else {}


def with_v(version: str | None) -> str | None:
    return None if not version else (version if version.startswith("v") else "v" + version)


# -- the run

class Upgrade(Apply):
    """The rolling upgrade; it shares apply's connect, probe, upload and start (mke.cluster.apply)."""

    restarts = True

    def __init__(self, spec: ClusterSpec, *, accept_new: bool, mke_file: Path | None = None, batch: int | None = None,
                 drain_timeout: float = DRAIN_SECONDS, progress: Progress | None = None) -> None:
        super().__init__(spec, accept_new=accept_new, progress=progress)
        if mke_file is not None:
            self.local = mke_file
        self.batch = batch
        self.drain_timeout = drain_timeout
        self.versions: dict[str, str] = {}
        self.api: ApiTunnel | None = None
        self.storage_etcd = True

    async def run(self) -> int:
        from mke.config import parse_config

        t0 = time.monotonic()
        cfg = parse_config(self.spec.config, "config")
        self.storage_etcd = cfg.storage.type == "etcd"
        self.digest = await asyncio.to_thread(file_digest, self.local)
        self.versions = await asyncio.to_thread(target_versions, self.local)
        kube = with_v(self.versions.get("kube-apiserver"))
        self.say(None, f"target {self.local} (sha256 {self.digest[:12]}, Kubernetes {kube or 'unknown'})")
        self.api = ApiTunnel(self, cfg.api.port)
        try:
            await self.connect()
            await bounded(8, list(self.states.values()), self.probe)
            self.check_hosts()
            await self.check_skew(kube)
            plan = plan_upgrade(self.spec, {i: s.facts.get("running_sha256") for i, s in self.states.items()},
                                self.digest, batch=self.batch)
            for h, why in plan.skipped:
                self.say(h, f"skipped: {why}")
                if h.worker:
                    await self.uncordon(self.states[h.index])  # a cordon of ours left by a run that stopped
            if not plan.steps:
                self.say(None, f"no change: every host runs this mke file ({time.monotonic() - t0:.1f}s)")
                return 0
            self.say(None, "plan: " + " -> ".join("+".join(h.name or h.address for h in step) for step in plan.steps))
            out = await run_plan(plan, self.upgrade_host)
        finally:
            if self.api is not None:
                await self.api.close()
            await self.close()
        took = time.monotonic() - t0
        if out.failed is not None:
            h, e = out.failed
            self.say(None, f"stopped at {h.label} after {took:.1f}s: {len(out.done)} hosts upgraded"
                           + (f"; not touched: {', '.join(x.label for x in out.untouched)}" if out.untouched else ""))
            raise e
        self.say(None, f"upgraded {len(out.done)} hosts in {took:.1f}s ({len(plan.skipped)} skipped)")
        return 0

    def check_hosts(self) -> None:
        """Every host runs mke (an upgrade starts from a working cluster)."""
        for h in self.spec.hosts:
            st = self.states[h.index]
            if not st.facts:
                raise ClusterPreflightError(h.label, "probe", f"no mke at {self.spec.mke_path}: run "
                                                              "`mke cluster apply` first")
            if not st.running:
                raise ClusterPreflightError(h.label, "probe", "mke is not running there: `mke cluster apply` "
                                                              "starts it; upgrade starts from a running cluster")

    async def check_skew(self, kube: str | None) -> None:
        """The target's kube-apiserver against the cluster's (GET /version): one minor version at a time."""
        from mke.skew import controller_problem

        api = await self.tunnel()
        if kube is None:
            return
        try:
            doc = await asyncio.to_thread(api.call, "GET", "/version")
        except KubeAPIError as e:
            raise ClusterPreflightError(self.spec.controllers[0].label, "cluster version", str(e)) from e
        cluster = str((doc or {}).get("gitVersion", "")) if isinstance(doc, dict) else ""
        problem = controller_problem(kube, cluster, what="the cluster's kube-apiserver")
        if problem:
            raise ClusterPreflightError(self.spec.controllers[0].label, "version skew", problem)
        self.say(None, f"cluster runs Kubernetes {cluster}; target {kube}")

    async def tunnel(self, avoid: HostState | None = None) -> Any:
        assert self.api is not None
        return await self.api.get(avoid=avoid)

    # -- one host

    async def upgrade_host(self, h: HostSpec) -> None:
        st = self.states[h.index]
        t = time.monotonic()
        if (st.facts.get("files") or {}).get(self.spec.mke_path) != self.digest:
            await self.upload_mke(st)
        node = st.node_name
        before = ""
        if h.controller:
            await self.tunnel(avoid=st)  # the API through another controller while this one restarts
        if h.worker:
            await self.cordon_and_drain(st)
        await self.mke_run(st, "stop", h.service_role, step="mke stop", error=ClusterJoinError, timeout=300)
        self.say(h, f"stopped mke-{h.service_role}")
        if h.worker:
            api = await self.tunnel(avoid=st if h.controller else None)
            try:
                before = heartbeat(await asyncio.to_thread(api.get, "v1", "Node", node))[1]
            except KubeAPIError:
                before = ""
            if not before:  # the API is down with this node (a single controller+worker): the host's clock
                facts = await self.probe(st) or {}
                if facts.get("time"):
                    before = rfc3339(float(facts["time"]))
        await self.start(st)
        await self.wait_healthy(st, before)
        if h.worker:
            await self.uncordon(st)
        self.say(h, f"upgraded in {time.monotonic() - t:.1f}s")

    async def cordon_and_drain(self, st: HostState) -> None:
        h, node = st.host, st.node_name
        api = await self.tunnel(avoid=st)
        drainer = NodeDrainer(api, node, say=lambda text: self.say(h, text))
        t = time.monotonic()
        try:
            state = await asyncio.to_thread(drainer.cordon)
            self.say(h, {"cordoned": f"node {node} cordoned",
                         "ours already": f"node {node} cordoned already (by the run that stopped here)"}.get(
                state, f"node {node} was cordoned already, not by mke cluster: it stays cordoned"))
            n = await asyncio.to_thread(drainer.drain, self.drain_timeout)
        except KubeAPIError as e:
            raise ClusterDrainError(h.label, f"drain node {node}", str(e)) from e
        self.say(h, f"node {node} drained: {n} pod{'' if n == 1 else 's'} evicted ({time.monotonic() - t:.1f}s)")

    async def uncordon(self, st: HostState) -> None:
        h, node = st.host, st.node_name
        api = await self.tunnel(avoid=None)
        try:
            if await asyncio.to_thread(NodeDrainer(api, node).uncordon_if_ours):
                self.say(h, f"node {node} uncordoned")
        except KubeAPIError as e:
            raise ClusterDrainError(h.label, f"uncordon node {node}", str(e)) from e

    async def wait_healthy(self, st: HostState, before: str) -> None:
        """Until the host runs the target file and is healthy: a controller's /readyz and etcd member,
        a node Ready with a newer heartbeat and the target's kubelet version."""
        h = st.host
        t = time.monotonic()
        kubelet = with_v(self.versions.get("kubelet"))
        why = "not probed yet"
        said: set[str] = set()

        def once(text: str) -> None:
            if text not in said:
                said.add(text)
                self.say(h, text)

        while True:
            why = await self.unhealthy(st, before, kubelet, once)
            if why is None:
                return
            if time.monotonic() - t > HEALTHY_SECONDS:
                raise ClusterReadyError(h.label, "healthy after the restart",
                                        f"not after {HEALTHY_SECONDS:.0f}s: {why}")
            await asyncio.sleep(2)

    async def unhealthy(self, st: HostState, before: str, kubelet: str | None,
                        say: Callable[[str], None]) -> str | None:
        """Why the restarted host is not healthy yet (None: it is)."""
        h = st.host
        facts = await self.probe(st)
        if facts is None:
            return f"{self.spec.mke_path} does not answer `mke cluster probe`"
        if not facts.get("running"):
            return "mke is not running"
        if "running_sha256" in facts and facts["running_sha256"] != self.digest:  # an older target cannot tell
            return f"the running mke started from sha256 {str(facts.get('running_sha256'))[:12]}, not the target"
        if h.controller:
            if not await self.api_ready(st):
                return "kube-apiserver /readyz does not answer ok"
            say("kube-apiserver /readyz ok")
            if self.storage_etcd:
                problem = await self.etcd_member_problem(st)
                if problem:
                    return problem
                say(f"etcd member {st.node_name} healthy")
        if h.worker:
            try:
                api = await self.tunnel(avoid=st if h.controller else None)
                node = await asyncio.to_thread(api.get, "v1", "Node", st.node_name)
            except (KubeAPIError, ClusterError) as e:
                return f"the API cannot be asked: {e}"
            ready, beat, version = heartbeat(node)
            if not ready:
                return f"node {st.node_name} is not Ready"
            if not newer(beat, before):
                return f"node {st.node_name} has sent no heartbeat since the restart"
            if kubelet and version != kubelet:
                return f"node {st.node_name} reports kubelet {version}, not {kubelet}"
            say(f"node {st.node_name} Ready, kubelet {version}")
        return None

    async def etcd_member_problem(self, st: HostState) -> str | None:
        """The member list asked of this controller's own etcd (a linearizable read: it needs the
        member in quorum): this node's member must be there, started and voting."""
        r = await self.mke_run(st, "etcd", "member-list", "--json", "--data-dir", st.host.data_dir,
                               "--config", st.host.config_path, step="mke etcd member-list", error=ClusterReadyError,
                               check=False, timeout=60)
        if r.exit_status != 0:
            return f"etcd: {r.error_line()}"
        try:
            members = json.loads(r.stdout)
        except ValueError:
            return "etcd: mke etcd member-list printed no JSON"
        mine = [m for m in members if m.get("name") == st.node_name]
        if not mine:
            return f"etcd: no started member named {st.node_name} ({len(members)} members)"
        if mine[0].get("learner"):
            return f"etcd: member {st.node_name} is still a learner"
        return None
