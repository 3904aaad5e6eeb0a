"""Scale (issue 18): kwok's fake nodes and pods against one mke controller vs the same binaries by hand.

For each step (``MKE_BENCH_SCALE_NODES``, default 10,100,500 nodes; 30 pods a node,
``MKE_BENCH_SCALE_PODS_PER_NODE``) and each datastore (``MKE_BENCH_SCALE_STORES``, default
etcd,sqlite,postgres,mariadb), two fresh control planes, one after the other, on fresh data:

- by hand: the same binaries (``dist/linux-amd64/bin`` or ``$MKE_TEST_BIN_DIR``) with
  upstream's default flags plus only what a by-hand install must give (the PKI mke would
  make: serving, client and etcd TLS; service-account keys; Node,RBAC); kine by hand with
  its own defaults (SQLite in ``./db``, port 2379) for the kine stores;
- mke: ``dist/mke server --bin-dir <those binaries>`` (``python -m mke`` when there is no
  dist/mke), with mke's defaults but ``konnectivity.enabled: false`` and
  ``network.provider: custom``, so that it runs the same processes as the baseline and puts
  no DaemonSet pod on the fake nodes.

On each: the nodes (annotated ``kwok.x-k8s.io/node: fake``, tainted, made Ready by
``dist/bench/bin/kwok`` with kwok's default node and pod stages from its module source),
then the load (a ConfigMap/Secret write stream of ``MKE_BENCH_SCALE_WRITE_QPS``, gets and
namespace/cluster lists, watchers on ConfigMaps, Secrets and the pods), a Deployment of
nodes x 30 pods (time until every pod is bound), ``MKE_BENCH_SCALE_STEADY`` seconds of
steady load, and the figures: API latency p50/p99 by SLO class from the apiserver's own
``apiserver_request_duration_seconds`` (the delta over the step) and from the client side,
RSS and CPU time of each control-plane process and of mke, the datastore's size. Every
figure is printed next to the by-hand one of the same step and its ratio; then the goals
and a table of where each datastore breaks the SLO. A run that fails or breaks an SLO
still prints the whole table.

Needs root, the binaries and kwok (``nox -s build -- --mode=docker``, ``nox -s bench-build``;
both need Docker), PostgreSQL/MariaDB from Debian's packages for those stores, and the
controller's ports free; says so in one line otherwise. Holds /var/tmp/mke-e2e.lock while it
runs. Leaves no process or data dir behind, also on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench import scale_report as sr

# Hours at its defaults (3 sizes x 4 stores x 2 control planes): `nox -s bench` runs it only when named.
EXPLICIT = True
REPO = Path(__file__).resolve().parents[2]
LOCK = Path("/var/tmp/mke-e2e.lock")
PORTS = (6443, 2379, 2380, 9443, 8132, 10257, 10259)
KWOK_VERSION = "v0.8.0"
NS = "bench-scale"
STORES = ("etcd", "sqlite", "postgres", "mariadb")
CONTROL_PLANE = ("etcd", "kine", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
FAKE = "kwok.x-k8s.io/node"
PORT_WAIT = 180.0  # another test may hold the controller's ports for a moment


def _env_list(name: str, default: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, default).split(",") if v.strip()]


class Skip(Exception):
    """The benchmark cannot run here; the message says what to do (one line)."""


def mke_config_from_env(var: str = "MKE_BENCH_SCALE_MKE_CONFIG") -> dict[str, Any]:
    """``$var`` (``MKE_BENCH_SCALE_MKE_CONFIG``; bench_server's ``MKE_BENCH_SERVER_CONFIG``): a
    YAML file whose mapping is merged into mke's mke.yaml (to measure a setting against mke's
    defaults, e.g. ``extraEnv``); {} when unset, Skip naming it when unreadable."""
    name = os.environ.get(var)
    if not name:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(name).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise Skip(f"{var}={name}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise Skip(f"{var}={name}: expected a mapping of mke.yaml keys")
    return data


def _sides_from_env() -> tuple[str, ...]:
    """``MKE_BENCH_SCALE_SIDES``: both (default), or only ``mke`` (where a store breaks the SLO,
    without the baseline's time) or only ``by-hand``."""
    given = _env_list("MKE_BENCH_SCALE_SIDES", "by-hand,mke")
    if not given or any(x not in ("by-hand", "mke") for x in given):
        raise Skip(f"MKE_BENCH_SCALE_SIDES takes by-hand, mke or both (got {','.join(given)})")
    return tuple(x.replace("-", " ") for x in ("by-hand", "mke") if x in given)


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@dataclass(frozen=True)
class Settings:
    nodes: tuple[int, ...]
    stores: tuple[str, ...]
    pods_per_node: int = 30
    write_qps: float = 10.0
    steady: float = 60.0
    mke_config: dict[str, Any] = field(default_factory=dict, compare=False)
    sides: tuple[str, ...] = ("by hand", "mke")

    @classmethod
    def from_env(cls) -> Settings:
        try:
            nodes = tuple(int(n) for n in _env_list("MKE_BENCH_SCALE_NODES", "10,100,500"))
            s = cls(nodes=nodes, stores=tuple(_env_list("MKE_BENCH_SCALE_STORES", ",".join(STORES))),
                    pods_per_node=int(os.environ.get("MKE_BENCH_SCALE_PODS_PER_NODE", "30")),
                    write_qps=float(os.environ.get("MKE_BENCH_SCALE_WRITE_QPS", "10")),
                    steady=float(os.environ.get("MKE_BENCH_SCALE_STEADY", "60")),
                    mke_config=mke_config_from_env(),
                    sides=_sides_from_env())
        except ValueError as e:
            raise Skip(f"MKE_BENCH_SCALE_*: {e} (e.g. MKE_BENCH_SCALE_NODES=10,100)") from e
        bad = [x for x in s.stores if x not in STORES]
        if bad or not s.nodes or any(n <= 0 for n in s.nodes):
            raise Skip(f"MKE_BENCH_SCALE_STORES takes {','.join(STORES)} and MKE_BENCH_SCALE_NODES positive "
                       f"numbers (got stores {','.join(s.stores)}, nodes {s.nodes})")
        return s


# ---------------------------------------------------------------- preflight


def _bin_dir() -> Path:
    cand = Path(os.environ.get("MKE_TEST_BIN_DIR") or REPO / "dist" / "linux-amd64" / "bin")
    missing = [n for n in (*CONTROL_PLANE,) if not os.access(cand / n, os.X_OK)]
    if missing:
        raise Skip(f"{cand} lacks {', '.join(missing)}: run `nox -s build -- --mode=docker` (needs Docker) "
                   "or set MKE_TEST_BIN_DIR")
    return cand


def _kwok() -> tuple[Path, Path]:
    kwok = REPO / "dist" / "bench" / "bin" / "kwok"
    cache = Path(os.environ.get("MKE_CACHE_DIR") or Path.home() / ".cache" / "mke")
    stages = cache / "gomod" / "sigs.k8s.io" / f"kwok@{KWOK_VERSION}" / "kustomize" / "stage"
    if not os.access(kwok, os.X_OK) or not stages.is_dir():
        raise Skip(f"no {kwok} or kwok's module source in {stages}: run `nox -s bench-build` (needs Docker)")
    return kwok, stages


def _docker() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _busy_ports(ports: tuple[int, ...] = PORTS) -> list[int]:
    busy = []
    for p in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", p))
            except OSError:
                busy.append(p)
    return busy


def _mke_command() -> list[str]:
    exe = Path(os.environ.get("MKE_BENCH_SCALE_MKE") or REPO / "dist" / "mke")
    if os.access(exe, os.X_OK):
        return [str(exe)]
    return [sys.executable, "-m", "mke"]


# ---------------------------------------------------------------- processes


def _cpu_seconds(pid: int) -> float:
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _mem_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB."""
    rss = hwm = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def _store_bytes(data: Path) -> int:
    """The size of the datastore's files: etcd's bbolt file (not its preallocated WAL), or
    kine's SQLite database with its WAL."""
    files = [data / "etcd" / "member" / "snap" / "db"] if (data / "etcd").is_dir() else [
        p for p in (data / "kine").rglob("*") if p.is_file() and ".db" in p.name]
    total = 0
    for f in files:
        with contextlib.suppress(OSError):
            total += f.stat().st_size
    return total


def _stop_group(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM the process group we started (start_new_session), SIGKILL after ``timeout``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _pids_under(path: Path) -> list[int]:
    """Processes whose command line names ``path`` (what a control plane on that data dir left)."""
    out = []
    needle = str(path).encode()
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != os.getpid():
            with contextlib.suppress(OSError):
                if needle in (p / "cmdline").read_bytes():
                    out.append(int(p.name))
    return out


def _tail(log: Path, n: int = 2) -> str:
    try:
        lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return " | ".join(x.strip()[:200] for x in lines[-n:])


def _popen(argv: list[str], log: Path, *, cwd: Path | None = None, env: dict[str, str] | None = None
           ) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True,
                                env={**os.environ, **(env or {})})


# ---------------------------------------------------------------- the API client


class Api:
    """HTTPS to 127.0.0.1:6443 with super-admin's certificate; one connection per thread."""

    def __init__(self, pki: Path, port: int = 6443) -> None:
        self.port = port
        self.ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.ctx.check_hostname = False
        self.ctx.load_cert_chain(str(pki / "super-admin.crt"), str(pki / "super-admin.key"))
        self.local = threading.local()

    def _conn(self, timeout: float) -> http.client.HTTPSConnection:
        c = getattr(self.local, "conn", None)
        if c is None:
            c = self.local.conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx,
                                                              timeout=timeout)
        c.timeout = timeout
        if c.sock is not None:
            c.sock.settimeout(timeout)
        return c

    def request(self, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = ("application/merge-patch+json" if method == "PATCH" else "application/json")
        for attempt in (0, 1):
            c = self._conn(timeout)
            try:
                c.request(method, path, body=data, headers=headers)
                r = c.getresponse()
                return r.status, r.read()
            except (OSError, http.client.HTTPException):
                c.close()
                self.local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, Any]:
        status, data = self.request(method, path, body, timeout)
        try:
            return status, json.loads(data) if data else {}
        except ValueError:
            return status, {}

    def ready(self) -> bool:
        try:
            return self.request("GET", "/readyz", timeout=2)[0] == 200
        except (OSError, http.client.HTTPException):
            return False

    def watch(self, path: str, on_event: Callable[[dict[str, Any]], None], stop: threading.Event) -> None:
        """Watch ``path`` until ``stop``: 10 s watches, each from the last resourceVersion seen."""
        rv = ""
        while not stop.is_set():
            if not rv:
                try:
                    status, body = self.json("GET", path)
                except (OSError, http.client.HTTPException):
                    time.sleep(1)
                    continue
                if status != 200:
                    time.sleep(1)
                    continue
                for item in body.get("items", []):
                    on_event({"type": "ADDED", "object": item})
                rv = body.get("metadata", {}).get("resourceVersion", "")
            sep = "&" if "?" in path else "?"
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=30)
            try:
                conn.request("GET", f"{path}{sep}watch=1&timeoutSeconds=10&resourceVersion={rv}")
                r = conn.getresponse()
                if r.status != 200:
                    rv = ""
                    continue
                while not stop.is_set():
                    line = r.readline()
                    if not line:
                        break
                    ev = json.loads(line)
                    if ev.get("type") == "ERROR":  # 410 Gone: list again
                        rv = ""
                        break
                    rv = ev.get("object", {}).get("metadata", {}).get("resourceVersion", rv)
                    on_event(ev)
            except (OSError, http.client.HTTPException, ValueError):
                time.sleep(0.5)
            finally:
                conn.close()


