"""``mke cluster apply``: make the hosts of the cluster file one cluster, and change nothing when
they are one already.

Steps, each shown per host (``[c1 10.0.0.1] ...``), each failure a ClusterError naming the
host, the step and the remote error (its class is the phase, its exit code says which):

1. connect   every host over SSH, in parallel (known_hosts checked)
2. probe     ``mke cluster probe`` there: the digest of the mke file at ``mke.path`` (and of the
             config, the air-gap bundles), which service is installed, whether mke runs, joined
3. upload    the mke file where its digest differs (temp file, digest checked there, rename);
             the config to controllers, the bundles to workers' ``<data-dir>/images``
4. preflight ``mke sysinfo --role R`` on every host that does not run mke yet: a FAIL stops
5. controllers: one that runs is the leader; none runs but some have joined before: start all
             of those at once (etcd needs a quorum: a cold start cannot go one by one); none has
             state: install and start the first. Then every other controller, one at a time:
             a short-lived single-use token from the leader (written 0600 over SFTP, never on a
             command line), ``mke install controller``, ``mke start``, wait for its API
6. workers   the same with worker tokens, ``workersInParallel`` at a time
7. ready     every node (workers, controller+worker) Ready, asked from the leader
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from mke.cluster.spec import ClusterSpec, HostSpec
from mke.cluster.ssh import Remote
from mke.errors import (
    ClusterError,
    ClusterInstallError,
    ClusterJoinError,
    ClusterPreflightError,
    ClusterReadyError,
    UsageError,
)

T = TypeVar("T")
CONTROLLER_TOKEN_EXPIRY = "10m"
WORKER_TOKEN_EXPIRY = "15m"
CONTROLLER_READY_SECONDS = 600.0
LEADER_GRACE_SECONDS = 60.0  # a controller seen ready may flap for a moment (a restore, a cold start)
NODE_READY_SECONDS = 600.0


class Progress:
    """One line per event, prefixed with the host (stderr: stdout is for what a command prints)."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()

    def say(self, host: HostSpec | None, text: str) -> None:
        where = f"[{host.label}] " if host is not None else ""
        print(f"{time.monotonic() - self.t0:6.1f}s {where}{text}", file=self.stream, flush=True)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def local_mke(spec: ClusterSpec) -> Path:
    """The mke file to ship: ``mke.file``, else the executable this mke runs from."""
    from mke import start

    if spec.mke_file is not None:
        return spec.mke_file
    if not start.executable:
        raise UsageError(f"{spec.source}: mke.file: this mke runs from source, not from a dist/mke file: give the "
                         "file to ship (mke.file: dist/mke)")
    return Path(start.executable)


def controller_config(spec: ClusterSpec, host: HostSpec) -> bytes:
    """The cluster's mke.yaml for ``host``: ``api.address`` is the host's address when that is an IP."""
    import ipaddress

    import yaml

    config = json.loads(json.dumps(spec.config))  # a deep copy
    try:
        ipaddress.ip_address(host.address)
        config.setdefault("api", {})
        config["api"].setdefault("address", host.address)
    except ValueError:
        pass
    return ("# Written by mke cluster apply from " + Path(spec.source).name + "; changes here are overwritten.\n"
            + yaml.safe_dump(config, sort_keys=True)).encode()


