"""mke server: time to /readyz vs etcd + kube-apiserver started by hand with the same flags; RSS.

Needs root and real binaries ($MKE_TEST_BIN_DIR or dist/linux-amd64/bin); prints why it
skips otherwise. Each round uses a fresh data dir. mke's figure includes everything it
does (Python start-up, PKI creation, waiting for etcd before starting the apiserver);
the baseline gets a ready-made PKI and starts etcd and the apiserver at once, with the
flags mke would pass (read from mke's own component classes). Both are timed by the
same poller (GET /readyz every 50 ms with the admin certificate). Then the RSS of the
mke process and of the whole control plane, once the manifests are applied.

``MKE_BENCH_SERVER_CONFIG=file.yaml`` merges a setting into mke.yaml. ``MKE_BENCH_SERVER_MEMORY=2GiB``
runs the RSS part in a memory cgroup of that size (v2 ``memory.max`` or v1's
``memory.limit_in_bytes``, made here and removed after): a small controller, where mke's own
defaults differ (mke.components.context.SMALL_HOST).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROUNDS = int(os.environ.get("MKE_BENCH_ROUNDS", "3"))


def _bin_dir() -> Path | None:
    for cand in (os.environ.get("MKE_TEST_BIN_DIR"), REPO / "dist" / "linux-amd64" / "bin"):
        if cand and all(os.access(Path(cand) / n, os.X_OK) for n in ("etcd", "kube-apiserver")):
            return Path(cand)
    return None


def _wait_readyz(pki: Path, t0: float, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> float:
    ctx = None
    while time.perf_counter() - t0 < timeout:
        if ctx is None and (pki / "admin.key").exists():
            try:
                ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
                ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
            except (OSError, ssl.SSLError):
                ctx = None
        if ctx is not None:
            try:
                with urllib.request.urlopen("https://127.0.0.1:6443/readyz", context=ctx, timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except (OSError, ValueError):
                pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        time.sleep(0.05)
    raise RuntimeError("not ready in time")


def _kib(pid: int, key: str, name: str = "status") -> int:
    """``key`` (in KiB) from /proc/<pid>/<name>: VmRSS from status; Anonymous from smaps_rollup,
    the part of RSS that is the process's own memory (what `free` counts as used), the rest being
    the binary's text and data read from its file (page cache, shared)."""
    for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def _mke(data: Path, bins: Path, cfg: Path, cgroup_procs: Path | None = None) -> subprocess.Popen:
    def enter() -> None:  # in the child before exec: mke and all it starts live in the cgroup
        assert cgroup_procs is not None
        cgroup_procs.write_text(str(os.getpid()))

    return subprocess.Popen([sys.executable, "-m", "mke", "server", "--data-dir", str(data), "--bin-dir", str(bins),
                             "--config", str(cfg)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=enter if cgroup_procs is not None else None)


_SIZE = re.compile(r"^(\d+)\s*(?:([kmg])i?)?b?$", re.IGNORECASE)


def memory_from_env(var: str = "MKE_BENCH_SERVER_MEMORY") -> int | None:
    """``MKE_BENCH_SERVER_MEMORY`` in bytes (``2GiB``, ``1536Mi``, ``2147483648``); None when unset."""
    from tests.bench.bench_scale import Skip

    raw = os.environ.get(var, "").strip()
    if not raw:
        return None
    m = _SIZE.match(raw)
    size = int(m.group(1)) << {None: 0, "k": 10, "m": 20, "g": 30}[(m.group(2) or "").lower() or None] if m else 0
    if size < 256 << 20:
        raise Skip(f"{var}={raw}: give a size of 256Mi or more, like 2GiB or 1536Mi")
    return size


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _by_hand_argv(data: Path, bins: Path, cfg_path: Path) -> list[list[str]]:
    """etcd and kube-apiserver command lines exactly as mke builds them for ``data``."""
    import yaml

    from mke.config import parse_config
    from mke.controller import Controller

    ctl = Controller(parse_config(yaml.safe_load(cfg_path.read_text()) or {}), data_dir=data, bin_dir=bins,
                     manifests=False)
    ctl.ctx.pki.ensure(ctl.pki_request())
    out = []
    for comp in [c for stage in ctl.stages()[:2] for c in stage]:
        comp.init()
        out.append(list(comp.process_spec().args))
    return out


def run(report) -> None:
    bins = _bin_dir()
    if os.geteuid() != 0 or bins is None:
        print("skipped: needs root and etcd + kube-apiserver in $MKE_TEST_BIN_DIR or dist/linux-amd64/bin")
        return
    import yaml

    from tests.bench.bench_scale import Skip, mke_config_from_env

    try:
        extra = mke_config_from_env("MKE_BENCH_SERVER_CONFIG")  # a setting's empty-cluster RSS, e.g. extraEnv
        memory = memory_from_env()
    except Skip as e:
        print(f"skipped: {e}")
        return
    if extra:
        print(f"mke.yaml also has: {json.dumps(extra)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mke-bench-") as tmp:
        tmp_path = Path(tmp)
        cfg = tmp_path / "mke.yaml"
        konnectivity = os.access(bins / "konnectivity-server", os.X_OK)
        cfg.write_text(yaml.safe_dump({**extra, "konnectivity": {**extra.get("konnectivity", {}),
                                                                 "enabled": konnectivity}}))
        mke_times, hand_times = [], []
        for i in range(ROUNDS):
            # by hand: PKI made beforehand, etcd and apiserver started together
            data = tmp_path / f"hand{i}"
            argvs = _by_hand_argv(data, bins, cfg)
            (data / "etcd").mkdir(mode=0o700, exist_ok=True)
            t0 = time.perf_counter()
            procs = [subprocess.Popen(a, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
                     for a in argvs]
            try:
                hand_times.append(_wait_readyz(data / "pki", t0))
            finally:
                for p in reversed(procs):
                    _stop(p)
            # mke server on a fresh data dir
            data = tmp_path / f"mke{i}"
            t0 = time.perf_counter()
            proc = _mke(data, bins, cfg)
            try:
                mke_times.append(_wait_readyz(data / "pki", t0, proc=proc))
            finally:
                _stop(proc)
            print(f"  round {i + 1}: by hand {hand_times[-1]:.2f}s, mke server {mke_times[-1]:.2f}s", flush=True)
        report.ratio("mke server to /readyz (median)", statistics.median(mke_times),
                     "etcd + kube-apiserver by hand (median)", statistics.median(hand_times), target=1.2)
        # On a busy machine the best of N is the steadier estimate of the intrinsic cost.
        report.ratio("mke server to /readyz (best)", min(mke_times),
                     "etcd + kube-apiserver by hand (best)", min(hand_times), target=1.2)

        # RSS once everything runs and the manifests are applied.
        data = tmp_path / "rss"
        with contextlib.ExitStack() as stack:
            procs_file = None
            if memory is not None:
                from tests.support.cgroups import CgroupUnavailable, memory_cgroup

                try:
                    procs_file = stack.enter_context(memory_cgroup(memory))
                except CgroupUnavailable as e:
                    print(f"skipped the RSS part: MKE_BENCH_SERVER_MEMORY: {e}")
                    return
                print(f"RSS in a memory cgroup of {memory / (1 << 30):.2f} GiB (mke's small-controller defaults "
                      "apply at 4 GiB or less)", flush=True)
            proc = _mke(data, bins, cfg, procs_file)
            stack.callback(_stop, proc)
            _rss(proc, data)
    shutil.rmtree(tmp_path, ignore_errors=True)


def _rss(proc: subprocess.Popen, data: Path) -> None:
    """The RSS of mke and of every component, once it runs and MKE_BENCH_SETTLE seconds passed."""
    deadline = time.time() + 180
    status: dict = {}
    while time.time() < deadline:
        try:
            status = json.loads((data / "run" / "status.json").read_text())
            if status.get("phase") == "running":
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    time.sleep(float(os.environ.get("MKE_BENCH_SETTLE", "20")))
    status = json.loads((data / "run" / "status.json").read_text())
    mke_rss = _kib(proc.pid, "VmRSS")
    pids = {c["name"]: c["pid"] for c in status["components"] if c.get("pid")}
    parts = {k: _kib(p, "VmRSS") for k, p in pids.items()}
    total = mke_rss + sum(parts.values())
    anon = sum(_kib(p, "Anonymous", "smaps_rollup") for p in (proc.pid, *pids.values()))
    print(f"RSS: mke process {mke_rss / 1024:.1f} MiB (target < 60 MB); "
          + ", ".join(f"{k} {v / 1024:.0f} MiB" for k, v in parts.items())
          + f"; control plane total {total / 1024:.0f} MiB ({total * 1024 / 1e6:.0f} MB; k0s documents "
          "510 MB for its controller node with one worker and no pods, its OS's ~180 MB included); "
          f"of it anonymous (the processes' own, what `free` counts as used; the rest is the "
          f"binaries' text from the page cache) {anon / 1024:.0f} MiB", flush=True)