def _wait(pred: Callable[[], Any], timeout: float, what: str, interval: float = 1.0,
          alive: Callable[[], str | None] | None = None) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        if alive is not None and (dead := alive()):
            raise RuntimeError(f"{dead} while waiting for {what}")
        time.sleep(interval)
    raise RuntimeError(f"{what}: not within {timeout:.0f}s")


# ---------------------------------------------------------------- the two control planes


class ControlPlane:
    """One control plane on ``root``; ``start`` returns when /readyz answers."""

    label = ""

    def __init__(self, root: Path, store: str, dsn: str, bins: Path, extra: dict[str, Any] | None = None) -> None:
        self.root, self.store, self.dsn, self.bins = root, store, dsn, bins
        self.extra = extra or {}  # merged into the mke side's mke.yaml (MKE_BENCH_SCALE_MKE_CONFIG)
        self.data = root / "data"
        self.pki = self.data / "pki"

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"konnectivity": {"enabled": False}, "network": {"provider": "custom"}}
        if self.store != "etcd":
            cfg["storage"] = {"type": "kine", "kine": {"dataSource": self.dsn}}
        return cfg

    def start(self) -> None:
        raise NotImplementedError

    def pids(self) -> dict[str, int]:
        """Control-plane component -> pid (and "mke" for mke itself)."""
        raise NotImplementedError

    def dead(self) -> str | None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def store_size(self) -> int:
        raise NotImplementedError


