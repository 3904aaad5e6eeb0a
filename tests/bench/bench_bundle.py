"""dist/mke: start-up with vs without payload, vs a hello-world; extract vs zstd -d; strip.

Needs a bundled dist/mke (nox -s build; or MKE_BENCH_DIST=DIR holding mke and
linux-<arch>/manifest.json). Every figure is a ratio against a baseline measured in the
same run, on the same disk:

- start-up: `mke version` with the full payload vs the same executable with the payload
  section removed (target <= 1.1x); the payload-less one vs a hello-world one-file built
  by the same spec and options (target <= 1.3x)
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
    return Path(os.environ.get("MKE_BENCH_DIST") or REPO / "dist")


def _hello(work: Path) -> Path:
    from build import bundle

    spec = bundle.RuntimeSpec(name="hello", entry=REPO / "build" / "pyinstaller" / "hello_entry.py", collect=())
    (work / "hello-build").mkdir()
    return bundle.run_pyinstaller(work / "hello-build", spec, source_date_epoch=bundle.DEFAULT_EPOCH)


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
        env = {**os.environ, "MKE_LIB_DIR": str(work / "lib")}
        full = work / "mke"
        shutil.copyfile(exe, full)
        full.chmod(0o755)
        bare = work / "mke-nopayload"
        subprocess.run(["objcopy", "--remove-section", pf.SECTION_NAME, str(full), str(bare)], check=True)
        hello = _hello(work)

        # Start-up.
        t_full = report.time_command([str(full), "version"], runs=15, env=env)
        t_bare = report.time_command([str(bare), "version"], runs=15, env=env)
        t_hello = report.time_command([str(hello)], runs=15, env=env)
        report.ratio("mke version, full payload", t_full, "same build without payload", t_bare, target=1.1)
        report.ratio("mke version without payload", t_bare, "hello-world one-file (same spec, --strip)", t_hello,
                     target=1.3)

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
        t_extract = report.time_command([str(full), "extract", f"--bin-dir={bindir}", "--quiet"], runs=3, env=env,
                                        setup=fresh_bin)
        t_zstd = report.time_command(zstd, runs=3, setup=fresh_out)
        t_zstd_sync = report.time_command(["sh", "-c", " ".join(zstd) + " && sync"], runs=3, setup=fresh_out)
        print(f"(embedded binaries: {len(files)} frames, {raw / 2**20:.0f} MiB decoded)")
        report.ratio("first mke extract (all binaries)", t_extract, "zstd -d of the same frames", t_zstd, target=1.5)
        report.ratio("first mke extract (all binaries)", t_extract, "zstd -d + sync", t_zstd_sync)

        # Second extract: nothing to do.
        mke_extract = [str(full), "extract", f"--bin-dir={bindir}", "--quiet"]
        subprocess.run(mke_extract, check=True, env=env)
        before = {p: p.stat().st_mtime_ns for p in bindir.rglob("*") if p.is_file()}
        t_second = report.time_command(mke_extract, runs=15, env=env)
        t_version = report.time_command([str(full), "version"], runs=15, env=env)
        rewritten = sum(1 for p, m in before.items() if p.stat().st_mtime_ns != m)
        extra = (t_second - t_version) * 1000
        print(f"second mke extract: {t_second * 1000:.1f} ms vs mke version {t_version * 1000:.1f} ms -> "
              f"{extra:+.1f} ms of work beyond start-up (target < 50 ms: {'met' if extra < 50 else 'MISSED'}); "
              f"{rewritten} binaries rewritten", flush=True)

        # Sizes.
        size = exe.stat().st_size
        print(f"size: dist/mke {size / 2**20:.1f} MiB; embedded binaries {raw / 2**20:.1f} MiB raw "
              f"({100 * size / raw:.1f}%); k0s's published binary for the same set is ~256 MB", flush=True)
        json.dump({"startup_full_s": t_full, "startup_bare_s": t_bare, "startup_hello_s": t_hello,
                   "extract_s": t_extract, "zstd_s": t_zstd, "zstd_sync_s": t_zstd_sync,
                   "second_extract_s": t_second, "version_s": t_version, "strip_ok": same, "size": size,
                   "raw": raw}, sys.stdout)
        print()