async def bounded(limit: int, items: Sequence[T], fn: Callable[[T], Awaitable[Any]]) -> list[Any]:
    """``fn`` over ``items``, at most ``limit`` at a time; the first error is raised once all ended."""
    sem = asyncio.Semaphore(limit)

    async def one(item: T) -> Any:
        async with sem:
            return await fn(item)

    results = await asyncio.gather(*(one(i) for i in items), return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


@dataclass
class HostState:
    host: HostSpec
    remote: Remote
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def node_name(self) -> str:
        return self.host.name or str(self.facts.get("node_name", ""))

    @property
    def running(self) -> bool:
        return bool(self.facts.get("running"))

    @property
    def joined(self) -> bool:
        return bool(self.facts.get("joined", {}).get(self.host.service_role))

    @property
    def installed(self) -> bool:
        return self.host.service_role in self.facts.get("services", {}).get("installed", [])


class Cluster:
    """The cluster file's hosts, connected; what apply, status, kubeconfig and reset share."""

    def __init__(self, spec: ClusterSpec, *, accept_new: bool, progress: Progress | None = None) -> None:
        self.spec = spec
        self.accept_new = accept_new
        self.progress = progress or Progress()
        self.states: dict[int, HostState] = {}

    def say(self, host: HostSpec | None, text: str) -> None:
        self.progress.say(host, text)

    def mke(self, *args: str) -> list[str]:
        return [self.spec.mke_path, *args]

    async def connect(self, hosts: Sequence[HostSpec] | None = None) -> None:
        async def one(h: HostSpec) -> None:
            t = time.monotonic()
            remote = await Remote.connect(h, accept_new=self.accept_new)
            self.states[h.index] = HostState(h, remote)
            self.say(h, f"connected as {h.ssh.user} ({time.monotonic() - t:.1f}s)")

        await bounded(16, list(hosts or self.spec.hosts), one)

    async def close(self) -> None:
        await asyncio.gather(*(s.remote.close() for s in self.states.values()), return_exceptions=True)

    async def probe(self, st: HostState, *, extra: Sequence[str] = ()) -> dict[str, Any] | None:
        """The host's facts from its mke at ``mke.path``; None when there is none (or it is not an mke
        that has ``cluster probe``)."""
        h = st.host
        files = [self.spec.mke_path, *extra]
        args = self.mke("cluster", "probe", "--data-dir", h.data_dir, *[a for f in files for a in ("--file", f)])
        r = await st.remote.run(args, step="probe", error=ClusterPreflightError, check=False, timeout=120)
        if r.exit_status != 0:
            return None
        try:
            facts = json.loads(r.stdout)
        except ValueError:
            return None
        st.facts = facts
        return facts

    # -- remote mke commands

    async def mke_run(self, st: HostState, *args: str, step: str, error: type[ClusterError],
                      timeout: float = 600.0, check: bool = True) -> Any:
        return await st.remote.run(self.mke(*args), step=step, error=error, timeout=timeout, check=check)

    async def remote_sha256(self, st: HostState, path: str, *, step: str, error: type[ClusterError]) -> str | None:
        """The sha256 of a file on the host, as the host's mke reads it (``cluster probe --file``);
        None when it cannot be read there."""
        r = await self.mke_run(st, "cluster", "probe", "--data-dir", st.host.data_dir, "--file", path, step=step,
                               error=error, timeout=300)
        try:
            return json.loads(r.stdout)["files"][path] or None
        except (ValueError, KeyError, TypeError):
            return None

    async def api_ready(self, st: HostState) -> bool:
        r = await self.mke_run(st, "status", "--json", "--data-dir", st.host.data_dir, step="status",
                               error=ClusterReadyError, check=False, timeout=60)
        try:
            return bool(json.loads(r.stdout).get("health", {}).get("api_ready"))
        except ValueError:
            return False

    async def nodes(self, leader: HostState) -> dict[str, dict[str, Any]]:
        """node name -> {ready, heartbeat (of its Ready condition), version} from the leader's kubectl."""
        r = await self.mke_run(leader, "kubectl", "--data-dir", leader.host.data_dir, "--", "get", "nodes",
                               "-o", "json", step="get nodes", error=ClusterReadyError, timeout=60)
        out = {}
        for item in json.loads(r.stdout).get("items", []):
            conds = {c["type"]: c for c in item.get("status", {}).get("conditions", [])}
            ready = conds.get("Ready", {})
            out[item["metadata"]["name"]] = {"ready": ready.get("status") == "True",
                                             "heartbeat": str(ready.get("lastHeartbeatTime") or ""),
                                             "version": item.get("status", {}).get("nodeInfo", {}).get("kubeletVersion")}
        return out

    async def running_leader(self) -> HostState | None:
        for h in self.spec.controllers:
            st = self.states.get(h.index)
            if st is not None and st.running and await self.api_ready(st):
                return st
        return None


class Apply(Cluster):
    restarts = False  # whether this command restarts a running node after uploading its new file (upgrade)

    def __init__(self, spec: ClusterSpec, *, accept_new: bool, progress: Progress | None = None) -> None:
        super().__init__(spec, accept_new=accept_new, progress=progress)
        self.changes: list[str] = []
        self.local = local_mke(spec)
        self.digest = ""

    def changed(self, host: HostSpec, text: str) -> None:
        self.changes.append(f"{host.label}: {text}")
        self.say(host, text)

    async def run(self) -> int:
        t0 = time.monotonic()
        self.digest = await asyncio.to_thread(file_digest, self.local)
        self.say(None, f"mke file {self.local} (sha256 {self.digest[:12]}), {len(self.spec.hosts)} hosts")
        try:
            await self.connect()
            await bounded(8, list(self.states.values()), self.prepare_host)
            await bounded(8, [s for s in self.states.values() if not s.running], self.preflight)
            leader = await self.controllers()
            await bounded(self.spec.workers_in_parallel, [self.states[h.index] for h in self.spec.workers],
                          lambda st: self.worker(leader, st))
            await self.wait_nodes(leader)
        finally:
            await self.close()
        took = time.monotonic() - t0
        if self.changes:
            self.say(None, f"applied: {len(self.changes)} changes in {took:.1f}s")
        else:
            self.say(None, f"no change: every host runs this mke file and every node is Ready ({took:.1f}s)")
        return 0

    # -- 2 + 3: probe and upload

    def bundle_path(self, host: HostSpec, bundle: Path) -> str:
        return str(PurePosixPath(host.data_dir) / "images" / bundle.name)

    async def prepare_host(self, st: HostState) -> None:
        h = st.host
        extra = [h.config_path] if h.controller else []
        if h.worker:
            extra += [self.bundle_path(h, b) for b in self.spec.airgap_bundles]
        facts = await self.probe(st, extra=extra)
        have = (facts or {}).get("files", {}).get(self.spec.mke_path)
        if have != self.digest:
            await self.upload_mke(st)
            facts = await self.probe(st, extra=extra)
            if facts is None:
                raise ClusterInstallError(h.label, "probe", f"{self.spec.mke_path} does not run after the upload")
        assert facts is not None
        self.say(h, f"mke {facts['version']} at {self.spec.mke_path}; service: "
                    f"{', '.join(facts['services']['installed']) or 'none'}"
                    f"{' (' + facts['services']['manager'] + ')' if facts['services']['manager'] else ''}; "
                    f"{'running' if facts['running'] else 'not running'}")
        if h.controller:
            want = controller_config(self.spec, h)
            if facts["files"].get(h.config_path) != hashlib.sha256(want).hexdigest():
                await st.remote.makedirs(str(PurePosixPath(h.config_path).parent), 0o700, step="config",
                                         error=ClusterInstallError)
                await st.remote.write_file(h.config_path, want, 0o600, step="config", error=ClusterInstallError)
                self.changed(h, f"config written to {h.config_path}"
                                + (" (the running controller reads it at its next start)" if facts["running"] else ""))
        for b in self.spec.airgap_bundles if h.worker else ():
            dest = self.bundle_path(h, b)
            if facts["files"].get(dest) != await asyncio.to_thread(file_digest, b):
                await st.remote.makedirs(str(PurePosixPath(dest).parent), 0o700, step="air-gap bundle",
                                         error=ClusterInstallError)
                await st.remote.put(b, dest + ".mke-cluster.tmp", step="air-gap bundle", error=ClusterInstallError)
                await st.remote.rename(dest + ".mke-cluster.tmp", dest, step="air-gap bundle", error=ClusterInstallError)
                self.changed(h, f"air-gap bundle {b.name} uploaded")

    async def upload_mke(self, st: HostState) -> None:
        h = st.host
        t = time.monotonic()
        tmp = f"{self.spec.mke_path}.mke-cluster.tmp"
        await st.remote.makedirs(str(PurePosixPath(self.spec.mke_path).parent), 0o755, step="upload",
                                 error=ClusterInstallError)
        await st.remote.put(self.local, tmp, step="upload", error=ClusterInstallError)
        r = await st.remote.run([tmp, "cluster", "probe", "--data-dir", h.data_dir, "--file", tmp], step="upload check",
                                error=ClusterInstallError, check=False, timeout=300)
        try:
            got = json.loads(r.stdout)["files"][tmp]
        except (ValueError, KeyError, TypeError):
            got = f"(it does not run: {r.error_line()})"
        if got != self.digest:
            await st.remote.remove(tmp, step="upload", error=ClusterInstallError)
            raise ClusterInstallError(h.label, "upload", f"{tmp}: sha256 {got} after the upload, expected {self.digest}")
        await st.remote.rename(tmp, self.spec.mke_path, step="upload", error=ClusterInstallError)
        self.changed(h, f"uploaded mke to {self.spec.mke_path} in {time.monotonic() - t:.1f}s"
                        + (" (the running node keeps its old file until `mke cluster upgrade`)"
                           if st.facts.get("running") and not self.restarts else ""))

    # -- 4: preflight

    async def preflight(self, st: HostState) -> None:
        h = st.host
        args = ["sysinfo", "--role", h.role, "--data-dir", h.data_dir, "--json"]
        if h.controller:
            args += ["--config", h.config_path]
        r = await self.mke_run(st, *args, step="sysinfo", error=ClusterPreflightError, check=False, timeout=120)
        try:
            doc = json.loads(r.stdout)
        except ValueError:
            raise ClusterPreflightError(h.label, "mke sysinfo", r.error_line()) from None
        fails = [c for c in doc.get("checks", []) if c.get("verdict") == "FAIL"]
        if fails:
            more = f" (and {len(fails) - 1} more FAIL)" if len(fails) > 1 else ""
            raise ClusterPreflightError(h.label, "mke sysinfo", f"FAIL {fails[0]['name']}: {fails[0]['detail']}{more}")
        warns = [c["name"] for c in doc.get("checks", []) if c.get("verdict") == "WARN"]
        self.say(h, f"sysinfo {doc.get('verdict')}" + (f" (WARN: {', '.join(warns)})" if warns else ""))

    # -- 5: controllers

    def install_args(self, st: HostState, token_file: bool) -> list[str]:
        h = st.host
        args = ["install", h.service_role, "--data-dir", h.data_dir]
        if h.controller:
            args += ["--config", h.config_path]
            if h.worker:
                args.append("--enable-worker")
        if h.name:
            args += ["--name", h.name]
        if token_file:
            args += ["--token-file", h.token_path]
        args += list(h.flags)
        if h.init == "detached":
            args.append("--detached")
        if st.installed:
            args.append("--force")  # installed by an apply that did not finish: write it again
        return args

    async def install_and_start(self, st: HostState, token: str | None) -> None:
        h = st.host
        if token is not None:
            await st.remote.makedirs(str(PurePosixPath(h.token_path).parent), 0o700, step="token",
                                     error=ClusterJoinError)
            await st.remote.write_file(h.token_path, token.encode() + b"\n", 0o600, step="token", error=ClusterJoinError)
        await self.mke_run(st, *self.install_args(st, token is not None), step="mke install", error=ClusterInstallError,
                           timeout=120)
        self.changed(h, f"installed mke-{h.service_role} ({h.init})")
        await self.start(st)

    async def start(self, st: HostState) -> None:
        t = time.monotonic()
        await self.mke_run(st, "start", st.host.service_role, step="mke start", error=ClusterJoinError,
                           timeout=CONTROLLER_READY_SECONDS)
        st.facts["running"] = True
        self.changed(st.host, f"started mke-{st.host.service_role} ({time.monotonic() - t:.1f}s)")

    async def wait_controller(self, st: HostState) -> None:
        t = time.monotonic()
        while not await self.api_ready(st):
            if time.monotonic() - t > CONTROLLER_READY_SECONDS:
                r = await self.mke_run(st, "status", "--data-dir", st.host.data_dir, step="status",
                                       error=ClusterReadyError, check=False)
                raise ClusterReadyError(st.host.label, "control plane ready",
                                        f"not ready after {CONTROLLER_READY_SECONDS:.0f}s: {r.error_line()}")
            await asyncio.sleep(2)
        self.say(st.host, f"control plane ready ({time.monotonic() - t:.1f}s)")

    async def leader_after_start(self, states: list[HostState]) -> HostState:
        """A controller whose API answers, right after ``wait_controller`` saw one ready. A restored
        or cold-started control plane may still flap (/readyz answers within 2 s, a component that
        settles): asked again for up to LEADER_GRACE_SECONDS before it is a failure, which then
        says why (``mke status`` of the first controller)."""
        deadline = time.monotonic() + LEADER_GRACE_SECONDS
        while (leader := await self.running_leader()) is None:
            if time.monotonic() >= deadline:
                first = states[0]
                r = await self.mke_run(first, "status", "--data-dir", first.host.data_dir, step="status",
                                       error=ClusterReadyError, check=False)
                raise ClusterReadyError(first.host.label, "control plane ready",
                                        f"no controller's API is ready: {r.error_line()}")
            await asyncio.sleep(2)
        return leader

    async def token(self, leader: HostState, role: str, expiry: str, for_host: HostSpec) -> str:
        r = await self.mke_run(leader, "token", "create", f"--role={role}", f"--expiry={expiry}", "--data-dir",
                               leader.host.data_dir, step=f"token for {for_host.label}", error=ClusterJoinError,
                               timeout=60)
        token = r.stdout.strip()
        if not token.startswith("mke"):
            raise ClusterJoinError(leader.host.label, "mke token create", "printed no token")
        return token

    async def controllers(self) -> HostState:
        states = [self.states[h.index] for h in self.spec.controllers]
        leader = await self.running_leader()
        if leader is None:
            joined = [s for s in states if s.joined]
            if joined:  # a cold start: etcd needs its quorum, so every controller starts at once
                self.say(None, f"no controller runs; {len(joined)} "
                               f"{'has' if len(joined) == 1 else 'have'} joined before: starting them together")
                await bounded(len(joined), [s for s in joined if not s.running], self.start_or_install)
                await bounded(len(joined), joined, self.wait_controller)
            else:
                first = states[0]
                self.say(first.host, "first controller: a new cluster")
                await self.install_and_start(first, None)
                await self.wait_controller(first)
            leader = await self.leader_after_start(states)
        self.say(leader.host, "leader: tokens are made here")
        for st in states:
            if st is leader or st.running:
                continue
            if st.joined:
                await self.start(st)
            else:
                token = await self.token(leader, "controller", CONTROLLER_TOKEN_EXPIRY, st.host)
                await self.install_and_start(st, token)
            await self.wait_controller(st)
        return leader

    async def start_or_install(self, st: HostState) -> None:
        if st.installed:
            await self.start(st)
        else:
            await self.install_and_start(st, None)

    # -- 6: workers

    async def worker(self, leader: HostState, st: HostState) -> None:
        if st.running:
            return
        if st.joined and st.installed:
            await self.start(st)
            return
        token = await self.token(leader, "worker", WORKER_TOKEN_EXPIRY, st.host)
        await self.install_and_start(st, token)

    # -- 7: ready

    def node_ready(self, node: dict[str, Any] | None) -> bool:
        """Whether a node (as ``nodes`` reports it) counts as Ready."""
        return bool(node and node["ready"])

    async def wait_nodes(self, leader: HostState) -> None:
        want = {self.states[h.index].node_name: self.states[h.index] for h in self.spec.hosts if h.worker}
        t = time.monotonic()
        said: set[str] = set()
        while True:
            nodes = await self.nodes(leader)
            for name, st in want.items():
                if self.node_ready(nodes.get(name)) and name not in said:
                    said.add(name)
                    if self.changes:
                        self.say(st.host, f"node {name} Ready ({nodes[name]['version']})")
            missing = [n for n in want if not self.node_ready(nodes.get(n))]
            if not missing:
                return
            if time.monotonic() - t > NODE_READY_SECONDS:
                st = want[missing[0]]
                state = "not registered" if missing[0] not in nodes else "NotReady"
                raise ClusterReadyError(st.host.label, f"node {missing[0]} Ready",
                                        f"{state} after {NODE_READY_SECONDS:.0f}s"
                                        + (f" (and {', '.join(missing[1:])})" if len(missing) > 1 else ""))
            await asyncio.sleep(3)