class ByHand(ControlPlane):
    label = "by hand"

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def argvs(self) -> list[tuple[str, list[str], dict[str, str], Path | None]]:
        """(name, argv, env, cwd) of each process, the PKI made as mke would make it."""
        import yaml

        from mke.config import parse_config
        from mke.controller import Controller
        from mke.pki import SERVER_CA

        cfg = parse_config(yaml.safe_load(yaml.safe_dump(self.config())))
        ctl = Controller(cfg, data_dir=self.data, bin_dir=self.bins, manifests=False)
        ctl.ctx.pki.ensure(ctl.pki_request())
        pki, b = ctl.ctx.pki, self.bins
        out: list[tuple[str, list[str], dict[str, str], Path | None]] = []
        if self.store == "etcd":
            url = "https://127.0.0.1:2379"
            (self.data / "etcd").mkdir(mode=0o700)
            out.append(("etcd", [str(b / "etcd"), f"--data-dir={self.data / 'etcd'}", f"--listen-client-urls={url}",
                                 f"--advertise-client-urls={url}", f"--cert-file={pki.crt('etcd/server')}",
                                 f"--key-file={pki.key('etcd/server')}", f"--trusted-ca-file={pki.crt('etcd/ca')}",
                                 "--client-cert-auth=true"], {}, None))
            etcd = [f"--etcd-servers={url}", f"--etcd-cafile={pki.crt('etcd/ca')}",
                    f"--etcd-certfile={pki.crt('apiserver-etcd-client')}",
                    f"--etcd-keyfile={pki.key('apiserver-etcd-client')}"]
        else:
            (self.data / "kine").mkdir(mode=0o700)
            # SQLite: kine's default endpoint (./db/state.db); the others in its environment
            env = {} if self.store == "sqlite" else {"KINE_ENDPOINT": self.dsn}
            out.append(("kine", [str(b / "kine")], env, self.data / "kine"))
            etcd = ["--etcd-servers=http://127.0.0.1:2379"]
        domain = cfg.network.cluster_domain
        out.append(("kube-apiserver", [
            str(b / "kube-apiserver"), *etcd, f"--client-ca-file={pki.client_ca_file}",
            f"--tls-cert-file={pki.crt('apiserver')}", f"--tls-private-key-file={pki.key('apiserver')}",
            f"--service-account-issuer=https://kubernetes.default.svc.{domain}",
            f"--service-account-key-file={pki.sa_pub}", f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={cfg.network.service_cidr}", "--authorization-mode=Node,RBAC"], {}, None))
        for name, conf, extra in (
                ("kube-controller-manager", "controller-manager",
                 [f"--service-account-private-key-file={pki.sa_key}", f"--root-ca-file={pki.crt(SERVER_CA)}",
                  "--use-service-account-credentials=true"]),
                ("kube-scheduler", "scheduler", [])):
            kc = pki.kubeconfig(conf)
            out.append((name, [str(b / name), f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}",
                               f"--authorization-kubeconfig={kc}", *extra], {}, None))
        return out

    def start(self) -> None:
        if self.store != "etcd" and _busy_ports((8080,)):  # kine's default metrics port
            raise RuntimeError("port 8080 (kine's default metrics address) is in use")
        argvs = self.argvs()
        # the datastore and kube-apiserver first; the controllers once it answers (they exit
        # when RBAC is not bootstrapped yet: by hand, that is what a restarting unit covers)
        for name, argv, env, cwd in argvs[:-2]:
            self.procs[name] = _popen(argv, self.root / f"{name}.log", cwd=cwd, env=env)
        api = Api(self.pki)
        _wait(api.ready, 180, "the by-hand control plane's /readyz", interval=0.2, alive=self.dead)
        for name, argv, env, cwd in argvs[-2:]:
            self.procs[name] = _popen(argv, self.root / f"{name}.log", cwd=cwd, env=env)
        time.sleep(2)
        if dead := self.dead():
            raise RuntimeError(dead)

    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.procs.items()}

    def dead(self) -> str | None:
        gone = [f"{n} exited with {p.returncode}: {_tail(self.root / (n + '.log'))}"
                for n, p in self.procs.items() if p.poll() is not None]
        return gone[0] if gone else None

    def stop(self) -> None:
        for p in reversed(list(self.procs.values())):
            _stop_group(p)

    def store_size(self) -> int:
        return _store_bytes(self.data)


class Mke(ControlPlane):
    label = "mke"

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.proc: subprocess.Popen[bytes] | None = None

    def status(self) -> dict[str, Any]:
        try:
            return json.loads((self.data / "run" / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def start(self) -> None:
        import yaml

        cfg = self.root / "mke.yaml"
        cfg.write_text(yaml.safe_dump(_merged(self.config(), self.extra)))
        self.proc = _popen([*_mke_command(), "server", "--data-dir", str(self.data), "--bin-dir", str(self.bins),
                            "--config", str(cfg)], self.root / "mke.log", cwd=REPO,
                           env={"PYTHONPATH": str(REPO)} if _mke_command()[0] == sys.executable else None)
        _wait(lambda: self.status().get("phase") == "running" and self.status().get("pid") == self.proc.pid,
              240, "mke server to run", interval=0.5, alive=self.dead)
        _wait(Api(self.pki).ready, 60, "mke's /readyz", interval=0.2, alive=self.dead)

    def pids(self) -> dict[str, int]:
        out = {c["name"]: c["pid"] for c in self.status().get("components", []) if c.get("pid")}
        if self.proc is not None:
            out["mke"] = self.proc.pid
        return out

    def dead(self) -> str | None:
        if self.proc is not None and self.proc.poll() is not None:
            return f"mke server exited with {self.proc.returncode}: {_tail(self.root / 'mke.log')}"
        return None

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)  # mke stops its components in order
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=90)
            _stop_group(self.proc, timeout=1)
        for pid in _pids_under(self.data):  # what a killed mke could not stop: ours by its data dir
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def store_size(self) -> int:
        return _store_bytes(self.data)


# ---------------------------------------------------------------- the load


@dataclass
class Load:
    """The write stream, the readers and the watchers; client-side latencies by SLO class."""

    api: Api
    write_qps: float
    stop: threading.Event = field(default_factory=threading.Event)
    samples: dict[str, list[float]] = field(default_factory=dict)
    errors: int = 0
    events: int = 0
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _timed(self, cls: str, method: str, path: str, body: Any = None) -> int:
        t0 = time.perf_counter()
        try:
            status, _ = self.api.request(method, path, body)
        except (OSError, http.client.HTTPException):
            status = 0
        dt = time.perf_counter() - t0
        with self.lock:
            self.samples.setdefault(cls, []).append(dt)
            if status == 0 or status >= 500:
                self.errors += 1
        return status

    def _writer(self) -> None:
        """ConfigMaps and Secrets, 50 of each: created, updated three times, deleted, again."""
        state: dict[str, int] = {}
        i = 0
        t0 = time.monotonic()
        payload = "x" * 1024
        while not self.stop.is_set():
            kind = ("configmaps", "secrets")[i % 2]
            name = f"load-{(i // 2) % 50}"
            key = f"{kind}/{name}"
            n = state.get(key, 0)
            base = f"/api/v1/namespaces/{NS}/{kind}"
            data = {"data": {"v": payload + str(i)}} if kind == "configmaps" else {"stringData": {"v": payload + str(i)}}
            obj = {"apiVersion": "v1", "kind": "ConfigMap" if kind == "configmaps" else "Secret",
                   "metadata": {"name": name}, **data}
            if n == 0:
                self._timed("mutating", "POST", base, obj)
            elif n < 4:
                self._timed("mutating", "PUT", f"{base}/{name}", obj)
            else:
                self._timed("mutating", "DELETE", f"{base}/{name}")
            state[key] = (n + 1) % 5
            i += 1
            self.stop.wait(max(0.0, t0 + i / self.write_qps - time.monotonic()))  # paced, not slowed by latency

    def _reader(self) -> None:
        """5 gets a second; a namespace list every 5 s; cluster lists (pods, nodes) every 10 s."""
        tick = 0
        while not self.stop.is_set():
            self._timed("get", "GET", f"/api/v1/namespaces/{NS}/configmaps/load-{random.randrange(50)}")
            if tick % 25 == 0:
                self._timed("list-namespace", "GET", f"/api/v1/namespaces/{NS}/configmaps")
            if tick % 50 == 0:
                self._timed("list-cluster", "GET", "/api/v1/pods")
            if tick % 50 == 25:
                self._timed("list-cluster", "GET", "/api/v1/nodes")
            tick += 1
            self.stop.wait(0.2)

    def _count(self, _ev: dict[str, Any]) -> None:
        with self.lock:
            self.events += 1

    def start(self) -> None:
        targets: list[Callable[[], None]] = [self._writer, self._reader]
        for path in ("/api/v1/configmaps", "/api/v1/secrets", f"/apis/apps/v1/namespaces/{NS}/deployments"):
            targets.append(lambda path=path: self.api.watch(path, self._count, self.stop))
        for t in targets:
            th = threading.Thread(target=t, daemon=True)
            th.start()
            self.threads.append(th)

    def end(self) -> None:
        self.stop.set()
        for th in self.threads:
            th.join(timeout=40)


class PodWatch:
    """Pods of the bench namespace: how many are bound to a node, how many Running."""

    def __init__(self, api: Api) -> None:
        self.bound: set[str] = set()
        self.running: set[str] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=api.watch, args=(f"/api/v1/namespaces/{NS}/pods", self.on, self.stop),
                                       daemon=True)
        self.thread.start()

    def on(self, ev: dict[str, Any]) -> None:
        obj = ev.get("object", {})
        name = obj.get("metadata", {}).get("name", "")
        with self.lock:
            if ev.get("type") == "DELETED":
                self.bound.discard(name)
                self.running.discard(name)
                return
            if obj.get("spec", {}).get("nodeName"):
                self.bound.add(name)
            if obj.get("status", {}).get("phase") == "Running":
                self.running.add(name)

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return len(self.bound), len(self.running)

    def end(self) -> None:
        self.stop.set()
        self.thread.join(timeout=40)


