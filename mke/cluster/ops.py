"""``mke cluster status``, ``kubeconfig`` and ``reset``: on the hosts of the cluster file, over SSH."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from mke.cluster.apply import Cluster, HostState, bounded
from mke.cluster.spec import ClusterSpec
from mke.errors import ClusterError, ClusterReadyError, ClusterResetError, ComponentError


class Status(Cluster):
    """A table of hosts: address, name, role, service, mke version, state, node and its readiness."""

    async def run(self, out: Any = None) -> int:
        out = out or sys.stdout
        problems: list[str] = []
        rows: list[list[str]] = []
        errors: dict[int, str] = {}

        async def one(h: Any) -> None:
            try:
                await self.connect([h])
                await self.probe(self.states[h.index])
            except ClusterError as e:
                errors[h.index] = e.error

        try:
            await asyncio.gather(*(one(h) for h in self.spec.hosts))
            leader = await self.running_leader()
            nodes = await self.nodes(leader) if leader is not None else {}
        finally:
            await self.close()
        for h in self.spec.hosts:
            st = self.states.get(h.index)
            if h.index in errors or st is None or not st.facts:
                why = errors.get(h.index, f"no mke at {self.spec.mke_path}")
                rows.append([h.address, h.name or "-", h.role, "-", "-", "unreachable" if h.index in errors else
                             "no mke", "-", "-"])
                problems.append(f"{h.label}: {why}")
                continue
            f = st.facts
            state = "running" if f["running"] else ("stopped" if st.joined else "not joined")
            node = nodes.get(st.node_name) if h.worker else None
            ready = "-" if not h.worker else ("Ready" if node and node["ready"] else
                                              "NotReady" if node else "absent")
            rows.append([h.address, st.node_name, h.role, ",".join(f["services"]["installed"]) or "none",
                         f["version"], state, (node or {}).get("version") or "-", ready])
            if not f["running"]:
                problems.append(f"{h.label}: mke is not running")
            elif h.worker and ready != "Ready":
                problems.append(f"{h.label}: node {st.node_name} is {ready}")
        head = ["HOST", "NAME", "ROLE", "SERVICE", "MKE", "STATE", "KUBELET", "NODE"]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        for r in [head, *rows]:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)
        if leader is None:
            problems.append("no controller's API is ready")
        for p in problems:
            print(f"problem: {p}", file=out)
        print(f"health: {'ok' if not problems else 'UNHEALTHY'}", file=out)
        return 0 if not problems else ComponentError.exit_code


class Kubeconfig(Cluster):
    """The admin kubeconfig from the first controller whose API is ready."""

    async def run(self, server: str | None, out: Any = None) -> int:
        out = out or sys.stdout
        try:
            await self.connect(self.spec.controllers)
            await asyncio.gather(*(self.probe(self.states[h.index]) for h in self.spec.controllers))
            leader = await self.running_leader()
            if leader is None:
                h = self.spec.controllers[0]
                raise ClusterReadyError(h.label, "kubeconfig", "no controller's API is ready: `mke cluster apply` first")
            args = ["kubeconfig", "admin", "--data-dir", leader.host.data_dir]
            if server:
                args += ["--server", server]
            r = await self.mke_run(leader, *args, step="mke kubeconfig admin", error=ClusterReadyError, timeout=60)
        finally:
            await self.close()
        out.write(r.stdout)
        return 0


class Reset(Cluster):
    """Every host: its service uninstalled (stopped), ``mke reset``, the mke file removed. Workers first."""

    async def run(self) -> int:
        t0 = time.monotonic()
        try:
            await self.connect()
            await bounded(8, list(self.states.values()), lambda st: self.probe(st))
            workers = [self.states[h.index] for h in self.spec.workers]
            controllers = [self.states[h.index] for h in self.spec.controllers]
            await bounded(8, workers, self.reset_host)
            await bounded(8, controllers, self.reset_host)
        finally:
            await self.close()
        self.say(None, f"reset {len(self.spec.hosts)} hosts in {time.monotonic() - t0:.1f}s")
        return 0

    async def reset_host(self, st: HostState) -> None:
        h = st.host
        if not st.facts:
            self.say(h, f"no mke at {self.spec.mke_path}: nothing to reset")
            return
        for role in st.facts["services"]["installed"]:
            await self.mke_run(st, "uninstall", role, step=f"mke uninstall {role}", error=ClusterResetError,
                               timeout=300)
            self.say(h, f"mke-{role} stopped and uninstalled")
        if st.facts["running"] and not st.facts["services"]["installed"]:
            raise ClusterResetError(h.label, "mke reset", f"an mke runs with {h.data_dir} that no service of mke "
                                                          "install started: stop it, then reset again")
        await self.mke_run(st, "reset", "--data-dir", h.data_dir, step="mke reset", error=ClusterResetError,
                           timeout=600)
        for log in ("/var/log/mke-controller.log", "/var/log/mke-worker.log"):
            if h.init == "detached":
                await st.remote.remove(log, step="remove the detached log", error=ClusterResetError)
        await st.remote.remove(self.spec.mke_path, step="remove the mke file", error=ClusterResetError)
        self.say(h, f"reset: {h.data_dir} and {self.spec.mke_path} removed")


def confirm(spec: ClusterSpec, force: bool) -> None:
    from mke.errors import UsageError

    if force:
        return
    hosts = ", ".join(h.label for h in spec.hosts)
    if not sys.stdin.isatty():
        raise UsageError(f"mke cluster reset removes every node's data on {len(spec.hosts)} hosts ({hosts}); "
                         "pass --force to do it without a question")
    answer = input(f"Reset {len(spec.hosts)} hosts ({hosts})? Their cluster data is deleted. Type 'reset': ")
    if answer.strip() != "reset":
        raise UsageError("not confirmed: nothing was changed")
