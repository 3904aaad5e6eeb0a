"""dist/mke as a static entry + staged runtime (issue 11), against what it replaced and against zstd.

Needs a bundled dist/mke (nox -s build; or MKE_BENCH_DIST=DIR holding mke and
linux-<arch>/manifest.json). The baseline one-file build is made in the same run from
the same binaries by the toolchain of the commit before the change (tests/bench/baseline.py).
Every figure is a ratio against a baseline measured in the same run, on the same disk:

- warm start: `mke version` (runtime already staged) vs the one-file build's `mke version`
  (target <= 1.0x);
- first start: `mke version` with its runtime not yet staged (decode, write, syncfs,
  rename, exec) vs `zstd -d` of the same bytes, the runtime's frames, to the same disk
  (target <= 1.5x); and vs `zstd -d` followed by `sync`, for reference. Both start with
  nothing dirty on the filesystem (a `sync` after each clean-up);
- size: dist/mke vs the one-file dist/mke (target <= 1.05x).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.bench.baseline import BASELINE_COMMIT, onefile_bundle
from tests.bench.bench_bundle import _dist, paired, show


def run(report) -> None:
    from mke import payload_format as pf

    dist = _dist()
    exe, manifest = dist / "mke", dist / "linux-amd64" / "manifest.json"
    if not exe.exists() or not manifest.exists():
        print(f"skipped: {exe} or {manifest} not found; run `nox -s build` first (or set MKE_BENCH_DIST)")
        return
    payload = pf.Payload.open(exe)
    if payload is None or not payload.manifest.libraries:
        print(f"skipped: {exe} carries no runtime parts (not a static-entry build)")
        return
    old = onefile_bundle(manifest)
    with tempfile.TemporaryDirectory(prefix="mke-bench-static-", dir=dist) as wd:
        work = Path(wd)
        rt = work / "runtime"
        env = {**os.environ, "MKE_RUNTIME_DIR": str(rt), "MKE_LIB_DIR": str(work / "lib")}
        new = work / "mke"
        shutil.copyfile(exe, new)
        new.chmod(0o755)

        # Warm start against the one-file build.
        subprocess.run([str(new), "version"], check=True, env=env, stdout=subprocess.DEVNULL)
        m = paired([str(new), "version"], [str(old), "version"], runs=30, env=env)
        show(report, "mke version, warm (static entry, staged runtime)",
             f"one-file build of {BASELINE_COMMIT[:12]}", m, 1.0)
        warm = m

        # First start against zstd -d of the runtime's frames.
        frames = work / "frames"
        frames.mkdir()
        files = []
        with open(new, "rb") as f:
            for lib in payload.manifest.libraries:
                fr = payload.manifest.frames[lib.frame]
                f.seek(payload.base + payload.header.data_offset + fr.offset)
                p = frames / f"{lib.name}.zst"
                p.write_bytes(f.read(fr.size))
                files.append(str(p))
        out = work / "zstd-out"
        decoded = sum(lib.size for lib in payload.manifest.libraries)

        # Each measured run starts with nothing dirty on the filesystem: else the entry's syncfs
        # (which flushes the whole filesystem) would also pay for the previous run's deletions and
        # for zstd's unsynced output, and the figures would depend on the order of the runs.
        def fresh_rt() -> None:
            shutil.rmtree(rt, ignore_errors=True)
            os.sync()

        def fresh_out() -> None:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            os.sync()

        zstd = ["zstd", "-d", "-q", "-f", "--output-dir-flat", str(out), *files]
        print(f"(runtime: {len(files)} parts, {sum(os.path.getsize(f) for f in files) / 2**20:.1f} MiB compressed, "
              f"{decoded / 2**20:.1f} MiB decoded)", flush=True)
        m = paired([str(new), "version"], zstd, runs=9, env=env, setup_a=fresh_rt, setup_b=fresh_out)
        show(report, "mke version, first start (stages the runtime)", "zstd -d of the runtime's frames", m, 1.5)
        first = m
        staging = first["a_wall"] - warm["a_wall"]
        print(f"    of which staging (first start minus a warm start): {staging * 1000:.1f} ms -> "
              f"{staging / first['b_wall']:.2f}x zstd -d (staging verifies, writes {len(files)} parts' files and syncfs's; "
              "MKE_ENTRY_TRACE=1 shows the split)", flush=True)
        sync_zstd = [sys.executable, "-c", "import os, subprocess, sys; subprocess.run(sys.argv[1:], check=True); os.sync()",
                     *zstd]
        m = paired([str(new), "version"], sync_zstd, runs=9, env=env, setup_a=fresh_rt, setup_b=fresh_out)
        show(report, "mke version, first start (stages the runtime)", "zstd -d + sync", m, None)

        # Size against the one-file build.
        size, old_size = exe.stat().st_size, old.stat().st_size
        ratio = size / old_size
        print(f"size: dist/mke {size:,} bytes ({size / 2**20:.1f} MiB) vs one-file {old_size:,} bytes "
              f"({old_size / 2**20:.1f} MiB) -> {ratio:.3f}x  (target <= 1.05x: {'met' if ratio <= 1.05 else 'MISSED'})",
              flush=True)
        json.dump({"warm_s": warm["a_wall"], "onefile_warm_s": warm["b_wall"], "first_s": first["a_wall"],
                   "staging_s": staging,
                   "zstd_s": first["b_wall"], "size": size, "onefile_size": old_size,
                   "runtime_parts": len(files), "runtime_decoded": decoded}, sys.stdout)
        print()