# ---------------------------------------------------------------- one run


def _kwok_config(stages: Path, out: Path) -> Path:
    files = [stages / "node" / "fast" / "node-initialize.yaml",
             stages / "node" / "heartbeat-with-lease" / "node-heartbeat-with-lease.yaml",
             *(stages / "pod" / "fast" / f"pod-{s}.yaml" for s in ("ready", "complete", "delete"))]
    out.write_text("\n---\n".join(f.read_text() for f in files))
    return out


def _node(i: int) -> dict[str, Any]:
    name = f"kwok-node-{i}"
    res = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "annotations": {FAKE: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                     "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                "kubernetes.io/arch": "amd64", "kubernetes.io/role": "agent"}},
        "spec": {"taints": [{"key": FAKE, "value": "fake", "effect": "NoSchedule"}]},
        "status": {"allocatable": res, "capacity": res},
    }


def _deployment(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "fake", "namespace": NS},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "fake"}}, "template": {
            "metadata": {"labels": {"app": "fake"}},
            "spec": {
                "nodeSelector": {"type": "kwok"},
                "tolerations": [{"key": FAKE, "operator": "Exists", "effect": "NoSchedule"}],
                "automountServiceAccountToken": False,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 65534,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "fake", "image": "fake-image",
                                "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}},
                                "securityContext": {"allowPrivilegeEscalation": False,
                                                    "capabilities": {"drop": ["ALL"]}}}]}}},
    }


