"""dist/mke: start-up vs its own bare interpreter; extract vs zstd -d; strip.

Needs a bundled dist/mke (nox -s build; or MKE_BENCH_DIST=DIR holding mke and
linux-<arch>/manifest.json). Every figure is a ratio against a baseline measured in the
same run, on the same disk (the static entry's own figures: bench_static.py):

- start-up: `mke version` (runtime staged) vs the runtime's bare Python started the same
  way (`-S -P -c pass` through its loader): what mke's own imports and work cost
- first `mke extract` of every binary vs `zstd -d` of the same frames (target <= 1.5x),
  and vs `zstd -d` + sync (mke fsyncs what it stages)
- second `mke extract` (everything present) minus `mke version`: target < 50 ms
- `strip` of a copy keeps it working
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _dist() -> Path:
    """MKE_BENCH_DIST made absolute against the directory the bench was started in (the baseline
    build runs PyInstaller in another directory, where a relative path crashed it)."""
    return Path(os.environ.get("MKE_BENCH_DIST") or REPO / "dist").absolute()


def paired(a: list[str], b: list[str], *, runs: int, env: dict | None = None, setup_a=None, setup_b=None
           ) -> dict[str, float]:
    """Run A and B in turn (A B A B ...) so that machine drift hits both; median wall and
    CPU (user+sys of the child) of each, and the median of the per-pair ratios."""
    import resource
    import statistics
    import time

    def one(argv: list[str], setup) -> tuple[float, float]:
        if setup:
            setup()
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)

    one(a, setup_a)  # warm-up
    one(b, setup_b)
    aw, ac, bw, bc = [], [], [], []
    for _ in range(runs):
        w, c = one(a, setup_a)
        aw.append(w)
        ac.append(c)
        w, c = one(b, setup_b)
        bw.append(w)
        bc.append(c)
    med = statistics.median
    return {"a_wall": med(aw), "b_wall": med(bw), "a_cpu": med(ac), "b_cpu": med(bc),
            "wall_ratio": med(x / y for x, y in zip(aw, bw, strict=True)), "cpu_ratio": med(x / y for x, y in zip(ac, bc, strict=True))}


def show(report, name: str, base: str, m: dict[str, float], target: float | None) -> None:
    report.ratio(name, m["a_wall"], base, m["b_wall"], target=target)
    print(f"    pairwise median ratio: wall {m['wall_ratio']:.2f}x, cpu {m['cpu_ratio']:.2f}x "
          f"({m['a_cpu'] * 1000:.0f} vs {m['b_cpu'] * 1000:.0f} ms cpu)", flush=True)


def run(report) -> None:
    from mke import payload_format as pf

    dist = _dist()
    exe = dist / "mke"
    if not exe.exists():
        print(f"skipped: {exe} not found; run `nox -s build` first (or set MKE_BENCH_DIST)")
        return
    payload = pf.Payload.open(exe)
    if payload is None or not any(b.embedded for b in payload.manifest.binaries):
        print(f"skipped: {exe} embeds no binaries (a none-mode build)")
        return
    with tempfile.TemporaryDirectory(prefix="mke-bench-", dir=dist) as wd:
        work = Path(wd)
        env = {**os.environ, "MKE_RUNTIME_DIR": str(work / "runtime")}
        full = work / "mke"
        shutil.copyfile(exe, full)
        full.chmod(0o755)
        subprocess.run([str(full), "version"], check=True, env=env, stdout=subprocess.DEVNULL)  # stage the runtime
        rt = next(p for p in (work / "runtime").iterdir() if len(p.name) == 64)
        bare = [str(rt / "bin" / "mke"), "--inhibit-cache", "--library-path", str(rt / "lib"),
                str(rt / "bin" / "python3.11"), "-S", "-P", "-c", "pass"]

        # Start-up.
        m = paired([str(full), "version"], bare, runs=20, env={**env, "PYTHONHOME": str(rt)})
        show(report, "mke version (runtime staged)", "the runtime's bare python3.11 -S -c pass", m, None)
        t_full, t_bare = m["a_wall"], m["b_wall"]

        # strip keeps it working.
        stripped = work / "mke-stripped"
        subprocess.run(["strip", "-o", str(stripped), str(full)], check=True)
        same = (subprocess.run([str(stripped), "version", "--json"], capture_output=True, env=env, check=False).stdout
                == subprocess.run([str(full), "version", "--json"], capture_output=True, env=env, check=False).stdout)
        print(f"strip of a copy: {'works (same manifest)' if same else 'BROKEN'}", flush=True)

        # First extract vs zstd -d of the same frames to the same disk.
        frames = work / "frames"
        frames.mkdir()
        files = []
        with open(full, "rb") as f:
            for i, fr in enumerate(payload.manifest.frames):
                f.seek(payload.base + payload.header.data_offset + fr.offset)
                p = frames / f"frame{i}.zst"
                p.write_bytes(f.read(fr.size))
                files.append(str(p))
        bindir, outdir = work / "bin", work / "zstd-out"
        raw = sum(b.size or 0 for b in payload.manifest.binaries if b.embedded)

        def fresh_bin() -> None:
            shutil.rmtree(bindir, ignore_errors=True)

        def fresh_out() -> None:
            shutil.rmtree(outdir, ignore_errors=True)
            outdir.mkdir()

        zstd = ["zstd", "-d", "-q", "-f", "--long=31", "--output-dir-flat", str(outdir), *files]
        extract = [str(full), "extract", f"--bin-dir={bindir}", "--quiet"]
        print(f"(embedded binaries: {len(files)} frames, {raw / 2**20:.0f} MiB decoded)")
        m = paired(extract, zstd, runs=4, env=env, setup_a=fresh_bin, setup_b=fresh_out)
        show(report, "first mke extract (all binaries)", "zstd -d of the same frames", m, 1.5)
        m_sync = paired(extract, ["sh", "-c", " ".join(zstd) + " && sync"], runs=4, env=env, setup_a=fresh_bin,
                        setup_b=fresh_out)
        show(report, "first mke extract (all binaries)", "zstd -d + sync", m_sync, None)
        t_extract, t_zstd, t_zstd_sync = m["a_wall"], m["b_wall"], m_sync["b_wall"]

        # Second extract: nothing to do.
        subprocess.run(extract, check=True, env=env)
        before = {p: p.stat().st_mtime_ns for p in bindir.rglob("*") if p.is_file()}
        m = paired(extract, [str(full), "version"], runs=20, env=env)
        t_second, t_version = m["a_wall"], m["b_wall"]
        rewritten = sum(1 for p, mt in before.items() if p.stat().st_mtime_ns != mt)
        extra = (t_second - t_version) * 1000
        print(f"second mke extract: {t_second * 1000:.1f} ms vs mke version {t_version * 1000:.1f} ms -> "
              f"{extra:+.1f} ms of work beyond start-up (target < 50 ms: {'met' if extra < 50 else 'MISSED'}); "
              f"cpu {m['a_cpu'] * 1000:.0f} vs {m['b_cpu'] * 1000:.0f} ms; {rewritten} binaries rewritten",
              flush=True)

        # Sizes.
        size = exe.stat().st_size
        print(f"size: dist/mke {size / 2**20:.1f} MiB; embedded binaries {raw / 2**20:.1f} MiB raw "
              f"({100 * size / raw:.1f}%); k0s's published binary for the same set is ~256 MB", flush=True)
        json.dump({"startup_full_s": t_full, "startup_bare_s": t_bare,
                   "extract_s": t_extract, "zstd_s": t_zstd, "zstd_sync_s": t_zstd_sync,
                   "second_extract_s": t_second, "version_s": t_version, "strip_ok": same, "size": size,
                   "raw": raw}, sys.stdout)
        print()
