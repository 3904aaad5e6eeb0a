"""docker mode: cold build of one component vs a plain host `go build` with the same flags.

Both sides start from an empty Go build cache and a module cache that already holds the
(verified) sources, use the same Go (the builder's, unpacked on the host), the same
wrapper module, tags, ldflags, -trimpath and -buildvcs=false. The docker figure is the
whole `build.cli build --mode=docker --component X` process: action key, module
verification, container start, build, copy-out, static/--version checks, CAS store.
Target: at most 1.15x. Medians of MKE_BENCH_RUNS (default 2) alternating runs. Also reports whether both builds gave the same bytes.

Env: MKE_BENCH_COMPONENT (default etcd), MKE_CACHE_DIR (whose gomod/ and toolchains/ are reused).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from build.builder_image import host_go, load_builder_spec
from build.cache import Cache, default_cache_dir
from build.docker_engine import DockerEngine
from build.fsutil import sha256_file
from build.gomod import HostGo, download_wrapper_deps, write_wrapper
from build.lockfile import Lockfile
from build.modes.base import BuildContext
from build.modes.docker import DockerMode, go_exec_name
from build.platform import Platform
from build.recipes import load_recipes

REPO = Path(__file__).resolve().parents[2]
TARGET = 1.15


def run(report) -> None:
    component = os.environ.get("MKE_BENCH_COMPONENT", "etcd")
    recipe = load_recipes(REPO / "recipes")[component]
    assert recipe.source is not None and recipe.source.kind != "c", f"{component}: pick a Go component"
    shared = Cache(default_cache_dir())
    spec = load_builder_spec(REPO / "recipes" / "builders" / "go-builder.toml")
    host = HostGo(go=host_go(spec, shared), modcache=shared.root / "gomod")
    lock = Lockfile.load(REPO / "recipes" / "recipes.lock")
    ctx = BuildContext(cache=shared, lock=lock, platform=Platform.host(), repo_root=REPO)
    mode = DockerMode()
    mode._host = host  # build_env() reads the module's commit time through the host Go
    env = mode.build_env(ctx, recipe)
    with tempfile.TemporaryDirectory(prefix="bench-docker-", dir=shared.root / "tmp") as tmp:
        tmp = Path(tmp)
        prepared = write_wrapper(recipe, host, lock.gosum(component), tmp / "wrapper")
        download_wrapper_deps(recipe, host, prepared, goos=env.goos, goarch=env.goarch, tags=env.tags, cgo=env.cgo)

        # baseline: plain go build on the host, same Go, flags and sources, empty GOCACHE
        cmd = mode.command(recipe, env)
        host_env = {**host.env(GOFLAGS="-mod=mod", GOPROXY="off", GOSUMDB="off"),
                    **{k: v for k, v in env.container_env().items() if k not in ("GOMODCACHE", "GOCACHE", "HOME")}}
        host_env["GOMODCACHE"] = str(host.modcache)

        def host_build(i: int) -> float:
            c = list(cmd)
            c[c.index("-o") + 1] = str(tmp / "host-out") + "/"
            t0 = time.perf_counter()
            subprocess.run([str(host.go), *c[1:]], cwd=prepared.dir, env={**host_env, "GOCACHE": str(tmp / f"host-gocache-{i}")},
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return time.perf_counter() - t0

        # docker mode: fresh action cache (symlinked sources/toolchain) and a fresh Go build cache volume
        def docker_build(i: int) -> float:
            cache2 = tmp / f"cache-{i}"
            cache2.mkdir()
            for name in ("gomod", "toolchains"):
                os.symlink(shared.root / name, cache2 / name)
            volume = f"mke-bench-go-build-cache-{uuid.uuid4().hex[:8]}"
            argv = [sys.executable, "-m", "build.cli", "build", "--mode=docker", f"--component={component}",
                    f"--cache-dir={cache2}", f"--dist={tmp / 'dist'}", f"--go-cache-volume={volume}", "--quiet"]
            try:
                t0 = time.perf_counter()
                subprocess.run(argv, check=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO,
                               stdout=subprocess.DEVNULL)
                return time.perf_counter() - t0
            finally:
                try:
                    DockerEngine.connect().remove_volume(volume)
                except Exception:  # noqa: BLE001 - best-effort cleanup of the bench's own volume
                    pass

        runs = int(os.environ.get("MKE_BENCH_RUNS", "2"))
        host_times, docker_times = [], []
        for i in range(runs):  # alternate, so drift in machine load hits both sides alike
            host_times.append(host_build(i))
            docker_times.append(docker_build(i))
        baseline, docker = statistics.median(host_times), statistics.median(docker_times)
        print(f"  host runs {[round(t, 1) for t in host_times]} s, docker runs {[round(t, 1) for t in docker_times]} s")
        report.ratio(f"docker-mode cold build of {component}", docker, "host go build (same flags, cold)", baseline, TARGET)
        for binary, pkg in recipe.source.packages:
            a = sha256_file(tmp / "host-out" / go_exec_name(pkg))
            b = sha256_file(tmp / "dist" / f"{ctx.platform.os}-{ctx.platform.arch}" / "bin" / binary)
            print(f"  {binary}: host {a[:16]} docker {b[:16]} {'identical' if a == b else 'DIFFERENT'}", flush=True)