@contextlib.contextmanager
def _database(store: str) -> Iterator[tuple[str, Callable[[], int] | None]]:
    """A fresh PostgreSQL or MariaDB server for one run: (kine's dataSource, its size); ("", None) otherwise."""
    from tests.support.databases import DatabaseUnavailable, mariadb_server, postgres_server

    if store in ("etcd", "sqlite"):
        yield "", None
        return
    try:
        with (postgres_server() if store == "postgres" else mariadb_server()) as db:
            yield db.dsn, db.size
    except DatabaseUnavailable as e:
        raise RuntimeError(str(e)) from e


def run_one(kind: type[ControlPlane], store: str, nodes: int, s: Settings, bins: Path, kwok: Path,
            stages: Path, tmp: Path) -> dict[str, Any]:
    """One control plane, one step: the figures (or {"error": ...})."""
    root = Path(tempfile.mkdtemp(prefix=f"{kind.label.replace(' ', '')}-{store}-{nodes}-", dir=tmp))
    result: dict[str, Any] = {}
    busy, deadline = _busy_ports(), time.monotonic() + PORT_WAIT
    if busy:
        print(f"  (ports {', '.join(map(str, busy))} are in use: waiting up to {PORT_WAIT:.0f} s)", flush=True)
    while busy and time.monotonic() < deadline:
        time.sleep(2)
        busy = _busy_ports()
    if busy:
        raise Skip(f"ports {', '.join(map(str, busy))} are in use (another control plane?): stop it and run again")
    with _database(store) as (dsn, db_size), contextlib.ExitStack() as stack:  # the database stops last
        cp = kind(root, store, dsn, bins, s.mke_config)
        stack.callback(cp.stop)
        cp.start()
        api = Api(cp.pki)
        pids = cp.pids()
        cpu0 = {n: _cpu_seconds(p) for n, p in pids.items()}
        before = sr.parse_histograms(api.request("GET", "/metrics")[1].decode())
        api.json("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        _wait(lambda: api.request("GET", f"/api/v1/namespaces/{NS}/serviceaccounts/default")[0] == 200, 120,
              "the namespace's default ServiceAccount", alive=cp.dead)
        kproc = _popen([str(kwok), f"--kubeconfig={cp.pki / 'super-admin.conf'}",
                        f"--config={_kwok_config(stages, root / 'kwok.yaml')}",
                        f"--manage-nodes-with-annotation-selector={FAKE}=fake", "--node-lease-duration-seconds=40",
                        "--cidr=10.0.0.0/16"], root / "kwok.log")
        stack.callback(_stop_group, kproc)
        t0 = time.monotonic()
        for i in range(nodes):
            status, body = api.json("POST", "/api/v1/nodes", _node(i))
            if status not in (200, 201):
                raise RuntimeError(f"creating node {i}: HTTP {status}: {str(body)[:200]}")

        def ready_nodes() -> bool:
            _, body = api.json("GET", "/api/v1/nodes?labelSelector=type%3Dkwok")
            ready = sum(1 for n in body.get("items", []) for c in n.get("status", {}).get("conditions", [])
                        if c.get("type") == "Ready" and c.get("status") == "True")
            return ready >= nodes

        kdead = lambda: cp.dead() or (f"kwok exited: {_tail(root / 'kwok.log')}" if kproc.poll() is not None else None)  # noqa: E731
        _wait(ready_nodes, 60 + nodes * 0.5, f"{nodes} kwok nodes Ready", alive=kdead)
        result["nodes_ready_s"] = time.monotonic() - t0
        load = Load(api, s.write_qps)
        stack.callback(load.end)
        load.start()
        pods = PodWatch(api)
        stack.callback(pods.end)
        replicas = nodes * s.pods_per_node
        t0 = time.monotonic()
        status, body = api.json("POST", f"/apis/apps/v1/namespaces/{NS}/deployments", _deployment(replicas))
        if status not in (200, 201):
            raise RuntimeError(f"creating the Deployment: HTTP {status}: {str(body)[:200]}")
        result["scheduled_s"] = _wait(lambda: pods.counts()[0] >= replicas, 120 + replicas * 0.2,
                                      f"{replicas} pods bound", interval=0.25, alive=kdead)
        with contextlib.suppress(RuntimeError):
            result["running_s"] = _wait(lambda: pods.counts()[1] >= replicas, 120 + replicas * 0.1,
                                        f"{replicas} pods Running", interval=0.5, alive=kdead) + result["scheduled_s"]
        time.sleep(s.steady)
        after = sr.parse_histograms(api.request("GET", "/metrics")[1].decode())
        load.end()
        pids = cp.pids()
        result["rss_kib"] = {n: _mem_kib(p)[0] for n, p in pids.items()}
        result["hwm_kib"] = {n: _mem_kib(p)[1] for n, p in pids.items()}
        result["cpu_s"] = {n: _cpu_seconds(p) - cpu0.get(n, 0.0) for n, p in pids.items()}
        result["store_bytes"] = db_size() if db_size else cp.store_size()
        delta = sr.subtract(after, before)
        result["server"] = {q: sr.class_quantiles(delta, q) for q in (0.5, 0.99)}
        result["worst_mutating"] = sr.worst_pair(delta, "mutating", 0.99, min_count=10)
        result["client"] = {cls: (sr.percentile(v, 0.5), sr.percentile(v, 0.99), len(v))
                            for cls, v in load.samples.items()}
        result["client_errors"] = load.errors
        result["watch_events"] = load.events
    shutil.rmtree(root, ignore_errors=True)
    return result


