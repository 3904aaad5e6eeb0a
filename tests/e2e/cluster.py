"""One controller and two workers, each a kernel-only host: its own network namespace and
its own mount namespace whose root holds only ``dist/mke`` (tests/e2e/bareroot.py).

``E2ECluster`` runs the real static ``dist/mke`` (nothing else of the build: every binary
and every system image comes out of that one file), plus a locally built test image
copied into each worker's ``<data-dir>/images``. Every process it starts is remembered by
pid and stopped by pid; paths it passes to mke are the host's own (``/var/lib/mke``), and
it reads the same files from outside through the host's root.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.bareroot import BareRoot, release_nsdir
from tests.e2e.netns import Host, Network

REPO = Path(__file__).resolve().parents[2]
BASE = Path(os.environ.get("MKE_E2E_DIR", "/var/tmp/mke-e2e"))
TESTAPP_IMAGE = "mke.test/testapp:v1"
DATA = Path("/var/lib/mke")  # the data dir, as each host sees it
CONFIG = Path("/var/mke.yaml")
POD_LOGS = Path("/var/log/pods")
# What a service manager would give mke on a host: nothing of the test machine's environment.
HOST_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


def arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


def dist() -> Path:
    return Path(os.environ.get("MKE_E2E_DIST", REPO / "dist"))


def fips_build() -> bool:
    """``MKE_E2E_FIPS=1``: the tests run on the FIPS build, ``dist/mke-fips`` (``nox -s build-fips``)."""
    return os.environ.get("MKE_E2E_FIPS", "") not in ("", "0")


def mke_name() -> str:
    """The file name of the build under test in dist/: ``mke``, or ``mke-fips`` with MKE_E2E_FIPS=1."""
    return "mke-fips" if fips_build() else "mke"


def build_hint() -> str:
    """The session that makes the build under test."""
    return "nox -s build-fips" if fips_build() else "nox -s build"


def mke_file() -> Path:
    """The mke file every e2e host runs: dist/mke, or dist/mke-fips with MKE_E2E_FIPS=1."""
    return dist() / mke_name()


def build_testapp_image(out: Path) -> Path:
    """The test image: tests/e2e/testapp (Go, stdlib only) built on the host, packed by mke/images/oci.py."""
    from mke.images import oci

    if out.exists():
        return out
    work = out.parent / "testapp-build"
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GOPROXY": "off", "GOTOOLCHAIN": "local"}
    subprocess.run(["nice", "-n", "19", "go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(work / "testapp"), "."],
                   cwd=REPO / "tests" / "e2e" / "testapp", env=env, check=True)
    blobs = work / "blobs"
    layers = [oci.build_layer(oci.base_entries(), blobs, comment="base"),
              oci.build_layer([oci.binary_entry("/testapp", work / "testapp")], blobs, comment="testapp")]
    image = oci.build_image(TESTAPP_IMAGE, layers, oci.ImageConfig(entrypoint=("/testapp",), cmd=("serve",),
                                                                   user="65532:65532"), blobs, arch=arch())
    oci.write_archive([image], out)
    return out


@dataclass
class Proc:
    """One long-running mke process in a host's namespace, with its log file."""

    name: str
    host: Host
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen | None = None
    started: float = 0.0

    def start(self) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")
        self.started = time.monotonic()
        self.popen = subprocess.Popen(self.host.wrap(self.argv), stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True, env={**os.environ, **self.env})
        out.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for(self, pattern: str, timeout: float, *, since: int = 0) -> re.Match:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = rx.search(self.text()[since:])
            if m:
                return m
            if not self.alive():
                raise AssertionError(f"{self.name} exited ({self.popen.returncode}) before /{pattern}/; "
                                     f"last lines:\n{self.tail()}")
            time.sleep(0.5)
        raise AssertionError(f"{self.name}: no /{pattern}/ after {timeout:.0f}s; last lines:\n{self.tail()}")

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.text().splitlines()[-n:])

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (mke stops its components in reverse order), SIGKILL after ``timeout``."""
        if not self.alive():
            return self.popen.returncode if self.popen else None
        os.kill(self.pid, signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            return self.popen.wait(10)


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@dataclass
class E2ECluster:
    base: Path = BASE
    network: Network = field(default_factory=Network)
    roots: dict[str, BareRoot] = field(default_factory=dict)
    controller: Proc | None = None
    workers: dict[str, Proc] = field(default_factory=dict)
    joined: dict[str, Proc] = field(default_factory=dict)  # controllers that joined ctl (mke server --token-file)
    ready_seconds: dict[str, float] = field(default_factory=dict)

    # -- hosts

    def create(self, bare: list[str], plain: list[str], *, mke: Path | None = None,
               extra: dict[str, Path] | None = None) -> None:
        """Network namespaces for every host; a bare root for each of ``bare`` (its /mke: ``mke``,
        default dist/mke; ``extra``: more files at the root's top, see BareRoot)."""
        self.network.create([*bare, *plain])
        for name in bare:
            root = BareRoot(name=name, base=self.base / "roots", netns=self.network.hosts[name].netns,
                            mke=mke or mke_file(), extra=dict(extra or {}))
            self.roots[name] = root.create()
            self.network.hosts[name].bare = root

    def add_host(self, name: str, index: int) -> Host:
        """One more kernel-only host, at 10.200.0.<index>, on the running cluster's network."""
        h = self.network.add(name, index)
        root = BareRoot(name=name, base=self.base / "roots", netns=h.netns, mke=mke_file())
        self.roots[name] = root.create()
        h.bare = root
        return h

    def destroy(self) -> None:
        for root in self.roots.values():
            root.remove()
        release_nsdir(self.base / "roots")
        self.network.destroy()

    def host(self, name: str) -> Host:
        return self.network.hosts[name]

    # -- paths (outside: the test machine's view of a host's file)

    def outside(self, name: str, inner: Path | str) -> Path:
        return self.roots[name].outside(inner)

    def data_dir(self, name: str) -> Path:
        return self.outside(name, DATA)

    @property
    def kubeconfig(self) -> Path:
        return self.base / "admin.conf"

    def cgroup_root(self, name: str) -> str:
        return f"/mke-e2e-{name}"

    def pod_logs(self, name: str) -> Path:
        return self.outside(name, POD_LOGS)

    # -- running mke (always /mke inside the host)

    def run(self, host: str, *args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.host(host).wrap(["/mke", *args]), capture_output=True, text=True,
                              timeout=timeout, env=HOST_ENV, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"mke {' '.join(args)} on {host}: exit {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def kubectl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``mke kubectl`` on the controller (its admin kubeconfig, its kubectl)."""
        return self.run("ctl", "kubectl", "--data-dir", str(DATA), "--", *args, timeout=timeout)

    def ctr(self, host: str, *args: str) -> str:
        """The worker's own (staged) ``ctr`` against its containerd, in the k8s.io namespace."""
        argv = [str(DATA / "bin" / "ctr"), "--address", str(DATA / "run" / "containerd" / "containerd.sock"),
                "--namespace", "k8s.io", *args]
        proc = subprocess.run(self.host(host).wrap(argv), capture_output=True, text=True, timeout=120, env=HOST_ENV,
                              check=False)
        if proc.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} on {host}: {proc.stderr.strip()}")
        return proc.stdout

    def start_controller(self, config: str = "") -> Proc:
        """``mke server`` on ctl; ``config`` is more mke.yaml (top-level sections besides ``api``)."""
        self.outside("ctl", CONFIG).write_text("api:\n  address: 10.200.0.1\n" + config)
        argv = ["/mke", "server", "--config", str(CONFIG), "--data-dir", str(DATA), "--name", "ctl"]
        self.controller = Proc("controller", self.host("ctl"), argv, self.base / "logs" / "ctl.log",
                               env=HOST_ENV).start()
        return self.controller

    def wait_controller(self, timeout: float = 300.0) -> None:
        assert self.controller is not None
        self.controller.wait_for(r"control plane ready", timeout)
        text = self.run("ctl", "kubeconfig", "admin", "--data-dir", str(DATA), "--server", "https://10.200.0.1:6443").stdout
        self.kubeconfig.write_text(text)
        os.chmod(self.kubeconfig, 0o600)

    def join_controller(self, name: str, token: str) -> Proc:
        """``mke server`` on host ``name`` joining ctl's cluster; the token in a 0600 file, never in argv."""
        h = self.host(name)
        self.outside(name, CONFIG).write_text(f"api:\n  address: {h.address}\n")
        token_file = self.outside(name, "/var/mke-token")
        token_file.write_text(token + "\n")
        os.chmod(token_file, 0o600)
        argv = ["/mke", "server", "--config", str(CONFIG), "--data-dir", str(DATA), "--name", name,
                "--token-file", "/var/mke-token"]
        p = Proc(f"controller {name}", h, argv, self.base / "logs" / f"{name}.log", env=HOST_ENV).start()
        self.joined[name] = p
        return p

    def token(self, role: str = "worker", expiry: str = "1h") -> str:
        return self.run("ctl", "token", "create", f"--role={role}", f"--expiry={expiry}",
                        "--data-dir", str(DATA), "--config", str(CONFIG)).stdout.strip()

    def worker_args(self, name: str, *extra: str) -> list[str]:
        # The test machine's disk is shared with builds: evict only when it is really full.
        eviction = "memory.available<50Mi,nodefs.available<1%,nodefs.inodesFree<1%,imagefs.available<1%"
        return ["/mke", "worker", "--data-dir", str(DATA), "--name", name, "--cgroup-root", self.cgroup_root(name),
                "--pod-logs-dir", str(POD_LOGS), f"--kubelet-arg=eviction-hard={eviction}", *extra]

    def start_worker(self, name: str, token: str | None, images: list[Path], *extra: str) -> Proc:
        d = self.data_dir(name)
        (d / "images").mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        for img in images:
            dest = d / "images" / img.name
            if not dest.exists():
                shutil.copyfile(img, dest)
        argv = self.worker_args(name, *extra) + ([token] if token else [])
        p = Proc(f"worker {name}", self.host(name), argv, self.base / "logs" / f"{name}.log", env=HOST_ENV)
        p.start()  # the log is appended to: a restarted worker continues the same file
        self.workers[name] = p
        return p

    def wait_worker_ready(self, name: str, timeout: float = 420.0, since: int = 0) -> float:
        p = self.workers[name]
        m = p.wait_for(r"node \S+ Ready ([0-9.]+)s after start", timeout, since=since)
        return float(m.group(1))

    # -- facts

    def component_pid(self, node: str, component: str) -> int:
        return int((self.data_dir(node) / "run" / f"{component}.pid").read_text().split()[0])

    def leftovers(self, name: str) -> list[str]:
        """What mke left on host ``name``: ``mke reset --check`` inside it (mounts, processes, cgroups,
        links, routes, files), plus the netfilter state seen from outside with the build's own static
        tools (a reset host has none left): iptables chains of either flavour, ipsets."""
        out = self.run(name, "reset", "--check", "--data-dir", str(DATA), "--cgroup-root", self.cgroup_root(name),
                       "--pod-logs-dir", str(POD_LOGS), check=False).stdout.splitlines()
        return out + netfilter_leftovers(self.host(name).netns)

    def worker_rss(self, name: str) -> dict[str, int]:
        """KiB of resident memory: the mke process, containerd, kubelet, kube-proxy, kube-router, shims."""
        p = self.workers[name]
        out = {"mke": rss_kib(p.pid)}
        for c in ("containerd", "kubelet", "kube-proxy", "kube-router"):
            out[c] = rss_kib(self.component_pid(name, c))
        sock = str(DATA / "run" / "containerd" / "containerd.sock")
        shims = 0
        for e in Path("/proc").iterdir():
            if e.name.isdigit():
                try:
                    args = (e / "cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if args and args[0].endswith(b"containerd-shim-runc-v2") and sock.encode() in args \
                        and Path(f"/proc/{e.name}/root").resolve() == self.roots[name].root:
                    shims += rss_kib(int(e.name))
        out["shims"] = shims
        out["total"] = sum(out.values())
        return out

    def stop_all(self) -> None:
        for p in list(self.workers.values()):
            p.stop()
        for p in list(self.joined.values()):
            p.stop()
        if self.controller is not None:
            self.controller.stop()

    def teardown(self) -> None:
        """Stop every mke, reset every host that has a data dir, drop roots and namespaces."""
        self.stop_all()
        for name in self.roots:
            if (self.data_dir(name) / "run").exists():
                self.run(name, "reset", "--data-dir", str(DATA), timeout=300, check=False)
        self.destroy()

    def summary(self) -> dict:
        return {"ready_seconds": self.ready_seconds}


def clean_slate(base: Path, network: Network) -> None:
    """Stop and remove what an interrupted (or kept) run under ``base`` left: its mke processes, roots,
    namespaces (those of ``network``'s prefix)."""
    for pid_file in base.glob("roots/*/var/lib/mke*/run/mke.lock"):
        stop_holder(pid_file.parent.parent)
    for root in base.glob("roots/*"):
        if root.name.startswith("."):
            continue
        for data in root.glob("var/lib/mke*"):
            if (data / "run").exists():
                subprocess.run(["nsenter", f"--mount={base / 'roots' / '.mntns' / root.name}",
                                f"--net=/run/netns/{network.prefix}{root.name}", "--", "/mke", "reset", "--data-dir",
                                "/" + str(data.relative_to(root))],
                               capture_output=True, timeout=300, env=HOST_ENV, check=False)
        subprocess.run(["umount", "-l", str(base / "roots" / ".mntns" / root.name)], capture_output=True, check=False)
    release_nsdir(base / "roots")
    network.destroy()
    shutil.rmtree(base, ignore_errors=True)


def stop_holder(data_dir: Path) -> None:
    """SIGTERM the mke that holds ``data_dir``'s lock (left running by a kept run), SIGKILL after 60 s."""
    from mke.node.datadir import holder_pid

    pid = holder_pid(data_dir)
    if not pid or pid < 0:
        return
    os.kill(pid, signal.SIGTERM)
    for _ in range(600):
        if holder_pid(data_dir) is None:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def netfilter_leftovers(netns: str, bins: Path | None = None) -> list[str]:
    """mke/KUBE/CNI iptables chains (nft and legacy, v4 and v6) and kube-router ipsets in ``netns``,
    read with the build's static tools in ``bins`` (default: dist/linux-<arch>/bin)."""
    from mke.network.kuberouter import IPSET_PREFIXES
    from mke.worker.cleanup import CHAIN_RE

    bins = bins or dist() / f"linux-{arch()}" / "bin"
    out = []
    for flavour in ("nft", "legacy"):
        for family in ("iptables", "ip6tables"):
            argv = ["nsenter", f"--net=/run/netns/{netns}", "--", str(bins / f"xtables-{flavour}-multi"), f"{family}-save"]
            text = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False).stdout
            chains = sorted({m.group(1) for m in CHAIN_RE.finditer(text)})
            if chains:
                out.append(f"{family}-{flavour}: {', '.join(chains[:8])}")
    argv = ["nsenter", f"--net=/run/netns/{netns}", "--", str(bins / "ipset"), "list", "-n"]
    sets = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False).stdout.split()
    out += [f"ipset {n}" for n in sets if n.startswith(IPSET_PREFIXES)]
    return out


def dump(obj: object) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, default=str)