# ---------------------------------------------------------------- printing


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "s":
        return f"{v:.3f} s" if v < 10 else f"{v:.1f} s"
    if unit == "MiB":
        return f"{v / 1024:.0f} MiB"
    if unit == "cpu":
        return f"{v:.1f} s"
    if unit == "size":
        return f"{v / 1048576:.1f} MiB"
    return str(v)


def print_step(store: str, nodes: int, pods: int, mke: dict[str, Any], hand: dict[str, Any]) -> None:
    sides = " vs ".join(label for label, r in (("mke", mke), ("the same binaries by hand", hand)) if r)
    print(f"\n-- {nodes} nodes / {pods} pods, {store}: {sides}", flush=True)
    for label, r in (("mke", mke), ("by hand", hand)):
        if "error" in r:
            print(f"   {label}: FAILED: {r['error']}")
    rows: list[list[str]] = []

    def row(what: str, a: float | None, b: float | None, unit: str) -> None:
        rows.append([what, _fmt(a, unit), _fmt(b, unit), sr.ratio(a, b)])

    def get(r: dict[str, Any], *path: Any) -> Any:
        for p in path:
            if not isinstance(r, dict) or p not in r:
                return None
            r = r[p]
        return r

    row("nodes Ready", get(mke, "nodes_ready_s"), get(hand, "nodes_ready_s"), "s")
    row("all pods bound", get(mke, "scheduled_s"), get(hand, "scheduled_s"), "s")
    row("all pods Running (kwok)", get(mke, "running_s"), get(hand, "running_s"), "s")
    for cls in ("mutating", "get", "list-namespace", "list-cluster"):
        for q, qn in ((0.5, "p50"), (0.99, "p99")):
            a, b = get(mke, "server", q, cls), get(hand, "server", q, cls)
            row(f"apiserver {cls} {qn}", a[0] if a else None, b[0] if b else None, "s")
    wm, wh = get(mke, "worst_mutating"), get(hand, "worst_mutating")
    row(f"apiserver worst mutating pair p99 ({wm[0] if wm else '-'} / {wh[0] if wh else '-'})",
        wm[1] if wm else None, wh[1] if wh else None, "s")
    for cls in ("mutating", "get", "list-namespace", "list-cluster"):
        for i, qn in ((0, "p50"), (1, "p99")):
            a, b = get(mke, "client", cls), get(hand, "client", cls)
            row(f"client {cls} {qn}", a[i] if a else None, b[i] if b else None, "s")
    names = [n for n in ("etcd", "kine", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "mke")
             if get(mke, "rss_kib", n) is not None or get(hand, "rss_kib", n) is not None]
    for n in names:
        row(f"RSS {n}", get(mke, "rss_kib", n), get(hand, "rss_kib", n), "MiB")
    same = [n for n in names if n != "mke"]
    tot = lambda r, key, ns: sum(get(r, key, n) or 0 for n in ns) if get(r, key) else None  # noqa: E731
    row("RSS control plane (same binaries)", tot(mke, "rss_kib", same), tot(hand, "rss_kib", same), "MiB")
    row("RSS control plane + mke", tot(mke, "rss_kib", names), tot(hand, "rss_kib", same), "MiB")
    row("peak RSS control plane + mke (VmHWM)", tot(mke, "hwm_kib", names), tot(hand, "hwm_kib", same), "MiB")
    for n in names:
        row(f"CPU time {n}", get(mke, "cpu_s", n), get(hand, "cpu_s", n), "cpu")
    row("CPU time control plane + mke", tot(mke, "cpu_s", names), tot(hand, "cpu_s", same), "cpu")
    row("datastore size", get(mke, "store_bytes"), get(hand, "store_bytes"), "size")
    print(sr.table(["", "mke", "by hand", "ratio"], rows))
    print(f"   client errors (HTTP 5xx or none): mke {get(mke, 'client_errors')}, by hand "
          f"{get(hand, 'client_errors')}; watch events: mke {get(mke, 'watch_events')}, "
          f"by hand {get(hand, 'watch_events')}", flush=True)


def slo(r: dict[str, Any]) -> tuple[bool | None, str]:
    """(held, the figures) of upstream's API call latency SLO for one run (None: not measured)."""
    if "error" in r or "server" not in r:
        return None, "failed" if "error" in r else "-"
    q = r["server"][0.99]
    worst = r.get("worst_mutating")
    mut = worst[1] if worst else (q.get("mutating", (None, 0))[0])
    lst = q.get("list-cluster", (None, 0))[0]
    held = (mut is None or mut <= sr.SLO_MUTATING) and (lst is None or lst <= sr.SLO_LIST_CLUSTER)
    return held, f"{'held' if held else 'BROKEN'} (mut {_fmt(mut, 's')}, list {_fmt(lst, 's')})"


def print_goals(results: dict[tuple[str, int, str], dict[str, Any]], s: Settings) -> None:
    print("\n== goals", flush=True)
    for store in ("sqlite", "etcd"):
        r = results.get((store, 100, "mke"))
        text = slo(r)[1] if r else "not measured in this run (MKE_BENCH_SCALE_NODES lacks 100 or stores lack it)"
        print(f"API call latency SLO (p99 <= 1 s single-object mutating, <= 30 s cluster lists) at 100 nodes / "
              f"{100 * s.pods_per_node} pods on {store} with mke: {text}")
    for store in s.stores:
        m, h = results.get((store, 100, "mke")), results.get((store, 100, "by hand"))
        if not m or not h or "rss_kib" not in m or "rss_kib" not in h:
            print(f"control plane RSS at 100 nodes on {store} <= 1.0x by hand: not measured in this run")
            continue
        same = list(h["rss_kib"])
        a, b = sum(m["rss_kib"].get(n, 0) for n in same), sum(h["rss_kib"].values())
        withmke = a + m["rss_kib"].get("mke", 0)
        print(f"control plane RSS at 100 nodes on {store}: same binaries {sr.ratio(a, b)}, with mke itself "
              f"{sr.ratio(withmke, b)} of by hand (goal <= 1.0x: {'met' if withmke <= b else 'MISSED'})")
    print("\n== datastores: upstream's API call latency SLO with mke, by step (p99 of the worst mutating pair, "
          "of cluster lists)")
    rows = [[store, *(slo(results[(store, n, "mke")])[1] if (store, n, "mke") in results else "-" for n in s.nodes)]
            for store in s.stores]
    print(sr.table(["", *(f"{n} nodes" for n in s.nodes)], rows), flush=True)


# ---------------------------------------------------------------- entry


def _preflight(s: Settings) -> tuple[Path, Path, Path]:
    if os.geteuid() != 0:
        raise Skip("needs root (control planes, kine's and the databases' own users): run it with sudo")
    try:
        bins = _bin_dir()
        kwok, stages = _kwok()
    except Skip as e:
        if not _docker():
            raise Skip(f"{e}; no Docker engine here to build them (./scripts/bootstrap.sh installs it)") from None
        raise
    return bins, kwok, stages


def _sigterm(_signo: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def run(report: Any) -> None:
    try:
        s = Settings.from_env()
        bins, kwok, stages = _preflight(s)
    except Skip as e:
        print(f"skipped: {e}", flush=True)
        return
    old = signal.signal(signal.SIGTERM, _sigterm)
    results: dict[tuple[str, int, str], dict[str, Any]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="mke-bench-scale-", dir="/var/tmp"))
    os.chmod(tmp, 0o755)
    try:
        with open(LOCK, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"(waiting for {LOCK}: another control-plane test is running)", flush=True)
                fcntl.flock(lock, fcntl.LOCK_EX)
            print(f"steps {','.join(map(str, s.nodes))} nodes x {s.pods_per_node} pods; stores {','.join(s.stores)}; "
                  f"sides {' and '.join(s.sides)}; "
                  f"writes {s.write_qps:g}/s; steady {s.steady:g} s; mke: {' '.join(_mke_command())}; "
                  f"binaries {bins}", flush=True)
            if s.mke_config:
                print(f"mke.yaml for mke's side also has: {json.dumps(s.mke_config)}", flush=True)
            try:
                for nodes in s.nodes:
                    for store in s.stores:
                        for kind in (k for k in (ByHand, Mke) if k.label in s.sides):
                            t0 = time.monotonic()
                            try:
                                r = run_one(kind, store, nodes, s, bins, kwok, stages, tmp)
                            except RuntimeError as e:
                                r = {"error": str(e)}
                            results[(store, nodes, kind.label)] = r
                            print(f"  {nodes} nodes, {store}, {kind.label}: "
                                  f"{'FAILED: ' + r['error'] if 'error' in r else 'done'} "
                                  f"({time.monotonic() - t0:.0f} s)", flush=True)
                        print_step(store, nodes, nodes * s.pods_per_node, results.get((store, nodes, "mke"), {}),
                                   results.get((store, nodes, "by hand"), {}))
            except Skip as e:
                print(f"stopped: {e}", flush=True)
            print_goals(results, s)
    except KeyboardInterrupt:
        print("interrupted: every control plane, database and kwok started here was stopped", flush=True)
        raise SystemExit(130) from None
    finally:
        signal.signal(signal.SIGTERM, old)
        shutil.rmtree(tmp, ignore_errors=True)
